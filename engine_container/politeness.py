"""Per-host politeness: concurrency cap, minimum gap between requests, ``Retry-After``.

One ``Politeness`` serves every crawl of an engine process (``bus_crawl`` makes one per
container and hands it to each ``Crawler``), so the rules hold per host, not per crawl:

* At most ``per_host_concurrency`` requests are in flight to one host
  (``SKYCRAWL_PER_HOST_CONCURRENCY``).
* Request *starts* to one host are at least ``max(per_host_delay_s, Crawl-delay)`` apart
  (``SKYCRAWL_PER_HOST_DELAY_S``, the fleet-wide default; robots.txt ``Crawl-delay`` wins
  when larger).
* A ``429`` or ``503`` with ``Retry-After`` (seconds or an HTTP date, capped at
  ``max_retry_after_s`` = 300 s) holds every further request to that host until then.

With a ``shared`` limiter (``core.ports.host_limiter.HostLimiter``; the embedded stack sets
``SKYCRAWL_HOST_LIMITER_PATH`` so every engine process on the machine uses one SQLite file)
the same three rules hold across processes and tenants: after the in-process slot, each
request takes a lease from the shared limiter, which reserves its start time. The in-process
layer stays in front, so requests queue in memory and only those about to start touch the
shared store. Host names reach the shared limiter only as a hash (``host_key``).

Memory is bounded: a host's state is dropped as soon as nothing waits on it and its timers have
passed, and when more than ``max_hosts`` idle hosts are remembered the idle ones are dropped
(which only forgets a pending delay).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

from core.ports.host_limiter import HostLimiter

#: A shared lease outlives the longest page budget (300 s) plus slack; a process that dies
#: holding leases frees them after this long.
LEASE_TTL_S = 330.0


def host_key(host: str) -> str:
    """What a shared limiter sees of a host: 128 bits of its SHA-256."""
    return hashlib.sha256(host.encode("utf-8", "replace")).hexdigest()[:32]


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
        shared: HostLimiter | None = None,
    ) -> None:
        self._concurrency = per_host_concurrency
        self._min_delay = min_delay_s
        self._max_retry_after = max_retry_after_s
        self._max_hosts = max_hosts
        self._clock = clock
        self._sleep = sleep
        self._hosts: dict[str, _Host] = {}
        self._shared = shared

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()

    @property
    def tracked_hosts(self) -> int:
        return len(self._hosts)

    def slot(
        self, host: str, crawl_delay: float | None = None, lease_ttl_s: float = LEASE_TTL_S
    ) -> _Slot:
        """``lease_ttl_s``: how long a shared lease lives if its holder dies (the request's
        time budget plus slack)."""
        return _Slot(self, host, max(self._min_delay, crawl_delay or 0.0), lease_ttl_s)

    def defer(self, host: str, seconds: float) -> float:
        """Hold requests to ``host`` for ``seconds`` (capped); returns the wait applied."""
        wait = min(max(seconds, 0.0), self._max_retry_after)
        state = self._state(host)
        state.blocked_until = max(state.blocked_until, self._clock() + wait)
        return wait

    async def hold(self, host: str, seconds: float) -> float:
        """``defer`` here and in the shared limiter (every process holds the host)."""
        wait = self.defer(host, seconds)
        if self._shared is not None:
            await self._shared.hold(host=host_key(host), seconds=wait)
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

    async def _acquire(self, host: str, delay: float, ttl: float) -> str | None:
        """Wait for the host's slot; returns the shared lease (to release), if any."""
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
            return await self._claim(host, delay, ttl) if self._shared is not None else None
        except BaseException:
            self._release(host)
            raise

    async def _claim(self, host: str, delay: float, ttl: float) -> str:
        """A lease from the shared limiter, after waiting for its reserved start."""
        assert self._shared is not None
        key = host_key(host)
        while True:
            grant = await self._shared.acquire(
                host=key, gap_s=delay, concurrency=self._concurrency, ttl_s=ttl
            )
            if grant.lease_id is None:
                await self._sleep(grant.wait_s)
                continue
            try:
                if grant.wait_s > 0:
                    await self._sleep(grant.wait_s)
            except BaseException:
                await asyncio.shield(self._shared.release(lease_id=grant.lease_id))
                raise
            return grant.lease_id

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
    __slots__ = ("_delay", "_host", "_lease", "_politeness", "_ttl")

    def __init__(self, politeness: Politeness, host: str, delay: float, ttl: float) -> None:
        self._politeness = politeness
        self._host = host
        self._delay = delay
        self._ttl = ttl
        self._lease: str | None = None

    async def __aenter__(self) -> None:
        self._lease = await self._politeness._acquire(self._host, self._delay, self._ttl)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        politeness = self._politeness
        try:
            if self._lease is not None and politeness._shared is not None:
                await asyncio.shield(politeness._shared.release(lease_id=self._lease))
        finally:
            politeness._release(self._host)
