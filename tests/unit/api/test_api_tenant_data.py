"""Dedicated tenant data through the API: each tenant's crawls in its own SQLite store.

Read straight from the files (``sqlite3``), not through the adapters: what a tenant's
records are and where they sit is what an operator would find on disk."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from api_harness import OPERATOR_KEY, Harness


def rows(database: Path, table: str) -> list[tuple[str, str]]:
    """(partition, key) of the items of ``table`` in one SQLite state file."""
    with closing(sqlite3.connect(database)) as conn:
        found = conn.execute(
            "SELECT partition, key FROM items WHERE tbl = ? ORDER BY partition, key", (table,)
        ).fetchall()
    return [(str(p), str(k)) for p, k in found]


async def test_each_tenants_crawls_live_in_its_own_store(dedicated_harness: Harness) -> None:
    harness = dedicated_harness
    a, a_key = await harness.create_tenant("a")
    b, b_key = await harness.create_tenant("b")
    a_store = Path((await harness.tenants.get(a)).resources["tenant_store"])
    b_store = Path((await harness.tenants.get(b)).resources["tenant_store"])
    shared = harness.root / "state.sqlite3"
    assert a_store.is_file()
    assert b_store.is_file()
    assert a_store != b_store

    first = (await harness.submit(a_key)).parsed()["id"]
    second = (await harness.submit(a_key)).parsed()["id"]
    other = (await harness.submit(b_key)).parsed()["id"]

    assert rows(a_store, "crawls") == sorted([(a, first), (a, second)])
    assert rows(b_store, "crawls") == [(b, other)]
    assert rows(shared, "crawls") == []  # none of them in the shared table
    assert len(rows(a_store, "listing")) == 2
    assert rows(shared, "listing") == []
    # what the conductor decides with stays in the control plane's store
    assert sorted(rows(shared, "active")) == sorted([(a, first), (a, second), (b, other)])
    assert rows(a_store, "active") == []

    # the API reads them back as before, each tenant only its own
    listed = (await harness.call("GET", "/v1/crawls", key=a_key)).parsed()
    assert sorted(c["id"] for c in listed["items"]) == sorted([first, second])
    status = await harness.call("GET", f"/v1/crawls/{other}", key=b_key)
    assert status.status == 200
    assert status.parsed()["status"] == "pending"
    assert (await harness.call("GET", f"/v1/crawls/{other}", key=a_key)).status == 404
    cancelled = await harness.call("DELETE", f"/v1/crawls/{first}", key=a_key)
    assert cancelled.status == 202, cancelled.body
    shown = (await harness.call("GET", f"/v1/crawls/{first}", key=a_key)).parsed()
    assert shown["status"] == "cancelled"


async def test_teardown_drops_the_tenants_store_and_nothing_else(
    dedicated_harness: Harness,
) -> None:
    harness = dedicated_harness
    doomed, doomed_key = await harness.create_tenant("doomed")
    kept, kept_key = await harness.create_tenant("kept")
    doomed_store = Path((await harness.tenants.get(doomed)).resources["tenant_store"])
    kept_store = Path((await harness.tenants.get(kept)).resources["tenant_store"])
    await harness.submit(doomed_key)
    kept_crawl = (await harness.submit(kept_key)).parsed()["id"]

    response = await harness.call("DELETE", f"/v1/tenants/{doomed}", key=OPERATOR_KEY)
    assert response.status == 204

    assert not doomed_store.exists()
    assert not doomed_store.parent.exists()
    shared = harness.root / "state.sqlite3"
    with closing(sqlite3.connect(shared)) as conn:
        left = conn.execute("SELECT tbl, key FROM items WHERE partition = ?", (doomed,))
        assert left.fetchall() == []
    assert rows(kept_store, "crawls") == [(kept, kept_crawl)]
    listed = (await harness.call("GET", "/v1/crawls", key=kept_key)).parsed()
    assert [c["id"] for c in listed["items"]] == [kept_crawl]
    # the operator console's view of every crawl reads every remaining tenant's store
    assert [v.value.id for v in await harness.records.crawls.scan()] == [kept_crawl]
