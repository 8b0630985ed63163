"""Clock port: the only way the core learns the time, so tests can drive it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to (``advance``); ``sleep`` advances it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)


class SkewedClock:
    """Another clock read off by ``offset_s`` (positive: ahead) — an instance whose clock
    disagrees with the services' by minutes, as the conductor must tolerate."""

    def __init__(self, base: Clock, offset_s: float) -> None:
        self._base = base
        self.offset = timedelta(seconds=offset_s)

    def now(self) -> datetime:
        return self._base.now() + self.offset

    async def sleep(self, seconds: float) -> None:
        await self._base.sleep(seconds)
