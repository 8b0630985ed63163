"""``core.ports.state_store.write_chains`` on a store without groups: what calling
``replace`` / ``delete`` in turn does, each chain stopping at its first failure."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from adapters.local.state_store import SqliteStateStore
from core.errors import Conflict
from core.ports.state_store import Delete, Item, Replace, write_chains


class OneByOne:
    """The SQLite store without ``write_chains``, whose ``replace`` of key ``bad`` fails."""

    def __init__(self, inner: SqliteStateStore) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def replace(self, *, item: Item, data: Any, expires_at: Any = None) -> Item:
        self.calls.append(f"replace {item.key}")
        if item.key == "bad":
            raise ConnectionError("connection reset by peer")
        return await self.inner.replace(item=item, data=data, expires_at=expires_at)

    async def delete(self, *, item: Item) -> None:
        self.calls.append(f"delete {item.key}")
        await self.inner.delete(item=item)


async def test_each_chain_stops_at_its_first_failure_and_the_others_go_on(tmp_path: Path) -> None:
    inner = SqliteStateStore(tmp_path / "state.sqlite3")
    try:
        a, bad, c, d = [
            await inner.create(table="t", partition="p", key=k, data={"n": 1})
            for k in ("a", "bad", "c", "d")
        ]
        store = OneByOne(inner)
        stale = Item("t", "p", "c", {}, 7)
        done = await write_chains(
            store,  # type: ignore[arg-type]
            [[Replace(bad, {"n": 2}), Delete(a)], [Delete(stale), Delete(d)], [Delete(c)]],
        )
        (failed,), (refused,), (gone,) = done
        assert isinstance(failed, ConnectionError)
        assert isinstance(refused, Conflict)
        assert gone is None
        assert store.calls == ["replace bad", "delete c", "delete c"]
        assert await inner.get(table="t", partition="p", key="a") == a  # not tried
        assert await inner.get(table="t", partition="p", key="d") == d  # not tried
    finally:
        await inner.close()


class Concurrent:
    """A store whose writes each take a round trip, counting how many are in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.order: list[str] = []

    async def _trip(self, what: str) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.01)
        self.order.append(what)
        self.in_flight -= 1

    async def replace(self, *, item: Item, data: Any, expires_at: Any = None) -> Item:
        await self._trip(f"replace {item.key}")
        return Item(item.table, item.partition, item.key, data, item.version + 1)

    async def delete(self, *, item: Item) -> None:
        await self._trip(f"delete {item.key}")


async def test_chains_go_at_once_and_each_chain_in_its_order() -> None:
    """Without groups (DynamoDB) a batch's chains are independent round trips made at the
    same time, each chain's writes still one after the other."""
    store = Concurrent()
    chains = [
        [Replace(Item("t", "p", f"c{i}", {}, 1), {"n": i}), Delete(Item("t", "b", f"c{i}", {}, 1))]
        for i in range(10)
    ]
    done = await write_chains(store, chains)  # type: ignore[arg-type]
    assert store.most == 10
    assert [len(chain) for chain in done] == [2] * 10
    for i in range(10):
        assert store.order.index(f"replace c{i}") < store.order.index(f"delete c{i}")
