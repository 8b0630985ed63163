"""Dedicated tenant data on the embedded stack, with real engine subprocesses: a crawl is
conducted, crawled and read back while its records live in the tenant's own SQLite file,
and deleting the tenant removes that file and leaves the other tenant's."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.e2e.support import OPERATOR_KEY, Harness, serve_site

pytestmark = pytest.mark.e2e


def crawl_rows(database: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(database)) as conn:
        rows = conn.execute("SELECT partition, key FROM items WHERE tbl = 'crawls'").fetchall()
    return sorted((str(p), str(k)) for p, k in rows)


async def test_crawls_run_from_the_tenants_own_store(dedicated_harness: Harness) -> None:
    h = dedicated_harness
    a, a_key = await h.tenant("a", max_containers=1, parallel=2)
    b, b_key = await h.tenant("b", max_containers=1, parallel=2)
    a_store = Path((await h.stack.tenants.get(a)).resources["tenant_store"])
    b_store = Path((await h.stack.tenants.get(b)).resources["tenant_store"])
    shared = Path(h.stack.local.data_dir) / "state.sqlite3"

    async with serve_site(pages=10) as site:
        spec = {"seeds": [site.url], "max_pages": 50, "max_depth": 5}
        mine = (await h.json("POST", "/v1/crawls", a_key, spec))["id"]
        theirs = (await h.json("POST", "/v1/crawls", b_key, spec))["id"]

        async def both_done() -> bool:
            states = [
                (await h.json("GET", f"/v1/crawls/{crawl}", key))["status"]
                for crawl, key in ((mine, a_key), (theirs, b_key))
            ]
            return all(s in ("completed", "failed", "dead-lettered") for s in states)

        await h.wait_for(both_done, 60, "both crawls to finish")
    status = await h.json("GET", f"/v1/crawls/{mine}", a_key)
    assert status["status"] == "completed", status
    assert status["counts"]["fetched"] == 11
    pages = await h.json("GET", f"/v1/crawls/{mine}/pages", a_key)
    assert len(pages["items"]) == 11

    assert crawl_rows(a_store) == [(a, mine)]
    assert crawl_rows(b_store) == [(b, theirs)]
    assert crawl_rows(shared) == []  # the shared file holds no tenant's crawl

    response = await h.call("DELETE", f"/v1/tenants/{a}", OPERATOR_KEY)
    assert response.status == 204, response.body
    assert not a_store.exists()
    assert crawl_rows(b_store) == [(b, theirs)]
    assert (await h.json("GET", f"/v1/crawls/{theirs}", b_key))["status"] == "completed"
