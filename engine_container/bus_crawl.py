"""Wiring of bus mode: the provider's bus and blob store, one shared safe fetcher, and the
function that runs (or resumes) one ``RunCrawl`` into the blob store."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from adapters import load_provider
from core.messages import RunCrawl
from core.models import CrawlCounts
from core.ports import BlobStore, MessageBus
from core.settings import SkycrawlSettings
from engine_container.crawler import Crawler
from engine_container.fetcher import Fetcher
from engine_container.frontier import checkpoint_next_seq
from engine_container.settings import EngineSettings
from engine_container.sinks import BlobSink, load_checkpoint

log = logging.getLogger("skycrawl.engine")

Reporter = Callable[[CrawlCounts], Coroutine[Any, Any, None]]
RunFn = Callable[[RunCrawl, Reporter], Coroutine[Any, Any, CrawlCounts]]


def crawl_runner(blobs: BlobStore, fetcher: Fetcher, engine: EngineSettings) -> RunFn:
    async def run_crawl(run: RunCrawl, report: Reporter) -> CrawlCounts:
        try:
            checkpoint = await load_checkpoint(blobs, run.tenant_id, run.crawl_id)
            start_seq = checkpoint_next_seq(checkpoint) if checkpoint else 0
        except ValueError as exc:  # corrupt, or written by an incompatible version
            log.warning("crawl %s: unusable checkpoint (%s); starting afresh", run.crawl_id, exc)
            checkpoint, start_seq = None, 0  # the sink drops chunks >= 0 on its first flush
        sink = BlobSink(blobs, run.tenant_id, run.crawl_id, start_seq)
        crawler = Crawler(
            run.spec, fetcher, sink, engine, checkpoint=checkpoint, on_progress=report
        )
        return await crawler.run()

    return run_crawl


async def observe_egress_ip(fetcher: Fetcher, echo_url: str | None) -> str | None:
    """The address this container's requests leave from, as an echo service sees it."""
    if not echo_url:
        return None
    result = await fetcher.fetch(echo_url, any_type=True)
    text = result.body[:64].decode("ascii", "replace").strip() if result.status == 200 else ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        log.warning("egress IP echo %s answered %s %r", echo_url, result.status, text[:40])
        return None


@contextlib.asynccontextmanager
async def open_crawl_runner(
    engine: EngineSettings, control: SkycrawlSettings
) -> AsyncIterator[tuple[MessageBus, RunFn, Fetcher]]:
    provider = load_provider(control.provider)
    bus, blobs = provider.build_container_ports(control)
    try:
        async with Fetcher(engine) as fetcher:
            yield bus, crawl_runner(blobs, fetcher, engine), fetcher
    finally:
        await bus.close()
        await blobs.close()
