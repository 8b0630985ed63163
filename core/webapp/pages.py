"""A crawl's page records and stored content, for the page browser and the preview.

Page records are read from the manifest chunks the engine writes (``core.layout``), each with
its position ``{seq}-{offset}`` (chunk, line), which stays valid because chunks are only
appended. The raw JSON of a record is kept, so fields the API's ``PageRecord`` does not (yet)
name, or that the page view has no place for — extracted items, for instance — are shown as
they are. The stored body of a page is in
the WARC chunk of the same ``seq`` (the engine writes both from one buffer), as a
``response`` record whose ``WARC-Target-URI`` is the page's final URL.

Limits: filtering reads every manifest chunk of the crawl (like an export: fine for the
crawls a function can export; beyond that, use the API's cursor pagination).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from warcio.archiveiterator import ArchiveIterator

from core.errors import NotFound
from core.layout import crawl_prefix, warc_key
from core.models import PageRecord
from core.ports.blob_store import BlobStore

_CHUNK = re.compile(r"(\d{1,12})\.jsonl")
POSITION = re.compile(r"(\d{1,12})-(\d{1,9})")
#: What the page view shows as metadata; every other field of a record (extracted items, or
#: whatever the engine adds later) is shown as it is, under "Extracted items".
KNOWN_FIELDS = frozenset(
    {
        "url",
        "final_url",
        "status",
        "headers",
        "fetched_at",
        "elapsed_ms",
        "bytes",
        "sha256",
        "title",
        "links",
        "depth",
        "content_type",
        "error",
    }
)
STATUS_FILTERS = {
    "ok": "2xx",
    "redirect": "3xx",
    "client-error": "4xx",
    "server-error": "5xx",
    "failed": "not fetched",
}


@dataclass(frozen=True, slots=True)
class Page:
    seq: int
    offset: int
    record: PageRecord
    raw: dict[str, Any]

    @property
    def position(self) -> str:
        return f"{self.seq}-{self.offset}"

    @property
    def extra(self) -> dict[str, Any]:
        """Fields beyond ``PageRecord``'s (extraction results and the like)."""
        return {k: v for k, v in self.raw.items() if k not in KNOWN_FIELDS}

    def status_class(self) -> str:
        status = self.record.status
        if status is None or self.record.error:
            return "failed"
        return {2: "ok", 3: "redirect", 4: "client-error"}.get(status // 100, "server-error")


async def read_pages(blobs: BlobStore, tenant_id: str, crawl_id: str) -> list[Page]:
    prefix = f"{crawl_prefix(tenant_id, crawl_id)}manifest/"
    chunks = []
    for key in await blobs.list(prefix=prefix):
        match = _CHUNK.fullmatch(key[len(prefix) :])
        if match is not None:
            chunks.append((int(match.group(1)), key))
    pages: list[Page] = []
    for seq, key in sorted(chunks):
        lines = [line for line in (await blobs.get(key=key)).splitlines() if line.strip()]
        for offset, line in enumerate(lines):
            page = _page(seq, offset, line)
            if page is not None:
                pages.append(page)
    return pages


def _page(seq: int, offset: int, line: bytes) -> Page | None:
    try:
        raw = json.loads(line)
        record = PageRecord.model_validate(raw)
    except (ValueError, ValidationError):
        return None
    return Page(seq, offset, record, raw if isinstance(raw, dict) else {})


def filter_pages(pages: list[Page], *, status: str, content_type: str, url: str) -> list[Page]:
    wanted_type = content_type.strip().lower()
    wanted_url = url.strip().lower()
    return [
        p
        for p in pages
        if (not status or p.status_class() == status)
        and (not wanted_type or wanted_type in (p.record.content_type or "").lower())
        and (not wanted_url or wanted_url in p.record.url.lower())
    ]


def find_page(pages: list[Page], position: str) -> Page | None:
    return next((p for p in pages if p.position == position), None)


async def stored_body(blobs: BlobStore, tenant_id: str, crawl_id: str, page: Page) -> bytes | None:
    """The page's stored HTTP body, or None (not kept, or no WARC chunk)."""
    key = warc_key(tenant_id, crawl_id, page.seq)
    try:
        data = await blobs.get(key=key)
    except NotFound:
        return None
    target = page.record.final_url or page.record.url
    for record in ArchiveIterator(io.BytesIO(data)):
        if record.rec_type != "response":
            continue
        if record.rec_headers.get_header("WARC-Target-URI") != target:
            continue
        if record.rec_headers.get_header("WARC-Truncated"):
            return None
        body: bytes = record.content_stream().read()
        return body
    return None
