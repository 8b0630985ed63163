"""Local Scheduler: delayed delivery through the SQLite message bus.

Features
    ``schedule`` inserts the message into the target queue of the bus file, invisible until
    ``delay_s`` from now by the bus's clock -- nothing else runs, no timer thread: the message simply becomes receivable
    at that time, across restarts. The handle is the message id; ``cancel`` deletes the message
    if it was never leased (True), else it is too late (False). A delay of 0 or less
    delivers at once.

Limits
    Delays up to 30 days (``capabilities.max_delay_s``; the core chains longer ones). "Now" is
    the bus's clock, so a test driving a ``FakeClock`` shared by bus and scheduler works.

Settings
    None of its own: it writes to the bus file (``<data_dir>/bus.sqlite3``). Costs nothing.
"""

from __future__ import annotations

from datetime import timedelta

from adapters.local.message_bus import SqliteMessageBus
from adapters.sql_bus import MAX_DELAY_S
from core.errors import InvalidRequest
from core.ports.message_bus import OutboundMessage
from core.ports.scheduler import SchedulerCapabilities


class SqliteScheduler:
    """Scheduler whose timers are invisible rows of the SQLite message bus."""

    capabilities = SchedulerCapabilities(max_delay_s=MAX_DELAY_S, can_cancel=True)

    def __init__(self, bus: SqliteMessageBus) -> None:
        self._bus = bus

    async def schedule(self, *, queue: str, message: OutboundMessage, delay_s: float) -> str:
        if delay_s > MAX_DELAY_S:
            raise InvalidRequest(f"delay of {delay_s:.0f} s is more than {MAX_DELAY_S:.0f} s")
        deliver_at = self._bus.clock.now() + timedelta(seconds=max(0.0, delay_s))
        return await self._bus.send_at(queue=queue, message=message, deliver_at=deliver_at)

    async def close(self) -> None:
        """Nothing of its own: timers live in the bus's database."""

    async def cancel(self, *, handle: str) -> bool:
        return await self._bus.withdraw(message_id=handle)
