"""Usage metering: a durable journal, batched into the ``usage_records`` table."""

from aiforge.platform.metering.journal import Journal, read_segment
from aiforge.platform.metering.ledger import JOURNAL_DIRNAME, UsageLedger
from aiforge.platform.metering.queries import (
    GROUP_BY_VALUES,
    GroupBy,
    UsageFilter,
    UsageTotal,
    budget_usage,
    totals_csv,
    usage_totals,
)
from aiforge.platform.metering.table import UsageRecordRow

__all__ = [
    "GROUP_BY_VALUES",
    "JOURNAL_DIRNAME",
    "GroupBy",
    "Journal",
    "UsageFilter",
    "UsageLedger",
    "UsageRecordRow",
    "UsageTotal",
    "budget_usage",
    "read_segment",
    "totals_csv",
    "usage_totals",
]
