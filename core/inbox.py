"""Drive the conductor from a leased inbox queue (the local loop; cloud functions that get a
batch from their trigger call ``Conductor.handle_raw`` per record instead).

A message is acknowledged only after its handler stored every change, so a crash means
redelivery, never loss. Undecodable messages are dead-lettered at once with the reason;
other failures release the message with a growing delay until the queue's
``max_deliveries`` moves it to the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.conductor import Conductor
from core.errors import Conflict, InvalidRequest
from core.ports import Lease, MessageBus, Queue

log = logging.getLogger("skycrawl.inbox")


def retry_delay(delivery_count: int) -> float:
    """Back-off before a failed message is seen again: 1, 2, 4 … 60 seconds."""
    return float(min(60, 2 ** max(0, delivery_count - 1)))


async def process_lease(conductor: Conductor, bus: MessageBus, lease: Lease) -> bool:
    """Handle one leased message; True if it was acknowledged."""
    try:
        await conductor.handle_raw(lease.body)
    except InvalidRequest as exc:
        log.error("dead-lettering inbox message %s: %s", lease.message_id, exc.detail)
        await bus.dead_letter(lease=lease, reason=exc.detail)
        return False
    except Exception as exc:
        log.warning(
            "inbox message %s failed (delivery %d): %s",
            lease.message_id,
            lease.delivery_count,
            exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        with contextlib.suppress(Conflict):  # the lease ran out: it is delivered again anyway
            await bus.release(lease=lease, delay_s=retry_delay(lease.delivery_count))
        return False
    try:
        await bus.ack(lease=lease)
    except Conflict:  # handled too slowly: redelivered meanwhile, and handled again (idempotent)
        log.info("inbox message %s outlived its lease; it was delivered again", lease.message_id)
        return False
    return True


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
