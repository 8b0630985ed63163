"""robots.txt as RFC 9309 says, seen from the site: what gets requested, and when."""

from __future__ import annotations

import asyncio

from aiohttp import web
from engine_sites import Site, StaticResolver, engine_settings, links_page, text

ROBOTS_WILDCARDS = """
User-agent: *
Disallow: /private*
Disallow: /*.pdf$
Disallow: /*?session=
Allow: /private-ok
"""


async def test_disallow_rules_with_wildcards(serve, crawl) -> None:
    pages = ["/private1", "/private-ok", "/doc.pdf", "/doc.pdf.html", "/list?session=1", "/pub"]
    routes = {"/": links_page(*pages), "/robots.txt": text(ROBOTS_WILDCARDS)}
    routes.update({p.split("?")[0]: links_page() for p in pages})
    site: Site = await serve(routes)
    outcome = await crawl([site.url("/")])
    assert site.hits["/private1"] == site.hits["/doc.pdf"] == site.hits["/list?session=1"] == 0
    assert site.hits["/private-ok"] == site.hits["/doc.pdf.html"] == site.hits["/pub"] == 1
    refused = outcome.by_url()[site.url("/private1")]
    assert refused["error"] == "disallowed by robots.txt"
    assert refused["status"] is None
    assert outcome.counts.failed == 3
    assert outcome.counts.fetched == 4


async def test_missing_robots_allows_everything(serve, crawl) -> None:
    site: Site = await serve({"/": links_page("/a"), "/a": links_page()})
    outcome = await crawl([site.url("/")])
    assert site.hits["/robots.txt"] == 1  # answered 404 by the catch-all
    assert site.hits["/a"] == 1
    assert outcome.counts.fetched == 2


async def test_server_error_on_robots_disallows_everything(serve, crawl) -> None:
    site: Site = await serve({"/": links_page("/a"), "/robots.txt": text("oops", status=500)})
    outcome = await crawl([site.url("/")])
    assert site.hits["/"] == 0
    assert outcome.pages[0]["error"] == "robots.txt unreachable: HTTP 500"
    assert outcome.counts.failed == 1


async def test_unreachable_robots_disallows_everything(serve, crawl) -> None:
    async def hang_up(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    site: Site = await serve({"/": links_page(), "/robots.txt": hang_up})
    outcome = await crawl([site.url("/")])
    assert site.hits["/"] == 0
    assert outcome.counts.failed == 1


async def test_crawl_delay_spaces_requests(serve, crawl) -> None:
    robots = "User-agent: *\nCrawl-delay: 0.3\n"
    site: Site = await serve(
        {
            "/": links_page("/a", "/b"),
            "/a": links_page(),
            "/b": links_page(),
            "/robots.txt": text(robots),
        }
    )
    await crawl([site.url("/")])
    starts = sorted(site.times["/"] + site.times["/a"] + site.times["/b"])
    assert len(starts) == 3
    # a request may arrive late, never early: the span of three is at least two delays
    assert starts[-1] - starts[0] >= 0.55, starts


async def test_robots_is_fetched_once_per_origin(serve, crawl) -> None:
    routes: dict[str, object] = {}
    site: Site = await serve(routes)  # routes are looked up per request
    # two origins, one server: a.test and b.test both resolve to it
    routes["/"] = links_page(*[f"/p{i}" for i in range(10)], f"http://b.test:{site.port}/")
    routes["*"] = links_page("/")
    resolver = StaticResolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    outcome = await crawl(
        [site.url("/", "a.test")],
        resolver=resolver,
        scope="any",
        settings=engine_settings(concurrency=8),
    )
    assert site.hits["/robots.txt"] == 2  # once for a.test, once for b.test
    assert outcome.counts.fetched == 22  # / and /p0../p9 on each origin


async def test_robots_groups_match_the_configured_user_agent(serve, crawl) -> None:
    robots = "User-agent: skycrawl\nDisallow: /\n\nUser-agent: *\nAllow: /\n"
    site: Site = await serve({"/": links_page(), "/robots.txt": text(robots)})
    blocked = await crawl([site.url("/")])
    assert blocked.counts.failed == 1
    assert site.hits["/"] == 0
    allowed = await crawl([site.url("/")], settings=engine_settings(user_agent="otherbot/2.0"))
    assert allowed.counts.fetched == 1
    assert site.hits["/"] == 1


async def test_robots_can_be_ignored_when_the_spec_says_so(serve, crawl) -> None:
    site: Site = await serve({"/": links_page(), "/robots.txt": text("User-agent: *\nDisallow: /")})
    outcome = await crawl([site.url("/")], respect_robots=False)
    assert site.hits["/robots.txt"] == 0
    assert outcome.counts.fetched == 1


async def test_robots_redirects_are_followed(serve, crawl) -> None:
    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": "/real-robots.txt"})

    site: Site = await serve(
        {
            "/": links_page("/private/x", "/public"),
            "/robots.txt": moved,
            "/real-robots.txt": text("User-agent: *\nDisallow: /private/\n"),
            "*": links_page(),
        }
    )
    await crawl([site.url("/")])
    assert site.hits["/real-robots.txt"] == 1
    assert site.hits["/public"] == 1
    assert site.hits["/private/x"] == 0


async def test_robots_answered_429_disallows_for_now(serve, crawl) -> None:
    site: Site = await serve({"/": links_page(), "/robots.txt": text("slow down", status=429)})
    outcome = await crawl([site.url("/")])
    assert site.hits["/"] == 0
    assert outcome.pages[0]["error"] == "robots.txt unreachable: HTTP 429"


async def test_concurrent_first_lookups_share_one_robots_fetch(serve, crawl) -> None:
    async def slow_robots(request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        return web.Response(text="User-agent: *\nAllow: /\n")

    site: Site = await serve({"/robots.txt": slow_robots, "*": links_page()})
    seeds = [site.url(f"/s{i}") for i in range(12)]
    outcome = await crawl(seeds, settings=engine_settings(concurrency=12))
    assert site.hits["/robots.txt"] == 1
    assert outcome.counts.fetched == 12
