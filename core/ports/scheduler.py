"""Scheduler port: deliver a message to a queue at a future time; cancel is best effort.

The core never relies on cancel (kill timers carry a generation that the conductor checks),
and chains delays longer than ``capabilities.max_delay_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.ports.message_bus import OutboundMessage


@dataclass(frozen=True, slots=True)
class SchedulerCapabilities:
    max_delay_s: float  # longest delay delivered natively; longer ones are chained by the core
    can_cancel: bool


class Scheduler(Protocol):
    capabilities: SchedulerCapabilities

    async def schedule(self, *, queue: str, message: OutboundMessage, deliver_at: datetime) -> str:
        """Deliver ``message`` to ``queue`` at (not before) ``deliver_at``; returns a handle."""
        ...

    async def cancel(self, *, handle: str) -> bool:
        """Try to cancel; True if it will not be delivered, False if unknown or too late."""
        ...

    async def close(self) -> None:
        """Release the clients the scheduler opened itself (not the bus it delivers through,
        which ``Ports.close`` closes on its own)."""
        ...
