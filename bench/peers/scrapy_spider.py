"""Scrapy peer of the crawl benchmark: follow every same-host link, emit {url, status, title,
links, markdown}.

Run with the Scrapy venv's interpreter (bench/crawl_bench.py creates bench/.venvs/scrapy):

    bench/.venvs/scrapy/bin/python bench/peers/scrapy_spider.py START_URL OUT.jsonl \\
        [--concurrency 16] [--max-pages N] [--markdown trafilatura|html-to-markdown|markdownify|none]

The spider yields the page's title, its links (absolute URL and anchor text) and its HTML; an
item pipeline (``MarkdownPipeline``, as Scrapy users write one) replaces the HTML with the
main text as markdown — trafilatura by default, the usual choice for main content. Settings
are Scrapy's defaults except those in ``settings()`` below (no cache, no throttling, no delay,
robots.txt obeyed, a JSON-lines feed as the only output).
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
        links = [
            {"url": response.urljoin(href), "text": " ".join(a.css("::text").getall()).strip()}
            for a in response.css("a[href]")
            if (href := a.attrib.get("href"))
        ]
        yield {
            "url": response.url,
            "status": response.status,
            "title": response.css("title::text").get(),
            "links": links,
            "html": response.text,
        }
        yield from response.follow_all(css="a[href]", callback=self.parse)


def to_markdown(tool: str) -> Any:
    """html -> markdown with the tool a Scrapy (or Crawlee) user would reach for."""
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


class MarkdownPipeline:
    """The item pipeline: the page's HTML becomes its main text as markdown."""

    def __init__(self, tool: str) -> None:
        self.convert = to_markdown(tool)

    @classmethod
    def from_crawler(cls, crawler: Any) -> MarkdownPipeline:
        return cls(crawler.settings.get("MARKDOWN_TOOL", "trafilatura"))

    def process_item(self, item: dict[str, Any], spider: Any = None) -> dict[str, Any]:
        html = item.pop("html", "")
        item["markdown"] = self.convert(html, item["url"])
        return item


def settings(out: str, concurrency: int, max_pages: int, markdown: str) -> dict[str, Any]:
    return {
        "ITEM_PIPELINES": {f"{__name__}.MarkdownPipeline": 300},
        "MARKDOWN_TOOL": markdown,
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
    parser.add_argument("--markdown", default="trafilatura", help="markdown tool (or none)")
    args = parser.parse_args()
    process = CrawlerProcess(settings(args.out, args.concurrency, args.max_pages, args.markdown))
    process.crawl(SiteSpider, start_url=args.start_url)
    process.start()


if __name__ == "__main__":
    main()
