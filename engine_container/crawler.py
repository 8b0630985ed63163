"""One crawl: a pool of workers pulling URLs from the frontier until it is exhausted.

Per URL: robots.txt (when ``spec.respect_robots``), a per-host politeness slot, the fetch
(SSRF-guarded, capped), retries of transient failures (connect errors, timeouts, 429, 500,
502, 503, 504; never other 4xx or SSRF refusals) with exponential backoff and full jitter,
link and title extraction for HTML, then one ``PageRecord`` to the sink.

Crawl rules (README "Crawl rules"): the politeness slot comes from a ``Politeness`` shared by
every crawl of the process (and fleet-wide through a ``HostLimiter``); each page has
``spec.page_timeout_s`` in all, from its first request to its last retry, and a body cut at
the budget is not retried (``attempts`` in the record); ``fetched_at`` is when the (last)
request was sent; with ``use_sitemaps`` the seeds' sitemaps are read in the background while
the seeds are crawled (``engine_container.sitemaps``); with a ``previous`` crawl
(``recrawl_of``) its pages are queued again and requested conditionally, and a 304 is
recorded as unchanged (``engine_container.recrawl``).

Rendering (``spec.render``, README "JavaScript sites"): a fetched 2xx HTML page (``always``,
or an app shell for ``auto``) is rendered by the container's ``BrowserPool`` in the page's
remaining budget; its formats, links, items and ``sha256`` then come from the rendered DOM,
which the WARC keeps as a ``conversion`` record beside the raw ``response``.

Checkpoints (every ``checkpoint_interval_s``): under the crawl's record lock the sink flushes
its buffered chunk first, then the frontier state (queue incl. URLs in flight, seen set,
counters, next chunk ``seq``) is saved. A page is marked done in the frontier in the same
step as it enters the sink's buffer, so a checkpoint never names a page both as done and as
queued: a resumed crawl re-fetches only pages after the last checkpoint, and its manifest
chunks continue at ``next_seq`` (``BlobSink`` first deletes chunks a dead attempt wrote after
that checkpoint), so every page is in the manifest exactly once.

Hashing, parsing, the page's formats, extraction and handlers run in the analysis pool
(``engine_container.analysis_pool``): worker processes on a multi-core container, worker
threads otherwise; the event loop keeps the network and the frontier. A handler's follow-ups
enter the frontier like links, with their labels (not checkpointed).

Cancellation (SIGTERM): the workers stop taking URLs, in-flight fetches are abandoned (their
URLs stay queued in the checkpoint), the sink flushes, the checkpoint is saved, and
``CancelledError`` is re-raised.

Pause (the ``pause`` event, set when the conductor sends ``PauseCrawl``): the workers take no
new URL but finish the pages they hold (fetch, retries, render, analysis, into the sink), so
nothing fetched is lost; then the sink flushes, the checkpoint is saved (a failure here is an
error, not a log line) and ``Paused`` is raised with the counts. A sitemap read in progress
is abandoned and read again on resume (its URLs are deduplicated). A crawl whose frontier ran
out meanwhile completes instead. ``on_progress`` is called at most once a second, and once
at the end of a completed crawl.

Counts: ``fetched`` pages got an HTTP response below 400 and no error; ``failed`` are all the
others (network errors, refusals, robots.txt, 4xx/5xx); ``bytes`` are wire bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from yarl import URL

from core import layout
from core.models import CrawlCounts, CrawlSpec, PageRecord
from core.output import MediaPolicy
from engine_container.analysis import NOTHING, Analysis, Job, OutputPlan
from engine_container.analysis_pool import AnalysisPool
from engine_container.browser import BrowserPool, RenderOptions, looks_like_app_shell
from engine_container.fetcher import FetchClient, FetchResult
from engine_container.frontier import Frontier, LinkResolver, QueuedUrl, checkpoint_counts
from engine_container.parsing import ParsedPage
from engine_container.politeness import Politeness, parse_retry_after
from engine_container.recrawl import PreviousCrawl, PreviousPage
from engine_container.robots import RobotsCache
from engine_container.settings import EngineSettings
from engine_container.sinks import PageSink
from engine_container.sitemaps import collect_limit, newest_first, read_sitemaps
from engine_container.warc import Capture

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
LEASE_SLACK_S = 5.0  # a shared host lease outlives its request's budget by this much
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
RENDERED_TYPE = "text/html; charset=utf-8"  # Chromium's DOM, serialised
ProgressCallback = Callable[[CrawlCounts], Awaitable[None]]


def is_transient(result: FetchResult) -> bool:
    """Worth retrying: network trouble or a status that says "later"."""
    if result.error_kind is not None:
        return result.error_kind.transient
    return result.status in TRANSIENT_STATUSES


class Paused(Exception):  # an outcome of a run, not an error
    """``Crawler.run`` stopped on its ``pause`` event with work left, checkpointed."""

    def __init__(self, counts: CrawlCounts) -> None:
        super().__init__(f"paused with {counts.queued} URLs left")
        self.counts = counts


class Crawler:
    """Runs one ``CrawlSpec`` to completion (or cancellation, or a pause) with ``run()``."""

    def __init__(
        self,
        spec: CrawlSpec,
        fetcher: FetchClient,
        sink: PageSink,
        settings: EngineSettings,
        *,
        checkpoint: dict[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        politeness: Politeness | None = None,
        previous: PreviousCrawl | None = None,
        analysis: AnalysisPool | None = None,
        proxy: str | None = None,
        browser: BrowserPool | None = None,
        pause: asyncio.Event | None = None,
    ) -> None:
        self._spec = spec
        self._pause = pause
        self._fetcher = fetcher
        self._sink = sink
        self._settings = settings
        self._on_progress = on_progress
        self._resumed = checkpoint is not None
        if checkpoint is not None:
            self._frontier = Frontier.from_checkpoint(spec, checkpoint)
            counts = checkpoint_counts(checkpoint)
        else:
            self._frontier = Frontier(spec)
            counts = CrawlCounts()
        self._fetched, self._failed, self._bytes = counts.fetched, counts.failed, counts.bytes
        self._session_key = spec.session or f"crawl-{uuid.uuid4().hex}"
        fetcher.bind_proxy(self._session_key, proxy)  # the proxy its route names (or none)
        self._headers = dict(spec.headers) or None
        # -- crawl rules (issue 12): shared politeness, sitemaps, conditional re-crawl ------
        self._politeness = politeness or Politeness(
            per_host_concurrency=settings.per_host_concurrency,
            min_delay_s=settings.per_host_delay_s,
        )
        self._previous = previous
        robots = (
            RobotsCache(
                fetcher,
                user_agent=spec.headers.get("user-agent", settings.user_agent),
                ttl_s=settings.robots_ttl_s,
                session_key=self._session_key,
                retries=settings.retries,
                retry_base_s=settings.retry_base_s,
            )
            if spec.respect_robots or spec.use_sitemaps
            else None
        )
        self._robots_txt = robots  # for Sitemap: lines even when robots are not respected
        self._robots = robots if spec.respect_robots else None
        self._seeding: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # sink.add + frontier.done, and flush + checkpoint
        # -- output (issue 12): formats, extraction, handlers, documents ----------------------
        self._analysis = analysis or AnalysisPool(0)
        self._plan = OutputPlan.of(spec)
        self._media = MediaPolicy(tuple(spec.allow_types), tuple(spec.refuse_types))
        self._labels: dict[str, str] = {}  # URL -> label of a handler's follow-up
        self._changed = asyncio.Event()
        self._browser = browser if spec.render != "never" else None
        if self._browser is not None:  # its pages leave through the same proxy
            self._browser.bind_proxy(self._session_key, proxy)
        self._render_options = RenderOptions.of(spec)

    def counts(self) -> CrawlCounts:
        return CrawlCounts(
            queued=self._frontier.queued + self._frontier.in_flight,
            fetched=self._fetched,
            failed=self._failed,
            bytes=self._bytes,
        )

    async def run(self) -> CrawlCounts:
        """Crawl until the frontier is exhausted; re-raises CancelledError after checkpointing;
        raises ``Paused`` after checkpointing when the ``pause`` event stopped it early."""
        if not self._resumed:
            self._frontier.add_seeds()
            if self._previous is not None:
                self._frontier.add_known(self._previous.urls())
        if self._spec.use_sitemaps and not self._frontier.sitemaps_done:
            self._seeding = asyncio.create_task(self._seed_from_sitemaps())
        workers = [asyncio.create_task(self._worker()) for _ in range(self._settings.concurrency)]
        background = [asyncio.create_task(self._checkpoint_loop())]
        if self._pause is not None:
            background.append(asyncio.create_task(self._wake_on_pause(self._pause)))
        if self._on_progress is not None:
            background.append(asyncio.create_task(self._progress_loop()))
        completed = False
        try:
            await asyncio.gather(*workers)
            completed = True
        finally:
            if self._seeding is not None:
                background.append(self._seeding)
            for task in [*workers, *background]:
                task.cancel()
            await asyncio.gather(*workers, *background, return_exceptions=True)
            await self._finish(completed)
        await self._report()
        if self._paused_early():
            raise Paused(self.counts())
        return self.counts()

    def _pausing(self) -> bool:
        return self._pause is not None and self._pause.is_set()

    def _paused_early(self) -> bool:
        """Stopped by the pause with URLs (or sitemaps) still to crawl."""
        frontier = self._frontier
        sitemaps_left = self._spec.use_sitemaps and not frontier.sitemaps_done
        return self._pausing() and bool(frontier.queued or frontier.in_flight or sitemaps_left)

    async def _wake_on_pause(self, pause: asyncio.Event) -> None:
        await pause.wait()
        self._changed.set()  # workers waiting for links see the pause

    # ----------------------------------------------------------------- workers

    async def _worker(self) -> None:
        while True:
            if self._pausing():  # the page this worker held is stored; take no other
                self._changed.set()
                return
            item = self._frontier.take()
            if item is None:
                seeding = self._seeding is not None and not self._seeding.done()
                if self._frontier.in_flight == 0 and not seeding:
                    self._changed.set()  # wake the others: they are done too
                    return
                self._changed.clear()
                await self._changed.wait()
                continue
            await self._process(item)
            self._changed.set()

    async def _process(self, item: QueuedUrl) -> None:
        attempts = 0
        label = self._labels.pop(item.url, None)
        started = time.monotonic()
        try:
            result, error, attempts = await self._visit(item)
            if result is not None and error is None and self._spec.render != "never":
                result, error = await self._render(result, started)
            facts = await self._examine(result, error, label)
        except Exception as exc:  # a bug must not stop the crawl: record it and go on
            log.exception("crawl %s: unexpected error on %s", self._session_key, item.url)
            result, error, facts = None, f"internal error: {type(exc).__name__}: {exc}", NOTHING
        links = self._follow(item, result, facts) if result is not None else 0
        # fetched_at: when the (last) request was sent; without one, when the URL was settled
        fetched_at = (result.fetched_at if result is not None else None) or datetime.now(UTC)
        await self._record(item, result, error, fetched_at, facts, links, attempts)

    async def _visit(self, item: QueuedUrl) -> tuple[FetchResult | None, str | None, int]:
        """Robots check and fetch: the result (or an error without a fetch), and attempts."""
        try:
            target = URL(item.url)
        except ValueError as exc:
            return None, f"invalid URL: {exc}", 0
        delay = None
        if self._robots is not None:
            rules = await self._robots.rules_for(target)
            if not rules.can_fetch(item.url, self._robots_agent()):
                return None, rules.reason, 0
            delay = rules.crawl_delay
        result, attempts = await self._fetch(item.url, target.raw_host or "", delay)
        return result, result.error, attempts

    async def _render(self, result: FetchResult, started: float) -> tuple[FetchResult, str | None]:
        """The page as Chromium renders it, when the crawl asks (``render``) and it is an HTML
        page (for ``auto``: an app shell); within what is left of ``page_timeout_s``."""
        status = result.status or 0
        if not (200 <= status < 300 and result.body and result.parseable):
            return result, None
        if self._spec.render == "auto" and not looks_like_app_shell(result.body):
            return result, None
        if self._browser is None:
            return result, "render: this engine has no browser"
        budget = self._spec.page_timeout_s - (time.monotonic() - started)
        rendered = await self._browser.render(
            result,
            session_key=self._session_key,
            options=self._render_options,
            budget_s=budget,
        )
        if rendered.html is None:
            return result, rendered.error
        return replace(result, rendered=rendered.html, screenshot=rendered.screenshot), None

    def _robots_agent(self) -> str:
        return self._spec.headers.get("user-agent", self._settings.user_agent)

    async def _fetch(self, url: str, host: str, delay: float | None) -> tuple[FetchResult, int]:
        """Fetch with retries, all within the page's ``page_timeout_s`` budget, which starts
        with the first request; returns the last result and how many requests were made."""
        settings = self._settings
        headers: Mapping[str, str] | None = self._headers
        if self._previous is not None:
            headers = self._previous.conditional_headers(url, headers)
        budget = self._spec.page_timeout_s
        deadline: float | None = None
        attempt = 0
        while True:
            async with self._politeness.slot(host, delay, budget + LEASE_SLACK_S):
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + budget
                result = await self._fetcher.fetch(
                    url,
                    session_key=self._session_key,
                    headers=headers,
                    timeout_s=max(0.001, deadline - now),
                    media=self._media,
                )
            if result.status in (429, 503):
                wait = parse_retry_after(result.retry_after)
                if wait is not None:
                    await self._politeness.hold(host, wait)
            if attempt >= settings.retries or not is_transient(result):
                return result, attempt + 1
            cap = min(settings.retry_max_s, settings.retry_base_s * 2**attempt)
            left = deadline - time.monotonic()
            if left <= cap / 2:  # the budget would (likely) end before the retry: stop here
                return result, attempt + 1
            await asyncio.sleep(min(random.uniform(0, cap), left))
            attempt += 1

    async def _seed_from_sitemaps(self) -> None:
        """Queue the URLs of the seeds' sitemaps (see ``engine_container.sitemaps``)."""
        try:
            roots: list[str] = []
            for origin in dict.fromkeys(str(URL(seed).origin()) for seed in self._spec.seeds):
                rules = await self._robots_txt.rules_for(URL(origin)) if self._robots_txt else None
                roots += list(rules.sitemaps) if rules and rules.sitemaps else []
                if not rules or not rules.sitemaps:
                    roots.append(f"{origin}/sitemap.xml")
            urls = await read_sitemaps(
                self._fetch_sitemap,
                roots,
                max_files=self._settings.sitemap_max_files,
                max_urls=collect_limit(self._spec.max_pages),
                max_bytes=self._settings.max_decoded_bytes,
            )
            added = self._frontier.add_known((url, 1) for url in newest_first(urls))
            log.info("crawl %s: %d URLs from sitemaps", self._session_key, added)
        except Exception:  # a site's sitemap must not fail the crawl
            log.exception("crawl %s: reading sitemaps failed", self._session_key)
        except asyncio.CancelledError:  # paused or stopped: read again when resumed
            self._changed.set()
            raise
        self._frontier.sitemaps_done = True
        self._changed.set()

    async def _fetch_sitemap(self, url: str) -> FetchResult | None:
        try:
            target = URL(url)
        except ValueError:
            return None
        if self._robots is not None and not await self._robots.allowed(target):
            return None
        budget = self._spec.page_timeout_s
        async with self._politeness.slot(target.raw_host or "", None, budget + LEASE_SLACK_S):
            return await self._fetcher.fetch(
                url,
                session_key=self._session_key,
                headers=self._headers,
                any_type=True,
                timeout_s=self._spec.page_timeout_s,
            )

    async def _examine(
        self, result: FetchResult | None, error: str | None, label: str | None
    ) -> Analysis:
        """Hash the body; parse, render and extract it if it is a successful page (in the
        analysis pool: worker processes on a multi-core container)."""
        if result is None or not result.body:
            return NOTHING
        status = result.status or 0
        plan = self._plan
        rendered = result.rendered is not None
        job = Job(
            url=result.final_url,
            status=status,
            body=result.rendered if result.rendered is not None else result.body,
            content_type=RENDERED_TYPE if rendered else result.headers.get("content-type"),
            media_type="text/html" if rendered else result.content_type,
            plan=plan,
            parse=error is None and 200 <= status < 300,
            headers=_decoded_headers(result) if plan.needs_headers else (),
            label=label,
        )
        return await self._analysis.run(job)

    def _follow(self, item: QueuedUrl, result: FetchResult, facts: Analysis) -> int:
        """Queue the links of a parsed page (and its handler's follow-ups); returns how many
        links it has."""
        if result.final_url != item.url:
            self._frontier.mark_fetched(result.final_url)
        page: ParsedPage | None = facts.page
        if page is None:
            return 0
        base = facts.base or result.final_url
        if facts.base is None and page.base:
            with contextlib.suppress(ValueError):
                base = str(URL(base).join(URL(page.base)))
        links = facts.urls if facts.urls is not None else page.links
        if item.depth < self._spec.max_depth:
            if facts.follow:  # first, so that a labelled follow-up wins over the same link
                self._follow_up(base, facts, item.depth + 1)
            self._frontier.add_links(base, links, item.depth + 1, resolved=facts.urls is not None)
        return len(links)

    def _follow_up(self, base: str, facts: Analysis, depth: int) -> None:
        resolver = LinkResolver(base)
        for request in facts.follow:
            url = resolver.resolve(request.url)
            if url is None:
                continue
            if self._frontier.add_links(base, [url], depth) and request.label:
                self._labels[url] = request.label

    async def _record(
        self,
        item: QueuedUrl,
        result: FetchResult | None,
        error: str | None,
        fetched_at: datetime,
        facts: Analysis,
        links: int,
        attempts: int = 1,
    ) -> None:
        body = result.body if result is not None else b""
        status = result.status if result is not None else None
        earlier = self._previous.get(item.url) if self._previous is not None else None
        if status == 304 and earlier is not None:
            await self._record_unchanged(item, result, fetched_at, earlier, attempts)
            return
        page = PageRecord.model_construct(
            url=item.url,
            final_url=result.final_url if result is not None else None,
            status=status,
            headers=dict(result.headers) if result is not None else {},
            fetched_at=fetched_at,
            elapsed_ms=result.elapsed_ms if result is not None else 0.0,
            bytes=len(body),
            sha256=facts.sha256,
            title=facts.page.title if facts.page is not None else None,
            links=links,
            depth=item.depth,
            content_type=result.content_type if result is not None else None,
            error=error,
            attempts=attempts,
            unchanged=False,
            item_count=facts.item_count,
            missing_fields=list(facts.missing),
            item_errors=list(facts.errors),
            rendered=result is not None and result.rendered is not None,
            screenshot=self._screenshot_name(item.url, result),
        )
        await self._settle(item, page, result, output=facts)

    def _screenshot_name(self, url: str, result: FetchResult | None) -> str | None:
        shot = self._spec.screenshot
        if shot is None or result is None or result.screenshot is None:
            return None
        return layout.screenshot_name(url, shot.format)

    async def _record_unchanged(
        self,
        item: QueuedUrl,
        result: FetchResult | None,
        fetched_at: datetime,
        earlier: PreviousPage,
        attempts: int,
    ) -> None:
        """A 304 to a conditional request: the page as the earlier crawl recorded it."""
        assert result is not None
        headers = dict(result.headers)
        if earlier.etag is not None:
            headers.setdefault("etag", earlier.etag)
        if earlier.last_modified is not None:
            headers.setdefault("last-modified", earlier.last_modified)
        page = PageRecord.model_construct(
            url=item.url,
            final_url=result.final_url,
            status=304,
            headers=headers,
            fetched_at=fetched_at,
            elapsed_ms=result.elapsed_ms,
            bytes=0,
            sha256=earlier.sha256,
            title=earlier.title,
            links=earlier.links,
            depth=item.depth,
            content_type=earlier.content_type,
            error=None,
            attempts=attempts,
            unchanged=True,
        )
        await self._settle(item, page, result, earlier.capture)

    async def _settle(
        self,
        item: QueuedUrl,
        page: PageRecord,
        result: FetchResult | None,
        revisit_of: Capture | None = None,
        output: Analysis | None = None,
    ) -> None:
        """Count the page, mark it done and hand it to the sink, atomically for checkpoints."""
        status = page.status
        failed = page.error is not None or status is None or status >= 400
        async with self._lock:
            # done + add with no await in between: a checkpoint sees both or neither
            self._frontier.done(item.url)
            self._failed += failed
            self._fetched += not failed
            self._bytes += result.wire_bytes if result is not None else 0
            await self._sink.add(page, result, revisit_of=revisit_of, output=output)

    # ----------------------------------------------------------------- background

    async def _finish(self, completed: bool) -> None:
        """Final flush + checkpoint; on the cancellation path a failure is only logged."""
        try:
            await self._checkpoint()
        except Exception:
            if completed or self._pausing():  # a pause must leave a checkpoint
                raise
            log.exception("crawl %s: final checkpoint failed", self._session_key)
        finally:
            if self._spec.session is None:
                await self._fetcher.drop_session(self._session_key)
                if self._browser is not None:
                    await self._browser.drop_session(self._session_key)

    async def _checkpoint(self) -> None:
        async with self._lock:
            next_seq = await self._sink.flush()
            state = self._frontier.to_checkpoint(counts=self.counts(), next_seq=next_seq)
        await self._sink.save_checkpoint(state)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.checkpoint_interval_s)
            await self._checkpoint()

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            await self._report()

    async def _report(self) -> None:
        if self._on_progress is None:
            return
        try:
            await self._on_progress(self.counts())
        except Exception:
            log.exception("crawl %s: progress callback failed", self._session_key)


def _decoded_headers(result: FetchResult) -> tuple[tuple[str, str], ...]:
    """Every response header as received, as text (the ``headers`` format, handlers)."""
    return tuple(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in result.raw_headers
    )
