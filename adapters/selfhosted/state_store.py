"""``PostgresStateStore``: versioned JSON items in one PostgreSQL table, compare-and-set.

Features
    Every write is one conditional statement: ``create`` is ``INSERT ... ON CONFLICT DO
    NOTHING`` (after dropping an expired item of the same key), ``replace`` and ``delete``
    carry ``WHERE version = %s``; under PostgreSQL's row locks two conductors racing on one
    item see exactly one win, the other gets ``core.errors.Conflict``. ``data`` is stored as
    the text ``core.ports.state_store.encode_data`` returns (a ``text`` column, not
    ``jsonb``, which would reorder keys), so every backend holds the same bytes. Keys and
    partitions sort bytewise (``COLLATE "C"``), as the index tables of ``core/records.py``
    (``backlog``, ``listing``, ``finished``) need, whatever the database's locale.
    Expired items (``expires_at`` passed) are invisible at once and purged lazily (on
    ``create`` of the same key, and by a sweep at most once a minute per instance).

Grouped writes
    ``write_chains`` (``core.ports.state_store.GroupCommit``) makes every replace and delete
    of a group in one transaction, in the order one by one would make them: each statement
    keeps its own ``WHERE version = %s``, a statement that changes no row is that write's
    ``Conflict`` and ends its chain, and the other chains go on -- exactly one by one's
    results, with one commit (one WAL flush, the cost of a write with
    ``synchronous_commit = on``) instead of one each. It still costs a round trip per
    statement. Any other error -- a lost connection, a deadlock with a group of another
    conductor touching the same rows in another order (``Retryable``) -- rolls the whole
    group back: nothing stored, and the caller tries again one by one. No size limit of its
    own: the conductor's groups are a routing batch's writes.

Clocks
    "Expired" compares ``expires_at`` (written by the core from its clock, like a DynamoDB
    TTL attribute) with the database's ``now()`` -- one clock for every instance -- unless a
    ``clock`` is injected (tests driving a ``FakeClock``).

Limits
    An item's JSON is at most 1 MiB (``capabilities.max_item_bytes``); NaN / Infinity and
    what JSON cannot hold are ``InvalidRequest``, as is a naive ``expires_at``.

Settings
    ``SKYCRAWL_SELFHOSTED_DATABASE_URL``; table ``state_items`` (``migrations/0002_state.sql``),
    and with ``SKYCRAWL_TENANT_DATA=dedicated`` one ``<schema>.state_items`` per tenant for its
    crawl and usage records (``adapters.selfhosted.tenant_stores``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from adapters.selfhosted.database import PostgresDatabase
from core.clock import Clock
from core.errors import Conflict, InvalidRequest
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

_MAX_ITEM_BYTES = 1024 * 1024
_PURGE_EVERY_S = 60.0


_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_schema(schema: str) -> str:
    """``schema`` if it is a plain lowercase PostgreSQL identifier; ``InvalidRequest``
    otherwise (a tenant schema name is derived, never taken from a request)."""
    if not _SCHEMA.fullmatch(schema) or schema.startswith("pg_"):
        raise InvalidRequest(f"invalid schema name {schema!r}")
    return schema


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise InvalidRequest("expires_at must be timezone-aware")
    return moment


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One write of ``write_chains`` ready to run: its statement and parameters, and the item
    it leaves when it applies (None: a delete)."""

    statement: str
    params: tuple[Any, ...]
    result: Item | None


