"""Files (``/v1/files``): uploads stored per project under the data dir, metadata in the
platform database."""

from aiforge.platform.files.api import build_files_router
from aiforge.platform.files.service import FileService
from aiforge.platform.files.storage import FileStore

__all__ = ["FileService", "FileStore", "build_files_router"]
