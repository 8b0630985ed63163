"""Politeness holds per host across crawls, containers and tenants, as the server sees it:
three crawls of one host at once never start two requests closer than the delay."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from pathlib import Path

from aiohttp import web
from engine_sites import Site, engine_settings, links_page, text

from adapters.local.blob_store import FileBlobStore
from core.messages import RunCrawl
from core.models import CrawlCounts, CrawlSpec
from engine_container.bus_crawl import crawl_runner
from engine_container.fetcher import Fetcher

REPO = Path(__file__).resolve().parents[3]
DELAY = 0.3
# The limiter spaces the *grants*; the server sees a request a little late when this machine
# is loaded (a request granted on time, the one before it late), so the closest gap the server
# sees may fall short by that much. A limiter that does not space at all gives gaps near 0, and
# the span of all requests (``spaced``) must hold the full delay between every two.
SLACK = 0.1


def spaced(times: list[float], delay: float) -> bool:
    """The requests took at least the delay between each two, in all."""
    return times[-1] - times[0] >= (len(times) - 1) * delay - SLACK


def page_times(site: Site) -> list[float]:
    """Server-side arrival times of every page request (robots.txt excluded)."""
    return sorted(t for path, times in site.times.items() if path != "/robots.txt" for t in times)


def closest_gap(times: list[float]) -> float:
    return min(b - a for a, b in itertools.pairwise(times))


async def three_sections(serve, robots: str | None = None, pages: int = 3) -> Site:
    routes: dict[str, object] = {"*": links_page()}
    for section in "abc":
        routes[f"/{section}/"] = links_page(*[f"/{section}/{i}" for i in range(pages)])
    if robots is not None:
        routes["/robots.txt"] = text(robots)
    return await serve(routes)


async def test_three_crawls_of_one_container_share_the_host_delay(serve, tmp_path: Path) -> None:
    site = await three_sections(serve)
    settings = engine_settings(per_host_delay_s=DELAY, concurrency=8)
    blobs = FileBlobStore(tmp_path / "blobs")

    async def report(counts: CrawlCounts) -> None:
        pass

    async with Fetcher(settings) as fetcher:
        run = crawl_runner(blobs, fetcher, settings)  # one runner per container, as in bus mode
        results = await asyncio.gather(
            *[
                run(
                    RunCrawl(
                        container_id="c1",
                        tenant_id=f"tenant-{section}",  # different tenants, same host
                        crawl_id=f"crawl-{section}",
                        attempt=1,
                        spec=CrawlSpec(
                            seeds=[site.url(f"/{section}/")],
                            respect_robots=False,
                            use_sitemaps=False,
                            formats=[],  # the limiter alone (see --format none below)
                        ),
                    ),
                    report,
                )
                for section in "abc"
            ]
        )
    assert [r.fetched for r in results] == [4, 4, 4]
    times = page_times(site)
    assert len(times) == 12
    assert closest_gap(times) >= DELAY - SLACK
    assert spaced(times, DELAY)


async def test_engine_processes_sharing_a_limiter_file_respect_crawl_delay(
    serve, tmp_path: Path
) -> None:
    # Crawl-delay (0.25 s) is larger than the fleet default (0.1 s): it wins, fleet-wide
    site = await three_sections(serve, robots="User-agent: *\nCrawl-delay: 0.25\n", pages=5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCRAWL_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "SKYCRAWL_HOST_LIMITER_PATH": str(tmp_path / "hosts.sqlite3"),
        "SKYCRAWL_PER_HOST_DELAY_S": "0.1",
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine_container",
            "--standalone",
            site.url(f"/{section}/"),
            "--out",
            str(tmp_path / section),
            "--allow-cidr",
            "127.0.0.0/8",
            "--no-sitemaps",
            "--format",  # the limiter alone: rendering formats adds scheduling jitter under load
            "none",
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for section in "abc"
    ]
    for proc in procs:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
    times = page_times(site)
    assert len(times) == 18
    assert closest_gap(times) >= 0.25 - SLACK
    assert spaced(times, 0.25)
    spans = sorted(
        (min(t), max(t))
        for section in "abc"
        for t in [[x for p, ts in site.times.items() if p.startswith(f"/{section}/") for x in ts]]
    )
    # the processes really crawled at the same time (else the test would prove nothing)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


async def test_retry_after_from_one_crawl_holds_the_host_for_the_others(
    serve, tmp_path: Path
) -> None:
    async def busy(request: web.Request) -> web.Response:
        if site.hits["/busy"] == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(text="<html></html>", content_type="text/html")

    site: Site = await serve({"/busy": busy, "*": links_page()})
    settings = engine_settings()
    blobs = FileBlobStore(tmp_path / "blobs")

    async def report(counts: CrawlCounts) -> None:
        pass

    def spec(path: str) -> CrawlSpec:
        return CrawlSpec(seeds=[site.url(path)], respect_robots=False, use_sitemaps=False)

    async with Fetcher(settings) as fetcher:
        run = crawl_runner(blobs, fetcher, settings)
        first = asyncio.create_task(
            run(
                RunCrawl(
                    container_id="c", tenant_id="t", crawl_id="one", attempt=1, spec=spec("/busy")
                ),
                report,
            )
        )
        while not site.hits["/busy"]:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        await run(
            RunCrawl(
                container_id="c", tenant_id="u", crawl_id="two", attempt=1, spec=spec("/other")
            ),
            report,
        )
        await first
    (busy_first, _), (other,) = site.times["/busy"], site.times["/other"]
    assert other - busy_first >= 0.95  # the second crawl waited for the first one's Retry-After
