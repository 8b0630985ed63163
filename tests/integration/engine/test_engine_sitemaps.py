"""Sitemaps seed the frontier: robots.txt ``Sitemap:`` lines or ``/sitemap.xml``, indexes,
gzip, ``lastmod`` order, scope and limits — as a served site sees them."""

from __future__ import annotations

import gzip

from aiohttp import web
from engine_sites import Handler, NoSuchName, Site, engine_settings, links_page, text

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(*entries: tuple[str, str | None]) -> str:
    body = "".join(
        f"<url><loc>{loc}</loc>{f'<lastmod>{mod}</lastmod>' if mod else ''}</url>"
        for loc, mod in entries
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{body}</urlset>'


def index(*locs: str) -> str:
    body = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0"?><sitemapindex {NS}>{body}</sitemapindex>'


def xml(document: str, *, gzipped: bool = False) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if gzipped:
            return web.Response(
                body=gzip.compress(document.encode()), content_type="application/x-gzip"
            )
        return web.Response(text=document, content_type="application/xml")

    return handler


async def indexed_site(serve) -> Site:
    routes: dict[str, Handler] = {"/": links_page("/linked"), "*": links_page()}
    site: Site = await serve(routes)
    routes["/robots.txt"] = text(
        f"User-agent: *\nAllow: /\nSitemap: {site.url('/maps/index.xml')}\n"
    )
    routes["/maps/index.xml"] = xml(index(site.url("/maps/a.xml.gz"), site.url("/maps/b.xml")))
    routes["/maps/a.xml.gz"] = xml(
        urlset((site.url("/orphan-1"), "2024-01-01"), (site.url("/orphan-2"), None)), gzipped=True
    )
    routes["/maps/b.xml"] = xml(
        urlset(
            (site.url("/orphan-3"), "2025-06-01T10:00:00+00:00"),
            ("http://elsewhere.test/page", None),  # out of scope: never fetched
            (site.url("/private/x"), None),  # excluded by the crawl's pattern
        )
    )
    return site


async def test_sitemap_index_from_robots_txt_seeds_pages_no_link_reaches(serve, crawl) -> None:
    site = await indexed_site(serve)
    # every name is NXDOMAIN without a lookup: were the scope check broken, the out-of-scope
    # entry would fail here rather than send a DNS query off the machine
    outcome = await crawl(
        [site.url("/")], use_sitemaps=True, exclude=["/private/"], resolver=NoSuchName()
    )
    urls = outcome.urls()
    for path in ("/", "/linked", "/orphan-1", "/orphan-2", "/orphan-3"):
        assert site.url(path) in urls, path
    assert site.hits["/private/x"] == 0
    assert all("elsewhere" not in u for u in urls)
    depths = {p["url"]: p["depth"] for p in outcome.pages}
    assert depths[site.url("/orphan-1")] == 1
    # sitemap files are read, never recorded as pages
    assert not any("/maps/" in u for u in urls)
    assert site.hits["/maps/a.xml.gz"] == site.hits["/maps/b.xml"] == 1


async def test_newest_lastmod_first_when_max_pages_is_short(serve, crawl) -> None:
    routes: dict[str, Handler] = {"/": links_page(), "*": links_page()}
    site: Site = await serve(routes)
    routes["/sitemap.xml"] = xml(
        urlset(
            (site.url("/old"), "2019-01-01"),
            (site.url("/newest"), "2025-03-01"),
            (site.url("/undated"), None),
            (site.url("/newer"), "2024-12-31"),
        )
    )
    outcome = await crawl([site.url("/")], use_sitemaps=True, respect_robots=False, max_pages=3)
    assert outcome.urls() == {site.url("/"), site.url("/newest"), site.url("/newer")}


async def test_sitemap_xml_is_the_fallback_and_use_sitemaps_false_reads_none(serve, crawl) -> None:
    routes: dict[str, Handler] = {"/": links_page(), "*": links_page()}
    site: Site = await serve(routes)
    routes["/robots.txt"] = text("User-agent: *\nAllow: /\n")
    routes["/sitemap.xml"] = xml(urlset((site.url("/from-map"), None)))
    outcome = await crawl([site.url("/")], use_sitemaps=True)
    assert site.url("/from-map") in outcome.urls()
    site.hits.clear()
    off = await crawl([site.url("/")], use_sitemaps=False)
    assert site.hits["/sitemap.xml"] == 0
    assert off.urls() == {site.url("/")}


async def test_max_depth_zero_and_robots_disallow_apply_to_sitemaps(serve, crawl) -> None:
    routes: dict[str, Handler] = {"/": links_page(), "*": links_page()}
    site: Site = await serve(routes)
    routes["/robots.txt"] = text(
        f"User-agent: *\nDisallow: /hidden\nSitemap: {site.url('/hidden/map.xml')}\n"
    )
    routes["/hidden/map.xml"] = xml(urlset((site.url("/a"), None)))
    routes["/sitemap.xml"] = xml(urlset((site.url("/b"), None)))
    outcome = await crawl([site.url("/")], use_sitemaps=True)
    assert site.hits["/hidden/map.xml"] == 0  # disallowed: not read
    assert outcome.urls() == {site.url("/")}
    routes["/robots.txt"] = text("User-agent: *\nAllow: /\n")
    shallow = await crawl([site.url("/")], use_sitemaps=True, max_depth=0)
    assert shallow.urls() == {site.url("/")}


async def test_sitemap_files_per_crawl_are_bounded(serve, crawl) -> None:
    routes: dict[str, Handler] = {"/": links_page(), "*": links_page()}
    site: Site = await serve(routes)
    routes["/sitemap.xml"] = xml(index(*[site.url(f"/m{i}.xml") for i in range(10)]))
    for i in range(10):
        routes[f"/m{i}.xml"] = xml(urlset((site.url(f"/p{i}"), None)))
    await crawl(
        [site.url("/")],
        use_sitemaps=True,
        respect_robots=False,
        settings=engine_settings(sitemap_max_files=3),
    )
    read = sum(site.hits[f"/m{i}.xml"] for i in range(10))
    assert site.hits["/sitemap.xml"] == 1
    assert read == 2  # the index and two of its files
