"""FirestoreStateStore on the emulator: awkward keys, the document layout, and the
compare-and-set that skips the read when the instance already saw the version."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.gcp.state_store import FirestoreStateStore, document_id
from core.errors import Conflict, InvalidRequest
from tests.integration.gcp import emulators

Names = Callable[[str], str]
AWKWARD = ["a/b", "a%2Fb", ".", "..", "__x__", "ü", "a b", "%", "a", "a&", "a/", "~"]


async def test_awkward_keys_round_trip_in_key_order(
    store: FirestoreStateStore, names: Names
) -> None:
    table = names("sessions")
    for partition in ("tenant/1", "__p__"):
        for key in AWKWARD:
            await store.create(table=table, partition=partition, key=key, data={"k": key})
        found = await store.query(table=table, partition=partition)
        assert [item.key for item in found] == sorted(AWKWARD)
        assert {item.partition for item in found} == {partition}
        for key in AWKWARD:
            item = await store.get(table=table, partition=partition, key=key)
            assert item is not None
            assert item.data == {"k": key}
    page = await store.query(table=table, partition="tenant/1", after="a", limit=2)
    assert [item.key for item in page] == sorted(AWKWARD)[sorted(AWKWARD).index("a") + 1 :][:2]
    assert len(await store.scan(table=table)) == 2 * len(AWKWARD)


async def test_layout_is_one_subcollection_per_table_and_partition(
    store: FirestoreStateStore, names: Names
) -> None:
    table = names("crawls")
    await store.create(table=table, partition="t/1", key="c1", data={"n": [[1, 2], {"x": None}]})
    client = emulators.firestore_client()
    path = f"skycrawl-{table}/t%2F1/skycrawl-{table}-items/c1"
    snapshot = await client.document(path).get()
    assert snapshot.exists
    assert snapshot.get("json") == '{"n":[[1,2],{"x":null}]}'  # nested arrays are fine
    assert (snapshot.get("partition"), snapshot.get("key"), snapshot.get("version")) == (
        "t/1",
        "c1",
        1,
    )


async def test_a_write_by_another_instance_is_caught_without_a_read(names: Names) -> None:
    table = names("fleets")
    first, second = (FirestoreStateStore(client=emulators.firestore_client()) for _ in range(2))
    v1 = await first.create(table=table, partition="p", key="k", data={"n": 1})
    seen = await second.get(table=table, partition="p", key="k")
    assert seen == v1
    await second.replace(item=seen, data={"n": 2})
    with pytest.raises(Conflict):  # first remembers v1's update time; the precondition fails
        await first.replace(item=v1, data={"n": 3})
    with pytest.raises(Conflict):
        await first.delete(item=v1)
    current = await first.get(table=table, partition="p", key="k")
    assert current is not None
    assert (current.version, dict(current.data)) == (2, {"n": 2})


async def test_limits(store: FirestoreStateStore, names: Names) -> None:
    table = names("t")
    with pytest.raises(InvalidRequest):
        await store.create(table=table, partition="p", key="k", data={"x": "y" * 1_000_001})
    with pytest.raises(InvalidRequest):
        await store.create(table=table, partition="p", key="", data={})
    with pytest.raises(InvalidRequest):
        await store.create(table=table, partition="p" * 401, key="k", data={})
    with pytest.raises(InvalidRequest):
        await store.create(table=table, partition="p", key="k", data={"nan": float("nan")})


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_document_ids_are_safe_and_distinct(a: str, b: str) -> None:
    for value in (a, b):
        escaped = document_id(value)
        assert "/" not in escaped
        assert escaped not in (".", "..")
        assert not (escaped.startswith("__") and escaped.endswith("__"))
    assert (document_id(a) == document_id(b)) == (a == b)
