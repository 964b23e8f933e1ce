"""Batches (``/v1/batches``): JSONL files of requests run through the gateway's request
path at lower priority than interactive traffic, resumed after a restart."""

from aiforge.platform.batches.api import build_batches_router
from aiforge.platform.batches.runner import BatchRunner
from aiforge.platform.batches.service import BatchService
from aiforge.platform.batches.store import BatchStore

__all__ = ["BatchRunner", "BatchService", "BatchStore", "build_batches_router"]
