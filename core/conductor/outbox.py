"""The transactional outbox: a state change and the messages it implies, in one write.

The StateStore offers compare-and-set on one item, not transactions across items or with the
bus. So a transition that must send something (a dispatch implies ``RunCrawl``, a requeue
``CrawlSubmitted``, an idle container a kill timer, a drain ``DrainContainer`` and a
``StopDue`` timer, a finished crawl or stopped container its usage — ``meter`` entries, applied to
the state store rather than sent) writes those messages *on the record it changes*, in the same
compare-and-set (``Crawl.outbox``, ``Container.outbox``). ``relay`` then delivers them and
clears exactly the entries it delivered. A crash between the write and the relay leaves the
entries on the record: the handler of the redelivered message, or housekeeping, relays them. Receivers are idempotent, so an entry relayed twice is harmless.

Nothing here reads a clock: a scheduled entry carries a relative delay, measured by the
scheduler itself.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal, TypeVar

from core.messages import encode
from core.metering import Meter
from core.models import Frozen, OutboxEntry
from core.ports import OutboundMessage, Ports
from core.ports.message_bus import publish_each
from core.records import Table, Versioned

R = TypeVar("R", bound=Frozen)
log = logging.getLogger("skycrawl.conductor")


Kind = Literal["send", "publish", "schedule", "meter"]


def _entry(kind: Kind, target: str, message: Frozen, delay_s: float = 0.0) -> OutboxEntry:
    outbound = encode(message)
    return OutboxEntry(
        id=uuid.uuid4().hex,
        kind=kind,
        target=target,
        body=outbound.body.decode(),
        attributes=dict(outbound.attributes),
        delay_s=delay_s,
    )


def send(queue: str, message: Frozen) -> OutboxEntry:
    return _entry("send", queue, message)


def publish(topic: str, message: Frozen) -> OutboxEntry:
    return _entry("publish", topic, message)


def schedule(queue: str, message: Frozen, delay_s: float) -> OutboxEntry:
    return _entry("schedule", queue, message, max(0.0, delay_s))


def added_entries(before: Frozen, after: Frozen) -> tuple[OutboxEntry, ...]:
    """The entries of ``after``'s outbox that ``before``'s does not hold."""
    held = {e.id for e in getattr(before, "outbox", ())}
    new: tuple[OutboxEntry, ...] = getattr(after, "outbox", ())
    return tuple(e for e in new if e.id not in held)


def without(record: R, *, sent: set[str]) -> R | None:
    """``record`` with the entries ``sent`` gone from its outbox (None: none was there)."""
    pending: tuple[OutboxEntry, ...] = getattr(record, "outbox", ())
    rest = tuple(e for e in pending if e.id not in sent)
    if len(rest) == len(pending):
        return None
    return record.model_copy(update={"outbox": rest})


def with_entries(record: R, *entries: OutboxEntry) -> R:
    """``record`` with ``entries`` appended to its outbox."""
    current: tuple[OutboxEntry, ...] = getattr(record, "outbox", ())
    return record.model_copy(update={"outbox": (*current, *entries)})


class Outbox:
    """Relays outbox entries through the ports and clears them from their record."""

    def __init__(self, ports: Ports) -> None:
        self._ports = ports
        self.meter = Meter(ports.state)

    @property
    def max_delay_s(self) -> float:
        """The longest delay the scheduler delivers natively (longer ones are chained)."""
        return self._ports.scheduler.capabilities.max_delay_s

    async def deliver(self, entry: OutboxEntry) -> None:
        message = OutboundMessage(body=entry.body.encode(), attributes=entry.attributes)
        if entry.kind == "meter":  # usage, counted once by its dedupe key (core.metering)
            await self.meter.apply_entry(entry)
        elif entry.kind == "send":
            await self._ports.bus.send(queue=entry.target, message=message)
        elif entry.kind == "publish":
            await self._ports.bus.publish(topic=entry.target, message=message)
        else:
            scheduler = self._ports.scheduler
            delay = min(entry.delay_s, scheduler.capabilities.max_delay_s)
            await scheduler.schedule(queue=entry.target, message=message, delay_s=delay)

    async def deliver_each(
        self, records: Sequence[tuple[OutboxEntry, ...]]
    ) -> list[Exception | None]:
        """Deliver the entries of each record (each record's in order, stopping at its
        first failure), and return each record's error (None: all delivered). When they are
        all publishes to one topic and the bus publishes several at once (``GroupPublish``:
        one commit on the local bus, all or nothing), one ``publish_each``; if that fails,
        nothing was sent, and each record's entries go one by one as they did."""
        entries = [e for record in records for e in record]
        topics = {e.target for e in entries}
        if (
            len(entries) > 1
            and len(topics) == 1
            and all(e.kind == "publish" for e in entries)
            and getattr(self._ports.bus, "publish_many", None) is not None
        ):
            messages = [
                OutboundMessage(body=e.body.encode(), attributes=e.attributes) for e in entries
            ]
            try:
                await publish_each(self._ports.bus, topic=topics.pop(), messages=messages)
            except Exception:
                log.info("a grouped publish failed; publishing one by one", exc_info=True)
            else:
                return [None for _ in records]
        errors: list[Exception | None] = []
        for record in records:
            try:
                for entry in record:
                    await self.deliver(entry)
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    async def relay(
        self,
        table: Table[R],
        partition: str,
        key: str,
        record: R | None,
        *,
        only: set[str] | None = None,
        current: Versioned[R] | None = None,
    ) -> R | None:
        """Deliver ``record``'s outbox (``only``: just the entries with these ids), then
        remove the delivered entries from the stored record (whatever else changed
        meanwhile). Returns the record as stored after. ``current``: the record with its
        version as just written, so that clearing needs no read when nothing changed since."""
        entries: tuple[OutboxEntry, ...] = () if record is None else getattr(record, "outbox", ())
        if only is not None:
            entries = tuple(e for e in entries if e.id in only)
        if not entries:
            return record
        for entry in entries:
            await self.deliver(entry)
        sent = {e.id for e in entries}
        cleared, _ = await table.mutate(
            partition, key, partial(without, sent=sent), current=current
        )
        return cleared

    async def mutate(
        self,
        table: Table[R],
        partition: str,
        key: str,
        change: Callable[[R], R | None],
        *,
        current: Versioned[R] | None = None,
    ) -> tuple[R | None, bool]:
        """``Table.mutate``, then relay the entries this change added. Entries a crashed
        instance left are relayed by whoever reads the record to repair it (a redelivered
        message's handler, housekeeping) — not by every write, which would send each entry
        once more for every handler that touches the record before it is cleared."""
        added: set[str] = set()

        def tracked(current: R) -> R | None:
            added.clear()
            new = change(current)
            if new is not None:
                added.update(e.id for e in added_entries(current, new))
            return new

        found, changed = await table.mutate_versioned(partition, key, tracked, current=current)
        value = None if found is None else found.value
        if changed and added:
            value = await self.relay(table, partition, key, value, only=added, current=found)
        return value, changed
