"""Fixtures of the engine integration tests: local HTTP sites on 127.0.0.x with random ports,
fetchers closed at teardown, and whole crawls into a ``StandaloneSink`` (see ``engine_sites``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from engine_sites import CrawlOutcome, Handler, Site, engine_settings, read_pages

from core.models import CrawlSpec
from engine_container.browser import BrowserPool
from engine_container.crawler import Crawler
from engine_container.fetcher import Fetcher
from engine_container.settings import EngineSettings
from engine_container.sinks import StandaloneSink
from tests.e2e.browser import ensure_chromium

ServeFn = Callable[..., Awaitable[Site]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """``await serve(routes, host="127.0.0.1")``: start a site whose routes map path → handler.

    A route ``"*"`` catches every other path. Every request is counted in ``site.hits`` and
    timed in ``site.times``; ``site.max_active`` is the most requests seen at once.
    """
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler], host: str = "127.0.0.1") -> Site:
        site = Site(host=host, port=0)

        async def dispatch(request: web.Request) -> web.StreamResponse:
            path = request.path_qs
            site.hits[path] += 1
            site.times.setdefault(path, []).append(asyncio.get_running_loop().time())
            site.active += 1
            site.max_active = max(site.max_active, site.active)
            try:
                handler = routes.get(request.path) or routes.get("*")
                if handler is None:
                    return web.Response(status=404, text="not found")
                return await handler(request)
            finally:
                site.active -= 1

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        tcp = web.TCPSite(runner, host, 0)
        await tcp.start()
        site.port = runner.addresses[0][1]
        return site

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def fetchers() -> AsyncIterator[Callable[..., Fetcher]]:
    """``fetchers(settings=None, resolver=None)``: a Fetcher closed at teardown."""
    made: list[Fetcher] = []

    def make(
        settings: EngineSettings | None = None, resolver: AbstractResolver | None = None
    ) -> Fetcher:
        fetcher = Fetcher(settings or engine_settings(), resolver=resolver)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.close()


@pytest.fixture
def crawl(tmp_path: Path) -> Callable[..., Awaitable[CrawlOutcome]]:
    """``await crawl(seeds, settings=..., resolver=..., browser=..., proxy=..., **spec_fields)``:
    a whole crawl (``proxy``: the pool proxy id its route names; ``use_sitemaps`` defaults to
    False here; the returned outcome's ``out`` holds the WARC)."""
    runs = iter(range(1000))

    async def run(
        seeds: Iterable[str],
        *,
        settings: EngineSettings | None = None,
        resolver: AbstractResolver | None = None,
        browser: BrowserPool | None = None,
        proxy: str | None = None,
        **spec: Any,
    ) -> CrawlOutcome:
        settings = settings or engine_settings()
        out = tmp_path / f"crawl-{next(runs)}"
        sink = StandaloneSink(out)
        # these tests count the requests a server sees: sitemaps only where a test asks
        spec.setdefault("use_sitemaps", False)
        spec_model = CrawlSpec(seeds=list(seeds), **spec)
        try:
            async with Fetcher(settings, resolver=resolver) as fetcher:
                crawler = Crawler(spec_model, fetcher, sink, settings, browser=browser, proxy=proxy)
                counts = await crawler.run()
        finally:
            await sink.close()
        return CrawlOutcome(counts, read_pages(out / "pages.jsonl"), out)

    return run


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., BrowserPool]]:
    """``pools(settings, resolver=None, launch_args=())``: a BrowserPool on Debian's Chromium
    (installed when missing), closed at teardown."""
    chromium = ensure_chromium()
    made: list[BrowserPool] = []

    def make(settings: EngineSettings, **kwargs: Any) -> BrowserPool:
        pool = BrowserPool(settings.model_copy(update={"chromium_path": chromium}), **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()
