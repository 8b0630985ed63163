"""``PostgresHostLimiter``: the ``HostLimiter`` port on two PostgreSQL tables.

Every engine container of a self-hosted deployment (on one VM or many) that reaches the
database shares one limit per host: ``acquire`` is one short transaction that locks the
host's row (``SELECT ... FOR UPDATE``, so two engines reserving a start for one host queue
behind each other, and engines on other hosts do not wait at all), drops expired leases,
counts the live ones against ``concurrency`` and reserves the next start ``gap_s`` after the
previous one. Times are the *database's* clock (``clock_timestamp()``, epoch seconds), so
engines on machines whose clocks disagree still keep the gap; callers only ever receive
durations. The tables are ``UNLOGGED`` (``migrations/0003_host_limiter.sql``): soft state, not
written to the WAL, emptied by a database crash -- which only forgets pending delays.

Limits: a container killed while holding leases frees them only when they expire (``ttl_s``);
unlike the SQLite limiter there is no owner-pid check, since sharers run on other machines.
Hosts with no lease and no pending delay are swept every ``SWEEP_EVERY`` acquisitions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from psycopg import AsyncConnection

from adapters.selfhosted.database import PostgresDatabase
from core.ports.host_limiter import HostGrant

SWEEP_EVERY = 1000
FULL_RETRY_S = 0.02  # how soon to ask again when a host is at its concurrency limit


class PostgresHostLimiter:
    """Per-host leases and start reservations shared through one PostgreSQL database.

    ``clock`` (epoch seconds) replaces the database's clock in tests only."""

    def __init__(
        self, database: PostgresDatabase, *, clock: Callable[[], float] | None = None
    ) -> None:
        self._database = database.attach()
        self._clock = clock
        self._acquired = 0
        self._closed = False

    async def _now(self, conn: AsyncConnection[Any]) -> float:
        if self._clock is not None:
            return self._clock()
        cur = await conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
        row = await cur.fetchone()
        assert row is not None
        return float(row[0])

    async def _locked_row(self, conn: AsyncConnection[Any], host: str) -> tuple[float, float]:
        await conn.execute(
            "INSERT INTO host_limits VALUES (%s, 0, 0) ON CONFLICT DO NOTHING", (host,)
        )
        cur = await conn.execute(
            "SELECT next_start, blocked_until FROM host_limits WHERE host = %s FOR UPDATE",
            (host,),
        )
        row = await cur.fetchone()
        assert row is not None
        return float(row[0]), float(row[1])

    async def acquire(
        self, *, host: str, gap_s: float, concurrency: int, ttl_s: float
    ) -> HostGrant:
        async with self._database.transaction("host acquire") as conn:
            next_start, blocked = await self._locked_row(conn, host)
            now = await self._now(conn)
            await conn.execute(
                "DELETE FROM host_leases WHERE host = %s AND expires <= %s", (host, now)
            )
            cur = await conn.execute("SELECT count(*) FROM host_leases WHERE host = %s", (host,))
            row = await cur.fetchone()
            if row is not None and row[0] >= concurrency:
                return HostGrant(None, FULL_RETRY_S)
            start = max(now, next_start, blocked)
            lease = uuid.uuid4().hex
            await conn.execute(
                "UPDATE host_limits SET next_start = %s WHERE host = %s", (start + gap_s, host)
            )
            await conn.execute(
                "INSERT INTO host_leases VALUES (%s, %s, %s)", (lease, host, start + ttl_s)
            )
            self._acquired += 1
            if self._acquired % SWEEP_EVERY == 0:
                await conn.execute("DELETE FROM host_leases WHERE expires <= %s", (now,))
                await conn.execute(
                    "DELETE FROM host_limits h WHERE next_start <= %s AND blocked_until <= %s"
                    " AND NOT EXISTS (SELECT 1 FROM host_leases l WHERE l.host = h.host)",
                    (now, now),
                )
        return HostGrant(lease, max(0.0, start - now))

    async def release(self, *, lease_id: str) -> None:
        async with self._database.connection("host release") as conn:
            await conn.execute("DELETE FROM host_leases WHERE id = %s", (lease_id,))

    async def hold(self, *, host: str, seconds: float) -> None:
        async with self._database.transaction("host hold") as conn:
            await self._locked_row(conn, host)
            until = await self._now(conn) + max(0.0, seconds)
            await conn.execute(
                "UPDATE host_limits SET blocked_until = GREATEST(blocked_until, %s)"
                " WHERE host = %s",
                (until, host),
            )

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._database.release()
