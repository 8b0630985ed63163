"""Scrapy peer of the crawl benchmark: follow every same-host link, emit {url, status, title}.

Run with the Scrapy venv's interpreter (bench/crawl_bench.py creates bench/.venvs/scrapy):

    bench/.venvs/scrapy/bin/python bench/peers/scrapy_spider.py START_URL OUT.jsonl \\
        [--concurrency 16] [--max-pages N]

Settings are Scrapy's defaults except those in ``settings()`` below (no cache, no throttling,
no delay, robots.txt obeyed, a JSON-lines feed as the only output).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.http import Response


class SiteSpider(scrapy.Spider):
    name = "bench_site"

    def __init__(self, start_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [start_url]
        host = urlsplit(start_url).hostname
        assert host, start_url
        self.allowed_domains = [host]

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        yield {
            "url": response.url,
            "status": response.status,
            "title": response.css("title::text").get(),
        }
        yield from response.follow_all(css="a[href]", callback=self.parse)


def settings(out: str, concurrency: int, max_pages: int) -> dict[str, Any]:
    return {
        "CONCURRENT_REQUESTS": concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
        "CONCURRENT_REQUESTS_PER_IP": 0,
        "ROBOTSTXT_OBEY": True,
        "LOG_LEVEL": "WARNING",
        "HTTPCACHE_ENABLED": False,
        "DEPTH_LIMIT": 0,
        "DOWNLOAD_DELAY": 0,
        "AUTOTHROTTLE_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "CLOSESPIDER_PAGECOUNT": max_pages,
        "FEEDS": {out: {"format": "jsonlines", "encoding": "utf8", "overwrite": True}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start_url")
    parser.add_argument("out", help="JSON-lines feed file")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-pages", type=int, default=0, help="0 = unlimited")
    args = parser.parse_args()
    process = CrawlerProcess(settings(args.out, args.concurrency, args.max_pages))
    process.crawl(SiteSpider, start_url=args.start_url)
    process.start()


if __name__ == "__main__":
    main()
