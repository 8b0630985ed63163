"""Sitemaps (sitemaps.org protocol 0.9): more seeds for a crawl, read at its start.

What is read
    For each origin of the seeds, the ``Sitemap:`` lines of its robots.txt, or, when there are
    none, ``/sitemap.xml``. A file may be a ``<urlset>`` (page URLs with an optional
    ``<lastmod>``), a ``<sitemapindex>`` (more sitemap files, read breadth-first), a plain text
    sitemap (one URL a line), and gzip-compressed (``.xml.gz``, by its magic bytes, whatever the
    ``Content-Type``). Namespaces are ignored, so sitemaps that omit or misspell theirs work.

Limits (bounded whatever a site serves)
    * at most ``SKYCRAWL_SITEMAP_MAX_FILES`` files per crawl (default 20), each fetched through
      the crawler's politeness slot and robots.txt rules like any page;
    * each file at most ``SKYCRAWL_MAX_BODY_BYTES`` on the wire and, decompressed, at most
      ``SKYCRAWL_MAX_DECODED_BYTES`` (gzip bombs stop at the cap, as for pages);
    * at most ``MAX_URLS_PER_FILE`` (50,000, the protocol's own limit) URLs per file, and at
      most ``collect_limit(max_pages)`` URLs in all;
    * XML is parsed with lxml ``iterparse`` without DTDs, entities or network access (no XXE,
      no billion laughs), clearing elements as it goes (memory stays flat on large files).

What the crawler does with them
    The URLs are admitted to the frontier at depth 1 (as if the seed linked them: a crawl with
    ``max_depth: 0`` fetches its seeds only), through the same scope, ``include``/``exclude``
    and ``max_pages`` rules as links. Newest ``lastmod`` first, so that a crawl limited by
    ``max_pages`` takes the pages that changed most recently; URLs without ``lastmod`` keep
    their order after those. ``use_sitemaps: false`` in the request (CLI ``--no-sitemaps``)
    turns all of this off.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from engine_container.decoding import BodyDecoder, BodyTooLarge, UnsupportedEncoding
from engine_container.fetcher import FetchResult

log = logging.getLogger(__name__)

MAX_URLS_PER_FILE = 50_000
_GZIP_MAGIC = b"\x1f\x8b"
_OLDEST = datetime.min.replace(tzinfo=UTC)

FetchFn = Callable[[str], Awaitable[FetchResult | None]]


@dataclass(frozen=True, slots=True)
class SitemapUrl:
    loc: str
    lastmod: datetime | None = None


@dataclass(frozen=True, slots=True)
class Sitemap:
    """One parsed sitemap file: page URLs and (for an index) more sitemap files."""

    urls: list[SitemapUrl]
    sitemaps: list[str]


def collect_limit(max_pages: int) -> int:
    """How many sitemap URLs a crawl of ``max_pages`` reads before it stops (scope and filters
    drop some, so a few times more than it can fetch)."""
    return min(max(1000, 4 * max_pages), 200_000)


def parse_lastmod(text: str | None) -> datetime | None:
    """A W3C datetime (``2024-05-01``, ``2024-05-01T10:00:00+02:00``, ``...Z``) or None."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def unpack(data: bytes, max_bytes: int) -> bytes:
    """The XML of a sitemap file, gunzipped (bounded) when it is gzip."""
    if not data.startswith(_GZIP_MAGIC):
        return data
    decoder = BodyDecoder("gzip", max_bytes)
    decoder.feed(data)
    return decoder.finish()


def parse_sitemap(data: bytes, max_urls: int = MAX_URLS_PER_FILE) -> Sitemap:
    """Page URLs and child sitemaps of one (already unpacked) sitemap file."""
    if data.lstrip()[:1] != b"<":
        lines = (line.strip() for line in data.decode("utf-8", "replace").splitlines())
        plain = [SitemapUrl(line) for line in lines if line.startswith(("http://", "https://"))]
        return Sitemap(plain[:max_urls], [])
    from lxml import etree  # imported on first use: ~6 MB a crawl without sitemaps never pays

    urls: list[SitemapUrl] = []
    children: list[str] = []
    loc: str | None = None
    lastmod: str | None = None
    parser = etree.iterparse(
        io.BytesIO(data),
        events=("end",),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        recover=True,
    )
    try:
        for _, element in parser:
            tag = element.tag if isinstance(element.tag, str) else ""
            name = tag.rsplit("}", 1)[-1]
            if name == "loc":
                loc = (element.text or "").strip() or None
            elif name == "lastmod":
                lastmod = element.text
            elif name in ("url", "sitemap"):
                if loc is not None:
                    if name == "url":
                        urls.append(SitemapUrl(loc, parse_lastmod(lastmod)))
                    else:
                        children.append(loc)
                loc = lastmod = None
                element.clear()
                if len(urls) + len(children) >= max_urls:
                    break
    except etree.XMLSyntaxError as exc:  # keep what was read before the damage
        log.info("sitemap: XML error after %d entries: %s", len(urls) + len(children), exc)
    return Sitemap(urls, children)


def newest_first(urls: Iterable[SitemapUrl]) -> list[str]:
    """Locations sorted by ``lastmod``, newest first; undated ones after, in their order."""
    ordered = sorted(urls, key=lambda u: u.lastmod or _OLDEST, reverse=True)
    return [u.loc for u in ordered]


async def read_sitemaps(
    fetch: FetchFn,
    roots: Iterable[str],
    *,
    max_files: int,
    max_urls: int,
    max_bytes: int,
) -> list[SitemapUrl]:
    """Every page URL reachable from the sitemap files ``roots``, within the limits.

    ``fetch`` fetches one sitemap URL (politeness, robots and SSRF rules are the caller's) and
    returns None when it may not be fetched. Files that fail (status, size, syntax) are
    skipped with a log line; nothing here raises for a site's mistakes.
    """
    queue = deque(dict.fromkeys(roots))
    visited: set[str] = set()
    found: list[SitemapUrl] = []
    while queue and len(visited) < max_files and len(found) < max_urls:
        url = queue.popleft()
        if url in visited or not url.startswith(("http://", "https://")):
            continue
        visited.add(url)
        result = await fetch(url)
        if result is None or result.status != 200 or result.error or not result.body:
            continue
        try:
            sitemap = parse_sitemap(unpack(result.body, max_bytes), max_urls - len(found))
        except (BodyTooLarge, UnsupportedEncoding) as exc:
            log.info("sitemap %s skipped: %s", url, exc)
            continue
        found.extend(sitemap.urls)
        queue.extend(child for child in sitemap.sitemaps if child not in visited)
    return found[:max_urls]
