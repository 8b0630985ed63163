"""``PostgresDatabase``: the one connection pool the self-hosted adapters share.

The pool (``psycopg_pool.AsyncConnectionPool``, autocommit connections) opens on first use,
inside the event loop that uses it, and then applies the pending migrations
(``adapters/selfhosted/migrations``) once -- on a first plain connection, so that an
unreachable database is reported at once with libpq's own message; adapters take the database in their constructor
(``attach``) and give it back in their ``close`` (``release``): the pool closes when the
last adapter using it has closed, so ``Ports.close`` closes it exactly once.

Durability: by default every commit waits for its WAL to reach the disk (PostgreSQL's
``synchronous_commit = on``), a few milliseconds per write on an ordinary disk. With
``synchronous_commit=False`` (``SKYCRAWL_SELFHOSTED_SYNCHRONOUS_COMMIT=false``) the pool's
sessions commit without waiting: several times the throughput (``bench/README.md``), and a
crash of the database server may lose the last fraction of a second of commits -- a
consistent prefix survives, never a torn one, so the conductor redoes what was lost.

Settings: ``SKYCRAWL_SELFHOSTED_DATABASE_URL`` (a libpq URL or ``key=value`` string),
``SKYCRAWL_SELFHOSTED_POOL_SIZE`` and ``SKYCRAWL_SELFHOSTED_SYNCHRONOUS_COMMIT`` (see
``adapters/selfhosted/settings.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from adapters.selfhosted.errors import translated
from adapters.selfhosted.migrations import migrate


async def _commit_without_waiting(conn: AsyncConnection[Any]) -> None:
    await conn.execute("SET synchronous_commit = off")


class PostgresDatabase:
    """A lazily opened, migrated pool of autocommit connections to ``url``."""

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, synchronous_commit: bool = True
    ) -> None:
        self.url = url
        self._min_size, self._max_size = min_size, max_size
        self._synchronous_commit = synchronous_commit
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._opening: asyncio.Lock | None = None
        self._users = 0

    def attach(self) -> PostgresDatabase:
        """Count one more adapter using this database (each ``release``\\ s it once)."""
        self._users += 1
        return self

    async def release(self) -> None:
        """One adapter is done; the last one closes the pool."""
        self._users -= 1
        if self._users <= 0:
            await self.close()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def pool(self) -> AsyncConnectionPool[AsyncConnection[Any]]:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
                    self.url,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    kwargs={"autocommit": True},
                    configure=None if self._synchronous_commit else _commit_without_waiting,
                    open=False,
                    name="skycrawl",
                )
                # one plain connection first: an unreachable database fails at once with
                # libpq's own message (the pool would retry quietly), then the migrations
                conn = await self.connect()
                try:
                    with translated("migrate"):
                        await migrate(conn)
                finally:
                    await conn.close()
                with translated("connect"):
                    await pool.open(wait=True, timeout=15)
                self._pool = pool
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self, what: str) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled autocommit connection; transient errors of ``what`` become Retryable."""
        pool = await self.pool()
        with translated(what):
            async with pool.connection() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def transaction(self, what: str) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection inside one transaction (committed on exit, rolled back on
        an exception)."""
        async with self.connection(what) as conn, conn.transaction():
            yield conn

    async def connect(self) -> AsyncConnection[Any]:
        """A connection of its own, outside the pool (for ``LISTEN``); the caller closes it."""
        with translated("connect"):
            return await AsyncConnection.connect(self.url, autocommit=True)
