"""Screenshots of rendered pages land in the crawl's blobs (``screenshots/...``) when the
page is added, under the name its record gives, and never inside the WARC chunk."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

from adapters.local.blob_store import FileBlobStore
from core import layout
from core.models import PageRecord
from engine_container.fetcher import FetchResult
from engine_container.sinks import BlobSink

IMAGE = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100


async def test_a_screenshot_is_a_blob_named_by_the_page_record(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    sink = BlobSink(store, "t1", "cr1")
    url = "http://127.0.0.1:8000/app"
    name = layout.screenshot_name(url, "png")
    fetch = FetchResult(
        url=url,
        final_url=url,
        status=200,
        headers={"content-type": "text/html"},
        body=b"<html><div id=app></div></html>",
        wire_bytes=30,
        elapsed_ms=1.0,
        redirects=0,
        rendered=b"<html><div id=app><h1>hi</h1></div></html>",
        screenshot=IMAGE,
    )
    page = PageRecord(url=url, status=200, fetched_at=datetime.now(UTC), screenshot=name)

    await sink.add(page, fetch)
    await sink.flush()

    assert await store.get(key=layout.screenshot_key("t1", "cr1", name)) == IMAGE
    warc = gzip.decompress(await store.get(key=layout.warc_key("t1", "cr1", 0)))
    assert b"WARC-Type: conversion" in warc
    assert b"pixels" not in warc
