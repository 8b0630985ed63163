"""Politeness and retries as a server sees them: concurrency per host, Retry-After, backoff."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from aiohttp import web
from engine_sites import Site, StaticResolver, engine_settings, links_page


async def test_per_host_concurrency_is_never_exceeded(serve, crawl) -> None:
    active: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    async def slow_page(request: web.Request) -> web.Response:
        host = request.host.split(":")[0]
        active[host] += 1
        peak[host] = max(peak[host], active[host])
        await asyncio.sleep(0.03)
        active[host] -= 1
        return web.Response(text="<html></html>", content_type="text/html")

    routes: dict[str, object] = {"*": slow_page}
    site: Site = await serve(routes)
    hrefs = [f"/p{i}" for i in range(20)]
    hrefs += [f"http://b.test:{site.port}/p{i}" for i in range(20)]
    routes["/"] = links_page(*hrefs)
    resolver = StaticResolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    settings = engine_settings(concurrency=16, per_host_concurrency=3)
    outcome = await crawl(
        [site.url("/", "a.test")],
        settings=settings,
        resolver=resolver,
        scope="any",
        respect_robots=False,
    )
    assert outcome.counts.fetched == 41
    assert peak == {"a.test": 3, "b.test": 3}


async def test_retry_after_on_429_holds_the_host(serve, crawl) -> None:
    async def busy(request: web.Request) -> web.Response:
        if site.hits["/busy"] == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(text="<html></html>", content_type="text/html")

    site: Site = await serve({"/busy": busy})
    outcome = await crawl([site.url("/busy")], respect_robots=False)
    first, second = site.times["/busy"]
    assert second - first >= 0.95
    assert outcome.pages[0]["status"] == 200
    assert outcome.counts.fetched == 1


async def test_retry_after_date_on_503_holds_the_host(serve, crawl) -> None:
    async def busy(request: web.Request) -> web.Response:
        if site.hits["/"] == 1:
            when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
            return web.Response(status=503, headers={"Retry-After": when})
        return web.Response(text="<html></html>", content_type="text/html")

    site: Site = await serve({"/": busy})
    await crawl([site.url("/")], respect_robots=False)
    first, second = site.times["/"]
    assert second - first >= 0.9  # HTTP dates have whole seconds


async def test_transient_503_is_retried_with_backoff_then_succeeds(serve, crawl) -> None:
    async def flaky(request: web.Request) -> web.Response:
        if site.hits["/"] <= 2:
            return web.Response(status=503)
        return web.Response(text="<html><title>up</title></html>", content_type="text/html")

    site: Site = await serve({"/": flaky})
    settings = engine_settings(retries=3, retry_base_s=0.05)
    outcome = await crawl([site.url("/")], settings=settings, respect_robots=False)
    assert site.hits["/"] == 3
    page = outcome.pages[0]
    assert (page["status"], page["title"], page["error"]) == (200, "up", None)
    assert (outcome.counts.fetched, outcome.counts.failed) == (1, 0)


async def test_retries_give_up_after_the_limit(serve, crawl) -> None:
    async def down(request: web.Request) -> web.Response:
        return web.Response(status=502)

    site: Site = await serve({"/": down})
    settings = engine_settings(retries=2, retry_base_s=0.01)
    outcome = await crawl([site.url("/")], settings=settings, respect_robots=False)
    assert site.hits["/"] == 3
    assert outcome.pages[0]["status"] == 502
    assert outcome.counts.failed == 1


async def test_no_retry_on_404(serve, crawl) -> None:
    site: Site = await serve({})
    outcome = await crawl([site.url("/missing")], respect_robots=False)
    assert site.hits["/missing"] == 1
    assert outcome.pages[0]["status"] == 404
    assert outcome.counts.failed == 1
