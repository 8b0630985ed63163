"""Local StateStore: versioned JSON items in one SQLite file (``state.sqlite3``).

Features
    Compare-and-set on every write (``create`` / ``replace`` / ``delete`` check the stored
    version inside one ``BEGIN IMMEDIATE`` transaction), partition queries in key order with
    ``after`` / ``limit`` paging, and per-item expiry: an item whose ``expires_at`` has passed
    is invisible at once and purged lazily (on ``create`` of the same key, and by a sweep at
    most once a minute per instance), so the core never has to delete expired items itself.
    ``write_chains`` (``core.ports.state_store.GroupCommit``) commits several replaces and
    deletes in one transaction.

Processes
    Several processes may open the same file: the database runs in WAL mode with a 30 s busy
    timeout, and writers serialise on SQLite's write lock. A lock still held after the timeout
    surfaces as ``core.errors.Retryable``.

Threads
    Each instance owns one connection (``SqliteThread``, also used by the local message bus).
    A call first runs on the event loop with SQLite's busy timeout at zero: it either gets
    the lock at once, which is nearly always, or fails with ``SQLITE_BUSY`` having done
    nothing. Only then is it shipped to the instance's one worker thread, which waits up to
    the 30 s timeout there, so the loop never waits for another process's lock. The hop to
    the thread cost more than the statements themselves (measured by
    ``bench/routing_bench.py``: about 0.25 ms per call, most of a routing decision's time).
    A lock serialises the loop and the thread on the connection.

Limits
    An item's JSON is at most 1 MiB (``capabilities.max_item_bytes``), encoded by
    ``core.ports.state_store.encode_data`` (sorted keys, NaN / Infinity refused as DynamoDB
    and Firestore refuse them); ``data`` must be JSON serialisable and ``expires_at`` timezone-aware, else ``core.errors.InvalidRequest``.
    Durability is ``synchronous=NORMAL``: a crashed process loses nothing committed, a power
    cut may lose the last transactions.

Settings
    ``SKYCRAWL_LOCAL_DATA_DIR`` (the file is ``<data_dir>/state.sqlite3``). Costs nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from core.clock import Clock, SystemClock
from core.errors import Conflict, InvalidRequest, NotFound, Retryable
from core.ports.state_store import (
    Item,
    Replace,
    StateCapabilities,
    Write,
    Written,
    decode_data,
    encode_data,
    stale,
    written,
)

T = TypeVar("T")

_BUSY_TIMEOUT_S = 30.0
_PURGE_EVERY_S = 60.0
_MAX_ITEM_BYTES = 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    tbl TEXT NOT NULL,
    partition TEXT NOT NULL,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_us INTEGER,
    PRIMARY KEY (tbl, partition, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_expiry ON items (expires_us) WHERE expires_us IS NOT NULL;
"""


