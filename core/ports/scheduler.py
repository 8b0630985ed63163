"""Scheduler port: deliver a message to a queue after a delay; cancel is best effort.

The delay is relative and measured by the service (SQS ``DelaySeconds``, the bus's own clock
for SQLite and PostgreSQL): the core never hands a scheduler an absolute time read from its
own clock, because instances' clocks disagree (see the README's reliability section). Where a
service only takes absolute times (Service Bus scheduled messages, Cloud Tasks, EventBridge
Scheduler) the adapter converts at its edge, with the clock of the one instance that calls it.

The core never relies on cancel (kill timers carry a generation that the conductor checks),
and chains delays longer than ``capabilities.max_delay_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.ports.message_bus import OutboundMessage


@dataclass(frozen=True, slots=True)
class SchedulerCapabilities:
    max_delay_s: float  # longest delay delivered natively; longer ones are chained by the core
    can_cancel: bool


class Scheduler(Protocol):
    capabilities: SchedulerCapabilities

    async def schedule(self, *, queue: str, message: OutboundMessage, delay_s: float) -> str:
        """Deliver ``message`` to ``queue`` ``delay_s`` seconds from now (not before; 0 or less:
        at once); ``InvalidRequest`` beyond ``capabilities.max_delay_s``. Returns a handle."""
        ...

    async def cancel(self, *, handle: str) -> bool:
        """Try to cancel; True if it will not be delivered, False if unknown or too late."""
        ...

    async def close(self) -> None:
        """Release the clients the scheduler opened itself (not the bus it delivers through,
        which ``Ports.close`` closes on its own)."""
        ...
