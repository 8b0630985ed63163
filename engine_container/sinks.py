"""Where a crawl's pages go: local files (standalone) or BlobStore chunks (in the service).

``PageSink`` is what the crawler writes to: ``add`` one page record (and the fetch, for its
WARC ``response`` record), ``flush`` buffered pages, ``save_checkpoint`` after a flush.

``StandaloneSink(out_dir)`` writes ``out_dir/pages.jsonl`` and ``out_dir/crawl.warc.gz`` (a
``warcinfo`` record, then per page its ``request``/``response`` records, redirects and
``revisit`` records included: see ``engine_container.warc``). In a ``BlobSink`` the first
chunk starts with the ``warcinfo`` record. Each page's formats are its record's ``content``
in ``pages.jsonl``; in a ``BlobSink`` they are a ``content`` chunk beside the manifest chunk,
line for line (only when some page of the chunk has content). Screenshots of rendered pages
are written when the page is added: ``out_dir/screenshots/<name>`` or the crawl's
``screenshots/`` blobs (``core.layout.screenshot_key``), named in the record's
``screenshot``. Extracted items go to
``items.jsonl`` / ``items`` chunks (``core.layout``).

``BlobSink`` writes chunks of ``chunk_pages`` pages (500 by default) under
``core.layout.manifest_key``/``warc_key`` with dense ``seq`` numbers, and the checkpoint under
``checkpoint_key``. A chunk is removed from the buffer only after both its objects are stored,
so a flush interrupted by cancellation is written again, under the same ``seq``, by the next
flush. A crawl resumed from a checkpoint continues at the checkpoint's ``next_seq``; before
its first write it deletes the chunks numbered ``next_seq`` and up, which a container that
died after that checkpoint may have left (their pages are fetched again), so every page is
in the manifest exactly once.

Both sinks buffer at most ``chunk_pages`` pages or ``MAX_BUFFER_BYTES`` (4 MiB) of bodies,
whichever comes first. WARC records are built, digested and compressed in a worker thread at
flush time (see ``engine_container.warc``), off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from core import layout
from core.errors import NotFound
from core.models import PageRecord
from core.output import with_content
from core.ports.blob_store import BlobStore
from core.redaction import redact_text
from engine_container.analysis import Analysis
from engine_container.fetcher import FetchResult
from engine_container.warc import (
    Capture,
    PayloadIndex,
    fetch_records,
    gzip_members,
    warcinfo_record,
)

CHUNK_PAGES = 500
WARCINFO = {
    "software": "skycrawl",
    "format": "WARC File Format 1.1",
    "conformsTo": "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/",
}
#: A chunk's bodies, contents and lines, buffered until its flush: the bound of a crawl's
#: memory that grows with page size. The flush builds the WARC records and their gzip
#: members beside the buffer, so the engine's peak holds a few times this. 5,000 pages of
#: 10-20 KB, default formats (bench/crawl_bench.py, 2026-12-04, interleaved rounds): peak
#: summed RSS 190 MB at 32 MiB (then the 500-page bound cut first, at ~12 MB), 165 at 8 MiB,
#: 152 at 4 MiB, at the same pages/s; with the pipe-fed worker, 112-113 at 4 MiB and 106 at
#: 2 MiB (two rounds each, interleaved, load 0.6-0.8), no slower. A chunk is one blob write:
#: ~40 for such a crawl's 75 MB, a fraction of a cent on any cloud's PUT price.
MAX_BUFFER_BYTES = 2 * 1024 * 1024


class PageSink(Protocol):
    async def add(
        self,
        page: PageRecord,
        fetch: FetchResult | None,
        *,
        revisit_of: Capture | None = None,
        output: Analysis | None = None,
    ) -> None:
        """Buffer one page (and its WARC records when ``fetch`` got a response; a 304 with
        ``revisit_of`` becomes a ``revisit`` of that earlier capture; ``output`` holds its
        formats and items)."""
        ...

    async def flush(self) -> int:
        """Write what is buffered; returns the next chunk ``seq``."""
        ...

    async def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Persist crawl state; called right after ``flush``."""
        ...

    async def close(self) -> None: ...


def page_line(page: PageRecord) -> bytes:
    """The manifest line of a page: its record without ``content`` (stored beside it); URL
    credentials masked (``core.redaction``)."""
    line = page.model_dump_json(exclude={"content"})
    return (redact_text(line) if "@" in line else line).encode() + b"\n"


Archived = tuple[FetchResult, datetime, "Capture | None"]


def warc_chunk(fetches: list[Archived], payloads: PayloadIndex | None = None) -> bytes:
    """The WARC records of fetches, gzipped one member each (runs in a worker thread)."""
    return gzip_members(
        record
        for fetch, when, previous in fetches
        for record in fetch_records(fetch, when, payloads, previous)
    )


