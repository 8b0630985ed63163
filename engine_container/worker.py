"""Bus mode: the engine as a container the conductor started.

Lifecycle (the brief's step 4-5):

1. read settings (GUID, tenant, egress, bus and blob connection) from the environment;
2. ensure the dispatch-topic subscription filtered on ``container_id = GUID``;
3. send ``ready: GUID`` (``ContainerReady`` with the egress IP seen, version, capacity);
4. take ``RunCrawl`` work with at most ``capacity`` crawls at once, resuming each from its
   checkpoint; send progress, completion or failure and periodic heartbeats to the inbox;
5. on ``PauseCrawl`` (its tenant's budget is spent): that crawl takes no new URL, finishes and
   stores the pages in flight, checkpoints, and the container says ``CrawlPaused``, acks
   the work and frees the slot (a later ``RunCrawl``, a new attempt, resumes it);
6. on ``DrainContainer`` (the conductor retires it) or SIGTERM: stop taking work, checkpoint what is in flight, acknowledge nothing
   unfinished, tell the conductor (``ContainerExited``), remove the subscription, exit.

Every received message is checked against this container's GUID (attribute *and* body)
whatever the broker's filter promised; foreign messages are dropped with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from pydantic import ValidationError

from core import telemetry
from core.errors import ConfigurationError, Conflict, NotFound, QuotaExceeded
from core.layout import subscription_name
from core.messages import (
    CancelCrawl,
    ContainerExited,
    ContainerReady,
    CrawlCompleted,
    CrawlFailed,
    CrawlPaused,
    DrainContainer,
    Heartbeat,
    PauseCrawl,
    Progress,
    ProxyStats,
    RunCrawl,
    decode_dispatch,
    encode,
)
from core.models import CrawlCounts, Frozen
from core.ports import Lease, MessageBus, Subscription
from core.redaction import install_log_redaction
from core.settings import SkycrawlSettings
from engine_container.browser import can_render
from engine_container.bus_crawl import RunFn, observe_egress_ip, open_crawl_runner
from engine_container.crawler import Paused
from engine_container.fetcher import EgressStats, ProxyBook
from engine_container.settings import EngineSettings
from engine_container.tuning import tune_process

log = logging.getLogger("skycrawl.engine")

#: Leases on work last this long; a crawl that runs longer is re-leased by the broker and
#: recognised as a duplicate of the running one (its newest lease is the one acked).
WORK_LEASE_S = 3600.0
#: A run that finds every slot busy (the conductor counts slots too, so rarely) is visible
#: again after this long.
OVERFLOW_DELAY_S = 1.0


def engine_version() -> str:
    try:
        return version("skycrawl")
    except PackageNotFoundError:
        return "dev"


@dataclass
class _Running:
    run: RunCrawl
    lease: Lease
    task: asyncio.Task[None] | None = None
    cancelled: bool = False
    pause: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Worker:
    bus: MessageBus
    engine: EngineSettings
    control: SkycrawlSettings
    run_crawl: RunFn
    stats: EgressStats = field(default_factory=EgressStats)
    proxy_stats: ProxyBook = field(default_factory=ProxyBook)
    egress_ip: str | None = None
    running: dict[str, _Running] = field(default_factory=dict)
    finished: set[tuple[str, int]] = field(default_factory=set)  # (crawl, attempt)
    drained: bool = False
    _stop: asyncio.Event | None = None
    browser: bool = field(init=False, default=False)  # can render: said in ready, heartbeats

    def __post_init__(self) -> None:
        self.browser = can_render(self.engine)

    @property
    def guid(self) -> str:
        assert self.engine.container_id is not None
        return self.engine.container_id

    @property
    def tenant_id(self) -> str:
        return self.engine.tenant_id or ""

    async def _send(self, message: Frozen) -> None:
        await self.bus.send(queue=self.control.inbox_queue, message=encode(message))

    async def run(self, stop: asyncio.Event) -> int:
        self._stop = stop
        topic = self.control.dispatch_topic
        name = subscription_name(self.guid)
        try:
            subscription = await self.bus.ensure_subscription(
                topic=topic, name=name, filter={"container_id": self.guid}
            )
        except (QuotaExceeded, NotFound) as exc:  # the tenant's topic is full, or gone
            reason = f"could not subscribe to {topic}: {exc}"
            log.error("container %s: %s", self.guid, reason)
            exited = ContainerExited(
                tenant_id=self.tenant_id, container_id=self.guid, exit_code=1, reason=reason
            )
            await self._send(exited)
            return 1
        await self._send(
            ContainerReady(
                tenant_id=self.tenant_id,
                container_id=self.guid,
                egress_ip=self.egress_ip,
                version=engine_version(),
                capacity=self.engine.capacity,
                browser=self.browser,
            )
        )
        log.info("container %s ready on %s", self.guid, name)
        beat = asyncio.create_task(self._heartbeats(stop))
        try:
            await self._take_work(subscription, stop)
        finally:
            beat.cancel()
            await self._shutdown()
            try:
                await self.bus.delete_subscription(topic=topic, name=name)
            except ConfigurationError as exc:  # not its to delete: the conductor deletes it
                log.info("container %s leaves %s to the conductor: %s", self.guid, name, exc)
        return 0

    async def _take_work(self, subscription: Subscription, stop: asyncio.Event) -> None:
        """Read the subscription also while every slot is busy: a ``PauseCrawl`` or
        ``CancelCrawl`` for a running crawl must reach it (a run that finds no free slot is
        given back, visible again after ``OVERFLOW_DELAY_S``)."""
        while not stop.is_set():
            leases = await self.bus.receive(
                source=subscription,
                max_messages=10,
                visibility_timeout_s=WORK_LEASE_S,
                wait_s=0.5,
            )
            for lease in leases:
                await self._accept(lease)

    async def _accept(self, lease: Lease) -> None:
        try:
            message = decode_dispatch(lease.body)
        except ValidationError:
            log.error("undecodable work message %s dropped", lease.message_id)
            await self.bus.dead_letter(lease=lease, reason="undecodable work message")
            return
        owner = lease.attributes.get("container_id")
        if owner != self.guid or message.container_id != self.guid:
            log.warning(
                "dropping message %s for container %s (I am %s)",
                lease.message_id,
                owner or message.container_id,
                self.guid,
            )
            await self.bus.ack(lease=lease)
            return
        if isinstance(message, CancelCrawl):
            await self._cancel(message)
            await self.bus.ack(lease=lease)
            return
        if isinstance(message, PauseCrawl):
            self._pause(message)
            await self.bus.ack(lease=lease)
            return
        if isinstance(message, DrainContainer):  # the conductor retires this container
            log.info("container %s told to drain", self.guid)
            await self.bus.ack(lease=lease)
            self.drained = True
            if self._stop is not None:
                self._stop.set()
            return
        if (message.crawl_id, message.attempt) in self.finished:  # a late duplicate
            await self.bus.ack(lease=lease)
            return
        current = self.running.get(message.crawl_id)
        if current is not None:  # duplicate delivery, or the lease ran out: keep the newest
            current.lease = lease
            return
        if sum(1 for r in self.running.values() if r.task) >= self.engine.capacity:
            log.info("no free slot for %s: given back for now", message.crawl_id)
            with contextlib.suppress(Conflict):
                await self.bus.release(lease=lease, delay_s=OVERFLOW_DELAY_S)
            return
        entry = _Running(run=message, lease=lease)
        self.running[message.crawl_id] = entry
        entry.task = asyncio.create_task(self._execute(entry), name=f"crawl-{message.crawl_id}")

    async def _execute(self, entry: _Running) -> None:
        run = entry.run

        async def progress(counts: CrawlCounts) -> None:
            await self._send(
                Progress(
                    container_id=self.guid,
                    tenant_id=run.tenant_id,
                    crawl_id=run.crawl_id,
                    attempt=run.attempt,
                    counts=counts,
                )
            )

        try:
            counts = await self.run_crawl(run, progress, entry.pause)
        except Paused as paused:
            await self._send(
                CrawlPaused(
                    container_id=self.guid,
                    tenant_id=run.tenant_id,
                    crawl_id=run.crawl_id,
                    attempt=run.attempt,
                    counts=paused.counts,
                )
            )
            await self._finish(entry)
            return
        except asyncio.CancelledError:
            if not entry.cancelled:
                raise  # shutting down: checkpointed by the crawler, nothing acked
            await self._finish(entry)
            return
        except Exception as exc:
            log.exception("crawl %s failed", run.crawl_id)
            await self._send(
                CrawlFailed(
                    container_id=self.guid,
                    tenant_id=run.tenant_id,
                    crawl_id=run.crawl_id,
                    attempt=run.attempt,
                    error=f"{type(exc).__name__}: {exc}",
                    retryable=True,
                )
            )
            await self._finish(entry)
            return
        await self._send(
            CrawlCompleted(
                container_id=self.guid,
                tenant_id=run.tenant_id,
                crawl_id=run.crawl_id,
                attempt=run.attempt,
                counts=counts,
            )
        )
        await self._finish(entry)

    async def _finish(self, entry: _Running) -> None:
        self.running.pop(entry.run.crawl_id, None)
        self.finished.add((entry.run.crawl_id, entry.run.attempt))
        with contextlib.suppress(Conflict):
            await self.bus.ack(lease=entry.lease)

    def _pause(self, message: PauseCrawl) -> None:
        """Let the crawl finish its pages in flight and stop (``_execute`` reports it); a
        crawl not running here is not paused (the conductor asks again if it should be)."""
        entry = self.running.get(message.crawl_id)
        if entry is None or entry.task is None:
            log.info("pause of %s, which is not running here: ignored", message.crawl_id)
            return
        log.info("crawl %s: pausing (%s)", message.crawl_id, message.reason or "told to")
        entry.pause.set()

    async def _cancel(self, message: CancelCrawl) -> None:
        entry = self.running.get(message.crawl_id)
        if entry is None or entry.task is None:
            return
        entry.cancelled = True
        entry.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await entry.task

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            requests, errors, mean_ms = self.stats.take()
            proxy = ProxyStats(requests=requests, errors=errors, mean_latency_ms=mean_ms)
            proxies = {
                pid: ProxyStats(requests=r, errors=e, bans=b, mean_latency_ms=ms)
                for pid, (r, e, b, ms) in self.proxy_stats.take().items()
            }
            with contextlib.suppress(Exception):
                await self._send(
                    Heartbeat(
                        tenant_id=self.tenant_id,
                        container_id=self.guid,
                        in_flight=sorted(self.running),
                        proxy=proxy,
                        seq=seq,
                        proxies=proxies,
                        browser=self.browser,
                    )
                )
            await _wait(stop, self.engine.heartbeat_interval_s)

    async def _shutdown(self) -> None:
        """Cancel in-flight crawls (they checkpoint), release their leases, tell the conductor."""
        entries = list(self.running.values())
        log.info(
            "container %s stopping (%s): %d crawls to checkpoint",
            self.guid,
            "drained" if self.drained else "terminated",
            len(entries),
        )
        for entry in entries:
            if entry.task is not None:
                entry.task.cancel()
        for entry in entries:
            if entry.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await entry.task
            with contextlib.suppress(Conflict):
                await self.bus.release(lease=entry.lease)
        if entries:
            reason = "terminated with work in flight"
        else:
            reason = "drained" if self.drained else "terminated"
        with contextlib.suppress(Exception):  # the conductor learns it from the runtime too
            await self._send(
                ContainerExited(
                    tenant_id=self.tenant_id, container_id=self.guid, exit_code=0, reason=reason
                )
            )


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _install_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (a drain). The conductor's own stop (``docker stop``:
    SIGTERM again) may land while the process is already on its way out: it must not turn
    a clean exit into a death by signal, so after the first SIGTERM the rest are ignored
    (and the loop's ``add_signal_handler`` is not used: closing the loop would put the
    default action back)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int, frame: object) -> None:
        if signum == signal.SIGTERM:  # stopping already: later ones change nothing (the
            signal.signal(signum, signal.SIG_IGN)  # runtime's SIGKILL ends the grace)
        with contextlib.suppress(RuntimeError):  # the loop is closed: exiting already
            loop.call_soon_threadsafe(stop.set)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)


async def _main_async(engine: EngineSettings, control: SkycrawlSettings) -> int:
    stop = asyncio.Event()
    _install_signals(stop)
    async with open_crawl_runner(engine, control) as (bus, run_crawl, fetcher):
        worker = Worker(
            bus=bus,
            engine=engine,
            control=control,
            run_crawl=run_crawl,
            stats=fetcher.stats,
            proxy_stats=fetcher.proxy_stats,
            egress_ip=await observe_egress_ip(fetcher, engine.ip_echo_url),
        )
        return await worker.run(stop)


def main() -> int:
    """Entry point of ``python -m engine_container`` without ``--standalone``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_log_redaction()  # no URL credentials in a log line
    try:
        engine = EngineSettings()
        control = SkycrawlSettings()
        if not engine.container_id:
            raise ConfigurationError("SKYCRAWL_CONTAINER_ID is not set (or use --standalone)")
        tune_process()
        telemetry.setup("skycrawl-engine")  # off unless the OTEL_* variables ask for it
        return asyncio.run(_main_async(engine, control))
    except (ConfigurationError, ValidationError) as exc:
        print(f"engine_container: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    finally:
        telemetry.shutdown()  # export what is still buffered


__all__ = ["Worker", "main"]
