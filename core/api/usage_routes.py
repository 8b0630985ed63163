"""Usage and budget routes (``core.metering``, ``core.budgets``)::

GET    /v1/usage     tenant: its own; operator: every tenant, or ``?tenant=``
GET    /v1/budget    tenant: its budget and where this month stands
PUT    /v1/budget    tenant: set the monthly amount, thresholds, webhook (lifts a reached limit
                     and resumes the crawls it paused)
DELETE /v1/budget    tenant: no budget (no limit, no warnings; paused crawls resume)

``GET /v1/usage?from=&to=&granularity=hour|day|month``: ``from`` and ``to`` are ISO 8601
dates or date-times (UTC when no offset is given; default: the start of this UTC month, and
now); the unit is the hour, so a period holds the whole hour ``from`` falls in, up to the
hour ``to`` falls in. Only periods with usage are listed; a ``from`` at or after ``to`` is an
empty report. ``live`` prices the containers running now (not yet in ``total``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from core.api.http import ApiResponse
from core.api.problems import HttpProblem
from core.api.routing import JSON_BODY_ERRORS, Context, Param, Reply, Route
from core.api.schemas import Out
from core.api.validation import parse_json_body
from core.budgets import BUDGET_KEY, Budget, Budgets, month_key
from core.clock import Clock
from core.errors import Conflict, NotFound
from core.metering import Granularity, Meter, Usage, accrued, period_start, periods
from core.netguard import AddressPolicy, check_url
from core.paused import announce, resume_paused_by_budget
from core.ports.message_bus import MessageBus
from core.records import Records

_GRANULARITIES = ("hour", "day", "month")
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_LEAP_SECOND = re.compile(r"(T\d\d:\d\d):60")


class UsagePeriod(Out):
    start: datetime
    end: datetime
    usage: Usage


class TenantUsage(Out):
    tenant_id: str
    total: Usage
    #: The tenant's containers running now, priced as of now (added to ``total`` when they stop).
    live: Usage
    periods: list[UsagePeriod]


class UsageReport(Out):
    start: datetime
    end: datetime
    granularity: Literal["hour", "day", "month"]
    tenants: list[TenantUsage]


class BudgetView(Out):
    """A tenant's budget (null: none) and where the current UTC month stands."""

    budget: Budget | None
    month: str
    spent: float
    warned: list[int]
    reached: bool


