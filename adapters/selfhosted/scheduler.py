"""``PostgresScheduler``: delayed delivery through the PostgreSQL message bus.

Features
    ``schedule`` inserts the message into its queue invisible until ``now() + delay_s`` --
    ``now()`` of the *database*, never of the calling process, so several control-plane
    instances on machines whose clocks disagree still deliver a kill timer after its delay.
    Nothing else runs (no timer process): the row simply becomes receivable then, across
    restarts, and the receivers sleeping on ``LISTEN`` are told when it is due. The handle
    is the message id; ``cancel`` deletes the message if it was never leased (True), else it
    is too late (False). A delay of 0 or less delivers at once.

Limits
    Delays up to 30 days (``capabilities.max_delay_s``; the core chains longer ones).

Settings
    None of its own: it writes to the bus's tables. Costs nothing beyond the database.
"""

from __future__ import annotations

from adapters.selfhosted.message_bus import PostgresMessageBus
from adapters.sql_bus import MAX_DELAY_S
from core.errors import InvalidRequest
from core.ports.message_bus import OutboundMessage
from core.ports.scheduler import SchedulerCapabilities


class PostgresScheduler:
    """Scheduler whose timers are invisible rows of the PostgreSQL message bus."""

    capabilities = SchedulerCapabilities(max_delay_s=MAX_DELAY_S, can_cancel=True)

    def __init__(self, bus: PostgresMessageBus) -> None:
        self._bus = bus

    async def schedule(self, *, queue: str, message: OutboundMessage, delay_s: float) -> str:
        if delay_s > MAX_DELAY_S:
            raise InvalidRequest(f"delay of {delay_s:.0f} s is more than {MAX_DELAY_S:.0f} s")
        return await self._bus.send(queue=queue, message=message, delay_s=max(0.0, delay_s))

    async def cancel(self, *, handle: str) -> bool:
        return await self._bus.withdraw(message_id=handle)

    async def close(self) -> None:
        """Nothing of its own: timers live in the bus's tables (the bus closes the pool)."""
