"""Lock keeping for ``ServiceBusMessageBus``: the port's visibility timeouts on top of Service
Bus peek-locks, whose duration is fixed per entity (5 minutes at most).

``LockKeeper`` holds every message a bus instance has received and not settled. A lease
longer than the lock duration is kept by renewing the lock (``renew_message_lock``) whenever
less than half of it is left, until the lease's visibility timeout; then renewals stop and the
message reappears within one lock duration. ``release(delay_s=)`` is a lock kept until the
delay has passed and then abandoned. The work happens in ``tend()``, which the bus calls at
every receive, and in a background task that runs only while some lock needs keeping (every
quarter lock duration, at most 10 s; every 250 ms while a delayed release is pending). Time
is the bus's clock, compared with the service's ``locked_until_utc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusReceiver
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessageNotFoundError,
    ServiceBusError,
)

from core.clock import Clock

log = logging.getLogger("skycrawl.azure.servicebus")

#: What settling or renewing a message whose lock is gone raises.
SETTLE_ERRORS = (MessageLockLostError, MessageAlreadySettled, MessageNotFoundError)


@dataclass
class Held:
    """A message this bus instance holds a lock on."""

    receiver: ServiceBusReceiver
    message: ServiceBusReceivedMessage
    renew_until: datetime
    abandon_at: datetime | None = None


class LockKeeper:
    """Received, unsettled messages by lock token, and the keeping of their locks."""

    def __init__(self, clock: Clock, lock_duration_s: float) -> None:
        self._clock = clock
        self._lock_s = lock_duration_s
        self._held: dict[str, Held] = {}
        self._tending = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def hold(self, receipt: str, held: Held, *, keep: bool) -> None:
        """Remember ``held``; ``keep``: it needs tending in the background."""
        self._held[receipt] = held
        if keep and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="servicebus-lock-keeper")

    def take(self, receipt: str) -> Held | None:
        """Stop keeping a lock (the caller settles the message)."""
        return self._held.pop(receipt, None)

    def forget(self, receiver: ServiceBusReceiver | None) -> None:
        """Drop every message of ``receiver`` (its entity is being deleted)."""
        for receipt, held in list(self._held.items()):
            if held.receiver is receiver:
                self._held.pop(receipt, None)

    async def _run(self) -> None:
        while self._held:
            await self.tend()
            pending = any(h.abandon_at is not None for h in self._held.values())
            await asyncio.sleep(0.25 if pending else min(self._lock_s / 4, 10.0))

    async def tend(self) -> None:
        """Abandon delayed releases that are due, renew locks about to lapse."""
        async with self._tending:
            now = self._clock.now()
            for receipt, held in list(self._held.items()):
                if held.abandon_at is not None and now >= held.abandon_at:
                    self._held.pop(receipt, None)
                    with contextlib.suppress(*SETTLE_ERRORS, ServiceBusError):
                        await held.receiver.abandon_message(held.message)
                    continue
                await self._renew_if_due(receipt, held, now)

    async def _renew_if_due(self, receipt: str, held: Held, now: datetime) -> None:
        until = held.abandon_at or held.renew_until
        locked_until = held.message.locked_until_utc
        if locked_until is None:
            return
        left = (locked_until - now).total_seconds()
        if left < -self._lock_s:  # lapsed long ago: somebody else has it by now
            self._held.pop(receipt, None)
        elif now < until and left < self._lock_s / 2:
            try:
                await held.receiver.renew_message_lock(held.message)
            except (*SETTLE_ERRORS, ServiceBusError) as exc:
                log.info("lock of message %s lost: %s", held.message.message_id, exc)
                self._held.pop(receipt, None)

    async def close(self) -> None:
        """Stop the background task; delayed releases are abandoned now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for held in [h for h in self._held.values() if h.abandon_at is not None]:
            with contextlib.suppress(*SETTLE_ERRORS, ServiceBusError):
                await held.receiver.abandon_message(held.message)
        self._held.clear()
