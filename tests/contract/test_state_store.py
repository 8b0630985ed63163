"""StateStore contract: versioned items, compare-and-set, ordered queries, expiry."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from core.errors import Conflict, InvalidRequest
from core.ports import Item, StateStore
from core.ports.state_store import Delete, Replace, write_chains

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.contract.harness import StateHarness


async def test_create_get_and_create_twice(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    table, store = unique("crawls"), state_h.store
    data = {"state": "pending", "n": 1, "nested": {"list": [1, "two", None], "ok": True}}
    created = await store.create(table=table, partition="t1", key="c1", data=data)
    assert (created.version, dict(created.data)) == (1, data)
    assert await store.get(table=table, partition="t1", key="c1") == created
    assert await store.get(table=table, partition="t1", key="other") is None
    with pytest.raises(Conflict):
        await store.create(table=table, partition="t1", key="c1", data={"state": "again"})
    assert (await store.get(table=table, partition="t1", key="c1")) == created


async def test_replace_checks_the_version(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    table, store = unique("crawls"), state_h.store
    v1 = await store.create(table=table, partition="t1", key="c1", data={"n": 1})
    v2 = await store.replace(item=v1, data={"n": 2})
    assert (v2.version, dict(v2.data)) == (2, {"n": 2})
    with pytest.raises(Conflict):
        await store.replace(item=v1, data={"n": 99})
    assert await store.get(table=table, partition="t1", key="c1") == v2


async def test_delete_checks_the_version(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    table, store = unique("crawls"), state_h.store
    v1 = await store.create(table=table, partition="t1", key="c1", data={"n": 1})
    v2 = await store.replace(item=v1, data={"n": 2})
    with pytest.raises(Conflict):
        await store.delete(item=v1)
    await store.delete(item=v2)
    assert await store.get(table=table, partition="t1", key="c1") is None
    with pytest.raises(Conflict):
        await store.delete(item=v2)
    with pytest.raises(Conflict):
        await store.replace(item=v2, data={"n": 3})


async def test_query_in_key_order_with_after_and_limit(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    table, store = unique("crawls"), state_h.store
    keys = [f"k{i:02d}" for i in range(10)]
    for key in random.Random(1).sample(keys, len(keys)):
        await store.create(table=table, partition="t1", key=key, data={"key": key})
    await store.create(table=table, partition="t2", key="k00", data={})
    await store.create(table=unique("other"), partition="t1", key="k00", data={})

    assert [item.key for item in await store.query(table=table, partition="t1")] == keys
    page = await store.query(table=table, partition="t1", after="k03", limit=3)
    assert [item.key for item in page] == ["k04", "k05", "k06"]
    assert await store.query(table=table, partition="t1", after="k09") == []
    assert [i.key for i in await store.query(table=table, partition="t1", limit=2)] == keys[:2]


async def test_scan_returns_the_whole_table(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    table, store = unique("containers"), state_h.store
    for partition, key in [("t2", "a"), ("t1", "b"), ("t1", "a")]:
        await store.create(table=table, partition=partition, key=key, data={})
    await store.create(table=unique("other"), partition="t1", key="z", data={})
    found = sorted((item.partition, item.key) for item in await store.scan(table=table))
    assert found == [("t1", "a"), ("t1", "b"), ("t2", "a")]


async def test_expired_items_are_invisible(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    table, store = unique("sessions"), state_h.store
    expires = state_h.clock.now() + timedelta(seconds=1, microseconds=250)
    item = await store.create(table=table, partition="t1", key="s1", data={}, expires_at=expires)
    assert item.expires_at == expires
    assert (await store.get(table=table, partition="t1", key="s1")) == item
    await store.create(table=table, partition="t1", key="s2", data={})

    await state_h.elapse(1.5)
    assert await store.get(table=table, partition="t1", key="s1") is None
    assert [i.key for i in await store.query(table=table, partition="t1")] == ["s2"]
    assert [i.key for i in await store.scan(table=table)] == ["s2"]
    with pytest.raises(Conflict):
        await store.replace(item=item, data={"late": True})
    again = await store.create(table=table, partition="t1", key="s1", data={"new": True})
    assert again.version == 1


async def test_replace_can_set_and_clear_expiry(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    table, store = unique("sessions"), state_h.store
    item = await store.create(table=table, partition="t1", key="s1", data={})
    soon = state_h.clock.now() + timedelta(seconds=1)
    item = await store.replace(item=item, data={}, expires_at=soon)
    item = await store.replace(item=item, data={"kept": True})
    assert item.expires_at is None
    await state_h.elapse(1.5)
    assert (await store.get(table=table, partition="t1", key="s1")) == item


async def test_bad_input_is_invalid(state_h: StateHarness, unique: Callable[[str], str]) -> None:
    table = unique("t")
    with pytest.raises(InvalidRequest):
        await state_h.store.create(table=table, partition="p", key="k", data={"x": object()})
    with pytest.raises(InvalidRequest):
        await state_h.store.create(
            table=table, partition="p", key="k", data={}, expires_at=datetime(2030, 1, 1)
        )
    assert await state_h.store.get(table=table, partition="p", key="k") is None


async def test_concurrent_compare_and_set_loses_no_increment(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    table = unique("counters")
    await state_h.store.create(table=table, partition="p", key="n", data={"n": 0})
    clients = [state_h.store, state_h.reopen()]

    async def increment(store: StateStore, times: int) -> None:
        for _ in range(times):
            while True:
                item = await store.get(table=table, partition="p", key="n")
                assert item is not None
                try:
                    await store.replace(item=item, data={"n": item.data["n"] + 1})
                    break
                except Conflict:
                    await asyncio.sleep(0)

    await asyncio.gather(*(increment(clients[i % 2], 5) for i in range(16)))
    final = await state_h.store.get(table=table, partition="p", key="n")
    assert final is not None
    assert (final.data["n"], final.version) == (80, 81)


async def test_items_survive_a_restart(state_h: StateHarness, unique: Callable[[str], str]) -> None:
    table = unique("tenants")
    item = await state_h.store.create(table=table, partition="p", key="k", data={"a": 1})
    await state_h.store.close()
    assert await state_h.reopen().get(table=table, partition="p", key="k") == item


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
async def test_nan_and_infinity_are_refused_everywhere(
    state_h: StateHarness, unique: Callable[[str], str], bad: float
) -> None:
    """JSON has no NaN or Infinity: DynamoDB and Firestore would refuse what SQLite stores."""
    table, store = unique("crawls"), state_h.store
    with pytest.raises(InvalidRequest, match="NaN or Infinity"):
        await store.create(table=table, partition="p", key="k", data={"score": bad})
    assert await store.get(table=table, partition="p", key="k") is None
    item = await store.create(table=table, partition="p", key="k", data={"score": 1.5})
    with pytest.raises(InvalidRequest, match="NaN or Infinity"):
        await store.replace(item=item, data={"nested": {"scores": [1.0, bad]}})
    assert await store.get(table=table, partition="p", key="k") == item


async def test_key_order_does_not_matter(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    """The same data written in two key orders is stored, and read back, identically."""
    table, store = unique("crawls"), state_h.store
    forward = {"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": None}, "é": "ü"}
    backward = {"é": "ü", "a": {"c": None, "z": [1, {"x": 3, "y": 2}]}, "b": 1}
    await store.create(table=table, partition="p", key="one", data=forward)
    await store.create(table=table, partition="p", key="two", data=backward)
    one = await store.get(table=table, partition="p", key="one")
    two = await store.get(table=table, partition="p", key="two")
    assert one is not None
    assert two is not None
    assert dict(one.data) == dict(two.data) == forward
    assert list(one.data) == list(two.data) == ["a", "b", "é"]
    assert list(one.data["a"]) == list(two.data["a"]) == ["c", "z"]
    assert list(one.data["a"]["z"][1]) == list(two.data["a"]["z"][1]) == ["x", "y"]


async def test_write_chains_stop_at_a_conflict_and_leave_other_chains_alone(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    """``write_chains``: each chain in order until a Conflict (its later writes not tried),
    the chains independent -- as ``replace`` / ``delete`` one by one, whether the store
    commits them together (``GroupCommit``) or not."""
    table, store = unique("crawls"), state_h.store
    a1 = await store.create(table=table, partition="t1", key="a", data={"n": 1})
    b1 = await store.create(table=table, partition="t1", key="b", data={"n": 1})
    c1 = await store.create(table=table, partition="t1", key="c", data={"n": 1})
    d1 = await store.create(table=table, partition="t1", key="d", data={"n": 1})
    stale = await store.replace(item=c1, data={"n": 2})
    done = await write_chains(
        store,
        [
            [Replace(a1, {"n": 2}), Delete(b1)],  # both apply
            [Replace(c1, {"n": 3}), Delete(d1)],  # c1 is stale: d is left alone
            [Delete(stale)],
        ],
    )
    (a2, b_gone), (refused,), (c_gone,) = done
    assert isinstance(a2, Item)
    assert (a2.version, dict(a2.data)) == (2, {"n": 2})
    assert b_gone is None
    assert c_gone is None
    assert isinstance(refused, Conflict)
    assert await store.get(table=table, partition="t1", key="a") == a2
    assert await store.get(table=table, partition="t1", key="b") is None
    assert await store.get(table=table, partition="t1", key="c") is None
    assert await store.get(table=table, partition="t1", key="d") == d1
    assert await write_chains(store, []) == []


async def test_write_chains_keep_what_a_chain_did_before_its_conflict(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    """A group on distinct items (what a store commits at once, where it can): a chain's
    writes before its lost compare-and-set stay, the ones after it are not tried, and the
    other chains apply."""
    table, store = unique("crawls"), state_h.store
    a, b, c, d, e = [
        await store.create(table=table, partition="t1", key=k, data={"n": 1})
        for k in ("a", "b", "c", "d", "e")
    ]
    stale = Item(table, "t1", "b", {"n": 1}, 7)
    done = await write_chains(
        store,
        [[Replace(a, {"n": 2}), Delete(stale), Delete(c)], [Delete(d), Replace(e, {"n": 2})]],
    )
    (a2, refused), (d_gone, e2) = done
    assert isinstance(refused, Conflict)
    assert isinstance(a2, Item)
    assert isinstance(e2, Item)
    assert d_gone is None
    assert await store.get(table=table, partition="t1", key="a") == a2
    assert await store.get(table=table, partition="t1", key="b") == b
    assert await store.get(table=table, partition="t1", key="c") == c  # not tried
    assert await store.get(table=table, partition="t1", key="d") is None
    assert await store.get(table=table, partition="t1", key="e") == e2
