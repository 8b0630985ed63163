"""Whole crawls: scope, filters, depth and page limits, page records, sessions, progress."""

from __future__ import annotations

import hashlib

from aiohttp import web
from engine_sites import Site, StaticResolver, engine_settings, html, links_page

from core.models import CrawlCounts, CrawlSpec
from engine_container import fetcher as fetcher_module
from engine_container.crawler import Crawler
from engine_container.fetcher import Fetcher
from engine_container.sinks import StandaloneSink

NAMES = StaticResolver(
    {name: ["127.0.0.1"] for name in ("a.example.test", "b.example.test", "other.test")}
)


async def scoped_site(serve) -> Site:
    routes: dict[str, object] = {"*": links_page()}
    site: Site = await serve(routes)
    routes["/"] = links_page(
        "/same",
        f"http://b.example.test:{site.port}/sibling",
        f"http://other.test:{site.port}/foreign",
    )
    return site


async def test_same_host_scope(serve, crawl) -> None:
    site = await scoped_site(serve)
    outcome = await crawl([site.url("/", "a.example.test")], resolver=NAMES, scope="same-host")
    assert {u.split(":")[1] + u.rsplit("/", 1)[1] for u in outcome.urls()} == {
        "//a.example.test",
        "//a.example.testsame",
    }
    assert site.hits["/sibling"] == site.hits["/foreign"] == 0


async def test_same_domain_scope(serve, crawl) -> None:
    site = await scoped_site(serve)
    await crawl([site.url("/", "a.example.test")], resolver=NAMES, scope="same-domain")
    assert site.hits["/same"] == site.hits["/sibling"] == 1
    assert site.hits["/foreign"] == 0


async def test_any_scope(serve, crawl) -> None:
    site = await scoped_site(serve)
    await crawl([site.url("/", "a.example.test")], resolver=NAMES, scope="any")
    assert site.hits["/same"] == site.hits["/sibling"] == site.hits["/foreign"] == 1


async def test_include_and_exclude(serve, crawl) -> None:
    site: Site = await serve(
        {
            "/": links_page("/docs/a", "/docs/b.zip", "/blog/c"),
            "*": links_page(),
        }
    )
    await crawl([site.url("/")], include=["/docs/"], exclude=[r"\.zip$"], respect_robots=False)
    assert site.hits["/docs/a"] == 1
    assert site.hits["/docs/b.zip"] == site.hits["/blog/c"] == 0


async def test_max_depth(serve, crawl) -> None:
    site: Site = await serve(
        {f"/d{i}": links_page(f"/d{i + 1}") for i in range(5)} | {"*": links_page()}
    )
    outcome = await crawl([site.url("/d0")], max_depth=2, respect_robots=False)
    assert sorted(p["depth"] for p in outcome.pages) == [0, 1, 2]
    assert site.hits["/d3"] == 0


async def test_max_pages(serve, crawl) -> None:
    site: Site = await serve({"/": links_page(*[f"/p{i}" for i in range(50)]), "*": links_page()})
    outcome = await crawl([site.url("/")], max_pages=10, respect_robots=False)
    assert len(outcome.pages) == 10
    assert sum(site.hits.values()) == 10
    assert outcome.counts.fetched == 10


async def test_equivalent_links_are_fetched_once(serve, crawl) -> None:
    routes: dict[str, object] = {"*": links_page()}
    site: Site = await serve(routes)
    routes["/"] = links_page(
        "/x", "/x#top", "./x", "/y/../x", f"http://127.0.0.1:{site.port}/x", "/x?", "/"
    )
    outcome = await crawl([site.url("/")], respect_robots=False)
    assert site.hits["/x"] == 1
    assert site.hits["/"] == 1
    assert len(outcome.pages) == 2


async def test_page_records(serve, crawl) -> None:
    body = (
        '<html><head><title> The  Title </title><base href="/sub/"></head><body>'
        '<a href="rel">r</a><a href="/skip" rel="nofollow">n</a><a href="/abs">a</a>'
        "</body></html>"
    )

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=body, content_type="text/html", headers={"ETag": '"e1"', "X-Other": "no"}
        )

    site: Site = await serve({"/": page, "*": links_page()})
    outcome = await crawl([site.url("/")], respect_robots=False)
    assert site.hits["/sub/rel"] == 1
    assert site.hits["/abs"] == 1
    assert site.hits["/skip"] == 0
    record = outcome.by_url()[site.url("/")]
    assert record["title"] == "The  Title"
    assert record["links"] == 2
    assert record["status"] == 200
    assert record["depth"] == 0
    assert record["sha256"] == hashlib.sha256(body.encode()).hexdigest()
    assert record["bytes"] == len(body.encode())
    assert record["content_type"] == "text/html"
    assert set(record["headers"]) == {"content-type", "content-length", "etag", "server"}
    assert record["fetched_at"].endswith("Z") or "+00:00" in record["fetched_at"]


async def test_redirect_targets_are_recorded_and_not_fetched_again(serve, crawl) -> None:
    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": "/new"})

    site: Site = await serve({"/": links_page("/old", "/new"), "/old": moved, "*": links_page()})
    outcome = await crawl(
        [site.url("/")], respect_robots=False, settings=engine_settings(concurrency=1)
    )
    old = outcome.by_url()[site.url("/old")]
    assert old["final_url"] == site.url("/new")
    assert site.hits["/new"] == 1


async def test_session_cookies_and_tenant_headers(serve, crawl) -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def first(request: web.Request) -> web.Response:
        response = await links_page("/second")(request)
        response.set_cookie("sid", "abc")
        return response

    async def second(request: web.Request) -> web.Response:
        seen.append((request.cookies.get("sid"), request.headers.get("Accept-Language")))
        return await html("done")(request)

    site: Site = await serve({"/": first, "/second": second})
    await crawl(
        [site.url("/", "a.example.test")],
        resolver=NAMES,
        respect_robots=False,
        session="s-1",
        headers={"Accept-Language": "fr"},
    )
    assert seen == [("abc", "fr")]


async def test_progress_is_reported(serve, tmp_path) -> None:
    site: Site = await serve({"/": links_page("/a", "/b"), "*": links_page()})
    reports: list[CrawlCounts] = []

    async def on_progress(counts: CrawlCounts) -> None:
        reports.append(counts)

    settings = engine_settings()
    spec = CrawlSpec(seeds=[site.url("/")], respect_robots=False)
    sink = StandaloneSink(tmp_path / "out")
    async with Fetcher(settings) as fetcher:
        counts = await Crawler(spec, fetcher, sink, settings, on_progress=on_progress).run()
    await sink.close()
    assert counts == CrawlCounts(queued=0, fetched=3, failed=0, bytes=counts.bytes)
    assert counts.bytes > 0
    assert reports[-1] == counts


async def test_least_recently_used_idle_sessions_are_dropped(serve, fetchers, monkeypatch) -> None:
    monkeypatch.setattr(fetcher_module, "MAX_SESSIONS", 2)

    async def set_cookie(request: web.Request) -> web.Response:
        response = web.Response(text=request.cookies.get("n", "none"))
        response.set_cookie("n", request.query["n"])
        return response

    site: Site = await serve({"/": set_cookie})
    fetcher = fetchers()
    for n in ("1", "2", "3"):
        await fetcher.fetch(site.url(f"/?n={n}"), session_key=f"s{n}", any_type=True)
    kept = await fetcher.fetch(site.url("/?n=x"), session_key="s3", any_type=True)
    dropped = await fetcher.fetch(site.url("/?n=x"), session_key="s1", any_type=True)
    assert (kept.body, dropped.body) == (b"3", b"none")
