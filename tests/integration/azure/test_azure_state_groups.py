"""``TableStateStore.write_chains`` beyond the contract suite, against Azurite: how many
requests a group makes (one entity group transaction per step and partition), a lost ETag
cancelling a transaction whose other writes then go again, and what an error does before
and after a first transaction committed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables.aio import TableClient

from adapters.azure.state_store import TableStateStore
from core.errors import Conflict, Retryable
from core.ports import Item
from core.ports.state_store import Delete, Replace, write_chains


@pytest.fixture
async def stores(connection_string: str) -> AsyncIterator[tuple[TableStateStore, ...]]:
    """Two stores on one table; the first records every request it sends."""
    table, requests = f"groups{uuid.uuid4().hex[:10]}", []

    def record(request: Any) -> None:
        requests.append(f"{request.http_request.method} {request.http_request.url}")

    recorded = TableStateStore(
        TableClient.from_connection_string(
            connection_string, table_name=table, raw_request_hook=record
        )
    )
    other = TableStateStore(TableClient.from_connection_string(connection_string, table_name=table))
    recorded.requests = requests  # type: ignore[attr-defined]
    yield recorded, other
    await recorded.table.delete_table()
    await recorded.close()
    await other.close()


async def _dispatches(store: TableStateStore, n: int) -> list[tuple[Item, Item]]:
    """A crawl record and its backlog entry for each of ``n`` crawls of one tenant: the
    chains a routing batch clears and unindexes (two partitions, ``crawls`` and
    ``backlog``)."""
    made = []
    for i in range(n):
        crawl = await store.create(table="crawls", partition="tn", key=f"c{i}", data={"n": 1})
        entry = await store.create(table="backlog", partition="tn", key=f"b{i}", data={})
        made.append((crawl, entry))
    store.requests.clear()  # type: ignore[attr-defined]
    return made


async def test_each_step_is_one_transaction_per_partition(
    stores: tuple[TableStateStore, TableStateStore],
) -> None:
    store, _ = stores
    made = await _dispatches(store, 5)
    done = await write_chains(
        store, [[Replace(crawl, {"n": 2}), Delete(entry)] for crawl, entry in made]
    )
    assert all(isinstance(a, Item) and b is None for a, b in done)
    # the five replaces in one transaction, then the five deletes: one by one is ten
    assert [r.split("?")[0].rsplit("/", 1)[-1] for r in store.requests] == ["$batch"] * 2  # type: ignore[attr-defined]
    for crawl, entry in made:
        assert await store.get(table="backlog", partition="tn", key=entry.key) is None
        again = await store.get(table="crawls", partition="tn", key=crawl.key)
        assert again is not None
        assert again.version == 2


async def test_a_lost_etag_cancels_the_transaction_and_the_rest_goes_again(
    stores: tuple[TableStateStore, TableStateStore],
) -> None:
    store, other = stores
    made = await _dispatches(store, 3)
    # another conductor moves c1 on: the first store's remembered ETag of v1 is stale
    await other.replace(item=made[1][0], data={"n": 9})
    done = await write_chains(
        store, [[Replace(crawl, {"n": 2}), Delete(entry)] for crawl, entry in made]
    )
    (c0, b0), (lost,), (c2, b2) = done
    assert isinstance(lost, Conflict)
    assert isinstance(c0, Item)
    assert isinstance(c2, Item)
    assert b0 is None
    assert b2 is None
    # the cancelled transaction stored nothing: the retry applied c0 and c2 once each
    assert [r.split("?")[0].rsplit("/", 1)[-1] for r in store.requests] == ["$batch"] * 3  # type: ignore[attr-defined]
    for key, version in (("c0", 2), ("c1", 2), ("c2", 2)):
        found = await other.get(table="crawls", partition="tn", key=key)
        assert found is not None
        assert found.version == version
    assert dict((await other.get(table="crawls", partition="tn", key="c1")).data) == {"n": 9}  # type: ignore[union-attr]
    assert await other.get(table="backlog", partition="tn", key="b1") is not None  # not tried


async def test_an_error_fails_the_group_until_a_transaction_committed(
    stores: tuple[TableStateStore, TableStateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, other = stores
    made = await _dispatches(store, 2)
    chains = [[Replace(crawl, {"n": 2}), Delete(entry)] for crawl, entry in made]
    submit, calls = store.table.submit_transaction, []

    async def busy_at(n: int, operations: Any, **kwargs: Any) -> Any:
        calls.append(n)
        if len(calls) == n:
            raise HttpResponseError(message="server busy")
        return await submit(operations, **kwargs)

    # the first transaction fails: the group raises, nothing stored
    monkeypatch.setattr(store.table, "submit_transaction", lambda ops, **kw: busy_at(1, ops, **kw))
    with pytest.raises(Retryable):
        await write_chains(store, chains)
    for crawl, entry in made:
        assert await other.get(table="crawls", partition="tn", key=crawl.key) == crawl
        assert await other.get(table="backlog", partition="tn", key=entry.key) is not None
    # the second fails after the first committed: the error of each write it carried, as
    # one by one would report it
    calls.clear()
    monkeypatch.setattr(store.table, "submit_transaction", lambda ops, **kw: busy_at(2, ops, **kw))
    done = await write_chains(store, chains)
    assert all(isinstance(a, Item) and isinstance(b, Retryable) for a, b in done)
    for _, entry in made:
        assert await other.get(table="backlog", partition="tn", key=entry.key) is not None
