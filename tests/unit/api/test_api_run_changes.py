"""A re-crawl's report against the crawl it re-crawled (a schedule's runs, issue 12): counts of
new, changed, unchanged and gone pages in the run's status, and ``GET .../pages?change=``."""

from __future__ import annotations

import json
from typing import Any

from api_harness import SEED, Harness, assert_problem

from core.delivery_models import Schedule, schedules_table
from core.layout import crawl_prefix
from core.models import Crawl, CrawlSpec, CrawlState
from core.run_changes import changes_key
from core.schedules import run_crawl_id

Tenant = tuple[str, str]
T0 = "2030-01-01T00:00:00Z"


def page(path: str, status: int = 200, sha: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "url": f"https://example.com/{path}",
        "status": status,
        "fetched_at": T0,
        "sha256": sha,
        **extra,
    }


EARLIER = [
    page("", sha="root-1"),
    page("same", sha="same-1"),
    page("edited", sha="edited-1"),
    page("removed", sha="removed-1"),  # 404 in the next run
    page("unlinked", sha="unlinked-1"),  # not reached by the next run
    page("broken", status=500, error="HTTP 500"),  # never succeeded: cannot be gone
]
LATER = [
    page("", status=304, sha="root-1", unchanged=True),
    page("same", sha="same-1"),
    page("edited", sha="edited-2"),
    page("removed", status=404),
    page("fresh", sha="fresh-1"),
    page("broken", status=500, error="HTTP 500"),
]


async def _write(harness: Harness, tenant_id: str, crawl_id: str, pages: list[dict]) -> None:
    half = len(pages) // 2
    for seq, chunk in enumerate((pages[:half], pages[half:])):
        data = b"".join(json.dumps(p).encode() + b"\n" for p in chunk)
        key = f"{crawl_prefix(tenant_id, crawl_id)}manifest/{seq:08d}.jsonl"
        await harness.blobs.put(key=key, data=data)


async def _two_runs(harness: Harness, tenant: Tenant) -> tuple[str, str]:
    tenant_id, key = tenant
    first = (await harness.submit(key, SEED)).parsed()["id"]
    await _write(harness, tenant_id, first, EARLIER)
    second = (await harness.submit(key, {**SEED, "recrawl_of": first})).parsed()["id"]
    await _write(harness, tenant_id, second, LATER)
    return first, second


async def _pages(harness: Harness, key: str, crawl_id: str, **query: str) -> list[dict]:
    response = await harness.call("GET", f"/v1/crawls/{crawl_id}/pages", key=key, query=query)
    assert response.status == 200, response.body
    return response.parsed()["items"]


async def _end(harness: Harness, tenant_id: str, crawl_id: str) -> None:
    def end(crawl: Crawl) -> Crawl:
        return crawl.model_copy(update={"state": CrawlState.completed})

    await harness.records.crawls.mutate(tenant_id, crawl_id, end)


async def test_the_run_status_counts_each_kind(harness: Harness, tenant: Tenant) -> None:
    first, second = await _two_runs(harness, tenant)
    running = (await harness.call("GET", f"/v1/crawls/{second}", key=tenant[1])).parsed()
    assert running["changes"] is None  # counted once, when the run has ended
    assert not await harness.blobs.exists(key=changes_key(tenant[0], second))
    await _end(harness, tenant[0], second)
    status = (await harness.call("GET", f"/v1/crawls/{second}", key=tenant[1])).parsed()
    assert status["changes"] == {
        "previous_crawl_id": first,
        "new": 1,
        "changed": 1,
        "unchanged": 2,
        "gone": 2,
    }
    plain = (await harness.call("GET", f"/v1/crawls/{first}", key=tenant[1])).parsed()
    assert plain["changes"] is None  # a first run re-crawled nothing


