"""Per-host politeness: concurrency cap, minimum gap between requests, ``Retry-After``.

* At most ``per_host_concurrency`` requests of a crawl are in flight to one host
  (``SKYCRAWL_PER_HOST_CONCURRENCY``).
* Request *starts* to one host are at least ``max(per_host_delay_s, Crawl-delay)`` apart
  (``SKYCRAWL_PER_HOST_DELAY_S``; robots.txt ``Crawl-delay`` wins when larger).
* A ``429`` or ``503`` with ``Retry-After`` (seconds or an HTTP date, capped at
  ``max_retry_after_s`` = 300 s) holds every further request to that host until then.

Memory is bounded: a host's state is dropped as soon as nothing waits on it and its timers have
passed, and when more than ``max_hosts`` idle hosts are remembered the idle ones are dropped
(which only forgets a pending delay).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _Host:
    __slots__ = ("blocked_until", "next_start", "semaphore", "users")

    def __init__(self, concurrency: int) -> None:
        self.semaphore = asyncio.Semaphore(concurrency)
        self.next_start = 0.0
        self.blocked_until = 0.0
        self.users = 0


class Politeness:
    """Hands out per-host request slots: ``async with politeness.slot(host, delay): ...``."""

    def __init__(
        self,
        *,
        per_host_concurrency: int,
        min_delay_s: float = 0.0,
        max_retry_after_s: float = 300.0,
        max_hosts: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._concurrency = per_host_concurrency
        self._min_delay = min_delay_s
        self._max_retry_after = max_retry_after_s
        self._max_hosts = max_hosts
        self._clock = clock
        self._sleep = sleep
        self._hosts: dict[str, _Host] = {}

    @property
    def tracked_hosts(self) -> int:
        return len(self._hosts)

    def slot(self, host: str, crawl_delay: float | None = None) -> _Slot:
        return _Slot(self, host, max(self._min_delay, crawl_delay or 0.0))

    def defer(self, host: str, seconds: float) -> float:
        """Hold requests to ``host`` for ``seconds`` (capped); returns the wait applied."""
        wait = min(max(seconds, 0.0), self._max_retry_after)
        state = self._state(host)
        state.blocked_until = max(state.blocked_until, self._clock() + wait)
        return wait

    def _state(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            if len(self._hosts) >= self._max_hosts:
                self._sweep()
            state = self._hosts[host] = _Host(self._concurrency)
        return state

    def _sweep(self) -> None:
        now = self._clock()
        idle = [h for h, s in self._hosts.items() if s.users == 0]
        expired = [
            h for h in idle if max(self._hosts[h].next_start, self._hosts[h].blocked_until) <= now
        ]
        for host in expired if len(self._hosts) - len(expired) < self._max_hosts else idle:
            del self._hosts[host]

    async def _acquire(self, host: str, delay: float) -> None:
        state = self._state(host)
        state.users += 1
        try:
            await state.semaphore.acquire()
        except BaseException:
            self._leave(host, state)
            raise
        try:
            now = self._clock()
            start = max(now, state.next_start)
            state.next_start = start + delay
            while (wait := max(start, state.blocked_until) - self._clock()) > 0:
                await self._sleep(wait)
        except BaseException:
            self._release(host)
            raise

    def _release(self, host: str) -> None:
        state = self._hosts.get(host)
        if state is not None:
            state.semaphore.release()
            self._leave(host, state)

    def _leave(self, host: str, state: _Host) -> None:
        state.users -= 1
        if state.users == 0 and max(state.next_start, state.blocked_until) <= self._clock():
            del self._hosts[host]


class _Slot:
    __slots__ = ("_delay", "_host", "_politeness")

    def __init__(self, politeness: Politeness, host: str, delay: float) -> None:
        self._politeness = politeness
        self._host = host
        self._delay = delay

    async def __aenter__(self) -> None:
        await self._politeness._acquire(self._host, self._delay)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._politeness._release(self._host)
