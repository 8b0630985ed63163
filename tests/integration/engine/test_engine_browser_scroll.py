"""Infinite scroll (issue 15): ``scroll: {max_scrolls, delay_ms}`` scrolls a rendered page to
its bottom until it stops growing, ``max_scrolls`` times at most, within the page's budget.

The feed page here loads five items per request from the test server (``/items?page=N``)
whenever it is scrolled to its bottom, as infinite-scroll sites do; its server answers
slower than ``delay_ms`` on purpose, so a request in flight must count as "not quiet yet".
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web
from engine_sites import engine_settings

pytestmark = pytest.mark.browser

FEED_JS = """
const list = document.getElementById("feed");
let next = 0, loading = false;
async function more() {
  if (loading) return;
  loading = true;
  const items = await (await fetch("/items?page=" + next)).json();
  next += 1;
  for (const text of items) {
    const li = document.createElement("li");
    li.textContent = text;
    li.style.height = "300px";
    list.appendChild(li);
  }
  loading = false;
  if (next === 1) document.body.appendChild(Object.assign(document.createElement("div"), {id: "ready"}));
}
addEventListener("scroll", () => {
  if (innerHeight + scrollY >= document.documentElement.scrollHeight - 50) more();
});
more();
"""

#: Grows on every scroll, without the network: one tall block per scroll event (after a
#: first one, so that there is something to scroll).
ENDLESS_JS = """
document.getElementById("feed").style.height = "2000px";
let n = 0;
addEventListener("scroll", () => {
  n += 1;
  const block = document.createElement("p");
  block.textContent = "block " + n;
  block.style.height = "2000px";
  document.body.appendChild(block);
});
"""

#: Grows forever, but each scroll's content comes 400 ms later.
SLOW_ENDLESS_JS = ENDLESS_JS.replace(
    "document.body.appendChild(block);", "setTimeout(() => document.body.appendChild(block), 400);"
)


def page(script: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            text=f'<html><head><title>feed</title><script src="/{script}" defer></script></head>'
            '<body><ul id="feed"></ul></body></html>',
            content_type="text/html",
        )

    return handler


def javascript(source: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=source, content_type="application/javascript")

    return handler


def feed_items(pages: int, delay_s: float = 0.3) -> Any:
    """``/items?page=N``: five items for N < ``pages``, then none; ``delay_s`` late."""

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        n = int(request.query["page"])
        items = [f"item {n}.{i}" for i in range(5)] if n < pages else []
        return web.Response(text=json.dumps(items), content_type="application/json")

    return handler


async def launched(crawl: Any, pool: Any, site: Any) -> None:
    """Render one plain page first, so that a timed crawl does not time Chromium's launch."""
    await crawl([site.url("/plain")], browser=pool, render="always", formats=["text"])


def item_lines(page_record: dict[str, Any]) -> list[str]:
    text = page_record["content"]["text"]
    lines = (line.strip().removeprefix("- ") for line in text.splitlines())
    return [line for line in lines if line.startswith("item ")]


async def test_a_feed_gets_exactly_the_items_of_n_scrolls(serve, crawl, pools) -> None:
    site = await serve(
        {"/": page("feed.js"), "/feed.js": javascript(FEED_JS), "/items": feed_items(pages=20)}
    )
    pool = pools(engine_settings())

    outcome = await crawl(
        [site.url("/")],
        browser=pool,
        render="always",
        wait_for="#ready",
        scroll={"max_scrolls": 3, "delay_ms": 200},  # the server takes 300 ms per request
        formats=["text"],
    )

    record = outcome.by_url()[site.url("/")]
    assert record["error"] is None
    assert record["rendered"] is True
    # the first page of items, then one more per scroll: pages 0 to 3, in order
    assert item_lines(record) == [f"item {n}.{i}" for n in range(4) for i in range(5)]
    assert [site.hits[f"/items?page={n}"] for n in range(5)] == [1, 1, 1, 1, 0]


async def test_scrolling_stops_when_the_page_stops_growing(serve, crawl, pools) -> None:
    site = await serve(
        {
            "/": page("feed.js"),
            "/feed.js": javascript(FEED_JS),
            "/items": feed_items(pages=2),
            "/plain": page("none.js"),
        }
    )
    pool = pools(engine_settings())
    await launched(crawl, pool, site)

    started = time.monotonic()
    outcome = await crawl(
        [site.url("/")],
        browser=pool,
        render="always",
        wait_for="#ready",
        scroll={"max_scrolls": 50, "delay_ms": 300},
        formats=["text"],
    )
    took = time.monotonic() - started

    record = outcome.by_url()[site.url("/")]
    assert record["error"] is None
    assert item_lines(record) == [f"item {n}.{i}" for n in range(2) for i in range(5)]
    # page 2 answered no items: one scroll more found nothing new, and scrolling ended there
    assert [site.hits[f"/items?page={n}"] for n in range(4)] == [1, 1, 1, 0]
    assert took < 8  # nowhere near 50 scrolls


async def test_a_page_that_grows_forever_stops_at_max_scrolls(serve, crawl, pools) -> None:
    site = await serve(
        {"/": page("endless.js"), "/endless.js": javascript(ENDLESS_JS), "/plain": page("none.js")}
    )
    pool = pools(engine_settings())
    await launched(crawl, pool, site)

    started = time.monotonic()
    outcome = await crawl(
        [site.url("/")],
        browser=pool,
        render="always",
        scroll={"max_scrolls": 12},
        page_timeout_s=20,
        formats=["text"],
    )
    took = time.monotonic() - started

    record = outcome.by_url()[site.url("/")]
    assert record["error"] is None
    blocks = [line for line in record["content"]["text"].splitlines() if line.startswith("block")]
    assert blocks == [f"block {n}" for n in range(1, 13)]
    assert took < 10  # the scroll limit ended it, not the 20 s budget


async def test_a_page_that_grows_slowly_forever_stops_within_its_time_budget(
    serve, crawl, pools
) -> None:
    site = await serve(
        {"/": page("slow.js"), "/slow.js": javascript(SLOW_ENDLESS_JS), "/plain": page("none.js")}
    )
    pool = pools(engine_settings())
    await launched(crawl, pool, site)

    started = time.monotonic()
    outcome = await crawl(
        [site.url("/")],
        browser=pool,
        render="always",
        scroll={"max_scrolls": 50, "delay_ms": 1000},
        page_timeout_s=4,
        formats=["text"],
    )
    took = time.monotonic() - started

    record = outcome.by_url()[site.url("/")]
    # the budget ended the scrolling, not the page: what was loaded by then is kept
    assert record["error"] is None
    assert record["rendered"] is True
    blocks = [line for line in record["content"]["text"].splitlines() if line.startswith("block")]
    assert 3 <= len(blocks) < 50
    assert took < 5  # 4 s, and the DOM