class SqliteThread:
    """One SQLite connection, opened lazily and used only by one dedicated worker thread.

    ``read`` runs a function in autocommit mode; ``write`` runs it inside ``BEGIN IMMEDIATE``
    (the database write lock is taken up front, so two processes never interleave a
    read-modify-write) and commits, or rolls back if it raises.
    """

    def __init__(self, path: Path, *, schema: str, create: bool = True) -> None:
        self.path = path
        self._schema = schema
        self._create = create
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{path.name}")
        # Held by whoever uses the connection: the event loop (never waiting for it) or the
        # worker thread.
        self._lock = threading.Lock()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(self._do_read, fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(self._do_write, fn)

    async def write_one(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``write`` for a ``fn`` that makes one statement: that statement is its own
        transaction (SQLite runs each in autocommit mode atomically), without the round of
        ``BEGIN IMMEDIATE`` / ``COMMIT`` around it."""
        return await self._submit(self._do_read, fn)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._locked_close)
        self._executor.shutdown(wait=False)

    async def _submit(
        self,
        runner: Callable[[Callable[[sqlite3.Connection], T]], T],
        fn: Callable[[sqlite3.Connection], T],
    ) -> T:
        if self._closed:
            raise RuntimeError(f"{self.path.name} is closed")
        if self._lock.acquire(blocking=False):
            try:
                return runner(fn)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                # Another process holds the lock; nothing was done (a failed statement rolls
                # its transaction back): wait for it on the worker thread instead.
            finally:
                self._lock.release()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._waiting, runner, fn)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise Retryable(f"{self.path.name}: {exc}") from exc
            raise

    def _waiting(
        self,
        runner: Callable[[Callable[[sqlite3.Connection], T]], T],
        fn: Callable[[sqlite3.Connection], T],
    ) -> T:
        """Run ``fn`` on the worker thread, waiting up to the busy timeout for the lock."""
        with self._lock:
            conn = self._connection(wait=True)
            conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
            try:
                return runner(fn)
            finally:
                conn.execute("PRAGMA busy_timeout=0")

    def _connection(self, *, wait: bool = False) -> sqlite3.Connection:
        if self._conn is None:
            if not self._create and not self.path.exists():
                raise NotFound(f"{self.path} does not exist")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_S if wait else 0.0,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(f"BEGIN IMMEDIATE;\n{self._schema}\nCOMMIT;")
                # Calls on the event loop must never wait: see ``_submit``.
                conn.execute("PRAGMA busy_timeout=0")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _do_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._connection())

    def _do_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _locked_close(self) -> None:
        with self._lock:
            self._do_close()

    def _do_close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _to_us(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise InvalidRequest("expires_at must be timezone-aware")
    return round(moment.timestamp() * 1_000_000)


def _from_us(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1_000_000, UTC)


def _replace_row(
    conn: sqlite3.Connection, item: Item, encoded: str, expires_us: int | None, now: int
) -> int:
    return conn.execute(
        "UPDATE items SET data=?, version=version+1, expires_us=? "
        "WHERE tbl=? AND partition=? AND key=? AND version=? AND (expires_us IS NULL OR expires_us > ?)",
        (encoded, expires_us, item.table, item.partition, item.key, item.version, now),
    ).rowcount


def _delete_row(conn: sqlite3.Connection, item: Item, now: int) -> int:
    return conn.execute(
        "DELETE FROM items WHERE tbl=? AND partition=? AND key=? AND version=? AND (expires_us IS NULL OR expires_us > ?)",
        (item.table, item.partition, item.key, item.version, now),
    ).rowcount


def _replaced(item: Item, data: Mapping[str, Any], expires_us: int | None) -> Item:
    return Item(
        item.table, item.partition, item.key, written(data), item.version + 1, _from_us(expires_us)
    )


def _item(row: tuple[Any, ...]) -> Item:
    table, partition, key, data, version, expires_us = row
    return Item(table, partition, key, decode_data(data), version, _from_us(expires_us))


class SqliteStateStore:
    """StateStore on one SQLite file, safe for several processes at once."""

    capabilities = StateCapabilities(max_item_bytes=_MAX_ITEM_BYTES, native_ttl=True)

    def __init__(self, path: Path, *, clock: Clock | None = None, create: bool = True) -> None:
        """``create=False``: a file that does not exist is ``NotFound``, never made (a
        tenant's own store, ``adapters.local.tenant_stores``)."""
        self._db = SqliteThread(path, schema=_SCHEMA, create=create)
        self._clock: Clock = clock or SystemClock()
        self._last_purge = 0.0

    def _now_us(self) -> int:
        return round(self._clock.now().timestamp() * 1_000_000)

    async def prepare(self) -> None:
        """Open the file now, creating it and its schema if need be."""
        await self._db.read(lambda _conn: None)

    async def get(self, *, table: str, partition: str, key: str) -> Item | None:
        now = self._now_us()

        def op(conn: sqlite3.Connection) -> Item | None:
            row = conn.execute(
                "SELECT tbl, partition, key, data, version, expires_us FROM items WHERE tbl=? AND partition=? AND key=? AND (expires_us IS NULL OR expires_us > ?)",
                (table, partition, key, now),
            ).fetchone()
            return None if row is None else _item(row)

        return await self._db.read(op)

    async def create(
        self,
        *,
        table: str,
        partition: str,
        key: str,
        data: Mapping[str, Any],
        expires_at: datetime | None = None,
    ) -> Item:
        encoded, expires_us, now = (
            encode_data(data, max_bytes=_MAX_ITEM_BYTES),
            _to_us(expires_at),
            self._now_us(),
        )
        if self._purge_due():

            def purge(conn: sqlite3.Connection) -> None:
                conn.execute("DELETE FROM items WHERE expires_us <= ?", (now,))

            await self._db.write_one(purge)

        def op(conn: sqlite3.Connection) -> int:
            # One statement: insert, or take the place of an expired item of the same key;
            # a live one is left alone (no row changed: Conflict).
            return conn.execute(
                "INSERT INTO items (tbl, partition, key, data, version, expires_us) VALUES (?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (tbl, partition, key) DO UPDATE SET data=excluded.data, version=1, "
                "expires_us=excluded.expires_us WHERE items.expires_us IS NOT NULL AND items.expires_us <= ?",
                (table, partition, key, encoded, expires_us, now),
            ).rowcount

        if await self._db.write_one(op) != 1:
            raise Conflict(f"{table}/{partition}/{key} already exists")
        return Item(table, partition, key, written(data), 1, _from_us(expires_us))

    async def replace(
        self, *, item: Item, data: Mapping[str, Any], expires_at: datetime | None = None
    ) -> Item:
        encoded, expires_us, now = (
            encode_data(data, max_bytes=_MAX_ITEM_BYTES),
            _to_us(expires_at),
            self._now_us(),
        )

        def op(conn: sqlite3.Connection) -> int:
            return _replace_row(conn, item, encoded, expires_us, now)

        if await self._db.write_one(op) != 1:
            raise stale(item)
        return _replaced(item, data, expires_us)

    async def delete(self, *, item: Item) -> None:
        now = self._now_us()

        def op(conn: sqlite3.Connection) -> int:
            return _delete_row(conn, item, now)

        if await self._db.write_one(op) != 1:
            raise stale(item)

    async def write_chains(self, *, chains: Sequence[Sequence[Write]]) -> list[list[Written]]:
        """``core.ports.state_store.GroupCommit``: every chain's writes in one
        ``BEGIN IMMEDIATE`` transaction, each statement its own compare-and-set (one that
        changes no row is that write's ``Conflict`` and ends its chain). One commit for n
        writes: a routing decision's outbox clear and backlog delete cost one commit instead
        of two, a batch's ten dispatches one instead of ten (``bench/routing_bench.py``)."""
        now = self._now_us()
        prepared = [
            [
                (
                    write.item,
                    write.data,
                    encode_data(write.data, max_bytes=_MAX_ITEM_BYTES),
                    _to_us(write.expires_at),
                )
                if isinstance(write, Replace)
                else (write.item, None, None, None)
                for write in chain
            ]
            for chain in chains
        ]

        def op(conn: sqlite3.Connection) -> list[list[Written]]:
            results: list[list[Written]] = []
            for chain in prepared:
                done: list[Written] = []
                results.append(done)
                for item, data, encoded, expires_us in chain:
                    if data is None or encoded is None:
                        applied = _delete_row(conn, item, now) == 1
                        result: Written = None
                    else:
                        applied = _replace_row(conn, item, encoded, expires_us, now) == 1
                        result = _replaced(item, data, expires_us)
                    done.append(result if applied else stale(item))
                    if not applied:
                        break
            return results

        return await self._db.write(op)

    async def query(
        self, *, table: str, partition: str, limit: int | None = None, after: str | None = None
    ) -> list[Item]:
        if limit is not None and limit < 0:
            raise InvalidRequest("limit must not be negative")
        now = self._now_us()
        sql = "SELECT tbl, partition, key, data, version, expires_us FROM items WHERE tbl=? AND partition=? AND (expires_us IS NULL OR expires_us > ?)"
        params: list[Any] = [table, partition, now]
        if after is not None:
            sql += " AND key > ?"
            params.append(after)
        sql += " ORDER BY key LIMIT ?"
        params.append(-1 if limit is None else limit)

        def op(conn: sqlite3.Connection) -> list[Item]:
            return [_item(row) for row in conn.execute(sql, params)]

        return await self._db.read(op)

    async def scan(self, *, table: str) -> list[Item]:
        now = self._now_us()

        def op(conn: sqlite3.Connection) -> list[Item]:
            sql = "SELECT tbl, partition, key, data, version, expires_us FROM items WHERE tbl=? AND (expires_us IS NULL OR expires_us > ?) ORDER BY partition, key"
            return [_item(row) for row in conn.execute(sql, (table, now))]

        return await self._db.read(op)

    async def close(self) -> None:
        await self._db.close()

    def _purge_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_purge < _PURGE_EVERY_S:
            return False
        self._last_purge = now
        return True
