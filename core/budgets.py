"""Budgets: a tenant's monthly spending limit, its warnings, and what happens at the limit.

=============  ==========  =========  ====================================================
table          partition   key        holds
=============  ==========  =========  ====================================================
budgets        tenant id   "budget"   ``Budget``: the monthly amount, thresholds, webhook
budget_months  tenant id   "YYYY-MM"  ``BudgetMonth``: spent, thresholds warned, reached
=============  ==========  =========  ====================================================

Spent is the month's metered cost (``core.metering``: stopped containers, UTC calendar
month) plus what the tenant's live containers have cost so far. Housekeeping evaluates it
every ``timer_period_s``; so a limit is seen at most one period (plus a container's minimum
billing) late.

Warnings
    Each threshold (percent of the amount; default 50, 80, 100) is warned once a month: the
    compare-and-set that adds it to ``BudgetMonth.warned`` carries a ``BudgetWarning`` in the
    same write (an outbox entry), and the conductor posts it to the budget's ``webhook_url``,
    signed like every webhook (``core.webhook_signing``), with ``Skycrawl-Event:
    budget.warning`` (``budget.reached`` at 100 % and above).

At the limit
    New crawls are refused with ``402`` (problem ``budget-reached``), a schedule's occurrence
    is skipped (``core.schedules``). Running and pending crawls are paused with reason
    ``budget reached`` (``core.conductor.budget_guard``): a running one finishes the pages in
    flight, stores them and checkpoints its frontier; the container drains when idle. Raising
    the amount (``PUT /v1/budget``), removing the budget or a new month lifts the limit, and
    the paused crawls resume from their checkpoints (``core.paused``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated

from pydantic import Field, field_validator

from core.errors import Conflict
from core.metering import Meter, accrued, hour_of, next_period, period_start
from core.models import JSON_NUMBER, Container, Frozen, OutboxEntry, SeedUrl
from core.records import Records, Table

BUDGET_KEY = "budget"
Threshold = Annotated[int, Field(ge=1, le=100), JSON_NUMBER]


class Budget(Frozen):
    """A tenant's monthly budget: the body of ``PUT /v1/budget``."""

    #: The limit per UTC calendar month, in the unit of the egresses' ``cost_per_second``.
    monthly_amount: Annotated[float, Field(gt=0, le=1e9), JSON_NUMBER]
    #: Percentages of the amount at which a warning is sent (once a month each).
    thresholds: Annotated[list[Threshold], Field(min_length=1, max_length=10)] = [50, 80, 100]
    #: Where warnings are posted (signed); none: no warnings, the limit still holds.
    webhook_url: SeedUrl | None = None

    @field_validator("thresholds")
    @classmethod
    def _sorted_once(cls, thresholds: list[int]) -> list[int]:
        return sorted(set(thresholds))


class BudgetMonth(Frozen):
    """Where a tenant's budget stands in one month."""

    tenant_id: str
    month: str  # "YYYY-MM"
    amount: float
    spent: float = 0.0
    warned: tuple[int, ...] = ()
    reached: bool = False
    outbox: tuple[OutboxEntry, ...] = ()


def budgets_table(records: Records) -> Table[Budget]:
    return Table(records.state, "budgets", Budget)


def months_table(records: Records) -> Table[BudgetMonth]:
    return Table(records.state, "budget_months", BudgetMonth)


def month_key(moment: datetime) -> str:
    return hour_of(moment).strftime("%Y-%m")


def crossed(budget: Budget, spent: float) -> tuple[int, ...]:
    """The thresholds ``spent`` has reached."""
    return tuple(t for t in budget.thresholds if spent >= budget.monthly_amount * t / 100)


class Budgets:
    """Reads and evaluates budgets over the records and the meter."""

    def __init__(self, records: Records) -> None:
        self._records = records
        self.budgets = budgets_table(records)
        self.months = months_table(records)
        self._meter = Meter(records.state)

    async def budget(self, tenant_id: str) -> Budget | None:
        found = await self.budgets.get(tenant_id, BUDGET_KEY)
        return None if found is None else found.value

    async def month(self, tenant_id: str, now: datetime) -> BudgetMonth | None:
        found = await self.months.get(tenant_id, month_key(now))
        return None if found is None else found.value

    async def reached(self, tenant_id: str, now: datetime) -> BudgetMonth | None:
        """This month's record if housekeeping found the budget spent (and it still
        exists); None while crawls may run."""
        month = await self.month(tenant_id, now)
        if month is None or not month.reached or await self.budget(tenant_id) is None:
            return None
        return month

    async def spent(self, tenant_id: str, now: datetime, live: Iterable[Container]) -> float:
        """The month's metered cost plus what ``live`` containers have cost so far."""
        start = period_start(now, "month")
        used = await self._meter.total(tenant_id, start, next_period(start, "month"))
        return round(used.cost + accrued(live, now).cost, 9)

    async def evaluate(
        self,
        tenant_id: str,
        now: datetime,
        *,
        entry: Callable[[int, float, Budget], OutboxEntry] | None = None,
        rearm: bool = False,
    ) -> BudgetMonth | None:
        """Store where the tenant's budget stands this month; None without a budget.
        ``entry(threshold, spent, budget)``: the outbox entry that warns of a newly crossed one
        (the conductor's); ``rearm``: forget warnings the amount no longer reaches (a raised
        budget warns again when it is crossed again)."""
        budget = await self.budget(tenant_id)
        if budget is None:
            return None
        live = await self._records.live_containers(tenant_id)
        spent = await self.spent(tenant_id, now, live)
        reached_now = crossed(budget, spent)
        key = month_key(now)

        def change(current: BudgetMonth) -> BudgetMonth | None:
            warned = set(current.warned)
            if rearm:
                warned &= set(reached_now)
            fresh = [t for t in reached_now if t not in warned]
            entries: tuple[OutboxEntry, ...] = ()
            if entry is not None:
                entries = tuple(entry(t, spent, budget) for t in fresh)
            new = current.model_copy(
                update={
                    "amount": budget.monthly_amount,
                    "spent": spent,
                    "warned": tuple(sorted(warned | set(fresh) if entry is not None else warned)),
                    "reached": spent >= budget.monthly_amount,
                    "outbox": (*current.outbox, *entries),
                }
            )
            return None if new == current else new

        for _ in range(20):
            found = await self.months.get(tenant_id, key)
            if found is None:
                blank = BudgetMonth(tenant_id=tenant_id, month=key, amount=budget.monthly_amount)
                first = change(blank) or blank
                try:
                    await self.months.create(tenant_id, key, first)
                except Conflict:
                    continue
                return first
            new = change(found.value)
            if new is None:
                return found.value
            try:
                await self.months.replace(found, new)
            except Conflict:
                continue
            return new
        raise Conflict(f"budget_months/{tenant_id}/{key}: too much contention")
