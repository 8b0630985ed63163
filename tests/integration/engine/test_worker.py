"""The engine in bus mode (``Worker``) against the real SQLite bus: the handshake, its own
``container_id`` check when the broker does not filter, heartbeats, cancel, pause (also
when every slot is busy) and SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

from adapters.local.message_bus import SqliteMessageBus
from core.errors import ConfigurationError, NotFound
from core.layout import subscription_name
from core.messages import (
    CancelCrawl,
    ContainerExited,
    ContainerReady,
    CrawlCompleted,
    CrawlPaused,
    Heartbeat,
    PauseCrawl,
    RunCrawl,
    decode_inbox,
    encode,
)
from core.models import CrawlCounts, CrawlSpec
from core.ports import Queue, Subscription
from core.settings import SkycrawlSettings
from engine_container.crawler import Paused
from engine_container.settings import EngineSettings
from engine_container.worker import Worker

SPEC = CrawlSpec(seeds=["https://example.com/"])


class FilterIgnoringBus(SqliteMessageBus):
    """The real SQLite bus, but every subscription matches everything — as Google's Pub/Sub
    emulator (which ignores filters) or a fresh Service Bus subscription behave."""

    async def ensure_subscription(
        self, *, topic: str, name: str, filter: Mapping[str, str]
    ) -> Subscription:
        return await super().ensure_subscription(topic=topic, name=name, filter={})


class Runs:
    """The worker's crawl function: records what it was asked to run; blocks until released,
    or until paused (then raises ``Paused``, as the crawler does after its pages in flight)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def __call__(
        self, run: RunCrawl, report: object, pause: asyncio.Event | None = None
    ) -> CrawlCounts:
        self.started.append(run.crawl_id)
        waits = [asyncio.ensure_future(self.release.wait())]
        if pause is not None:
            waits.append(asyncio.ensure_future(pause.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if pause is not None and pause.is_set():
            raise Paused(CrawlCounts(queued=4, fetched=1))
        return CrawlCounts(fetched=3)


class MayNotDeleteBus(FilterIgnoringBus):
    """As a GCP tenant's engine sees Pub/Sub: the control plane made its subscription and
    deletes it; the engine may not (``ConfigurationError``, from ``PermissionDenied``)."""

    async def delete_subscription(self, *, topic: str, name: str) -> None:
        raise ConfigurationError("pubsub.subscriptions.delete denied")


@contextlib.asynccontextmanager
async def running_worker(
    tmp_path: Path, guid: str = "aaaa", bus_type: type[FilterIgnoringBus] = FilterIgnoringBus
) -> AsyncIterator[tuple]:
    bus = bus_type(tmp_path / "bus.sqlite3")
    control = SkycrawlSettings()
    await bus.ensure_queue(name=control.inbox_queue)
    await bus.ensure_topic(topic=control.dispatch_topic)
    engine = EngineSettings(container_id=guid, tenant_id="t1", heartbeat_interval_s=0.2, capacity=2)
    runs = Runs()
    worker = Worker(bus=bus, engine=engine, control=control, run_crawl=runs)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield bus, control, runs, stop, task
    finally:
        stop.set()
        runs.release.set()
        await asyncio.wait_for(task, 10)
        await bus.close()


async def inbox(bus: SqliteMessageBus, control: SkycrawlSettings) -> list:
    leases = await bus.receive(source=Queue(control.inbox_queue), max_messages=100)
    for lease in leases:
        await bus.ack(lease=lease)
    return [decode_inbox(lease.body) for lease in leases]


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def wait_ready(bus: SqliteMessageBus, control: SkycrawlSettings) -> ContainerReady:
    """The worker says ``ready`` only once its subscription exists; the conductor waits for it."""
    for _ in range(200):
        for message in await inbox(bus, control):
            if isinstance(message, ContainerReady):
                return message
        await asyncio.sleep(0.05)
    raise AssertionError("no ready message")


def run_for(guid: str, crawl: str) -> RunCrawl:
    return RunCrawl(container_id=guid, tenant_id="t1", crawl_id=crawl, attempt=1, spec=SPEC)


async def test_ready_only_after_subscribing_then_runs_only_its_own_work(tmp_path: Path) -> None:
    async with running_worker(tmp_path) as (bus, control, runs, _stop, _task):
        ready = await wait_ready(bus, control)
        assert ready.container_id == "aaaa"
        assert ready.capacity == 2
        # another container's work reaches this subscription (the broker ignores filters) …
        await bus.publish(topic=control.dispatch_topic, message=encode(run_for("bbbb", "k-b")))
        # … and a message claiming to be ours in the attribute but not in the body
        forged = encode(run_for("bbbb", "k-forged"))
        forged = type(forged)(
            body=forged.body, attributes={**forged.attributes, "container_id": "aaaa"}
        )
        await bus.publish(topic=control.dispatch_topic, message=forged)
        await bus.publish(topic=control.dispatch_topic, message=encode(run_for("aaaa", "k-a")))
        await until(lambda: "k-a" in runs.started)
        await asyncio.sleep(0.3)
        assert runs.started == ["k-a"], "only its own work ran"
        runs.release.set()
        done: list = []
        for _ in range(100):
            done += [m for m in await inbox(bus, control) if isinstance(m, CrawlCompleted)]
            if done:
                break
            await asyncio.sleep(0.05)
        assert [(m.crawl_id, m.counts.fetched) for m in done] == [("k-a", 3)]


async def test_heartbeats_carry_work_in_flight(tmp_path: Path) -> None:
    async with running_worker(tmp_path) as (bus, control, runs, _stop, _task):
        await wait_ready(bus, control)
        await bus.publish(topic=control.dispatch_topic, message=encode(run_for("aaaa", "k1")))
        await until(lambda: "k1" in runs.started)
        beats: list[Heartbeat] = []
        for _ in range(50):
            beats += [m for m in await inbox(bus, control) if isinstance(m, Heartbeat)]
            if any(b.in_flight == ["k1"] for b in beats):
                break
            await asyncio.sleep(0.05)
        assert any(b.in_flight == ["k1"] for b in beats)


async def test_cancel_stops_the_crawl_without_completing_it(tmp_path: Path) -> None:
    async with running_worker(tmp_path) as (bus, control, runs, _stop, _task):
        await wait_ready(bus, control)
        await bus.publish(topic=control.dispatch_topic, message=encode(run_for("aaaa", "k1")))
        await until(lambda: "k1" in runs.started)
        cancel = CancelCrawl(container_id="aaaa", tenant_id="t1", crawl_id="k1")
        await bus.publish(topic=control.dispatch_topic, message=encode(cancel))
        await asyncio.sleep(0.5)
        messages = await inbox(bus, control)
        assert not [m for m in messages if isinstance(m, CrawlCompleted)]


async def test_a_full_container_still_hears_a_pause_and_then_takes_the_waiting_run(
    tmp_path: Path,
) -> None:
    async with running_worker(tmp_path) as (bus, control, runs, _stop, _task):  # capacity 2
        await wait_ready(bus, control)
        for crawl in ("k1", "k2", "k3"):
            await bus.publish(topic=control.dispatch_topic, message=encode(run_for("aaaa", crawl)))
        await until(lambda: {"k1", "k2"} <= set(runs.started))
        await asyncio.sleep(0.3)
        assert "k3" not in runs.started, "no third slot"
        pause = PauseCrawl(container_id="aaaa", tenant_id="t1", crawl_id="k1", reason="budget")
        await bus.publish(topic=control.dispatch_topic, message=encode(pause))

        paused: list[CrawlPaused] = []

        async def answered() -> bool:
            paused.extend(m for m in await inbox(bus, control) if isinstance(m, CrawlPaused))
            return bool(paused)

        for _ in range(100):
            if await answered():
                break
            await asyncio.sleep(0.05)
        assert [(m.crawl_id, m.attempt, m.counts.fetched) for m in paused] == [("k1", 1, 1)]
        await until(lambda: "k3" in runs.started)  # the slot it freed, once k3 is visible again
        assert runs.started.count("k1") == 1


async def test_sigterm_path_releases_work_reports_exit_and_removes_subscription(
    tmp_path: Path,
) -> None:
    async with running_worker(tmp_path) as (bus, control, runs, stop, task):
        await wait_ready(bus, control)
        await bus.publish(topic=control.dispatch_topic, message=encode(run_for("aaaa", "k1")))
        await until(lambda: "k1" in runs.started)
        stop.set()  # what the SIGTERM handler does
        assert await asyncio.wait_for(task, 10) == 0
        messages = await inbox(bus, control)
        exited = [m for m in messages if isinstance(m, ContainerExited)]
        assert exited
        assert exited[0].container_id == "aaaa"
        assert not [m for m in messages if isinstance(m, CrawlCompleted)], (
            "nothing unfinished acked"
        )
        with pytest.raises(NotFound):  # the subscription is gone
            await bus.receive(
                source=Subscription(control.dispatch_topic, subscription_name("aaaa"))
            )


async def test_a_subscription_it_may_not_delete_is_left_to_the_conductor(tmp_path: Path) -> None:
    async with running_worker(tmp_path, bus_type=MayNotDeleteBus) as (bus, control, _, stop, task):
        await wait_ready(bus, control)
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0  # a clean exit, not a crash
        assert [m for m in await inbox(bus, control) if isinstance(m, ContainerExited)]


@pytest.mark.parametrize(
    ("answer", "expected"), [("203.0.113.9\n", "203.0.113.9"), ("<html>", None)]
)
async def test_ready_reports_the_egress_ip_an_echo_service_sees(
    answer: str, expected: str | None
) -> None:
    from aiohttp import web

    from engine_container.bus_crawl import observe_egress_ip
    from engine_container.fetcher import Fetcher

    async def echo(_: web.Request) -> web.Response:
        return web.Response(text=answer)

    app = web.Application()
    app.router.add_get("/ip", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        settings = EngineSettings(allow_cidrs=["127.0.0.0/8"])
        async with Fetcher(settings) as fetcher:
            assert await observe_egress_ip(fetcher, f"http://127.0.0.1:{port}/ip") == expected
            assert await observe_egress_ip(fetcher, None) is None
    finally:
        await runner.cleanup()


async def test_a_full_tenant_topic_is_reported_not_a_silent_crash(tmp_path: Path) -> None:
    """The broker refuses the subscription (its topic holds its limit): the container says
    why it exits instead of never becoming ready."""
    bus = SqliteMessageBus(tmp_path / "bus.sqlite3", max_subscriptions_per_topic=1)
    control = SkycrawlSettings()
    await bus.ensure_queue(name=control.inbox_queue)
    await bus.ensure_topic(topic=control.dispatch_topic)
    await bus.ensure_subscription(
        topic=control.dispatch_topic, name=subscription_name("other"), filter={}
    )
    engine = EngineSettings(container_id="aaaa", tenant_id="t1", capacity=1)
    worker = Worker(bus=bus, engine=engine, control=control, run_crawl=Runs())
    try:
        assert await asyncio.wait_for(worker.run(asyncio.Event()), 10) == 1
        (exited,) = await inbox(bus, control)
        assert isinstance(exited, ContainerExited)
        assert exited.container_id == "aaaa"
        assert "holds its limit of 1 subscriptions" in exited.reason
    finally:
        await bus.close()


def test_a_second_sigterm_while_exiting_cleanly_does_not_kill_the_engine() -> None:
    """SIGTERM stops the worker (a drain, exit 0). The conductor's own stop (``docker stop``:
    SIGTERM again) may land while the process is already on its way out, after its event
    loop closed: that one must not turn a clean exit into a death by signal (exit 143
    under an init, or with ``--pid host``)."""
    program = textwrap.dedent(
        """
        import asyncio, os, signal, time
        from engine_container.worker import _install_signals

        async def main() -> bool:
            stop = asyncio.Event()
            _install_signals(stop)
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stop.wait(), 5)
            return stop.is_set()

        print("stopped:", asyncio.run(main()), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # the loop is closed: the second one
        time.sleep(0.2)
        print("still exiting cleanly", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.split("\n")[:2]) == (
        0,
        ["stopped: True", "still exiting cleanly"],
    ), done.stderr
