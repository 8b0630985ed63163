"""``FirestoreStateStore.write_chains`` on the emulator, beyond the contract suite: a group
is one batched write (one commit), a lost precondition fails the batch whose other writes
then go again, and an error of the commit stores nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from adapters.gcp.state_store import FirestoreStateStore
from core.errors import Conflict, Retryable
from core.ports import Item
from core.ports.state_store import Delete, Replace, write_chains

Names = Callable[[str], str]


def _count_batches(monkeypatch: pytest.MonkeyPatch, store: FirestoreStateStore) -> list[int]:
    """The number of writes of each batch the store commits: its own groups, and the
    batch of one the library makes for each ``update``."""
    client, sizes = store._client, []
    make = client.batch

    def batch() -> Any:
        made = make()
        commit = made.commit

        async def counted(**kwargs: Any) -> Any:
            sizes.append(len(made._write_pbs))
            return await commit(**kwargs)

        made.commit = counted
        return made

    monkeypatch.setattr(client, "batch", batch)
    return sizes


async def _dispatches(store: FirestoreStateStore, table: str, n: int) -> list[tuple[Item, Item]]:
    return [
        (
            await store.create(table=table, partition="tn", key=f"c{i}", data={"n": 1}),
            await store.create(table=f"{table}-backlog", partition="tn", key=f"b{i}", data={}),
        )
        for i in range(n)
    ]


async def test_a_group_is_one_batched_write(
    store: FirestoreStateStore, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = names("crawls")
    made = await _dispatches(store, table, 4)
    sizes = _count_batches(monkeypatch, store)
    done = await write_chains(
        store, [[Replace(crawl, {"n": 2}), Delete(entry)] for crawl, entry in made]
    )
    assert all(isinstance(a, Item) and b is None for a, b in done)
    assert sizes == [8]  # one by one: eight batches of one
    for crawl, entry in made:
        assert await store.get(table=f"{table}-backlog", partition="tn", key=entry.key) is None
        again = await store.get(table=table, partition="tn", key=crawl.key)
        assert again is not None
        assert again.version == 2


async def test_a_lost_precondition_fails_the_batch_and_the_rest_goes_again(
    store: FirestoreStateStore, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = names("crawls")
    made = await _dispatches(store, table, 3)
    other = FirestoreStateStore(client=store._client)  # another conductor, same database
    await other.replace(item=made[1][0], data={"n": 9})  # the store's update time is stale
    sizes = _count_batches(monkeypatch, store)
    done = await write_chains(
        store, [[Replace(crawl, {"n": 2}), Delete(entry)] for crawl, entry in made]
    )
    (c0, b0), (lost,), (c2, b2) = done
    assert isinstance(lost, Conflict)
    assert isinstance(c0, Item)
    assert isinstance(c2, Item)
    assert b0 is None
    assert b2 is None
    assert sizes == [6, 4]  # the failed batch stored nothing: the second had c0 and c2 again
    c1 = await store.get(table=table, partition="tn", key="c1")
    assert c1 is not None
    assert (c1.version, dict(c1.data)) == (2, {"n": 9})
    assert await store.get(table=f"{table}-backlog", partition="tn", key="b1") is not None


@pytest.mark.parametrize(
    "error",
    [
        gexc.ServiceUnavailable("the backend went away"),
        # a lost precondition that no read explains, twice: given up, not looped on
        gexc.FailedPrecondition("the update time does not match"),
    ],
)
async def test_an_error_of_the_commit_stores_nothing(
    store: FirestoreStateStore,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
    error: gexc.GoogleAPICallError,
) -> None:
    """The backend fails every commit of more than one write: the group raises and stores
    nothing (one by one, each write a batch of its own, would have stored them all)."""
    table = names("crawls")
    made = await _dispatches(store, table, 2)
    client = store._client
    make = client.batch

    def failing() -> Any:
        batch = make()
        commit = batch.commit

        async def unless_alone(**kwargs: Any) -> Any:
            if len(batch._write_pbs) > 1:
                raise error
            return await commit(**kwargs)

        batch.commit = unless_alone
        return batch

    monkeypatch.setattr(client, "batch", failing)
    with pytest.raises(Retryable):
        await write_chains(
            store, [[Replace(crawl, {"n": 2}), Delete(entry)] for crawl, entry in made]
        )
    monkeypatch.undo()
    for crawl, entry in made:
        assert await store.get(table=table, partition="tn", key=crawl.key) == crawl
        assert await store.get(table=f"{table}-backlog", partition="tn", key=entry.key) == entry
