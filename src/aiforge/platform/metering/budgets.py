"""Re-seed in-memory token budgets from the usage ledger at gateway start."""

from __future__ import annotations

from aiforge.platform.limits.admission import LimitAdmission
from aiforge.platform.metering.ledger import UsageLedger


async def reseed_budgets(admission: LimitAdmission, ledger: UsageLedger) -> None:
    """Make this day's and month's budgets count what the ledger already holds.

    Call after :meth:`UsageLedger.start` (which replays the journal first). A store that
    keeps its counters (Redis) needs nothing: seeding would only repeat what it has.
    """
    if admission.store.persistent:
        return
    await admission.seed_budgets(await ledger.budget_usage())
