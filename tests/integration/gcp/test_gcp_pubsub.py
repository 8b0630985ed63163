"""PubSubMessageBus on the emulator: what the contract suite does not cover -- the stored
filter (which the emulator ignores, hence ``filters_applied=False``), the engine's own
``container_id`` check, Pub/Sub's native dead-lettering, lease renewal past the 600 s limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from core.errors import Conflict, InvalidRequest, NotFound
from core.layout import subscription_name
from core.messages import ContainerReady, CrawlCompleted, RunCrawl, decode_inbox, encode
from core.models import CrawlCounts, CrawlSpec
from core.ports import OutboundMessage, Queue, Subscription, dead_letter_queue
from core.settings import SkycrawlSettings
from engine_container.settings import EngineSettings
from engine_container.worker import Worker
from tests.integration.gcp.conftest import open_bus

Names = Callable[[str], str]


async def test_container_subscription_stores_its_filter_which_the_emulator_ignores(
    bus, names: Names
) -> None:
    topic, mine, theirs = names("dispatch"), names("guid"), names("guid")
    await bus.ensure_topic(topic=topic)
    sub = await bus.ensure_subscription(
        topic=topic, name=subscription_name(mine), filter={"container_id": mine}
    )
    stored = await bus._sub.get_subscription(subscription=bus.subscription_path(sub.name))
    assert stored.filter == f'attributes.container_id = "{mine}"'
    assert stored.enable_exactly_once_delivery
    assert stored.dead_letter_policy.dead_letter_topic == bus.topic_path(f"{topic}-dlq")
    assert stored.expiration_policy.ttl.total_seconds() == 86400

    await bus.publish(topic=topic, message=OutboundMessage(b"x", {"container_id": theirs}))
    leases = await bus.receive(source=sub, visibility_timeout_s=30, wait_s=2)
    # The capability must tell the truth: if the emulator ever applies filters, this fails.
    assert bus.capabilities.filters_applied is False
    assert [lease.attributes["container_id"] for lease in leases] == [theirs], (
        "the emulator delivered nothing: it applies filters now, update filters_applied"
    )


async def test_filters_are_immutable_and_checked(bus, names: Names) -> None:
    topic, name = names("dispatch"), names("container")
    await bus.ensure_topic(topic=topic)
    await bus.ensure_subscription(topic=topic, name=name, filter={"container_id": "a"})
    await bus.ensure_subscription(topic=topic, name=name, filter={"container_id": "a"})
    with pytest.raises(Conflict):
        await bus.ensure_subscription(topic=topic, name=name, filter={"container_id": "b"})
    for bad in ({"container-id": "a"}, {"container_id": 'a" OR "1'}):
        with pytest.raises(InvalidRequest):
            await bus.ensure_subscription(topic=topic, name=names("s"), filter=bad)
    for bad_name in ("ab", "goog-x", "1abc", "a/b"):
        with pytest.raises(InvalidRequest):
            await bus.ensure_queue(name=bad_name)


async def test_unknown_sources_and_dead_letter_queues(bus, names: Names) -> None:
    with pytest.raises(NotFound):
        await bus.receive(source=Queue(names("never")))
    with pytest.raises(NotFound):
        await bus.ensure_subscription(topic=names("no-topic"), name=names("s"), filter={})
    name = names("q")
    await bus.ensure_queue(name=name)
    await bus.send(queue=dead_letter_queue(name), message=OutboundMessage(b"dead"))
    [lease] = await bus.receive(source=Queue(dead_letter_queue(name)), visibility_timeout_s=30)
    with pytest.raises(InvalidRequest):
        await bus.dead_letter(lease=lease, reason="again")


async def test_native_dead_letter_keeps_the_id_and_gets_a_reason(bus, names: Names) -> None:
    name = names("q")
    await bus.ensure_queue(name=name, max_deliveries=5)  # Pub/Sub forwards on its own
    sent = await bus.send(queue=name, message=OutboundMessage(b"poison", {"crawl": "c9"}))
    for delivery in range(1, 6):
        [lease] = await bus.receive(source=Queue(name), visibility_timeout_s=30, wait_s=2)
        assert (lease.message_id, lease.delivery_count) == (sent, delivery)
        await bus.release(lease=lease)
    # a sixth delivery is due: Pub/Sub forwards the message instead (the emulator does so
    # when the subscription is pulled)
    assert await bus.receive(source=Queue(name), visibility_timeout_s=30, wait_s=1) == []
    dead = await bus.receive(
        source=Queue(dead_letter_queue(name)), visibility_timeout_s=30, wait_s=5
    )
    assert [(d.message_id, d.body, d.attributes["crawl"]) for d in dead] == [
        (sent, b"poison", "c9")
    ]
    assert dead[0].attributes["dead_letter_reason"] == "delivered 5 times (max_delivery_attempts)"
    assert dead[0].attributes["dead_letter_source"] == name


async def test_leases_longer_than_the_ack_deadline_are_renewed(names: Names) -> None:
    bus = open_bus(max_ack_deadline_s=2)  # as if Pub/Sub's limit were 2 s instead of 600 s
    try:
        name = names("q")
        await bus.ensure_queue(name=name)
        await bus.send(queue=name, message=OutboundMessage(b"long"))
        [lease] = await bus.receive(source=Queue(name), visibility_timeout_s=5)
        await asyncio.sleep(3.5)  # past two deadlines: only renewal keeps it hidden
        assert await bus.receive(source=Queue(name), visibility_timeout_s=30) == []
        await asyncio.sleep(2.5)  # the 5 s lease is over
        [again] = await bus.receive(source=Queue(name), visibility_timeout_s=30, wait_s=2)
        assert again.message_id == lease.message_id
        with pytest.raises(Conflict):
            await bus.ack(lease=lease)
        await bus.ack(lease=again)
    finally:
        await bus.close()


# --------------------------------------------------------------------------- the engine


class Runs:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def __call__(
        self, run: RunCrawl, report: object, pause: asyncio.Event | None = None
    ) -> CrawlCounts:
        self.started.append(run.crawl_id)
        await self.release.wait()
        return CrawlCounts(fetched=1)


@contextlib.asynccontextmanager
async def worker(control: SkycrawlSettings, guid: str) -> AsyncIterator[Runs]:
    bus = open_bus()
    engine = EngineSettings(container_id=guid, tenant_id="t1", heartbeat_interval_s=0.3)
    runs = Runs()
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(bus, engine, control, runs).run(stop))
    try:
        yield runs
    finally:
        stop.set()
        runs.release.set()
        await asyncio.wait_for(task, 20)
        await bus.close()


async def test_no_container_ever_runs_another_containers_work(bus, names: Names) -> None:
    """The emulator delivers every dispatch message to every container subscription; each
    engine must drop what is not its own (by attribute and by body) and run only its own."""
    control = SkycrawlSettings(inbox_queue=names("inbox"), dispatch_topic=names("dispatch"))
    await bus.ensure_queue(name=control.inbox_queue)
    await bus.ensure_topic(topic=control.dispatch_topic)
    spec = CrawlSpec(seeds=["https://example.com/"])

    def run(guid: str, crawl: str) -> RunCrawl:
        return RunCrawl(container_id=guid, tenant_id="t1", crawl_id=crawl, attempt=1, spec=spec)

    a, b = names("aaaa"), names("bbbb")
    async with worker(control, a) as runs_a, worker(control, b) as runs_b:
        ready: set[str] = set()
        while ready != {a, b}:
            for lease in await bus.receive(source=Queue(control.inbox_queue), wait_s=2):
                message = decode_inbox(lease.body)
                if isinstance(message, ContainerReady):
                    ready.add(message.container_id)
                await bus.ack(lease=lease)
        forged = encode(run(b, "k-forged"))
        forged = OutboundMessage(forged.body, {**forged.attributes, "container_id": a})
        for message in (encode(run(a, "k-a")), encode(run(b, "k-b")), forged):
            await bus.publish(topic=control.dispatch_topic, message=message)
        for _ in range(100):
            if runs_a.started and runs_b.started:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # time for any wrong delivery to be (wrongly) run
        assert (runs_a.started, runs_b.started) == (["k-a"], ["k-b"])
        runs_a.release.set()
        runs_b.release.set()
        completed: set[tuple[str, str]] = set()
        for _ in range(20):
            for lease in await bus.receive(source=Queue(control.inbox_queue), wait_s=1):
                message = decode_inbox(lease.body)
                if isinstance(message, CrawlCompleted):
                    completed.add((message.container_id, message.crawl_id))
                await bus.ack(lease=lease)
            if len(completed) == 2:
                break
        assert completed == {(a, "k-a"), (b, "k-b")}
    for guid in (a, b):  # each engine removed its subscription on the way out
        with pytest.raises(NotFound):
            await bus.receive(source=Subscription(control.dispatch_topic, subscription_name(guid)))
