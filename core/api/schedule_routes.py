"""Tenant routes for recurring crawls (``core.schedules``)::

POST   /v1/schedules                 create (201): cron + time zone + a crawl request
GET    /v1/schedules                 list
GET    /v1/schedules/{id}            one, with its next occurrence and last run
POST   /v1/schedules/{id}/pause      stop firing (a fire in flight is dropped)
POST   /v1/schedules/{id}/resume     fire again from the next occurrence
DELETE /v1/schedules/{id}            remove (204)
GET    /v1/schedules/{id}/runs       its runs, newest first, each with its status and its
                                     new / changed / unchanged / gone pages
                                     (``core.run_changes``; counted once a run has ended)
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from core.api.crawls import check_spec_urls
from core.api.http import ApiResponse
from core.api.routing import JSON_BODY_ERRORS, Context, Param, Reply, Route
from core.api.schemas import Out
from core.api.validation import parse_json_body, query_int
from core.clock import Clock
from core.delivery_models import Schedule, ScheduleCreate, schedules_table
from core.errors import Conflict, NotFound
from core.messages import encode
from core.models import CrawlCounts, CrawlSpec, CrawlState
from core.netguard import AddressPolicy
from core.ports.blob_store import BlobStore
from core.ports.message_bus import MessageBus
from core.records import Records
from core.run_changes import RunChanges, run_changes
from core.schedules import fire_message, next_occurrence, run_crawl_id

MAX_SCHEDULES = 100


class ScheduleView(Out):
    id: str
    cron: str
    timezone: str
    crawl: CrawlSpec
    state: str
    runs: int
    last_crawl_id: str | None
    next_run_at: datetime | None
    created_at: datetime
    #: Occurrences that started no run because the monthly budget was spent.
    skipped: int = 0
    last_skipped_at: datetime | None = None
    last_skip_reason: str | None = None


class ScheduleList(Out):
    items: list[ScheduleView]


class ScheduleRun(Out):
    """One run of a schedule: an ordinary crawl, compared with the run before it."""

    run: int
    crawl_id: str
    status: CrawlState
    counts: CrawlCounts
    created_at: datetime
    finished_at: datetime | None
    changes: RunChanges | None = Field(
        description="Against the previous run, once this one has ended; null before, and for "
        "the first run."
    )


class ScheduleRunList(Out):
    items: list[ScheduleRun]


class ScheduleRoutes:
    def __init__(
        self,
        *,
        records: Records,
        bus: MessageBus,
        clock: Clock,
        inbox: str,
        policy: AddressPolicy,
        blobs: BlobStore,
    ) -> None:
        self._records = records
        self._blobs = blobs
        self._table = schedules_table(records)
        self._bus = bus
        self._clock = clock
        self._inbox = inbox
        self._policy = policy

    def _view(self, s: Schedule) -> ScheduleView:
        now = self._clock.now()
        upcoming = next_occurrence(s.cron, s.timezone, now) if s.state == "active" else None
        return ScheduleView(
            id=s.id,
            cron=s.cron,
            timezone=s.timezone,
            crawl=s.crawl,
            state=s.state,
            runs=s.runs,
            last_crawl_id=s.last_crawl_id,
            next_run_at=upcoming,
            created_at=s.created_at,
            skipped=s.skipped,
            last_skipped_at=s.last_skipped_at,
            last_skip_reason=s.last_skip_reason,
        )

    async def _arm(self, s: Schedule) -> None:
        await self._bus.send(queue=self._inbox, message=encode(fire_message(s, self._clock.now())))

    async def create_schedule(self, ctx: Context) -> ApiResponse:
        body = parse_json_body(ctx.request, ScheduleCreate)
        check_spec_urls(body.crawl, self._policy)
        if len(await self._table.query(ctx.tenant_id, limit=MAX_SCHEDULES)) >= MAX_SCHEDULES:
            raise Conflict(f"a tenant has at most {MAX_SCHEDULES} schedules")
        s = Schedule(
            id=f"sc_{uuid.uuid4().hex}",
            tenant_id=ctx.tenant_id,
            cron=body.cron,
            timezone=body.timezone,
            crawl=body.crawl,
            created_at=self._clock.now(),
        )
        await self._table.create(ctx.tenant_id, s.id, s)
        await self._arm(s)
        return ApiResponse.json(201, self._view(s))

    async def list_schedules(self, ctx: Context) -> ApiResponse:
        found = await self._table.query(ctx.tenant_id, limit=MAX_SCHEDULES)
        return ApiResponse.json(200, ScheduleList(items=[self._view(f.value) for f in found]))

    async def _load(self, ctx: Context) -> Schedule:
        found = await self._table.get(ctx.tenant_id, ctx.params["schedule_id"])
        if found is None:
            raise NotFound(f"no schedule {ctx.params['schedule_id']!r}")
        return found.value

    async def get_schedule(self, ctx: Context) -> ApiResponse:
        return ApiResponse.json(200, self._view(await self._load(ctx)))

    async def list_schedule_runs(self, ctx: Context) -> ApiResponse:
        sched = await self._load(ctx)
        limit = query_int(ctx.request, "limit", default=10, low=1, high=100)
        runs: list[ScheduleRun] = []
        for n in range(sched.runs, max(0, sched.runs - limit), -1):
            found = await self._records.crawls.get(sched.tenant_id, run_crawl_id(sched.id, n))
            if found is None:
                continue
            crawl = found.value
            runs.append(
                ScheduleRun(
                    run=n,
                    crawl_id=crawl.id,
                    status=crawl.state,
                    counts=crawl.counts,
                    created_at=crawl.created_at,
                    finished_at=crawl.finished_at,
                    changes=await run_changes(self._blobs, crawl),
                )
            )
        return ApiResponse.json(200, ScheduleRunList(items=runs))

    async def _set_state(self, ctx: Context, state: str) -> Schedule | None:
        """The schedule in ``state`` with a new generation; None if it was in it already."""
        await self._load(ctx)

        def change(current: Schedule) -> Schedule | None:
            if current.state == state:
                return None
            return current.model_copy(update={"state": state, "generation": current.generation + 1})

        value, changed = await self._table.mutate(ctx.tenant_id, ctx.params["schedule_id"], change)
        if value is None:
            raise NotFound(f"no schedule {ctx.params['schedule_id']!r}")
        return value if changed else None

    async def pause_schedule(self, ctx: Context) -> ApiResponse:
        await self._set_state(ctx, "paused")
        return ApiResponse.json(200, self._view(await self._load(ctx)))

    async def resume_schedule(self, ctx: Context) -> ApiResponse:
        resumed = await self._set_state(ctx, "active")
        if resumed is not None:
            await self._arm(resumed)
        return ApiResponse.json(200, self._view(await self._load(ctx)))

    async def delete_schedule(self, ctx: Context) -> ApiResponse:
        await self._load(ctx)
        await self._table.discard(ctx.tenant_id, ctx.params["schedule_id"])
        return ApiResponse.empty(204)

    def routes(self) -> list[Route]:
        one = "/v1/schedules/{schedule_id}"
        missing = Reply(404, "No such schedule (or not yours).")
        view = Reply(200, "The schedule.", ScheduleView)
        return [
            Route(
                "POST",
                "/v1/schedules",
                self.create_schedule,
                "Create a recurring crawl",
                body=ScheduleCreate,
                replies=(
                    Reply(201, "Created.", ScheduleView),
                    Reply(409, "The tenant has the most schedules it may have."),
                    *JSON_BODY_ERRORS,
                ),
            ),
            Route(
                "GET",
                "/v1/schedules",
                self.list_schedules,
                "List recurring crawls",
                replies=(Reply(200, "Every schedule.", ScheduleList),),
            ),
            Route("GET", one, self.get_schedule, "A recurring crawl", replies=(view, missing)),
            Route(
                "GET",
                f"{one}/runs",
                self.list_schedule_runs,
                "Runs of a recurring crawl, newest first, with their changed/new/gone pages",
                replies=(
                    Reply(200, "The latest runs.", ScheduleRunList),
                    Reply(400, "Bad limit."),
                    missing,
                ),
                params=(
                    Param(
                        "limit",
                        "query",
                        "How many of the latest runs (1-100).",
                        {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                    ),
                ),
            ),
            Route("POST", f"{one}/pause", self.pause_schedule, "Pause", replies=(view, missing)),
            Route("POST", f"{one}/resume", self.resume_schedule, "Resume", replies=(view, missing)),
            Route(
                "DELETE",
                one,
                self.delete_schedule,
                "Delete a recurring crawl",
                replies=(Reply(204, "Deleted."), missing),
            ),
        ]
