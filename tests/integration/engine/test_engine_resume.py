"""Checkpoint and resume through a BlobStore (after a cancel, a hard stop or a pause): every
page ends up in the manifest exactly once.

The BlobStore is the real local adapter (``adapters.local.blob_store.FileBlobStore``).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from engine_sites import Site, engine_settings
from warcio.archiveiterator import ArchiveIterator

from adapters.local.blob_store import FileBlobStore
from core import layout
from core.models import CrawlSpec
from engine_container.crawler import Crawler, Paused
from engine_container.fetcher import Fetcher
from engine_container.frontier import checkpoint_next_seq
from engine_container.sinks import BlobSink, load_checkpoint

PAGES = 120
TENANT, CRAWL = "tenant-1", "crawl-1"


async def slow_page(request: web.Request) -> web.Response:
    i = int(request.path.strip("/") or 0)
    await asyncio.sleep(0.01)
    links = "".join(f'<a href="/{j}">{j}</a>' for j in (i + 1, (i * 5 + 1) % PAGES) if j < PAGES)
    return web.Response(text=f"<title>{i}</title>{links}", content_type="text/html")


async def start_crawl(
    site: Site,
    store: FileBlobStore,
    checkpoint: dict[str, Any] | None,
    *,
    chunk_pages: int = 10,
    checkpoint_interval_s: float = 0.05,
    pause: asyncio.Event | None = None,
) -> tuple[asyncio.Task[Any], Fetcher]:
    settings = engine_settings(concurrency=4, checkpoint_interval_s=checkpoint_interval_s)
    spec = CrawlSpec(
        seeds=[site.url("/0")],
        max_pages=1000,
        max_depth=100,
        respect_robots=False,
        use_sitemaps=False,
    )
    start_seq = checkpoint_next_seq(checkpoint) if checkpoint else 0
    sink = BlobSink(store, TENANT, CRAWL, start_seq, chunk_pages=chunk_pages)
    fetcher = Fetcher(settings)
    crawler = Crawler(spec, fetcher, sink, settings, checkpoint=checkpoint, pause=pause)
    return asyncio.create_task(crawler.run()), fetcher


async def stop_when(site: Site, pages: int, task: asyncio.Task[Any]) -> None:
    while sum(site.hits.values()) < pages:
        assert not task.done()
        await asyncio.sleep(0.005)


async def manifest_urls(store: FileBlobStore) -> list[str]:
    prefix = layout.crawl_prefix(TENANT, CRAWL) + "manifest/"
    urls = []
    for key in await store.list(prefix=prefix):
        for line in (await store.get(key=key)).decode().splitlines():
            urls.append(json.loads(line)["url"])
    return urls


async def warc_uris(store: FileBlobStore) -> list[str]:
    prefix = layout.crawl_prefix(TENANT, CRAWL) + "warc/"
    data = b"".join([await store.get(key=k) for k in await store.list(prefix=prefix)])
    gzip.decompress(data)  # the concatenated chunks are one valid .warc.gz
    return [
        r.rec_headers.get_header("WARC-Target-URI")
        for r in ArchiveIterator(io.BytesIO(data))
        if r.rec_type == "response"
    ]


async def cancel(task: asyncio.Task[Any], fetcher: Fetcher) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fetcher.close()


async def test_cancel_then_resume_covers_every_page_exactly_once(serve, tmp_path: Path) -> None:
    site: Site = await serve({"*": slow_page})
    store = FileBlobStore(tmp_path / "blobs")
    task, fetcher = await start_crawl(site, store, None)
    await stop_when(site, 50, task)
    await cancel(task, fetcher)
    fetched_before = sum(site.hits.values())

    checkpoint = await load_checkpoint(store, TENANT, CRAWL)
    assert checkpoint is not None
    assert checkpoint["queue"]
    assert checkpoint["counts"]["fetched"] == len(await manifest_urls(store))

    task, fetcher = await start_crawl(site, store, checkpoint)
    counts = await task
    await fetcher.close()

    urls = await manifest_urls(store)
    assert sorted(urls) == sorted({site.url(f"/{i}") for i in range(PAGES)})
    assert len(urls) == PAGES
    assert sorted(await warc_uris(store)) == sorted(urls)
    assert counts.fetched == PAGES
    assert counts.queued == 0
    # only pages in flight at the cancel were fetched twice
    assert sum(site.hits.values()) - PAGES <= 4, fetched_before


async def test_pause_finishes_the_pages_in_flight_and_resume_fetches_none_twice(
    serve, tmp_path: Path
) -> None:
    """The budget stop (``PauseCrawl``): unlike a cancel, the four workers' pages in flight
    are finished and stored, so the resumed crawl requests every page exactly once."""
    site: Site = await serve({"*": slow_page})
    store = FileBlobStore(tmp_path / "blobs")
    pause = asyncio.Event()
    # a checkpoint interval longer than the test: the resume uses the pause's own checkpoint
    task, fetcher = await start_crawl(site, store, None, checkpoint_interval_s=60, pause=pause)
    await stop_when(site, 50, task)
    pause.set()
    with pytest.raises(Paused) as paused:
        await task
    await fetcher.close()
    requested = sum(site.hits.values())

    stored = await manifest_urls(store)
    assert len(stored) == requested, "every page requested before the pause is stored"
    assert paused.value.counts.fetched == requested
    assert paused.value.counts.queued > 0
    checkpoint = await load_checkpoint(store, TENANT, CRAWL)
    assert checkpoint is not None
    assert checkpoint["counts"]["fetched"] == requested

    task, fetcher = await start_crawl(site, store, checkpoint)
    counts = await task
    await fetcher.close()

    urls = await manifest_urls(store)
    assert sorted(urls) == sorted({site.url(f"/{i}") for i in range(PAGES)})
    assert sorted(await warc_uris(store)) == sorted(urls)
    assert counts.fetched == PAGES
    assert set(site.hits.values()) == {1}, "no page fetched twice"


async def test_resume_from_an_older_checkpoint_after_a_hard_stop(serve, tmp_path: Path) -> None:
    """A container that died after writing chunks past its last checkpoint."""
    site: Site = await serve({"*": slow_page})
    store = FileBlobStore(tmp_path / "blobs")
    key = layout.checkpoint_key(TENANT, CRAWL)
    task, fetcher = await start_crawl(site, store, None)
    await stop_when(site, 30, task)
    while not await store.exists(key=key):
        await asyncio.sleep(0.01)
    old_checkpoint = await store.get(key=key)
    await stop_when(site, 80, task)
    await cancel(task, fetcher)
    await store.put(key=key, data=old_checkpoint)  # as if the last save never happened
    checkpoint = await load_checkpoint(store, TENANT, CRAWL)
    assert checkpoint is not None
    prefix = layout.crawl_prefix(TENANT, CRAWL) + "manifest/"
    assert len(await store.list(prefix=prefix)) > checkpoint_next_seq(checkpoint)

    # this attempt writes bigger chunks: it would not overwrite every chunk left behind
    task, fetcher = await start_crawl(
        site, store, checkpoint, chunk_pages=500, checkpoint_interval_s=60
    )
    await task
    await fetcher.close()

    urls = await manifest_urls(store)
    assert len(urls) == len(set(urls)) == PAGES
    assert sorted(await warc_uris(store)) == sorted(urls)


async def test_a_finished_crawl_resumes_to_nothing(serve, tmp_path: Path) -> None:
    site: Site = await serve({"*": slow_page})
    store = FileBlobStore(tmp_path / "blobs")
    task, fetcher = await start_crawl(site, store, None)
    first = await task
    await fetcher.close()
    hits = sum(site.hits.values())
    checkpoint = await load_checkpoint(store, TENANT, CRAWL)
    task, fetcher = await start_crawl(site, store, checkpoint)
    again = await task
    await fetcher.close()
    assert again == first
    assert sum(site.hits.values()) == hits
    assert len(await manifest_urls(store)) == PAGES
