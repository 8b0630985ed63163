"""The budget stop on the embedded stack (issue 14), with real engine subprocesses crawling a
site served on 127.0.0.1 and housekeeping on its own timer: mid-crawl the budget is found
spent, the crawl pauses with every page it requested stored, and raising the budget resumes
it to the end with each of the site's pages exactly once, none requested twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.models import Egress
from core.settings import LocalSettings, SkycrawlSettings
from functions.local.bootstrap import build_local_stack
from tests.e2e.support import OPERATOR_KEY, Harness, serve_site

pytestmark = pytest.mark.e2e

PAGES = 40


@pytest.fixture
async def priced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """The local stack with a priced egress: a started container has cost 0.60 at once.
    Its engines (which inherit this environment) send two requests at a time to the site."""
    monkeypatch.setenv("SKYCRAWL_PER_HOST_CONCURRENCY", "2")
    settings = SkycrawlSettings(
        allow_cidrs=["127.0.0.0/8"],
        egresses=[Egress(name="local", cost_per_second=0.01, min_billed_s=60.0)],
        idle_ttl_s=30.0,
        timer_period_s=0.5,
        heartbeat_interval_s=0.5,
        heartbeat_timeout_s=20.0,
        startup_timeout_s=30.0,
        checkpoint_interval_s=30.0,
        stop_grace_s=3.0,
        operator_key=OPERATOR_KEY,
    )
    stack = build_local_stack(settings, LocalSettings(data_dir=tmp_path / "data"))
    stop = asyncio.Event()
    await stack.prepare()
    task = asyncio.create_task(stack.run(stop))
    try:
        yield Harness(stack=stack, stop=stop)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await stack.close()


async def _page_urls(h: Harness, key: str, crawl_id: str) -> list[str]:
    urls: list[str] = []
    cursor = None
    while True:
        query = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
        response = await h.call("GET", f"/v1/crawls/{crawl_id}/pages", key, query=query)
        assert response.status == 200, response.body
        body = json.loads(response.body)
        urls += [p["url"] for p in body["items"]]
        cursor = body.get("next_cursor")
        if not cursor:
            return urls


async def test_a_budget_stop_pauses_cleanly_and_a_raise_resumes_to_every_page_once(
    priced: Harness,
) -> None:
    h = priced
    _, key = await h.tenant("fabrikam", max_containers=1, parallel=1)
    async with serve_site(pages=PAGES, delay_s=0.3) as site:

        def requested() -> dict[str, int]:
            return {p: n for p, n in site.hits.items() if p == "/" or p.startswith("/p/")}

        spec = {"seeds": [site.url], "max_pages": 500, "max_depth": 50, "use_sitemaps": False}
        crawl_id = (await h.json("POST", "/v1/crawls", key, spec))["id"]

        async def some_pages() -> bool:
            return len(requested()) >= 5

        await h.wait_for(some_pages, 60, "the crawl to fetch some pages")
        await h.json("PUT", "/v1/budget", key, {"monthly_amount": 0.5})  # spent already

        async def paused() -> bool:
            status = await h.json("GET", f"/v1/crawls/{crawl_id}", key)
            return bool(status["status"] == "paused")

        await h.wait_for(paused, 30, "the crawl to pause")
        status = await h.json("GET", f"/v1/crawls/{crawl_id}", key)
        assert status["reason"] == "budget reached"
        await asyncio.sleep(1.0)  # a paused crawl requests nothing more
        before = requested()
        stored = await _page_urls(h, key, crawl_id)
        assert 5 <= len(before) < PAGES + 1
        assert sorted(u.removeprefix(site.url[:-1]) for u in stored) == sorted(before)
        assert set(before.values()) == {1}
        refused = await h.call("POST", "/v1/crawls", key, spec)
        assert refused.status == 402, refused.body

        await h.json("PUT", "/v1/budget", key, {"monthly_amount": 1000})

        async def completed() -> bool:
            status = await h.json("GET", f"/v1/crawls/{crawl_id}", key)
            return bool(status["status"] == "completed")

        await h.wait_for(completed, 90, "the resumed crawl to complete")
        done = await h.json("GET", f"/v1/crawls/{crawl_id}", key)
        urls = await _page_urls(h, key, crawl_id)
        assert done["counts"]["fetched"] == PAGES + 1  # "/" and /p/0 … /p/39
        assert len(urls) == len(set(urls)) == PAGES + 1
        assert len(requested()) == PAGES + 1
        assert set(requested().values()) == {1}, "no page requested twice"
