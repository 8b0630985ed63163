"""Conditional re-crawl: what an earlier crawl of the tenant saw, to ask only for changes.

A crawl with ``recrawl_of: "<crawl id>"`` (or ``"latest"``: the tenant's last completed crawl
of the same seeds) reads that crawl's page records from the blob store and

* queues its pages again (after the seeds, at their old depths, through the same scope,
  filters and ``max_pages``), so pages the server answers with 304 — which have no body to
  find links in — are still followed by what they linked to last time;
* sends ``If-None-Match`` (its ``ETag``) and ``If-Modified-Since`` (its ``Last-Modified``)
  with each of them;
* records a ``304 Not Modified`` as ``status: 304, unchanged: true`` with the earlier record's
  ``sha256``, ``title``, ``links`` and ``content_type`` (the page is as it was), counts it as
  fetched, and archives it as a WARC ``revisit`` record referring to the earlier capture.

Why opt-in, not the default: a tenant that asks for a crawl expects every page's content in
that crawl's results; a silent 304 would leave unchanged pages without a body. Recurring
crawls (schedules) set ``recrawl_of`` to their previous run. ``"latest"`` is cheap: when a
crawl completes the engine writes one small pointer blob per (tenant, seeds)
(``core.layout.latest_crawl_key``), so resolving it is one read — no scan of the tenant's
crawls, and no access to the conductor's state store, which containers do not have.

Memory: one small entry per earlier page (~300 bytes), read chunk by chunk; a crawl that does
not exist any more (deleted, another tenant's id: keys are per tenant) means a full crawl,
with a log line.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import layout
from core.errors import NotFound
from core.models import CrawlSpec
from core.ports.blob_store import BlobStore
from engine_container.warc import Capture, warc_date

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PreviousPage:
    url: str  # the URL the earlier record was archived under (its final URL)
    depth: int
    fetched_at: datetime
    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None
    title: str | None = None
    links: int = 0
    content_type: str | None = None

    @property
    def capture(self) -> Capture:
        return Capture(self.url, warc_date(self.fetched_at))


class PreviousCrawl:
    """The earlier crawl's successful pages by URL (as queued: the record's ``url``)."""

    def __init__(self, crawl_id: str, pages: Mapping[str, PreviousPage]) -> None:
        self.crawl_id = crawl_id
        self._pages = dict(pages)

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, url: str) -> PreviousPage | None:
        return self._pages.get(url)

    def urls(self) -> Iterator[tuple[str, int]]:
        """(URL, depth) of every earlier page, in the earlier crawl's order."""
        return ((url, page.depth) for url, page in self._pages.items())

    def conditional_headers(
        self, url: str, headers: Mapping[str, str] | None
    ) -> Mapping[str, str] | None:
        """``headers`` plus the validators of ``url``'s earlier response, if it had any."""
        page = self._pages.get(url)
        if page is None or (page.etag is None and page.last_modified is None):
            return headers
        merged = dict(headers or {})
        if page.etag is not None:
            merged["If-None-Match"] = page.etag
        if page.last_modified is not None:
            merged["If-Modified-Since"] = page.last_modified
        return merged

    @classmethod
    def from_records(cls, crawl_id: str, records: Iterable[Mapping[str, Any]]) -> PreviousCrawl:
        previous = cls(crawl_id, {})
        previous.add_records(records)
        return previous

    def add_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Take the successful pages of ``records`` (manifest lines, parsed)."""
        pages = self._pages
        for record in records:
            status = record.get("status")
            if not isinstance(status, int) or not (200 <= status < 300 or status == 304):
                continue
            if record.get("error"):
                continue
            headers = record.get("headers") or {}
            pages[str(record["url"])] = PreviousPage(
                url=str(record.get("final_url") or record["url"]),
                depth=int(record.get("depth", 0)),
                fetched_at=datetime.fromisoformat(str(record["fetched_at"])),
                etag=headers.get("etag"),
                last_modified=headers.get("last-modified"),
                sha256=record.get("sha256"),
                title=record.get("title"),
                links=int(record.get("links", 0)),
                content_type=record.get("content_type"),
            )


def seeds_key(spec: CrawlSpec) -> str:
    """Which crawls count as "of the same seeds": the sorted seeds, hashed."""
    text = "\n".join(sorted(spec.seeds))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


async def resolve(blobs: BlobStore, tenant_id: str, spec: CrawlSpec) -> str | None:
    """The crawl id ``spec.recrawl_of`` names (``latest`` looked up), or None."""
    if spec.recrawl_of != "latest":
        return spec.recrawl_of
    try:
        data = json.loads(await blobs.get(key=layout.latest_crawl_key(tenant_id, seeds_key(spec))))
    except NotFound:
        return None
    except ValueError:
        log.warning("tenant %s: unreadable latest-crawl pointer, crawling afresh", tenant_id)
        return None
    crawl_id = data.get("crawl_id") if isinstance(data, dict) else None
    return crawl_id if isinstance(crawl_id, str) else None


async def remember_latest(blobs: BlobStore, tenant_id: str, spec: CrawlSpec, crawl_id: str) -> None:
    """Record ``crawl_id`` as the tenant's latest completed crawl of these seeds."""
    await blobs.put(
        key=layout.latest_crawl_key(tenant_id, seeds_key(spec)),
        data=json.dumps({"crawl_id": crawl_id}).encode(),
        content_type="application/json",
    )


async def remember_resolved(
    blobs: BlobStore, tenant_id: str, crawl_id: str, previous_id: str
) -> None:
    """Record that ``crawl_id`` (``recrawl_of: "latest"``) re-crawls ``previous_id``: the
    control plane compares the two runs' pages from it (``core.run_changes``)."""
    await blobs.put(
        key=layout.recrawled_key(tenant_id, crawl_id),
        data=json.dumps({"crawl_id": previous_id}).encode(),
        content_type="application/json",
    )


async def load_previous(blobs: BlobStore, tenant_id: str, crawl_id: str) -> PreviousCrawl | None:
    """The page records of the tenant's crawl ``crawl_id``, or None if it has none."""
    prefix = layout.crawl_prefix(tenant_id, crawl_id) + "manifest/"
    keys = await blobs.list(prefix=prefix)
    if not keys:
        log.warning(
            "tenant %s: crawl %s has no pages to re-crawl; crawling afresh", tenant_id, crawl_id
        )
        return None
    previous = PreviousCrawl(crawl_id, {})
    for key in keys:
        try:
            data = await blobs.get(key=key)
        except NotFound:
            continue
        previous.add_records(json.loads(line) for line in data.splitlines() if line.strip())
    return previous
