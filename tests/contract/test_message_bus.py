"""MessageBus contract: what the conductor and the containers rely on, for every backend."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from core.errors import Conflict, InvalidRequest, NotFound
from core.ports import Lease, MessageBus, OutboundMessage, Queue, Subscription, dead_letter_queue
from core.ports.message_bus import publish_each

if TYPE_CHECKING:
    from tests.contract.harness import BusHarness

Names = Callable[[str], str]


def msg(body: bytes = b"hello", **attributes: str) -> OutboundMessage:
    return OutboundMessage(body=body, attributes=attributes)


async def queue(h: BusHarness, unique: Names, max_deliveries: int = 5) -> str:
    name = unique("q")
    await h.bus.ensure_queue(name=name, max_deliveries=max_deliveries)
    return name


async def receive_one(bus: MessageBus, source: Queue | Subscription, timeout_s: float) -> Lease:
    leases = await bus.receive(source=source, max_messages=1, visibility_timeout_s=timeout_s)
    assert len(leases) == 1, leases
    return leases[0]


async def test_send_receive_ack(bus_h: BusHarness, unique: Names) -> None:
    name = await queue(bus_h, unique)
    message_id = await bus_h.bus.send(queue=name, message=msg(b"\x00payload", kind="run"))

    lease = await receive_one(bus_h.bus, Queue(name), bus_h.visibility_s)
    assert (lease.message_id, lease.body, lease.delivery_count) == (message_id, b"\x00payload", 1)
    assert lease.attributes["kind"] == "run"
    assert lease.source == Queue(name)
    await bus_h.bus.ack(lease=lease)

    await bus_h.elapse(bus_h.visibility_s + 0.2)  # an acked message does not come back
    assert await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=30) == []


async def test_receive_respects_max_messages_and_order(bus_h: BusHarness, unique: Names) -> None:
    name = await queue(bus_h, unique)
    sent = [await bus_h.bus.send(queue=name, message=msg(str(i).encode())) for i in range(5)]
    first = await bus_h.bus.receive(source=Queue(name), max_messages=3, visibility_timeout_s=30)
    rest = await bus_h.bus.receive(source=Queue(name), max_messages=10, visibility_timeout_s=30)
    assert len(first) == 3
    assert sorted(lease.message_id for lease in first + rest) == sorted(sent)


async def test_lease_hides_message_until_visibility_timeout(
    bus_h: BusHarness, unique: Names
) -> None:
    name = await queue(bus_h, unique)
    await bus_h.bus.send(queue=name, message=msg())
    first = await receive_one(bus_h.bus, Queue(name), bus_h.visibility_s)
    assert await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=30) == []

    await bus_h.elapse(bus_h.visibility_s + 0.2)
    again = await receive_one(bus_h.bus, Queue(name), 30)
    assert again.message_id == first.message_id
    assert again.delivery_count == 2
    assert again.receipt != first.receipt


async def test_release_makes_message_visible_again_after_delay(
    bus_h: BusHarness, unique: Names
) -> None:
    name = await queue(bus_h, unique)
    await bus_h.bus.send(queue=name, message=msg())
    lease = await receive_one(bus_h.bus, Queue(name), 60)
    await bus_h.bus.release(lease=lease, delay_s=1)
    assert await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=60) == []

    await bus_h.elapse(1.2)
    again = await receive_one(bus_h.bus, Queue(name), 60)
    assert again.delivery_count == 2
    await bus_h.bus.release(lease=again)
    assert (await receive_one(bus_h.bus, Queue(name), 60)).delivery_count == 3


async def test_stale_receipt_does_not_remove_a_re_leased_message(
    bus_h: BusHarness, unique: Names
) -> None:
    name = await queue(bus_h, unique)
    await bus_h.bus.send(queue=name, message=msg())
    stale = await receive_one(bus_h.bus, Queue(name), bus_h.visibility_s)
    await bus_h.elapse(bus_h.visibility_s + 0.2)
    current = await receive_one(bus_h.bus, Queue(name), bus_h.visibility_s)

    with contextlib.suppress(Conflict):  # the port allows a no-op or Conflict
        await bus_h.bus.ack(lease=stale)
    with contextlib.suppress(Conflict):
        await bus_h.bus.release(lease=stale)

    assert await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=30) == []
    await bus_h.elapse(bus_h.visibility_s + 0.2)
    survivor = await receive_one(bus_h.bus, Queue(name), 30)
    assert survivor.message_id == current.message_id
    assert survivor.delivery_count == 3


async def test_ack_twice_is_conflict_or_no_op(bus_h: BusHarness, unique: Names) -> None:
    name = await queue(bus_h, unique)
    await bus_h.bus.send(queue=name, message=msg())
    lease = await receive_one(bus_h.bus, Queue(name), 30)
    await bus_h.bus.ack(lease=lease)
    with contextlib.suppress(Conflict):
        await bus_h.bus.ack(lease=lease)


async def test_dead_letter_after_max_deliveries(bus_h: BusHarness, unique: Names) -> None:
    name = await queue(bus_h, unique, max_deliveries=2)
    message_id = await bus_h.bus.send(queue=name, message=msg(b"poison", crawl="c1"))
    for delivery in (1, 2):
        lease = await receive_one(bus_h.bus, Queue(name), bus_h.visibility_s)
        assert lease.delivery_count == delivery
        await bus_h.elapse(bus_h.visibility_s + 0.2)

    assert await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=30) == []
    dead = await receive_one(bus_h.bus, Queue(dead_letter_queue(name)), 30)
    assert (dead.message_id, dead.body) == (message_id, b"poison")
    assert dead.attributes["crawl"] == "c1"
    assert dead.attributes["dead_letter_reason"]


async def test_explicit_dead_letter_keeps_reason(bus_h: BusHarness, unique: Names) -> None:
    name = await queue(bus_h, unique)
    await bus_h.bus.send(queue=name, message=msg(b"bad", crawl="c2"))
    lease = await receive_one(bus_h.bus, Queue(name), bus_h.visibility_s)
    await bus_h.bus.dead_letter(lease=lease, reason="undecodable body")

    await bus_h.elapse(bus_h.visibility_s + 0.2)
    assert await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=30) == []
    dead = await receive_one(bus_h.bus, Queue(dead_letter_queue(name)), 30)
    assert dead.body == b"bad"
    assert dead.attributes["dead_letter_reason"] == "undecodable body"
    assert dead.attributes["crawl"] == "c2"


async def test_delayed_send(bus_h: BusHarness, unique: Names) -> None:
    name = await queue(bus_h, unique)
    await bus_h.bus.send(queue=name, message=msg(), delay_s=1)
    assert await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=30) == []
    await bus_h.elapse(1.2)
    assert len(await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=30)) == 1


async def test_long_poll_returns_when_a_message_arrives(bus_h: BusHarness, unique: Names) -> None:
    name = await queue(bus_h, unique)

    async def send_later() -> None:
        await asyncio.sleep(0.2)
        await bus_h.reopen().send(queue=name, message=msg(b"late"))

    started = time.monotonic()
    sender = asyncio.create_task(send_later())
    leases = await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=30, wait_s=5)
    await sender
    assert [lease.body for lease in leases] == [b"late"]
    assert time.monotonic() - started < 3


async def test_empty_long_poll_waits_without_spinning(bus_h: BusHarness, unique: Names) -> None:
    name = await queue(bus_h, unique)
    wall, cpu = time.monotonic(), time.process_time()
    assert await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=30, wait_s=0.6) == []
    assert time.monotonic() - wall >= 0.55
    assert time.process_time() - cpu < 0.3


async def test_subscription_filter_routes_by_container_id(bus_h: BusHarness, unique: Names) -> None:
    topic, a, b = unique("dispatch"), unique("container-a"), unique("container-b")
    await bus_h.bus.ensure_topic(topic=topic)
    sub_a = await bus_h.bus.ensure_subscription(topic=topic, name=a, filter={"container_id": a})
    sub_b = await bus_h.bus.ensure_subscription(topic=topic, name=b, filter={"container_id": b})
    assert sub_a == Subscription(topic, a)

    await bus_h.bus.publish(topic=topic, message=msg(b"for-a", container_id=a, tenant="t"))
    lease = await receive_one(bus_h.bus, sub_a, 30)
    assert (lease.body, lease.attributes["container_id"], lease.source) == (b"for-a", a, sub_a)
    await bus_h.bus.ack(lease=lease)
    stray = await bus_h.bus.receive(source=sub_b, visibility_timeout_s=30)
    if bus_h.bus.capabilities.filters_applied:
        assert stray == []
    else:  # delivered anyway: intact, so the receiver can tell it is not its own and drop it
        assert [(s.body, s.attributes["container_id"]) for s in stray] in ([], [(b"for-a", a)])


async def test_publish_reaches_every_matching_subscription(
    bus_h: BusHarness, unique: Names
) -> None:
    topic = unique("dispatch")
    await bus_h.bus.ensure_topic(topic=topic)
    subs = [
        await bus_h.bus.ensure_subscription(topic=topic, name=unique("s"), filter={"kind": "x"})
        for _ in range(2)
    ]
    await bus_h.bus.publish(topic=topic, message=msg(b"fan-out", kind="x"))
    for sub in subs:
        assert (await receive_one(bus_h.bus, sub, 30)).body == b"fan-out"


async def test_publish_each_delivers_every_message_as_publish_does(
    bus_h: BusHarness, unique: Names
) -> None:
    """``publish_each``: what ``publish`` of each message does, whether the bus publishes
    them at once (``GroupPublish``) or not."""
    topic, a, b = unique("dispatch"), unique("container-a"), unique("container-b")
    await bus_h.bus.ensure_topic(topic=topic)
    sub_a = await bus_h.bus.ensure_subscription(topic=topic, name=a, filter={"container_id": a})
    sub_b = await bus_h.bus.ensure_subscription(topic=topic, name=b, filter={"container_id": b})
    ids = await publish_each(
        bus_h.bus,
        topic=topic,
        messages=[
            msg(b"a1", container_id=a),
            msg(b"b1", container_id=b),
            msg(b"a2", container_id=a),
        ],
    )
    assert len(set(ids)) == 3
    bodies: dict[Subscription, set[bytes]] = {sub_a: set(), sub_b: set()}
    for sub in (sub_a, sub_b):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(bodies[sub] & {b"a1", b"a2", b"b1"}) < (
            2 if sub == sub_a else 1
        ):
            for lease in await bus_h.bus.receive(
                source=sub, max_messages=10, visibility_timeout_s=30, wait_s=1
            ):
                bodies[sub].add(lease.body)
    assert {b"a1", b"a2"} <= bodies[sub_a]
    assert b"b1" in bodies[sub_b]
    if bus_h.bus.capabilities.filters_applied:
        assert bodies == {sub_a: {b"a1", b"a2"}, sub_b: {b"b1"}}


async def test_publish_without_subscribers_reaches_nobody(bus_h: BusHarness, unique: Names) -> None:
    topic = unique("dispatch")
    await bus_h.bus.ensure_topic(topic=topic)
    assert await bus_h.bus.publish(topic=topic, message=msg(container_id="nobody"))


async def test_delete_subscription_drops_pending_and_later_messages(
    bus_h: BusHarness, unique: Names
) -> None:
    topic, name = unique("dispatch"), unique("container")
    await bus_h.bus.ensure_topic(topic=topic)
    await bus_h.bus.ensure_subscription(topic=topic, name=name, filter={"container_id": name})
    await bus_h.bus.publish(topic=topic, message=msg(b"pending", container_id=name))

    await bus_h.bus.delete_subscription(topic=topic, name=name)
    await bus_h.bus.delete_subscription(topic=topic, name=name)  # missing is not an error
    await bus_h.bus.publish(topic=topic, message=msg(b"after", container_id=name))
    with contextlib.suppress(NotFound):
        assert await bus_h.bus.receive(source=Subscription(topic, name)) == []

    sub = await bus_h.bus.ensure_subscription(topic=topic, name=name, filter={"container_id": name})
    assert await bus_h.bus.receive(source=sub, visibility_timeout_s=30) == []


async def test_delete_topic_removes_its_subscriptions_and_what_they_hold(
    bus_h: BusHarness, unique: Names
) -> None:
    """A tenant's teardown: its topic goes with every subscription on it; provisioning the
    tenant again gives an empty topic."""
    topic, name = unique("dispatch"), unique("container")
    await bus_h.bus.ensure_topic(topic=topic)
    await bus_h.bus.ensure_subscription(topic=topic, name=name, filter={"container_id": name})
    await bus_h.bus.publish(topic=topic, message=msg(b"pending", container_id=name))

    await bus_h.bus.delete_topic(topic=topic)
    await bus_h.bus.delete_topic(topic=topic)  # missing is not an error
    with contextlib.suppress(NotFound):
        assert await bus_h.bus.receive(source=Subscription(topic, name)) == []
    with contextlib.suppress(NotFound):  # gone: refused, or it reaches nobody
        await bus_h.bus.publish(topic=topic, message=msg(b"after", container_id=name))

    await bus_h.bus.ensure_topic(topic=topic)
    sub = await bus_h.bus.ensure_subscription(topic=topic, name=name, filter={"container_id": name})
    assert await bus_h.bus.receive(source=sub, visibility_timeout_s=30) == []
    await bus_h.bus.delete_topic(topic=topic)


async def test_oversize_message_is_invalid(bus_h: BusHarness, unique: Names) -> None:
    name, topic = await queue(bus_h, unique), unique("dispatch")
    await bus_h.bus.ensure_topic(topic=topic)
    limit = bus_h.bus.capabilities.max_message_bytes
    with pytest.raises(InvalidRequest):
        await bus_h.bus.send(queue=name, message=msg(b"x" * (limit + 1)))
    with pytest.raises(InvalidRequest):
        await bus_h.bus.publish(topic=topic, message=msg(b"x" * (limit + 1)))
    await bus_h.bus.send(queue=name, message=msg(b"x" * (limit // 2)))


async def test_send_to_unknown_queue_is_not_found(bus_h: BusHarness, unique: Names) -> None:
    with pytest.raises(NotFound):
        await bus_h.bus.send(queue=unique("missing"), message=msg())


async def test_ensure_queue_is_idempotent(bus_h: BusHarness, unique: Names) -> None:
    name = await queue(bus_h, unique)
    await bus_h.bus.send(queue=name, message=msg())
    await bus_h.bus.ensure_queue(name=name)
    assert len(await bus_h.bus.receive(source=Queue(name), visibility_timeout_s=30)) == 1


async def test_restart_loses_nothing(bus_h: BusHarness, unique: Names) -> None:
    name = await queue(bus_h, unique)
    sent = {await bus_h.bus.send(queue=name, message=msg(str(i).encode())) for i in range(3)}
    held = await receive_one(bus_h.bus, Queue(name), bus_h.visibility_s)
    await bus_h.bus.close()

    bus = bus_h.reopen()
    visible = await bus.receive(source=Queue(name), visibility_timeout_s=30)
    assert {lease.message_id for lease in visible} == sent - {held.message_id}
    await bus_h.elapse(bus_h.visibility_s + 0.2)
    assert (await receive_one(bus, Queue(name), 30)).message_id == held.message_id


@pytest.mark.parametrize("seed", range(3))
async def test_concurrent_receivers_never_share_a_lease(
    bus_h: BusHarness, unique: Names, seed: int
) -> None:
    """Four workers on two clients lease, ack or release at random; no lease is ever shared."""
    name = await queue(bus_h, unique, max_deliveries=100)
    total = 40
    for i in range(total):
        await bus_h.bus.send(queue=name, message=msg(str(i).encode()))
    clients, rng = [bus_h.bus, bus_h.reopen()], random.Random(seed)
    held: set[str] = set()
    acked: list[str] = []

    async def worker(bus: MessageBus) -> None:
        while len(acked) < total:
            count = rng.randint(1, 5)
            leases = await bus.receive(
                source=Queue(name), max_messages=count, visibility_timeout_s=60
            )
            for lease in leases:
                assert lease.message_id not in held, "two live leases on one message"
                held.add(lease.message_id)
            await asyncio.sleep(0)
            for lease in leases:
                held.discard(lease.message_id)
                if rng.random() < 0.6:
                    await bus.ack(lease=lease)
                    acked.append(lease.message_id)
                else:
                    await bus.release(lease=lease)
            if not leases:
                await asyncio.sleep(0.005)

    await asyncio.wait_for(asyncio.gather(*(worker(clients[i % 2]) for i in range(4))), 30)
    assert len(acked) == len(set(acked)) == total


# --------------------------------------------------------------------------- SQLite only

WORKER = """
import asyncio, sys, time
from pathlib import Path
from adapters.local.message_bus import SqliteMessageBus
from core.ports import Queue

