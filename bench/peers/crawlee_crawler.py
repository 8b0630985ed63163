"""Crawlee for Python peer of the crawl benchmark: ParselCrawler on the default HTTP client.

Run with the Crawlee venv's interpreter (bench/crawl_bench.py creates bench/.venvs/crawlee):

    bench/.venvs/crawlee/bin/python bench/peers/crawlee_crawler.py START_URL OUT.jsonl \\
        [--concurrency 16] [--max-pages N]

Storage is in memory (``MemoryStorageClient``, purged on start); every page pushes
{url, status, title} to the default dataset and enqueues its same-hostname links; robots.txt is
respected. Concurrency is pinned (min = desired = max) so the autoscaler cannot change it. At
the end the dataset is written to OUT.jsonl, one JSON object a line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

from crawlee import ConcurrencySettings, service_locator
from crawlee.configuration import Configuration
from crawlee.crawlers import ParselCrawler, ParselCrawlingContext
from crawlee.storage_clients import MemoryStorageClient


async def crawl(start_url: str, out: str, concurrency: int, max_pages: int | None) -> None:
    service_locator.set_configuration(Configuration(purge_on_start=True, log_level="WARNING"))
    service_locator.set_storage_client(MemoryStorageClient())
    crawler = ParselCrawler(
        concurrency_settings=ConcurrencySettings(
            min_concurrency=concurrency,
            desired_concurrency=concurrency,
            max_concurrency=concurrency,
        ),
        respect_robots_txt_file=True,
        max_requests_per_crawl=max_pages,
    )

    @crawler.router.default_handler
    async def handle(context: ParselCrawlingContext) -> None:
        await context.push_data(
            {
                "url": context.request.url,
                "status": context.http_response.status_code,
                "title": context.selector.css("title::text").get(),
            }
        )
        await context.enqueue_links(strategy="same-hostname")

    await crawler.run([start_url])

    dataset = await crawler.get_dataset()
    with open(out, "w", encoding="utf-8") as f:
        async for item in dataset.iterate_items():
            f.write(json.dumps(item) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start_url")
    parser.add_argument("out", help="JSON-lines output file")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-pages", type=int, default=0, help="0 = unlimited")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(crawl(args.start_url, args.out, args.concurrency, args.max_pages or None))


if __name__ == "__main__":
    main()
