"""What only the PostgreSQL state store promises (the contract suite covers the rest):
``write_chains`` makes a group's writes in one transaction -- one commit, and an error
midway stores none of them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from adapters.selfhosted.database import PostgresDatabase
from adapters.selfhosted.state_store import PostgresStateStore
from core.errors import Conflict
from core.ports import Item
from core.ports.state_store import Delete, Replace, write_chains
from tests.integration.selfhosted.postgres import shared_url


@pytest.fixture
async def store() -> AsyncIterator[PostgresStateStore]:
    opened = PostgresStateStore(PostgresDatabase(shared_url(), max_size=2))
    try:
        yield opened
    finally:
        await opened.close()


async def _items(store: PostgresStateStore, table: str, *keys: str) -> list[Item]:
    return [await store.create(table=table, partition="p", key=k, data={"n": 1}) for k in keys]


async def test_a_group_is_one_transaction(store: PostgresStateStore) -> None:
    """Rows a transaction wrote carry its id (``xmin``): one id for the whole group, where
    one by one would leave one per write."""
    table = f"group{uuid.uuid4().hex[:8]}"
    a, b, c, d = await _items(store, table, "a", "b", "c", "d")
    done = await write_chains(
        store,
        [[Replace(a, {"n": 2}), Replace(b, {"n": 2})], [Delete(c)], [Replace(d, {"n": 2})]],
    )
    assert [[type(result) for result in chain] for chain in done] == [
        [Item, Item],
        [type(None)],
        [Item],
    ]
    database = PostgresDatabase(shared_url(), max_size=1)
    try:
        async with database.connection("xmin") as conn:
            cur = await conn.execute(
                "SELECT key, xmin::text FROM state_items WHERE tbl = %s ORDER BY key", (table,)
            )
            rows = await cur.fetchall()
    finally:
        await database.close()
    assert [key for key, _ in rows] == ["a", "b", "d"]
    assert len({xmin for _, xmin in rows}) == 1


async def test_an_error_midway_stores_nothing(store: PostgresStateStore) -> None:
    """A write the database refuses (a key with a NUL byte, which no text column holds)
    after writes that applied and a lost compare-and-set: the group raises and stores
    nothing -- one by one would have kept the first writes and returned the error."""
    table = f"group{uuid.uuid4().hex[:8]}"
    a, b, c = await _items(store, table, "a", "b", "c")
    stale = Item(table, "p", "c", {}, 7)
    refused = Item(table, "p", "bad\x00key", {}, 1)
    with pytest.raises(psycopg.DataError):
        await write_chains(
            store,
            [[Replace(a, {"n": 2}), Delete(b)], [Delete(stale)], [Delete(refused)]],
        )
    assert await store.get(table=table, partition="p", key="a") == a
    assert await store.get(table=table, partition="p", key="b") == b
    assert await store.get(table=table, partition="p", key="c") == c
    # and the same group without the refused write goes through
    (a2, b_gone), (lost,) = await write_chains(
        store, [[Replace(a, {"n": 2}), Delete(b)], [Delete(stale)]]
    )
    assert isinstance(a2, Item)
    assert a2.version == 2
    assert b_gone is None
    assert isinstance(lost, Conflict)
