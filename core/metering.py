"""Metering: what each tenant used, per hour, recorded as it happens and counted once.

What is counted, and when
    * a **cold start** (``cold_starts``, per egress) when the conductor starts a container;
    * a container's **seconds** (``container_seconds``), **billed seconds** (at least the
      egress's ``min_billed_s``: Fargate bills 60 s for a 20 s task) and their **cost**
      (billed seconds times the egress's ``cost_per_second``), per egress, when its record
      becomes final (stopped or failed), spread over the hours it ran; the extra seconds of a
      minimum billing go to its last hour (a container the runtime refused to start is not
      billed). ``requests`` are the HTTP requests its heartbeats reported
      (``Container.health``);
    * a crawl's **pages** (fetched), **failed pages** and **bytes** (``crawls`` + 1) when it
      becomes terminal, in the hour it finished.

Counted once, under at-least-once delivery
    Each count is an outbox entry of kind ``meter`` (``core.conductor.outbox``), written in
    the same compare-and-set as the state change that implies it (the container becoming
    final, the crawl becoming terminal), so a crash cannot lose it and a redelivered message,
    which finds the change made already, adds no second entry. The entry is applied to the
    tenant's hour bucket (table ``usage``, partition tenant, key ``YYYYMMDDTHH``) by a
    compare-and-set that also stores the event's dedupe key in the bucket: an entry relayed
    twice (a crash between applying and clearing it) is recognised and changes nothing.

Limits
    A bucket holds its dedupe keys (16 characters each), so one tenant's hour holds about
    18,000 events on DynamoDB's 400 KB items (more elsewhere); every event of a tenant's hour
    is a compare-and-set on one item. Live containers are not in the buckets until they stop:
    ``accrued`` prices them as of now (the budget and ``GET /v1/usage`` add it).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from core.errors import Conflict
from core.models import Container, Crawl, Frozen, OutboxEntry
from core.ports.state_store import StateStore
from core.records import Table

Granularity = Literal["hour", "day", "month"]
_HOUR = timedelta(hours=1)


def _round(value: float) -> float:
    return round(value, 9)


class EgressUsage(Frozen):
    """One egress's share of a tenant's container time."""

    container_seconds: float = 0.0
    billed_seconds: float = 0.0
    cost: float = 0.0
    cold_starts: int = 0

    def plus(self, other: EgressUsage) -> EgressUsage:
        return EgressUsage(
            container_seconds=_round(self.container_seconds + other.container_seconds),
            billed_seconds=_round(self.billed_seconds + other.billed_seconds),
            cost=_round(self.cost + other.cost),
            cold_starts=self.cold_starts + other.cold_starts,
        )


class Usage(Frozen):
    """What a tenant used in a period: totals, and container time per egress."""

    container_seconds: float = 0.0
    billed_seconds: float = 0.0
    cost: float = 0.0
    cold_starts: int = 0
    crawls: int = 0
    pages: int = 0
    failed_pages: int = 0
    bytes: int = 0
    requests: int = 0
    egress: dict[str, EgressUsage] = {}

    def plus(self, other: Usage) -> Usage:
        egress = dict(self.egress)
        for name, share in other.egress.items():
            egress[name] = egress[name].plus(share) if name in egress else share
        return Usage(
            container_seconds=_round(self.container_seconds + other.container_seconds),
            billed_seconds=_round(self.billed_seconds + other.billed_seconds),
            cost=_round(self.cost + other.cost),
            cold_starts=self.cold_starts + other.cold_starts,
            crawls=self.crawls + other.crawls,
            pages=self.pages + other.pages,
            failed_pages=self.failed_pages + other.failed_pages,
            bytes=self.bytes + other.bytes,
            requests=self.requests + other.requests,
            egress=dict(sorted(egress.items())),
        )


class UsageBucket(Frozen):
    """A tenant's usage in one UTC hour, and the events counted in it (dedupe keys)."""

    tenant_id: str
    hour: datetime
    usage: Usage = Usage()
    counted: tuple[str, ...] = ()


class MeterEvent(Frozen):
    """The body of a ``meter`` outbox entry: add ``usage`` to ``tenant_id``'s ``hour``,
    once for ``event`` (an identity such as ``container:GUID``)."""

    tenant_id: str
    hour: datetime
    event: str
    usage: Usage


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_key(moment: datetime) -> str:
    return hour_of(moment).strftime("%Y%m%dT%H")


def period_start(moment: datetime, granularity: Granularity) -> datetime:
    hour = hour_of(moment)
    if granularity == "hour":
        return hour
    day = hour.replace(hour=0)
    return day if granularity == "day" else day.replace(day=1)


def next_period(start: datetime, granularity: Granularity) -> datetime:
    if granularity == "hour":
        return start + _HOUR
    if granularity == "day":
        return start + timedelta(days=1)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def _dedupe(event: str) -> str:
    return hashlib.sha256(event.encode()).hexdigest()[:16]


def meter_entry(event: MeterEvent) -> OutboxEntry:
    return OutboxEntry(
        id=uuid.uuid4().hex, kind="meter", target=event.tenant_id, body=event.model_dump_json()
    )


# --------------------------------------------------------------------------- what to count


def cold_start(container: Container) -> OutboxEntry:
    """The entry that counts ``container``'s start (stored with its new record)."""
    usage = Usage(cold_starts=1, egress={container.egress.name: EgressUsage(cold_starts=1)})
    return meter_entry(
        MeterEvent(
            tenant_id=container.tenant_id,
            hour=hour_of(container.started_at),
            event=f"start:{container.id}",
            usage=usage,
        )
    )