def take_screenshot(
    page: PageRecord, fetch: FetchResult | None
) -> tuple[tuple[str, bytes] | None, FetchResult | None]:
    """(the page's screenshot as (name, image), the fetch without it): screenshots are stored
    when the page is added, never buffered with the chunk."""
    if fetch is None or fetch.screenshot is None or page.screenshot is None:
        return None, fetch
    return (page.screenshot, fetch.screenshot), replace(fetch, screenshot=None)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class _Buffer:
    """Page lines and fetches waiting for the next chunk."""

    def __init__(self, max_pages: int) -> None:
        self.max_pages = max_pages
        self.lines: list[bytes] = []
        self.fetches: list[Archived] = []
        self.contents: list[bytes] = []  # line n: the content of page n (b"{}" for none)
        self.items: list[bytes] = []
        self.size = 0

    def add(
        self,
        page: PageRecord,
        fetch: FetchResult | None,
        revisit_of: Capture | None,
        output: Analysis | None = None,
    ) -> bool:
        """Buffer a page; True when the chunk is full."""
        line = page_line(page)
        self.lines.append(line)
        content = output.content if output is not None and output.content else b"{}"
        self.contents.append(content)
        if output is not None and output.items:
            self.items.append(output.items)
        self.size += len(line) + len(content) + (len(output.items) if output else 0)
        if fetch is not None and (fetch.status is not None or fetch.hops):
            self.fetches.append((fetch, page.fetched_at, revisit_of))
            self.size += len(fetch.body)
        return len(self.lines) >= self.max_pages or self.size >= MAX_BUFFER_BYTES

    def take(self) -> _Chunk:
        chunk = _Chunk(self.lines, self.fetches, self.contents, self.items)
        self.lines, self.fetches, self.contents, self.items, self.size = [], [], [], [], 0
        return chunk

    def peek(self) -> _Chunk:
        return _Chunk(list(self.lines), list(self.fetches), list(self.contents), list(self.items))

    def drop(self, chunk: _Chunk) -> None:
        """Forget the entries of ``chunk`` (taken with ``peek``), once they are stored."""
        del self.lines[: len(chunk.lines)]
        del self.fetches[: len(chunk.fetches)]
        del self.contents[: len(chunk.contents)]
        del self.items[: len(chunk.items)]
        self.size = (
            sum(map(len, self.lines))
            + sum(map(len, self.contents))
            + sum(map(len, self.items))
            + sum(len(f[0].body) for f in self.fetches)
        )


@dataclass(frozen=True, slots=True)
class _Chunk:
    lines: list[bytes]
    fetches: list[Archived]
    contents: list[bytes]
    items: list[bytes]

    @property
    def has_content(self) -> bool:
        return any(c != b"{}" for c in self.contents)

    def merged_lines(self) -> bytes:
        """Page lines with their content joined in (``pages.jsonl`` of a standalone crawl)."""
        if not self.has_content:
            return b"".join(self.lines)
        return b"".join(
            with_content(line, c) for line, c in zip(self.lines, self.contents, strict=True)
        )


