"""How an inbox message is settled, decided once for every platform.

``settle(conductor, body, delivery_count=...)`` hands one message to the conductor and returns
an ``InboxOutcome`` -- what to do with the message -- instead of acting on it. Each platform
maps the outcome onto its own settlement, and nothing else decides:

===============  =========================================  ======================================
outcome          when                                       mapped to
===============  =========================================  ======================================
``ack``          the handler stored every change            local: ``ack``; Lambda: a processed
                                                            record; Azure: return (the host
                                                            completes); GCP: 2xx (Pub/Sub acks)
``dead_letter``  the body is not an inbox message at all    local / Lambda: ``bus.dead_letter``
                 (``InvalidRequest``): retrying cannot      (to ``<inbox>-dlq`` with the reason);
                 help. ``reason`` says why                  Azure: the message's own dead-letter
                                                            settlement; GCP: the dead-letter topic
``retry``        any other failure (``Retryable``, a lost   local: ``release`` after
                 race, a store that is down): the message   ``retry_after_s``; Lambda:
                 may succeed later. ``retry_after_s`` is    ``batchItemFailures`` (and the
                 the back-off (1, 2, 4 ... 60 s)            visibility set to the back-off);
                                                            Azure: raise; GCP: nack (5xx)
===============  =========================================  ======================================

A message is acknowledged only after its handler stored every change, so a crash means
redelivery, never loss; a message that keeps failing moves to the dead-letter queue after the
queue's ``max_deliveries`` (the broker's redrive / delivery limit).

``process_lease`` and ``drain_inbox`` are the local loop (and any platform that receives
leases from a ``MessageBus``): ``apply_outcome`` settles a lease on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from enum import StrEnum

from core.conductor import Conductor
from core.errors import Conflict, InvalidRequest
from core.ports import Lease, MessageBus, Queue
from core.ports.message_bus import cut_reason

log = logging.getLogger("skycrawl.inbox")


def retry_delay(delivery_count: int) -> float:
    """Back-off before a failed message is seen again: 1, 2, 4 … 60 seconds."""
    return float(min(60, 2 ** max(0, delivery_count - 1)))


class Settlement(StrEnum):
    ack = "ack"
    dead_letter = "dead_letter"
    retry = "retry"


@dataclass(frozen=True, slots=True)
class InboxOutcome:
    """What to do with one inbox message (see the module docstring)."""

    settlement: Settlement
    reason: str = ""  # why it is dead-lettered or retried (a log line, a DLQ attribute)
    retry_after_s: float = 0.0  # for ``retry``: when to deliver it again

    @classmethod
    def ack(cls) -> InboxOutcome:
        return cls(Settlement.ack)

    @classmethod
    def dead_letter(cls, reason: str) -> InboxOutcome:
        return cls(Settlement.dead_letter, reason=cut_reason(reason))

    @classmethod
    def retry(cls, reason: str, *, delivery_count: int) -> InboxOutcome:
        return cls(Settlement.retry, reason=reason, retry_after_s=retry_delay(delivery_count))


async def settle(conductor: Conductor, body: bytes, *, delivery_count: int = 1) -> InboxOutcome:
    """Handle one inbox message; the outcome says how to settle it (it never raises for a
    failure of the handler: ``CancelledError`` and other ``BaseException``\\ s propagate)."""
    try:
        await conductor.handle_raw(body)
    except InvalidRequest as exc:
        log.error("dead-lettering an inbox message: %s", exc.detail)
        return InboxOutcome.dead_letter(exc.detail)
    except Exception as exc:
        log.warning(
            "inbox message failed (delivery %d): %s",
            delivery_count,
            exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        return InboxOutcome.retry(f"{type(exc).__name__}: {exc}", delivery_count=delivery_count)
    return InboxOutcome.ack()


async def apply_outcome(bus: MessageBus, lease: Lease, outcome: InboxOutcome) -> bool:
    """Settle ``lease`` on ``bus`` as ``outcome`` says; True if it was acknowledged."""
    match outcome.settlement:
        case Settlement.dead_letter:
            await bus.dead_letter(lease=lease, reason=outcome.reason)
            return False
        case Settlement.retry:
            with contextlib.suppress(Conflict):  # the lease ran out: it is delivered again anyway
                await bus.release(lease=lease, delay_s=outcome.retry_after_s)
            return False
    try:
        await bus.ack(lease=lease)
    except Conflict:  # handled too slowly: redelivered meanwhile, and handled again (idempotent)
        log.info("inbox message %s outlived its lease; it was delivered again", lease.message_id)
        return False
    return True


async def process_lease(conductor: Conductor, bus: MessageBus, lease: Lease) -> bool:
    """Handle one leased message; True if it was acknowledged."""
    outcome = await settle(conductor, lease.body, delivery_count=lease.delivery_count)
    return await apply_outcome(bus, lease, outcome)


async def drain_inbox(
    conductor: Conductor,
    bus: MessageBus,
    *,
    queue: str,
    max_messages: int = 10,
    visibility_timeout_s: float = 120,
    wait_s: float = 0,
) -> int:
    """Receive one batch and handle it concurrently; returns how many messages were seen."""
    leases = await bus.receive(
        source=Queue(queue),
        max_messages=max_messages,
        visibility_timeout_s=visibility_timeout_s,
        wait_s=wait_s,
    )
    if leases:
        await asyncio.gather(*(process_lease(conductor, bus, lease) for lease in leases))
    return len(leases)
