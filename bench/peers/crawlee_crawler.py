"""Crawlee for Python peer of the crawl benchmark: ParselCrawler on the default HTTP client.

Run with the Crawlee venv's interpreter (bench/crawl_bench.py creates bench/.venvs/crawlee):

    bench/.venvs/crawlee/bin/python bench/peers/crawlee_crawler.py START_URL OUT.jsonl \\
        [--concurrency 16] [--max-pages N]

Storage is in memory (``MemoryStorageClient``, purged on start); every page pushes
{url, status, title, links, markdown} to the default dataset — the main text as markdown by
trafilatura (``--markdown``: or html-to-markdown, markdownify, none), called in the request
handler as Crawlee users do — and enqueues its same-hostname links; robots.txt is
respected. Concurrency is pinned (min = desired = max) so the autoscaler cannot change it. At
the end the dataset is written to OUT.jsonl, one JSON object a line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any
from urllib.parse import urljoin

from crawlee import ConcurrencySettings, service_locator
from crawlee.configuration import Configuration
from crawlee.crawlers import ParselCrawler, ParselCrawlingContext
from crawlee.storage_clients import MemoryStorageClient


def to_markdown(tool: str) -> Any:
    if tool == "trafilatura":
        import trafilatura

        return lambda html, url: trafilatura.extract(
            html, url=url, output_format="markdown", include_links=True
        )
    if tool == "html-to-markdown":
        import html_to_markdown

        return lambda html, url: html_to_markdown.convert(html).content
    if tool == "markdownify":
        from markdownify import markdownify

        return lambda html, url: markdownify(html)
    return lambda html, url: None


async def crawl(
    start_url: str, out: str, concurrency: int, max_pages: int | None, markdown: str
) -> None:
    convert = to_markdown(markdown)
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
        selector = context.selector
        links = [
            {
                "url": urljoin(context.request.url, href),
                "text": " ".join(a.css("::text").getall()).strip(),
            }
            for a in selector.css("a[href]")
            if (href := a.attrib.get("href"))
        ]
        await context.push_data(
            {
                "url": context.request.url,
                "status": context.http_response.status_code,
                "title": selector.css("title::text").get(),
                "links": links,
                "markdown": convert(selector.get(), context.request.url),
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
    parser.add_argument("--markdown", default="trafilatura", help="markdown tool (or none)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(
        crawl(args.start_url, args.out, args.concurrency, args.max_pages or None, args.markdown)
    )


if __name__ == "__main__":
    main()