class StandaloneSink:
    """``pages.jsonl`` + ``crawl.warc.gz`` in a directory (created; OSError if unwritable)."""

    def __init__(self, out_dir: Path, *, chunk_pages: int = CHUNK_PAGES) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self._out = out_dir
        self.pages_path = out_dir / "pages.jsonl"
        self.warc_path = out_dir / "crawl.warc.gz"
        self.items_path = out_dir / "items.jsonl"  # created with the first item
        self._items: BinaryIO | None = None
        self.items_path.unlink(missing_ok=True)
        self._pages: BinaryIO = self.pages_path.open("wb")
        self._warc: BinaryIO = self.warc_path.open("wb")
        self._warc.write(
            gzip_members([warcinfo_record(WARCINFO, datetime.now(UTC), self.warc_path.name)])
        )
        self._buffer = _Buffer(chunk_pages)
        self._payloads = PayloadIndex()
        self._lock = asyncio.Lock()
        self._writing: asyncio.Future[None] | None = None
        self._seq = 0

    async def add(
        self,
        page: PageRecord,
        fetch: FetchResult | None,
        *,
        revisit_of: Capture | None = None,
        output: Analysis | None = None,
    ) -> None:
        shot, fetch = take_screenshot(page, fetch)
        if shot is not None:
            await asyncio.to_thread(_write_file, self._out / shot[0], shot[1])
        if self._buffer.add(page, fetch, revisit_of, output):
            await self.flush()

    async def flush(self) -> int:
        async with self._lock:
            if self._writing is not None:  # a write whose flush was cancelled: let it finish
                await asyncio.shield(self._writing)
                self._writing = None
            if not self._buffer.lines:
                return self._seq
            chunk = self._buffer.take()
            self._writing = asyncio.ensure_future(asyncio.to_thread(self._write, chunk))
            await asyncio.shield(self._writing)
            self._writing = None
            self._seq += 1
            return self._seq

    def _write(self, chunk: _Chunk) -> None:
        self._warc.write(warc_chunk(chunk.fetches, self._payloads))
        if chunk.items:
            if self._items is None:
                self._items = self.items_path.open("wb")
            self._items.write(b"".join(chunk.items))
            self._items.flush()
        self._pages.write(chunk.merged_lines())
        self._warc.flush()
        self._pages.flush()

    async def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Standalone crawls cannot be resumed: nothing to save."""

    async def close(self) -> None:
        await self.flush()
        self._pages.close()
        self._warc.close()
        if self._items is not None:
            self._items.close()


class BlobSink:
    """Manifest + WARC chunks of one crawl in a BlobStore, starting at chunk ``start_seq``."""

    def __init__(
        self,
        blobs: BlobStore,
        tenant_id: str,
        crawl_id: str,
        start_seq: int = 0,
        *,
        chunk_pages: int = CHUNK_PAGES,
    ) -> None:
        self._blobs = blobs
        self._tenant = tenant_id
        self._crawl = crawl_id
        self._seq = start_seq
        self._buffer = _Buffer(chunk_pages)
        self._payloads = PayloadIndex()
        self._lock = asyncio.Lock()
        self._stale_dropped = False

    @property
    def next_seq(self) -> int:
        return self._seq

    async def add(
        self,
        page: PageRecord,
        fetch: FetchResult | None,
        *,
        revisit_of: Capture | None = None,
        output: Analysis | None = None,
    ) -> None:
        shot, fetch = take_screenshot(page, fetch)
        if shot is not None:  # stored at once (a resumed crawl writes the same key again)
            name, image = shot
            await self._blobs.put(
                key=layout.screenshot_key(self._tenant, self._crawl, name),
                data=image,
                content_type=f"image/{name.rsplit('.', 1)[-1]}",
            )
        if self._buffer.add(page, fetch, revisit_of, output):
            await self.flush()

    async def flush(self) -> int:
        async with self._lock:
            if not self._stale_dropped:
                await self._drop_stale_chunks()
                self._stale_dropped = True
            chunk = self._buffer.peek()
            if not chunk.lines:
                return self._seq
            warc = await asyncio.to_thread(self._warc_chunk, chunk.fetches, seq=self._seq)
            manifest = b"".join(chunk.lines)
            seq = self._seq
            # content and items first, the manifest last: a chunk is there once its manifest is
            if chunk.has_content:
                await self._blobs.put(
                    key=layout.content_key(self._tenant, self._crawl, seq),
                    data=b"\n".join(chunk.contents) + b"\n",
                    content_type="application/x-ndjson",
                )
            if chunk.items:
                await self._blobs.put(
                    key=layout.items_key(self._tenant, self._crawl, seq),
                    data=b"".join(chunk.items),
                    content_type="application/x-ndjson",
                )
            await self._blobs.put(
                key=layout.warc_key(self._tenant, self._crawl, seq),
                data=warc,
                content_type="application/warc",
            )
            await self._blobs.put(
                key=layout.manifest_key(self._tenant, self._crawl, seq),
                data=manifest,
                content_type="application/x-ndjson",
            )
            self._buffer.drop(chunk)
            self._seq = seq + 1
            return self._seq

    def _warc_chunk(self, fetches: list[Archived], *, seq: int) -> bytes:
        """The chunk's records; the first chunk of a crawl starts with its ``warcinfo``."""
        records = warc_chunk(fetches, self._payloads)
        if seq != 0:
            return records
        info = warcinfo_record(WARCINFO, datetime.now(UTC), f"{self._crawl}.warc.gz")
        return gzip_members([info]) + records

    async def _drop_stale_chunks(self) -> None:
        """Delete chunks ``seq >= start_seq``: left by an attempt that died after its checkpoint."""
        prefix = layout.crawl_prefix(self._tenant, self._crawl)
        for folder in ("manifest/", "warc/", "content/", "items/"):
            for key in await self._blobs.list(prefix=prefix + folder):
                name = key.rsplit("/", 1)[-1].split(".", 1)[0]
                if name.isdigit() and int(name) >= self._seq:
                    await self._blobs.delete(key=key)

    async def save_checkpoint(self, state: dict[str, Any]) -> None:
        await save_checkpoint(self._blobs, self._tenant, self._crawl, state)

    async def close(self) -> None:
        await self.flush()


async def save_checkpoint(
    blobs: BlobStore, tenant_id: str, crawl_id: str, state: dict[str, Any]
) -> None:
    """Store a crawl checkpoint as JSON under ``core.layout.checkpoint_key``."""
    await blobs.put(
        key=layout.checkpoint_key(tenant_id, crawl_id),
        data=json.dumps(state, separators=(",", ":")).encode(),
        content_type="application/json",
    )


async def load_checkpoint(blobs: BlobStore, tenant_id: str, crawl_id: str) -> dict[str, Any] | None:
    """The crawl's checkpoint, or None if it has none."""
    try:
        data = await blobs.get(key=layout.checkpoint_key(tenant_id, crawl_id))
    except NotFound:
        return None
    state = json.loads(data)
    if not isinstance(state, dict):
        raise ValueError("checkpoint is not a JSON object")
    return state
