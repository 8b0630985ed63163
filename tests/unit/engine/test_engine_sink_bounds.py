"""A sink holds a few MiB of pages at most before it writes a chunk (``MAX_BUFFER_BYTES``):
memory that grows with page size stays bounded whatever the page count bound (500) allows
(at 32 MiB, the engine's peak RSS was 40 MB higher on 10-20 KB pages; at 4 MiB, 6 MB)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from adapters.local.blob_store import FileBlobStore
from core import layout
from core.models import PageRecord
from engine_container.fetcher import FetchResult
from engine_container.sinks import BlobSink, StandaloneSink

MiB = 1024 * 1024


def page_of(n: int, size: int) -> tuple[PageRecord, FetchResult]:
    url = f"http://127.0.0.1:8000/p/{n}"
    body = os.urandom(size)
    fetch = FetchResult(
        url=url,
        final_url=url,
        status=200,
        headers={"content-type": "application/octet-stream"},
        body=body,
        wire_bytes=size,
        elapsed_ms=1.0,
        redirects=0,
    )
    return PageRecord(url=url, status=200, fetched_at=datetime.now(UTC), bytes=size), fetch


async def test_a_standalone_sink_writes_pages_of_1_mib_out_after_at_most_two(
    tmp_path: Path,
) -> None:
    sink = StandaloneSink(tmp_path)
    for n in range(3):
        await sink.add(*page_of(n, MiB))
    # written without a flush: the lines are on disk, the WARC holds their bodies
    assert len(sink.pages_path.read_bytes().splitlines()) >= 2
    assert sink.warc_path.stat().st_size > 2 * MiB
    await sink.close()


async def test_a_blob_sink_stores_a_chunk_after_at_most_two_pages_of_1_mib(
    tmp_path: Path,
) -> None:
    store = FileBlobStore(tmp_path)
    sink = BlobSink(store, "t1", "cr1")
    for n in range(5):
        await sink.add(*page_of(n, MiB))
    stored = await store.list(prefix=layout.manifest_key("t1", "cr1", 0).rsplit("/", 1)[0])
    assert {layout.manifest_key("t1", "cr1", 0), layout.manifest_key("t1", "cr1", 1)} <= set(
        stored
    )  # two chunks stored, no flush asked for
