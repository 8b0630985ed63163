"""Recurring crawls: a cron expression in an IANA time zone, fired through the Scheduler.

Firing
    A schedule is a record (``core.delivery_models.Schedule``) and one ``ScheduleFire`` message
    in flight. The API computes how far the next occurrence is (``croniter`` in the schedule's
    zone, daylight-saving changes included) and sends ``ScheduleFire(remaining_s=…)`` to the
    inbox; the conductor waits it out in steps of the Scheduler's longest native delay (a
    chain of relative delays — no absolute time is handed to a timer, no instance compares a
    stored time with its own clock). When nothing remains, it starts run ``n``: the crawl
    (id derived from the schedule and the run, so a duplicate fire starts nothing twice) with
    ``recrawl_of`` = the previous run's crawl — conditional requests, unchanged pages reported
    as such — and, in the same compare-and-set of the schedule, the ``CrawlSubmitted`` and the
    next ``ScheduleFire`` as outbox entries.

Over budget
    An occurrence that falls while the tenant's monthly budget is spent starts no crawl: the
    schedule counts it (``skipped``, ``last_skipped_at``, ``last_skip_reason``), stays
    active and arms its next occurrence in the same write. The fire carries the count it
    saw, so a duplicate of a skipped fire changes nothing.

Pause, resume, delete
    Pause and resume bump ``generation``: a fire of another generation is dropped, so a
    paused schedule never fires and a resumed one fires once per occurrence. Delete removes
    the record; its fire message then finds nothing.

Limits
    A scheduled run is not counted against ``submissions_per_minute`` (it counts as pending).
    An occurrence missed while the conductor was down fires late, once.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from core.budgets import BudgetMonth, Budgets
from core.conductor.outbox import Outbox, schedule, send
from core.delivery_models import Schedule, schedules_table
from core.errors import Conflict
from core.messages import CrawlSubmitted, ScheduleFire
from core.models import Crawl, OutboxEntry
from core.records import ActiveCrawl, Records, Table, listing_key

log = logging.getLogger("skycrawl.schedules")


def next_occurrence(cron: str, zone: str, now: datetime) -> datetime:
    """The first time after ``now`` that ``cron`` names, read in ``zone``."""
    from croniter import croniter  # with dateutil, ~10 ms: only when a schedule is read

    start = now.astimezone(ZoneInfo(zone))
    nxt: datetime = croniter(cron, start).get_next(datetime)
    return nxt


def delay_to_next(sched: Schedule, now: datetime) -> float:
    return max(0.0, (next_occurrence(sched.cron, sched.timezone, now) - now).total_seconds())


def fire_message(sched: Schedule, now: datetime) -> ScheduleFire:
    return ScheduleFire(
        tenant_id=sched.tenant_id,
        schedule_id=sched.id,
        generation=sched.generation,
        run=sched.runs + 1,
        remaining_s=delay_to_next(sched, now),
        skipped=sched.skipped,
    )


def run_crawl_id(schedule_id: str, run: int) -> str:
    return "cr_" + hashlib.sha256(f"{schedule_id}:{run}".encode()).hexdigest()[:32]


async def on_fire(
    msg: ScheduleFire, *, records: Records, outbox: Outbox, inbox_queue: str, now: datetime
) -> None:
    table = schedules_table(records)
    found = await table.get(msg.tenant_id, msg.schedule_id)
    if found is None or found.value.state != "active" or found.value.generation != msg.generation:
        return  # deleted, paused, or a fire of an earlier generation
    sched = found.value
    if sched.runs >= msg.run or sched.skipped > msg.skipped:
        # a duplicate of a run that started, or of an occurrence skipped: relay what it left
        await outbox.relay(table, sched.tenant_id, sched.id, sched)
        return
    if msg.remaining_s > 0:
        step = min(msg.remaining_s, outbox.max_delay_s)
        later = msg.model_copy(update={"remaining_s": msg.remaining_s - step})
        await outbox.deliver(schedule(inbox_queue, later, step))
        return
    spent = await Budgets(records).reached(sched.tenant_id, now)
    if spent is not None:
        await _skip(msg, sched, spent, table=table, outbox=outbox, inbox_queue=inbox_queue, now=now)
        return
    crawl = await _create_run(records, sched, msg.run, now)

    def started(current: Schedule) -> Schedule | None:
        if current.generation != msg.generation or current.runs >= msg.run:
            return None
        after = current.model_copy(update={"runs": msg.run, "last_crawl_id": crawl.id})
        submitted = send(inbox_queue, CrawlSubmitted(tenant_id=crawl.tenant_id, crawl_id=crawl.id))
        timer = _next_fire(after, now, outbox, inbox_queue)
        return after.model_copy(update={"outbox": (*after.outbox, submitted, timer)})

    await outbox.mutate(table, sched.tenant_id, sched.id, started)
    log.info("schedule %s: run %d is crawl %s", sched.id, msg.run, crawl.id)


def _next_fire(sched: Schedule, now: datetime, outbox: Outbox, inbox_queue: str) -> OutboxEntry:
    """The timer of the schedule's next occurrence (its first relative step)."""
    nxt = fire_message(sched, now)
    step = min(nxt.remaining_s, outbox.max_delay_s)
    rest = nxt.model_copy(update={"remaining_s": nxt.remaining_s - step})
    return schedule(inbox_queue, rest, step)


async def _skip(
    msg: ScheduleFire,
    sched: Schedule,
    spent: BudgetMonth,
    *,
    table: Table[Schedule],
    outbox: Outbox,
    inbox_queue: str,
    now: datetime,
) -> None:
    """The tenant's budget is spent: this occurrence starts no crawl, the schedule records
    why and stays active, its next occurrence armed in the same write."""
    reason = f"budget reached ({spent.spent:.2f} of {spent.amount:g} spent in {spent.month})"

    def skipped(current: Schedule) -> Schedule | None:
        if (
            current.generation != msg.generation
            or current.runs >= msg.run
            or current.skipped > msg.skipped
        ):
            return None
        after = current.model_copy(
            update={
                "skipped": current.skipped + 1,
                "last_skipped_at": now,
                "last_skip_reason": reason,
            }
        )
        timer = _next_fire(after, now, outbox, inbox_queue)
        return after.model_copy(update={"outbox": (*after.outbox, timer)})

    await outbox.mutate(table, sched.tenant_id, sched.id, skipped)
    log.info("schedule %s: occurrence skipped, %s", sched.id, reason)


async def _create_run(records: Records, sched: Schedule, run: int, now: datetime) -> Crawl:
    """The run's crawl, stored with its indexes as the API stores a submission (once)."""
    crawl_id = run_crawl_id(sched.id, run)
    spec = sched.crawl.model_copy(update={"recrawl_of": sched.last_crawl_id})
    crawl = Crawl(id=crawl_id, tenant_id=sched.tenant_id, spec=spec, created_at=now, updated_at=now)
    try:
        await records.crawls.create(sched.tenant_id, crawl_id, crawl)
    except Conflict:
        existing = await records.crawls.get(sched.tenant_id, crawl_id)
        return existing.value if existing is not None else crawl
    entry = ActiveCrawl(crawl_id=crawl_id, created_at=now)
    await records.active.create(sched.tenant_id, crawl_id, entry)
    await records.listing.create(sched.tenant_id, listing_key(now, crawl_id), entry)
    await records.index_pending(crawl)
    return crawl
