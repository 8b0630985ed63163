"""``core.ports.state_store.write_chains`` on a store without groups: what calling
``replace`` / ``delete`` in turn does, each chain stopping at its first failure."""

from __future__ import annotations

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
