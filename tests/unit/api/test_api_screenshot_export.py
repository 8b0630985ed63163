"""Screenshots in the exports (issue 15): ``format=screenshots`` is a ZIP of every rendered
page's image under the name its record carries, with an ``index.jsonl`` of URL → name,
streamed a blob-store chunk at a time; ``skycrawl export`` unpacks it beside ``pages.jsonl``.
The engine's ``BlobSink`` stores the crawl, as in the service."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from api_harness import Harness

from core import layout
from core.exports import export_stream
from core.models import PageRecord
from core.ports.blob_store import STREAM_CHUNK_BYTES
from engine_container.fetcher import FetchResult
from engine_container.sinks import BlobSink
from functions.local.client import CliClient
from functions.local.crawl_command import export_all
from functions.local.session import Session

Tenant = tuple[str, str]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10_000  # 2.5 MiB: more than one chunk
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg" * 1000
SHOTS = {"https://shop.example/app": ("png", PNG), "https://shop.example/cart": ("jpeg", JPEG)}
PLAIN = "https://shop.example/about"  # not rendered: no screenshot


def fetched(url: str, screenshot: bytes | None) -> FetchResult:
    return FetchResult(
        url=url,
        final_url=url,
        status=200,
        headers={},
        body=b"<div id=app></div>",
        wire_bytes=18,
        elapsed_ms=1.0,
        redirects=0,
        rendered=b"<div id=app>hi</div>" if screenshot else None,
        screenshot=screenshot,
    )


async def crawl_with_screenshots(harness: Harness, tenant: Tenant) -> str:
    tenant_id, key = tenant
    spec = {"seeds": list(SHOTS), "render": "auto", "screenshot": {"full_page": True}}
    crawl_id = str((await harness.submit(key, spec)).parsed()["id"])
    sink = BlobSink(harness.blobs, tenant_id, crawl_id)
    now = datetime.now(UTC)
    for url, (kind, image) in SHOTS.items():
        name = layout.screenshot_name(url, kind)
        await sink.add(
            PageRecord(url=url, status=200, fetched_at=now, screenshot=name), fetched(url, image)
        )
    await sink.add(PageRecord(url=PLAIN, status=200, fetched_at=now), fetched(PLAIN, None))
    await sink.close()
    return crawl_id


async def test_the_screenshots_export_is_a_zip_of_every_image_and_an_index(
    harness: Harness, tenant: Tenant
) -> None:
    _, key = tenant
    crawl_id = await crawl_with_screenshots(harness, tenant)

    response = await harness.call(
        "GET", f"/v1/crawls/{crawl_id}/export", key=key, query={"format": "screenshots"}
    )

    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/zip"
    assert f'filename="{crawl_id}.screenshots.zip"' in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.body))
    assert archive.testzip() is None  # every CRC checks out
    names = {url: layout.screenshot_name(url, kind) for url, (kind, _) in SHOTS.items()}
    assert archive.namelist() == [*names.values(), "index.jsonl"]
    for url, (_, image) in SHOTS.items():
        assert archive.read(names[url]) == image
    index = [json.loads(line) for line in archive.read("index.jsonl").splitlines()]
    assert index == [{"url": url, "screenshot": name} for url, name in names.items()]
    # the names are the ones the page records carry
    pages = (await harness.call("GET", f"/v1/crawls/{crawl_id}/pages", key=key)).parsed()
    recorded = {p["url"]: p["screenshot"] for p in pages["items"]}
    assert recorded == {**names, PLAIN: None}


async def test_the_zip_is_streamed_a_chunk_at_a_time(harness: Harness, tenant: Tenant) -> None:
    tenant_id, _ = tenant
    crawl_id = await crawl_with_screenshots(harness, tenant)

    chunks = [
        c async for c in await export_stream(harness.blobs, tenant_id, crawl_id, "screenshots")
    ]

    assert len(chunks) >= 3  # the 2.5 MiB image alone is three blob-store chunks
    assert max(len(c) for c in chunks) <= STREAM_CHUNK_BYTES + 4096  # + a header at most
    assert zipfile.ZipFile(io.BytesIO(b"".join(chunks))).read("index.jsonl")


async def test_a_crawl_without_screenshots_exports_an_empty_index(
    harness: Harness, tenant: Tenant
) -> None:
    tenant_id, key = tenant
    crawl_id = str((await harness.submit(key, {"seeds": [PLAIN]})).parsed()["id"])
    sink = BlobSink(harness.blobs, tenant_id, crawl_id)
    now = datetime.now(UTC)
    await sink.add(PageRecord(url=PLAIN, status=200, fetched_at=now), fetched(PLAIN, None))
    await sink.close()

    body = b"".join(
        [c async for c in await export_stream(harness.blobs, tenant_id, crawl_id, "screenshots")]
    )

    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.namelist() == ["index.jsonl"]
    assert archive.read("index.jsonl") == b""


async def test_skycrawl_export_writes_the_screenshots_beside_the_pages(
    harness: Harness, tenant: Tenant, tmp_path: Path
) -> None:
    _, key = tenant
    crawl_id = await crawl_with_screenshots(harness, tenant)
    client = CliClient.in_process(harness.api)
    session = Session(client=client, data_dir=tmp_path, operator_key="unused")
    out = tmp_path / "out"
    out.mkdir()
    (out / "items.jsonl").write_text('{"_url": "from an earlier crawl"}\n')
    try:
        written = await export_all(session, key, [crawl_id], out)
    finally:
        await client.close()

    # what the CLI announces is what is there: no items (the earlier crawl's file is gone)
    assert written == ["pages.jsonl", "crawl.warc.gz", "screenshots/"]
    assert not (out / "items.jsonl").exists()

    records = [json.loads(line) for line in (out / "pages.jsonl").read_text().splitlines()]
    shots = {r["url"]: r["screenshot"] for r in records if r["screenshot"]}
    assert set(shots) == set(SHOTS)
    for url, name in shots.items():
        assert (out / name).read_bytes() == SHOTS[url][1]  # the record's name is the path
    assert sorted(p.name for p in (out / "screenshots").iterdir()) == sorted(
        Path(name).name for name in shots.values()
    )
