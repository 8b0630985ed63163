"""Wiring of bus mode: the provider's bus and blob store, one shared safe fetcher, one
shared per-host ``Politeness`` (fleet-wide with ``SKYCRAWL_HOST_LIMITER_PATH`` or ``_URL``), and the
function that runs (or resumes) one ``RunCrawl`` into the blob store — conditionally against
an earlier crawl when ``recrawl_of`` says so (``engine_container.recrawl``)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol

from adapters import load_provider
from adapters.local.host_limiter import SqliteHostLimiter
from core import telemetry
from core.messages import RunCrawl
from core.models import CrawlCounts
from core.ports import BlobStore, MessageBus
from core.ports.host_limiter import HostLimiter
from core.sealed_headers import unseal
from core.settings import SkycrawlSettings
from engine_container import recrawl
from engine_container.analysis_pool import AnalysisPool, default_processes
from engine_container.browser import BrowserPool
from engine_container.crawler import Crawler
from engine_container.fetcher import Fetcher
from engine_container.frontier import checkpoint_next_seq
from engine_container.handlers import check_allowed, parse_allowed
from engine_container.politeness import Politeness
from engine_container.settings import EngineSettings
from engine_container.sinks import BlobSink, load_checkpoint

log = logging.getLogger("skycrawl.engine")

Reporter = Callable[[CrawlCounts], Coroutine[Any, Any, None]]


class RunFn(Protocol):
    """Runs (or resumes) one crawl; with ``pause`` set it stops after the pages in flight
    and raises ``engine_container.crawler.Paused`` (checkpointed)."""

    async def __call__(
        self, run: RunCrawl, report: Reporter, pause: asyncio.Event | None = None
    ) -> CrawlCounts: ...


def crawl_runner(
    blobs: BlobStore,
    fetcher: Fetcher,
    engine: EngineSettings,
    politeness: Politeness | None = None,
    analysis: AnalysisPool | None = None,
    browser: BrowserPool | None = None,
) -> RunFn:
    """Runs crawls into ``blobs``; every crawl shares ``politeness`` (one per container),
    the ``analysis`` pool (its worker processes) and the ``browser`` (Chromium, launched by
    the first crawl that renders)."""
    shared = politeness or build_politeness(engine)
    allowed = parse_allowed(engine.handlers)

    async def run_crawl(
        run: RunCrawl, report: Reporter, pause: asyncio.Event | None = None
    ) -> CrawlCounts:
        with telemetry.span(
            "engine crawl.run",
            run.traceparent,
            kind="consumer",
            tenant_id=run.tenant_id,
            crawl_id=run.crawl_id,
            container_id=run.container_id,
            attempt=run.attempt,
        ):
            counts = await _run(run, report, pause)
            telemetry.set_attributes(fetched=counts.fetched, failed=counts.failed)
            return counts

    async def _run(
        run: RunCrawl, report: Reporter, pause: asyncio.Event | None = None
    ) -> CrawlCounts:
        if run.spec.handler is not None:
            check_allowed(run.spec.handler, allowed)  # the API checked; the engine too
        try:
            checkpoint = await load_checkpoint(blobs, run.tenant_id, run.crawl_id)
            start_seq = checkpoint_next_seq(checkpoint) if checkpoint else 0
        except ValueError as exc:  # corrupt, or written by an incompatible version
            log.warning("crawl %s: unusable checkpoint (%s); starting afresh", run.crawl_id, exc)
            checkpoint, start_seq = None, 0  # the sink drops chunks >= 0 on its first flush
        sink = BlobSink(blobs, run.tenant_id, run.crawl_id, start_seq)
        previous = await _previous_crawl(blobs, run)
        spec = await unseal(blobs, tenant_id=run.tenant_id, crawl_id=run.crawl_id, spec=run.spec)
        crawler = Crawler(
            spec,
            fetcher,
            sink,
            engine,
            checkpoint=checkpoint,
            on_progress=report,
            politeness=shared,
            previous=previous,
            analysis=analysis,
            proxy=run.proxy,
            browser=browser,
            pause=pause,
        )
        counts = await crawler.run()
        await recrawl.remember_latest(blobs, run.tenant_id, run.spec, run.crawl_id)
        return counts

    return run_crawl


async def _previous_crawl(blobs: BlobStore, run: RunCrawl) -> recrawl.PreviousCrawl | None:
    """The crawl ``recrawl_of`` names, loaded; None for a full crawl."""
    if run.spec.recrawl_of is None:
        return None
    crawl_id = await recrawl.resolve(blobs, run.tenant_id, run.spec)
    if crawl_id is None or crawl_id == run.crawl_id:
        return None
    previous = await recrawl.load_previous(blobs, run.tenant_id, crawl_id)
    if previous is not None and run.spec.recrawl_of == "latest":
        await recrawl.remember_resolved(blobs, run.tenant_id, run.crawl_id, crawl_id)
    return previous


def build_politeness(engine: EngineSettings) -> Politeness:
    """The container's one ``Politeness``: shared by its crawls and, with
    ``SKYCRAWL_HOST_LIMITER_PATH``, by every engine process using that file."""
    limiter: HostLimiter | None = None
    if engine.host_limiter_url:  # the selfhosted provider: one limiter per database
        from adapters.selfhosted.database import PostgresDatabase
        from adapters.selfhosted.host_limiter import PostgresHostLimiter

        limiter = PostgresHostLimiter(PostgresDatabase(engine.host_limiter_url, max_size=2))
    elif engine.host_limiter_path is not None:
        limiter = SqliteHostLimiter(engine.host_limiter_path)
    return Politeness(
        per_host_concurrency=engine.per_host_concurrency,
        min_delay_s=engine.per_host_delay_s,
        shared=limiter,
    )


def build_analysis(engine: EngineSettings) -> AnalysisPool:
    """The container's one analysis pool: ``SKYCRAWL_ANALYSIS_PROCESSES`` workers, or one per
    core but the event loop's when unset (threads on a single core)."""
    processes = engine.analysis_processes
    return AnalysisPool(default_processes() if processes is None else processes)


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
    politeness = build_politeness(engine)
    analysis = build_analysis(engine)
    try:
        # Chromium starts with the first render, if any; its requests count per proxy too
        async with (
            Fetcher(engine) as fetcher,
            BrowserPool(engine, proxy_stats=fetcher.proxy_stats) as browser,
        ):
            yield bus, crawl_runner(blobs, fetcher, engine, politeness, analysis, browser), fetcher
    finally:
        await analysis.close()
        await politeness.close()
        await bus.close()
        await blobs.close()