def _item(row: tuple[Any, ...]) -> Item:
    table, partition, key, data, version, expires_at = row
    return Item(table, partition, key, decode_data(data), version, expires_at)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The store's SQL, rendered once for its table (the shared one or a tenant's)."""

    get: str
    purge: str
    drop_expired: str
    insert: str
    update: str
    delete: str
    query: str
    scan: str

    @classmethod
    def on(cls, table: sql.Identifier) -> _Statements:
        return cls(
            **{
                name: sql.SQL(template).format(table=table).as_string()
                for name, template in _TEMPLATES.items()
            }
        )


_COLUMNS = "SELECT tbl, partition, key, data, version, expires_at FROM {table}"
_LIVE = " AND (expires_at IS NULL OR expires_at > COALESCE(%s::timestamptz, now()))"
_TEMPLATES = {
    "get": _COLUMNS + " WHERE tbl = %s AND partition = %s AND key = %s" + _LIVE,
    "purge": "DELETE FROM {table} WHERE expires_at <= COALESCE(%s::timestamptz, now())",
    "drop_expired": "DELETE FROM {table} WHERE tbl = %s AND partition = %s AND key = %s"
    " AND expires_at <= COALESCE(%s::timestamptz, now())",
    "insert": "INSERT INTO {table} (tbl, partition, key, data, version, expires_at)"
    " VALUES (%s, %s, %s, %s, 1, %s) ON CONFLICT DO NOTHING",
    "update": "UPDATE {table} SET data = %s, version = version + 1, expires_at = %s"
    " WHERE tbl = %s AND partition = %s AND key = %s AND version = %s"
    " AND (expires_at IS NULL OR expires_at > COALESCE(%s::timestamptz, now()))",
    "delete": "DELETE FROM {table} WHERE tbl = %s AND partition = %s AND key = %s"
    " AND version = %s"
    " AND (expires_at IS NULL OR expires_at > COALESCE(%s::timestamptz, now()))",
    "query": _COLUMNS
    + " WHERE tbl = %s AND partition = %s AND (%s::text IS NULL OR key > %s)"
    + _LIVE
    + " ORDER BY key LIMIT %s",
    "scan": _COLUMNS + " WHERE tbl = %s" + _LIVE + " ORDER BY partition, key",
}


class PostgresStateStore:
    """StateStore on the ``state_items`` table, safe for any number of instances at once."""

    capabilities = StateCapabilities(max_item_bytes=_MAX_ITEM_BYTES, native_ttl=True)

    def __init__(
        self, database: PostgresDatabase, *, clock: Clock | None = None, schema: str | None = None
    ) -> None:
        """``schema``: the ``state_items`` table of that schema instead of the shared one (a
        tenant's own store, ``adapters.selfhosted.tenant_stores``)."""
        table = sql.Identifier("state_items")
        if schema is not None:
            table = sql.Identifier(check_schema(schema), "state_items")
        self._sql = _Statements.on(table)
        self._database = database.attach()
        self._clock = clock
        self._last_purge = 0.0
        self._closed = False

    def _now(self) -> datetime | None:
        """The parameter of ``COALESCE(%s, now())`` in every query: None (the database's
        ``now()``) or the injected clock's time."""
        return None if self._clock is None else self._clock.now()

    async def get(self, *, table: str, partition: str, key: str) -> Item | None:
        async with self._database.connection("get") as conn:
            cur = await conn.execute(
                self._sql.get,
                (table, partition, key, self._now()),
            )
            row = await cur.fetchone()
        return None if row is None else _item(row)

    async def create(
        self,
        *,
        table: str,
        partition: str,
        key: str,
        data: Mapping[str, Any],
        expires_at: datetime | None = None,
    ) -> Item:
        encoded, expires_at = encode_data(data, max_bytes=_MAX_ITEM_BYTES), _aware(expires_at)
        now = self._now()
        async with self._database.transaction("create") as conn:
            if self._purge_due():
                await conn.execute(
                    self._sql.purge,
                    (now,),
                )
            await conn.execute(
                self._sql.drop_expired,
                (table, partition, key, now),
            )
            cur = await conn.execute(
                self._sql.insert,
                (table, partition, key, encoded, expires_at),
            )
            if cur.rowcount != 1:
                raise Conflict(f"{table}/{partition}/{key} already exists")
        return Item(table, partition, key, written(data), 1, expires_at)

    async def replace(
        self, *, item: Item, data: Mapping[str, Any], expires_at: datetime | None = None
    ) -> Item:
        prepared = self._prepare(Replace(item, data, expires_at))
        async with self._database.connection("replace") as conn:
            cur = await conn.execute(prepared.statement, prepared.params)
            if cur.rowcount != 1:
                raise stale(item)
        assert prepared.result is not None  # a replace leaves an item
        return prepared.result

    async def delete(self, *, item: Item) -> None:
        async with self._database.connection("delete") as conn:
            cur = await conn.execute(
                self._sql.delete,
                (item.table, item.partition, item.key, item.version, self._now()),
            )
            if cur.rowcount != 1:
                raise stale(item)

    async def write_chains(self, *, chains: Sequence[Sequence[Write]]) -> list[list[Written]]:
        """``core.ports.state_store.GroupCommit``: every chain's writes in one transaction,
        in the order one by one would make them, each statement its own compare-and-set (one
        that changes no row is that write's ``Conflict`` and ends its chain; the others go
        on). One commit -- one WAL flush -- for n writes. Any other error (a lost
        connection, a deadlock with another group: ``Retryable``) rolls it all back."""
        prepared = [[(write, self._prepare(write)) for write in chain] for chain in chains]
        results: list[list[Written]] = []
        async with self._database.transaction("write_chains") as conn:
            for chain in prepared:
                done: list[Written] = []
                results.append(done)
                for write, ready in chain:
                    cur = await conn.execute(ready.statement, ready.params)
                    if cur.rowcount != 1:
                        done.append(stale(write.item))
                        break
                    done.append(ready.result)
        return results

    def _prepare(self, write: Write) -> _Prepared:
        """``write`` as a statement; ``InvalidRequest`` for data or an expiry the store
        cannot hold (before anything is sent)."""
        item, now = write.item, self._now()
        if not isinstance(write, Replace):
            params = (item.table, item.partition, item.key, item.version, now)
            return _Prepared(self._sql.delete, params, None)
        encoded = encode_data(write.data, max_bytes=_MAX_ITEM_BYTES)
        expires_at = _aware(write.expires_at)
        return _Prepared(
            self._sql.update,
            (encoded, expires_at, item.table, item.partition, item.key, item.version, now),
            Item(
                item.table,
                item.partition,
                item.key,
                written(write.data),
                item.version + 1,
                expires_at,
            ),
        )

    async def query(
        self, *, table: str, partition: str, limit: int | None = None, after: str | None = None
    ) -> list[Item]:
        if limit is not None and limit < 0:
            raise InvalidRequest("limit must not be negative")
        async with self._database.connection("query") as conn:
            cur = await conn.execute(
                self._sql.query,  # LIMIT NULL: no limit
                (table, partition, after, after, self._now(), limit),
            )
            return [_item(row) for row in await cur.fetchall()]

    async def scan(self, *, table: str) -> list[Item]:
        async with self._database.connection("scan") as conn:
            cur = await conn.execute(
                self._sql.scan,
                (table, self._now()),
            )
            return [_item(row) for row in await cur.fetchall()]

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._database.release()

    def _purge_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_purge < _PURGE_EVERY_S:
            return False
        self._last_purge = now
        return True
