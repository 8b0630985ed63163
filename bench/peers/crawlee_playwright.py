"""Crawlee for Python peer of the browser benchmark: PlaywrightCrawler on Debian's Chromium.

Run with its venv's interpreter (bench/browser_bench.py creates bench/.venvs/crawlee-playwright
with ``crawlee[playwright]``; Playwright's own browser download is not needed):

    bench/.venvs/crawlee-playwright/bin/python bench/peers/crawlee_playwright.py START_URL \\
        OUT.jsonl --wait-for SELECTOR [--concurrency 4] [--max-pages N] \\
        [--executable /usr/bin/chromium] [--block route|block-requests]

One headless Chromium (``executable_path``, the same switches as skycrawl's), pages sharing one
browser context (Crawlee's default, ``use_incognito_pages=False``), no fingerprint injection
(skycrawl has none), concurrency pinned (min = desired = max). Before each navigation a
pre-navigation hook blocks images, fonts and media: ``--block route`` (default) aborts them by
Playwright resource type with ``page.route``, the same rule as skycrawl's; ``--block
block-requests`` uses Crawlee's own ``block_requests()`` (CDP URL patterns), given this site's
image, font and video extensions. The
handler waits for SELECTOR, pushes {url, status, title, text (of ``<main>``), links} and
enqueues same-hostname links; robots.txt is respected. Storage is in memory; at the end the
dataset is written to OUT.jsonl, one JSON object a line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

from crawlee import ConcurrencySettings, service_locator
from crawlee.configuration import Configuration
from crawlee.crawlers import (
    PlaywrightCrawler,
    PlaywrightCrawlingContext,
    PlaywrightPreNavCrawlingContext,
)
from crawlee.storage_clients import MemoryStorageClient
from playwright.async_api import Route

BLOCKED_TYPES = frozenset({"image", "font", "media"})
#: The same files by extension, for block_requests() (its default list also blocks .css and
#: misses .woff2 and .webm)
BLOCKED_URL_PATTERNS = [".png", ".woff2", ".webm"]
# skycrawl's engine_container/browser.py CHROMIUM_ARGS
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LINKS_JS = "els => els.map(a => ({url: a.href, text: a.textContent.trim()}))"


async def crawl(args: argparse.Namespace) -> None:
    service_locator.set_configuration(Configuration(purge_on_start=True, log_level="WARNING"))
    service_locator.set_storage_client(MemoryStorageClient())
    crawler = PlaywrightCrawler(
        browser_type="chromium",
        headless=True,
        browser_launch_options={"executable_path": args.executable, "args": CHROMIUM_ARGS},
        fingerprint_generator=None,
        concurrency_settings=ConcurrencySettings(
            min_concurrency=args.concurrency,
            desired_concurrency=args.concurrency,
            max_concurrency=args.concurrency,
        ),
        respect_robots_txt_file=True,
        max_requests_per_crawl=args.max_pages or None,
    )

    async def abort_blocked(route: Route) -> None:
        if route.request.resource_type in BLOCKED_TYPES:
            await route.abort("blockedbyclient")
        else:
            await route.continue_()

    @crawler.pre_navigation_hook
    async def block(context: PlaywrightPreNavCrawlingContext) -> None:
        if args.block == "route":
            await context.page.route("**/*", abort_blocked)
        else:
            await context.block_requests(url_patterns=BLOCKED_URL_PATTERNS)

    @crawler.router.default_handler
    async def handle(context: PlaywrightCrawlingContext) -> None:
        page = context.page
        await page.wait_for_selector(args.wait_for, state="attached")
        await context.push_data(
            {
                "url": context.request.url,
                "status": context.response.status,
                "title": await page.title(),
                "text": await page.inner_text("main"),
                "links": await page.eval_on_selector_all("a[href]", LINKS_JS),
            }
        )
        await context.enqueue_links(strategy="same-hostname")

    await crawler.run([args.start_url])

    dataset = await crawler.get_dataset()
    with open(args.out, "w", encoding="utf-8") as f:
        async for item in dataset.iterate_items():
            f.write(json.dumps(item) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start_url")
    parser.add_argument("out", help="JSON-lines output file")
    parser.add_argument("--wait-for", required=True, help="CSS selector of a rendered page")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-pages", type=int, default=0, help="0 = unlimited")
    parser.add_argument("--executable", default="/usr/bin/chromium")
    parser.add_argument("--block", choices=["route", "block-requests"], default="route")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(crawl(args))


if __name__ == "__main__":
    main()
