"""The inbox's dead letters, read and requeued through the MessageBus port only.

``peek`` leases up to ``limit`` messages of ``dead_letter_queue(inbox)`` for a few seconds and
releases them at once: the console sees them without consuming them (while one console page
is being rendered another sees fewer; nothing is lost). ``requeue`` leases until it holds the
message with the given id, sends its original body and attributes — without the
``dead_letter_*`` ones the bus added — back to the inbox, then acks the dead letter; a crash
between the two sends it twice, which the conductor's idempotent handlers absorb.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from core.errors import Conflict, NotFound
from core.messages import decode_inbox
from core.ports.message_bus import Lease, MessageBus, OutboundMessage, Queue, dead_letter_queue

PEEK_LEASE_S = 5.0
DEAD_LETTER_ATTRIBUTES = ("dead_letter_reason", "dead_letter_source")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str
    reason: str
    kind: str
    tenant_id: str
    crawl_id: str
    delivery_count: int
    body: str


def describe(lease: Lease) -> DeadLetter:
    kind, tenant_id, crawl_id = "undecodable", "", ""
    try:
        message: Any = decode_inbox(lease.body)
        kind = str(getattr(message, "type", type(message).__name__))
        tenant_id = str(getattr(message, "tenant_id", "") or "")
        crawl_id = str(getattr(message, "crawl_id", "") or "")
    except Exception:  # shown as it is: that is why it was dead-lettered
        kind = "undecodable"
    return DeadLetter(
        message_id=lease.message_id,
        reason=lease.attributes.get("dead_letter_reason", "(no reason recorded)"),
        kind=kind,
        tenant_id=tenant_id,
        crawl_id=crawl_id,
        delivery_count=lease.delivery_count,
        body=lease.body.decode("utf-8", "replace")[:2000],
    )


class DeadLetters:
    def __init__(self, bus: MessageBus, inbox: str) -> None:
        self._bus = bus
        self._inbox = inbox
        self._dlq = Queue(dead_letter_queue(inbox))

    async def _lease_all(self, limit: int) -> list[Lease]:
        leases: list[Lease] = []
        while len(leases) < limit:
            batch = await self._bus.receive(
                source=self._dlq,
                max_messages=min(10, limit - len(leases)),
                visibility_timeout_s=PEEK_LEASE_S,
            )
            if not batch:
                break
            leases.extend(batch)
        return leases

    async def _release(self, leases: list[Lease]) -> None:
        for lease in leases:
            with contextlib.suppress(Conflict, NotFound):
                await self._bus.release(lease=lease)

    async def peek(self, limit: int = 100) -> list[DeadLetter]:
        leases = await self._lease_all(limit)
        try:
            return [describe(lease) for lease in leases]
        finally:
            await self._release(leases)

    async def requeue(self, message_id: str, limit: int = 1000) -> bool:
        """Send dead letter ``message_id`` back to the inbox; False if it is not there."""
        leases = await self._lease_all(limit)
        target = next((lease for lease in leases if lease.message_id == message_id), None)
        try:
            if target is None:
                return False
            attributes = {
                k: v for k, v in target.attributes.items() if k not in DEAD_LETTER_ATTRIBUTES
            }
            await self._bus.send(
                queue=self._inbox, message=OutboundMessage(target.body, attributes)
            )
            await self._bus.ack(lease=target)
            return True
        finally:
            await self._release([lease for lease in leases if lease is not target])
