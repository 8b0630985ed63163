"""Crawl rules a user notices: when a page was fetched, how its bytes are read, how long one
page may take, and that a tenant's regular expression cannot stall the engine."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from aiohttp import web
from engine_sites import Handler, Site, engine_settings, links_page

from core.models import CrawlSpec
from engine_container.frontier import Frontier


def raw_html(body: bytes, content_type: str = "text/html") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler


async def test_fetched_at_is_when_the_request_was_sent_not_when_it_was_queued(serve, crawl) -> None:
    sent: dict[str, datetime] = {}

    async def page(request: web.Request) -> web.Response:
        sent[request.path] = datetime.now(UTC)
        return web.Response(text="<html><title>p</title></html>", content_type="text/html")

    site: Site = await serve({"/": links_page("/p1", "/p2", "/p3"), "*": page})
    # a 0.4 s gap per host: /p3 waits ~1.2 s between being taken and being requested
    outcome = await crawl(
        [site.url("/")], settings=engine_settings(per_host_delay_s=0.4), respect_robots=False
    )
    pages = {p["url"].rsplit("/", 1)[1]: p for p in outcome.pages}
    for name in ("p1", "p2", "p3"):
        fetched_at = datetime.fromisoformat(pages[name]["fetched_at"])
        assert abs((fetched_at - sent[f"/{name}"]).total_seconds()) < 0.2, name
    assert pages["p1"]["fetched_at"] < pages["p2"]["fetched_at"] < pages["p3"]["fetched_at"]


SJIS_TITLE = "日本語のページ"
LATIN_TITLE = "Café déjà vu \u2013 ½"  # the dash is cp1252-only (0x96), not latin-1


@pytest.mark.parametrize(
    ("body", "content_type", "title"),
    [
        (
            f'<html><head><meta charset="Shift_JIS"><title>{SJIS_TITLE}</title></head></html>'.encode(
                "shift_jis"
            ),
            "text/html",
            SJIS_TITLE,
        ),
        (
            b'<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'
            + f"<title>{LATIN_TITLE}</title></head></html>".encode("cp1252"),
            "text/html",
            LATIN_TITLE,
        ),
        (  # the HTTP header wins over <meta>
            f'<html><meta charset="utf-8"><title>{LATIN_TITLE}</title></html>'.encode("cp1252"),
            "text/html; charset=windows-1252",
            LATIN_TITLE,
        ),
        (  # a byte order mark wins over everything
            "\ufeff<html><meta charset=iso-8859-1><title>Ünïcödé</title></html>".encode(
                "utf-16-le"
            ),
            "text/html; charset=iso-8859-1",
            "Ünïcödé",
        ),
        (  # no declaration at all: UTF-8
            "<html><title>ÄÖÜ naïve</title></html>".encode(),
            "text/html",
            "ÄÖÜ naïve",
        ),
    ],
    ids=["shift_jis-meta", "latin1-http-equiv", "header-over-meta", "bom", "undeclared-utf8"],
)
async def test_titles_are_decoded_by_the_html5_sniffing_rules(
    serve, crawl, body: bytes, content_type: str, title: str
) -> None:
    site: Site = await serve({"/": raw_html(body, content_type)})
    outcome = await crawl([site.url("/")], respect_robots=False)
    assert outcome.pages[0]["title"] == title


async def test_links_of_a_shift_jis_page_resolve_to_the_right_url(serve, crawl) -> None:
    page = '<meta charset="shift_jis"><a href="/資料">資料</a>'.encode("shift_jis")
    site: Site = await serve({"/": raw_html(page), "*": links_page()})
    outcome = await crawl([site.url("/")], respect_robots=False)
    assert site.url("/%E8%B3%87%E6%96%99") in outcome.urls()


def trickle(seconds_per_byte: float, total: int) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.content_length = total
        await response.prepare(request)
        try:
            for _ in range(total):
                await response.write(b"x")
                await asyncio.sleep(seconds_per_byte)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    return handler


async def test_a_trickling_page_is_cut_at_its_budget_and_not_retried(serve, crawl) -> None:
    site: Site = await serve({"/slow": trickle(0.25, 400)})  # 100 s if read to the end
    started = time.monotonic()
    outcome = await crawl(
        [site.url("/slow")],
        settings=engine_settings(retries=3, read_timeout_s=30, total_timeout_s=120),
        respect_robots=False,
        page_timeout_s=2,
    )
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 4.0
    assert site.hits["/slow"] == 1
    (page,) = outcome.pages
    assert page["attempts"] == 1
    assert page["status"] is None
    assert "time budget" in page["error"]
    assert outcome.counts.failed == 1


async def test_retries_stop_when_the_budget_is_spent(serve, crawl) -> None:
    async def down(request: web.Request) -> web.Response:
        await asyncio.sleep(0.6)
        return web.Response(status=503)

    site: Site = await serve({"/": down})
    started = time.monotonic()
    outcome = await crawl(
        [site.url("/")],
        settings=engine_settings(retries=10, retry_base_s=0.05, retry_max_s=0.1),
        respect_robots=False,
        page_timeout_s=1.5,
    )
    assert time.monotonic() - started < 3.0
    (page,) = outcome.pages
    assert page["attempts"] == site.hits["/"]
    assert 2 <= page["attempts"] <= 3  # not the 11 that retries=10 allows


EVIL = "(a+)+b$"  # catastrophic backtracking for a backtracking engine on "aaa...a!"


def test_a_catastrophic_pattern_matches_in_linear_time() -> None:
    spec = CrawlSpec(seeds=["http://a.test/"], exclude=[EVIL], max_pages=10)
    frontier = Frontier(spec)
    href = "/" + "a" * 28 + "!"  # Python's re needs seconds here, doubling with each "a"
    started = time.perf_counter()
    added = frontier.add_links("http://a.test/", [href] * 50, 1)
    assert time.perf_counter() - started < 0.5
    assert added == 1


async def test_a_crawl_with_a_catastrophic_exclude_does_not_stall(serve, crawl) -> None:
    victim = "/" + "a" * 40 + "!"
    site: Site = await serve({"/": links_page(victim, "/x/ab"), "*": links_page()})
    outcome = await asyncio.wait_for(
        crawl([site.url("/")], exclude=[EVIL], respect_robots=False), timeout=10
    )
    assert site.hits[victim] == 1
    assert site.hits["/x/ab"] == 0  # the pattern still excludes what it matches
    assert outcome.counts.fetched == 2