def container_time(container: Container, stopped_at: datetime) -> tuple[OutboxEntry, ...]:
    """The entries that bill a container that ran from ``started_at`` to ``stopped_at``:
    one per UTC hour it ran, the minimum billing's extra in the last one."""
    egress = container.egress
    start, end = container.started_at, max(stopped_at, container.started_at)
    ran = (end - start).total_seconds()
    extra = max(0.0, egress.min_billed_s - ran)
    entries: list[OutboxEntry] = []
    hour = hour_of(start)
    while True:
        upper = min(end, hour + _HOUR)
        seconds = max(0.0, (upper - max(start, hour)).total_seconds())
        last = upper >= end
        billed = seconds + (extra if last else 0.0)
        share = EgressUsage(
            container_seconds=_round(seconds),
            billed_seconds=_round(billed),
            cost=_round(billed * egress.cost_per_second),
        )
        usage = Usage(
            container_seconds=share.container_seconds,
            billed_seconds=share.billed_seconds,
            cost=share.cost,
            requests=container.health.requests if last else 0,
            egress={egress.name: share},
        )
        event = MeterEvent(
            tenant_id=container.tenant_id, hour=hour, event=f"run:{container.id}", usage=usage
        )
        entries.append(meter_entry(event))
        if last:
            return tuple(entries)
        hour += _HOUR


def crawl_done(crawl: Crawl, finished_at: datetime) -> OutboxEntry:
    """The entry that counts a crawl that became terminal at ``finished_at``."""
    counts = crawl.counts
    usage = Usage(crawls=1, pages=counts.fetched, failed_pages=counts.failed, bytes=counts.bytes)
    return meter_entry(
        MeterEvent(
            tenant_id=crawl.tenant_id,
            hour=hour_of(finished_at),
            event=f"crawl:{crawl.id}",
            usage=usage,
        )
    )


def accrued(containers: Iterable[Container], now: datetime) -> Usage:
    """What live containers have cost so far (not yet in the buckets)."""
    total = Usage()
    for c in containers:
        if not c.state.live:
            continue
        ran = max(0.0, (now - c.started_at).total_seconds())
        billed = max(ran, c.egress.min_billed_s)
        share = EgressUsage(
            container_seconds=_round(ran),
            billed_seconds=_round(billed),
            cost=_round(billed * c.egress.cost_per_second),
        )
        total = total.plus(
            Usage(
                container_seconds=share.container_seconds,
                billed_seconds=share.billed_seconds,
                cost=share.cost,
                egress={c.egress.name: share},
            )
        )
    return total


# --------------------------------------------------------------------------- the buckets


class Meter:
    """Applies meter entries to the hour buckets and reads them back."""

    def __init__(self, state: StateStore) -> None:
        self.buckets = Table(state, "usage", UsageBucket)

    async def apply(self, event: MeterEvent) -> bool:
        """Add ``event`` to its bucket unless it is counted there already; True if added."""
        key, dedupe = hour_key(event.hour), _dedupe(event.event)
        for _ in range(50):
            found = await self.buckets.get(event.tenant_id, key)
            if found is None:
                bucket = UsageBucket(
                    tenant_id=event.tenant_id,
                    hour=hour_of(event.hour),
                    usage=Usage().plus(event.usage),
                    counted=(dedupe,),
                )
                try:
                    await self.buckets.create(event.tenant_id, key, bucket)
                except Conflict:
                    continue
                return True
            if dedupe in found.value.counted:
                return False  # relayed twice: counted already
            new = found.value.model_copy(
                update={
                    "usage": found.value.usage.plus(event.usage),
                    "counted": (*found.value.counted, dedupe),
                }
            )
            try:
                await self.buckets.replace(found, new)
            except Conflict:
                continue
            return True
        raise Conflict(f"usage/{event.tenant_id}/{key}: too much contention")

    async def apply_entry(self, entry: OutboxEntry) -> bool:
        return await self.apply(MeterEvent.model_validate_json(entry.body))

    async def hours(self, tenant_id: str, start: datetime, end: datetime) -> list[UsageBucket]:
        """The tenant's buckets of the hours that begin in [hour of ``start``, ``end``)."""
        first = hour_of(start)
        after = hour_key(first - _HOUR)
        found: list[UsageBucket] = []
        while True:
            page = await self.buckets.query(tenant_id, limit=500, after=after)
            for versioned in page:
                bucket = versioned.value
                if bucket.hour >= end:
                    return found
                if bucket.hour >= first:
                    found.append(bucket)
            if len(page) < 500:
                return found
            after = page[-1].item.key

    async def total(self, tenant_id: str, start: datetime, end: datetime) -> Usage:
        usage = Usage()
        for bucket in await self.hours(tenant_id, start, end):
            usage = usage.plus(bucket.usage)
        return usage


def periods(
    buckets: Iterable[UsageBucket], granularity: Granularity
) -> list[tuple[datetime, datetime, Usage]]:
    """The periods (hours, days or UTC months) that have usage, oldest first."""
    by_start: dict[datetime, Usage] = {}
    for bucket in buckets:
        begin = period_start(bucket.hour, granularity)
        by_start[begin] = by_start.get(begin, Usage()).plus(bucket.usage)
    return [
        (begin, next_period(begin, granularity), usage) for begin, usage in sorted(by_start.items())
    ]