async def test_pages_of_one_kind_and_the_gone_ones(harness: Harness, tenant: Tenant) -> None:
    _, second = await _two_runs(harness, tenant)
    key = tenant[1]

    def paths(items: list[dict]) -> list[str]:
        return [i["url"].removeprefix("https://example.com/") for i in items]

    new = await _pages(harness, key, second, change="new")
    assert (paths(new), new[0]["change"]) == (["fresh"], "new")
    assert paths(await _pages(harness, key, second, change="changed")) == ["edited"]
    assert paths(await _pages(harness, key, second, change="unchanged")) == ["", "same"]
    gone = await _pages(harness, key, second, change="gone")
    assert paths(gone) == ["removed", "unlinked"]
    assert {g["change"] for g in gone} == {"gone"}
    assert gone[0]["sha256"] == "removed-1"  # the earlier run's record: what was lost

    one = await harness.call(
        "GET", f"/v1/crawls/{second}/pages", key=key, query={"change": "gone", "limit": "1"}
    )
    rest = await _pages(harness, key, second, change="gone", cursor=one.parsed()["next_cursor"])
    assert paths(one.parsed()["items"] + rest) == ["removed", "unlinked"]
    assert all("change" in p and p["change"] is None for p in await _pages(harness, key, second))


async def test_bad_change_queries_are_400(harness: Harness, tenant: Tenant) -> None:
    first, second = await _two_runs(harness, tenant)
    bad = await harness.call(
        "GET", f"/v1/crawls/{second}/pages", key=tenant[1], query={"change": "moved"}
    )
    assert "new, changed, unchanged, gone" in assert_problem(bad, 400)["detail"]
    alone = await harness.call(
        "GET", f"/v1/crawls/{first}/pages", key=tenant[1], query={"change": "new"}
    )
    assert "recrawl_of" in assert_problem(alone, 400)["detail"]


async def test_an_ended_run_keeps_its_counts(harness: Harness, tenant: Tenant) -> None:
    tenant_id, key = tenant
    _, second = await _two_runs(harness, tenant)
    await _end(harness, tenant_id, second)
    before = (await harness.call("GET", f"/v1/crawls/{second}", key=key)).parsed()["changes"]
    assert await harness.blobs.exists(key=changes_key(tenant_id, second))
    await _write(harness, tenant_id, second, [])  # a later read does not recount
    after = (await harness.call("GET", f"/v1/crawls/{second}", key=key)).parsed()["changes"]
    assert after == before


async def test_a_schedules_runs_list_their_changes(harness: Harness, tenant: Tenant) -> None:
    """``GET /v1/schedules/{id}/runs``: newest first, each run against the one before."""
    tenant_id, key = tenant
    created = await harness.call(
        "POST",
        "/v1/schedules",
        key=key,
        json_body={"cron": "0 3 * * *", "timezone": "UTC", "crawl": SEED},
    )
    sched_id = created.parsed()["id"]
    now = harness.clock.now()
    previous = None
    for n, pages in ((1, EARLIER), (2, LATER)):  # the runs the conductor starts
        crawl_id = run_crawl_id(sched_id, n)
        spec = CrawlSpec.model_validate({**SEED, "recrawl_of": previous})
        crawl = Crawl(
            id=crawl_id,
            tenant_id=tenant_id,
            spec=spec,
            state=CrawlState.completed,
            created_at=now,
            updated_at=now,
        )
        await harness.records.crawls.create(tenant_id, crawl_id, crawl)
        await _write(harness, tenant_id, crawl_id, pages)
        previous = crawl_id

    def ran(s: Schedule) -> Schedule:
        return s.model_copy(update={"runs": 2, "last_crawl_id": previous})

    await schedules_table(harness.records).mutate(tenant_id, sched_id, ran)
    runs = await harness.call("GET", f"/v1/schedules/{sched_id}/runs", key=key)
    assert runs.status == 200, runs.body
    items = runs.parsed()["items"]
    assert [(r["run"], r["status"]) for r in items] == [(2, "completed"), (1, "completed")]
    assert items[0]["changes"] == {
        "previous_crawl_id": run_crawl_id(sched_id, 1),
        "new": 1,
        "changed": 1,
        "unchanged": 2,
        "gone": 2,
    }
    assert items[1]["changes"] is None
    latest = await harness.call(
        "GET", f"/v1/schedules/{sched_id}/runs", key=key, query={"limit": "1"}
    )
    assert [r["run"] for r in latest.parsed()["items"]] == [2]
    bad = await harness.call("GET", f"/v1/schedules/{sched_id}/runs", key=key, query={"limit": "0"})
    assert_problem(bad, 400)