async def main() -> None:
    bus = SqliteMessageBus(Path(sys.argv[1]))
    print("ready", flush=True)
    while not Path(sys.argv[3]).exists():
        time.sleep(0.01)
    got, idle = [], 0
    try:
        while idle < 10:
            leases = await bus.receive(
                source=Queue(sys.argv[2]), max_messages=3, visibility_timeout_s=60, wait_s=0.05
            )
            idle = 0 if leases else idle + 1
            got += [lease.message_id for lease in leases]
    finally:
        await bus.close()
    print(" ".join(got), flush=True)

asyncio.run(main())
"""


async def test_sqlite_processes_never_lease_the_same_message(tmp_path: Path) -> None:
    from adapters.local.message_bus import SqliteMessageBus

    bus = SqliteMessageBus(tmp_path / "bus.sqlite3")
    await bus.ensure_queue(name="inbox")
    sent = {await bus.send(queue="inbox", message=msg(str(i).encode())) for i in range(150)}
    go = tmp_path / "go"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            str(tmp_path / "bus.sqlite3"),
            "inbox",
            str(go),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"ready"
        go.touch()
        outputs = [(await asyncio.wait_for(proc.communicate(), 30))[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await bus.close()
    leased = [mid for out in outputs for mid in out.decode().split()]
    assert len(leased) == len(set(leased)), "a message was leased twice"
    assert set(leased) == sent
    assert all(proc.returncode == 0 for proc in procs)


async def test_sqlite_lease_expires_on_the_wall_clock(tmp_path: Path) -> None:
    from adapters.local.message_bus import SqliteMessageBus

    bus = SqliteMessageBus(tmp_path / "bus.sqlite3")
    try:
        await bus.ensure_queue(name="q")
        await bus.send(queue="q", message=msg())
        first = await receive_one(bus, Queue("q"), 0.3)
        again = await bus.receive(source=Queue("q"), visibility_timeout_s=30, wait_s=2)
        assert [lease.message_id for lease in again] == [first.message_id]
        assert again[0].delivery_count == 2
    finally:
        await bus.close()


async def test_sqlite_dead_letters_of_subscriptions_go_to_the_topic_queue(
    sqlite_bus_h: BusHarness,
) -> None:
    await sqlite_bus_h.bus.ensure_topic(topic="dispatch")
    sub = await sqlite_bus_h.bus.ensure_subscription(topic="dispatch", name="c1", filter={})
    await sqlite_bus_h.bus.publish(topic="dispatch", message=msg(container_id="c1"))
    lease = await receive_one(sqlite_bus_h.bus, sub, 30)
    await sqlite_bus_h.bus.dead_letter(lease=lease, reason="not mine")
    await sqlite_bus_h.bus.delete_subscription(topic="dispatch", name="c1")

    dead = await receive_one(sqlite_bus_h.bus, Queue(dead_letter_queue("dispatch")), 30)
    assert dead.attributes["dead_letter_reason"] == "not mine"
    assert dead.attributes["dead_letter_source"] == "dispatch/c1"


@pytest.mark.parametrize(
    "call",
    [
        {"visibility_timeout_s": 0},
        {"visibility_timeout_s": 12 * 3600 + 1},
        {"max_messages": 0},
    ],
)
async def test_sqlite_rejects_bad_receive_arguments(
    sqlite_bus_h: BusHarness, call: dict[str, float]
) -> None:
    await sqlite_bus_h.bus.ensure_queue(name="q")
    with pytest.raises(InvalidRequest):
        await sqlite_bus_h.bus.receive(source=Queue("q"), **call)


async def test_sqlite_rejects_bad_names_and_unknown_sources(sqlite_bus_h: BusHarness) -> None:
    for bad in ("", "a/b", "-x", "a b"):
        with pytest.raises(InvalidRequest):
            await sqlite_bus_h.bus.ensure_queue(name=bad)
    with pytest.raises(NotFound):
        await sqlite_bus_h.bus.receive(source=Queue("never-created"))
    with pytest.raises(NotFound):
        await sqlite_bus_h.bus.publish(topic="no-topic", message=msg())
    with pytest.raises(NotFound):
        await sqlite_bus_h.bus.ensure_subscription(topic="no-topic", name="s", filter={})