def parse_moment(raw: str | None, name: str, default: datetime) -> datetime:
    """An ISO 8601 date or date-time query value, in UTC; 400 if it is neither."""
    if raw is None or not raw.strip():
        return default
    text = _LEAP_SECOND.sub(r"\1:59", raw.strip().upper())
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise HttpProblem(
            400, f"query parameter {name!r} must be an ISO 8601 date or date-time"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        return _EARLIEST if value.year < 2000 else _LATEST
    return min(max(value, _EARLIEST), _LATEST)


def parse_granularity(raw: str | None) -> Granularity:
    value = raw or "day"
    if value == "hour":
        return "hour"
    if value == "day":
        return "day"
    if value == "month":
        return "month"
    raise HttpProblem(400, "query parameter 'granularity' must be hour, day or month")


class UsageRoutes:
    def __init__(
        self,
        *,
        records: Records,
        clock: Clock,
        policy: AddressPolicy,
        bus: MessageBus,
        inbox: str,
    ) -> None:
        self._records = records
        self._bus = bus
        self._inbox = inbox
        self._clock = clock
        self._policy = policy
        self._meter = Meter(records.state)
        self._budgets = Budgets(records)

    # ------------------------------------------------------------------ usage

    async def get_usage(self, ctx: Context) -> ApiResponse:
        query = ctx.request.query
        now = self._clock.now()
        start = parse_moment(query.get("from"), "from", period_start(now, "month"))
        end = parse_moment(query.get("to"), "to", now)
        granularity = parse_granularity(query.get("granularity"))
        wanted = query.get("tenant") or None
        if ctx.tenant is not None:
            if wanted is not None and wanted != ctx.tenant.id:
                raise NotFound(f"no tenant {wanted!r}")  # another tenant's usage is not yours
            ids = [ctx.tenant.id]
        elif wanted is not None:
            if await self._records.tenants.get("tenants", wanted) is None:
                raise NotFound(f"no tenant {wanted!r}")
            ids = [wanted]
        else:
            ids = [t.value.id for t in await self._records.tenants.query("tenants")]
        report = UsageReport(
            start=start,
            end=end,
            granularity=granularity,
            tenants=[await self._tenant_usage(i, start, end, granularity, now) for i in ids],
        )
        return ApiResponse.json(200, report)

    async def _tenant_usage(
        self,
        tenant_id: str,
        start: datetime,
        end: datetime,
        granularity: Granularity,
        now: datetime,
    ) -> TenantUsage:
        buckets = await self._meter.hours(tenant_id, start, end) if start < end else []
        listed = [UsagePeriod(start=b, end=e, usage=u) for b, e, u in periods(buckets, granularity)]
        total = Usage()
        for period in listed:
            total = total.plus(period.usage)
        live = accrued(await self._records.live_containers(tenant_id), now)
        return TenantUsage(tenant_id=tenant_id, total=total, live=live, periods=listed)

    # ------------------------------------------------------------------ budget

    async def get_budget(self, ctx: Context) -> ApiResponse:
        return ApiResponse.json(200, await self._view(ctx.tenant_id))

    async def put_budget(self, ctx: Context) -> ApiResponse:
        budget = parse_json_body(ctx.request, Budget)
        if budget.webhook_url is not None:
            check_url(budget.webhook_url, self._policy)  # UnsafeUrl: 422
        table = self._budgets.budgets
        for _ in range(20):
            found = await table.get(ctx.tenant_id, BUDGET_KEY)
            try:
                if found is None:
                    await table.create(ctx.tenant_id, BUDGET_KEY, budget)
                else:
                    await table.replace(found, budget)
            except Conflict:
                continue
            break
        else:
            raise Conflict(f"budgets/{ctx.tenant_id}: too much contention")
        # a raised amount lifts the limit now (warnings it no longer reaches may come again);
        # new warnings are left to housekeeping, which sends them
        month = await self._budgets.evaluate(ctx.tenant_id, self._clock.now(), rearm=True)
        if month is not None and not month.reached:
            await self._resume(ctx.tenant_id)
        return ApiResponse.json(200, await self._view(ctx.tenant_id))

    async def delete_budget(self, ctx: Context) -> ApiResponse:
        await self._budgets.budgets.discard(ctx.tenant_id, BUDGET_KEY)
        await self._resume(ctx.tenant_id)
        return ApiResponse.empty(204)

    async def _resume(self, tenant_id: str) -> None:
        """The limit is lifted: crawls the budget paused continue from their checkpoints."""
        now = self._clock.now()
        resumed = await resume_paused_by_budget(self._records, tenant_id, now, self._inbox)
        await announce(self._bus, self._inbox, resumed)

    async def _view(self, tenant_id: str) -> BudgetView:
        now = self._clock.now()
        budget = await self._budgets.budget(tenant_id)
        month = await self._budgets.month(tenant_id, now)
        if budget is None:
            live = await self._records.live_containers(tenant_id)
            spent = await self._budgets.spent(tenant_id, now, live)
            return BudgetView(
                budget=None, month=month_key(now), spent=spent, warned=[], reached=False
            )
        if month is None:
            live = await self._records.live_containers(tenant_id)
            spent = await self._budgets.spent(tenant_id, now, live)
            reached = spent >= budget.monthly_amount
            return BudgetView(
                budget=budget, month=month_key(now), spent=spent, warned=[], reached=reached
            )
        return BudgetView(
            budget=budget,
            month=month.month,
            spent=month.spent,
            warned=list(month.warned),
            reached=month.reached,
        )

    def routes(self) -> list[Route]:
        moment = {"type": "string", "format": "date-time"}
        return [
            Route(
                "GET",
                "/v1/usage",
                self.get_usage,
                "Usage and cost per period (a tenant its own; the operator every tenant)",
                auth="either",
                params=(
                    Param("from", "query", "Start (ISO 8601; default: this UTC month).", moment),
                    Param("to", "query", "End, exclusive (ISO 8601; default: now).", moment),
                    Param(
                        "granularity",
                        "query",
                        "Period length (default day).",
                        {"type": "string", "enum": list(_GRANULARITIES), "default": "day"},
                    ),
                    Param(
                        "tenant",
                        "query",
                        "Only this tenant (operator; a tenant may name only itself).",
                        {"type": "string", "minLength": 1, "maxLength": 64},
                    ),
                ),
                replies=(
                    Reply(200, "Usage per tenant and period.", UsageReport),
                    Reply(400, "A query parameter is not valid."),
                    Reply(404, "No such tenant (or not yours)."),
                ),
            ),
            Route(
                "GET",
                "/v1/budget",
                self.get_budget,
                "Your monthly budget and where this month stands",
                replies=(Reply(200, "The budget (null: none) and this month.", BudgetView),),
            ),
            Route(
                "PUT",
                "/v1/budget",
                self.put_budget,
                "Set your monthly budget (raising it lifts a reached limit)",
                body=Budget,
                replies=(Reply(200, "The budget and this month.", BudgetView), *JSON_BODY_ERRORS),
            ),
            Route(
                "DELETE",
                "/v1/budget",
                self.delete_budget,
                "Remove your budget (no limit, no warnings)",
                replies=(Reply(204, "Removed."),),
            ),
        ]
