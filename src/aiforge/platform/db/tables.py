"""Every table module, imported in one place so ``Base.metadata`` is complete.

Alembic's autogenerate and the test helpers read the metadata from here.
"""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

from aiforge.platform.db.base import Base

TABLE_MODULES: tuple[str, ...] = (
    "aiforge.platform.db.tenancy",
    "aiforge.platform.metering.table",
    "aiforge.platform.deployments.table",
    "aiforge.platform.responses.table",
    "aiforge.platform.files.table",
    "aiforge.platform.batches.table",
)


def load_all_tables() -> MetaData:
    """Import every table module that exists and return the shared metadata."""
    for name in TABLE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            # The metering tables land with their own package; tolerate only its absence.
            if error.name is None or not name.startswith(error.name):
                raise
    return Base.metadata
