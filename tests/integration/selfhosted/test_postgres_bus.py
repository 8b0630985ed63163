"""What only the PostgreSQL bus, scheduler and migrations promise (the contract suites cover
the rest): receivers sleep on LISTEN/NOTIFY instead of polling, wake when a delayed message
falls due, survive a lost LISTEN connection; timers are due by the database's clock; the
schema migrates once, even when two control planes start at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from adapters.selfhosted.database import PostgresDatabase
from adapters.selfhosted.message_bus import PostgresMessageBus
from adapters.selfhosted.migrations import migrate, migrations
from adapters.selfhosted.scheduler import PostgresScheduler
from core.errors import InvalidRequest, NotFound
from core.ports import OutboundMessage, Queue
from tests.integration.selfhosted.postgres import fresh_database, shared_url


@pytest.fixture
async def buses() -> AsyncIterator[tuple[PostgresMessageBus, PostgresMessageBus]]:
    receiver, sender = PostgresMessageBus(PostgresDatabase(shared_url(), max_size=2)), None
    sender = PostgresMessageBus(PostgresDatabase(shared_url(), max_size=2))
    try:
        yield receiver, sender
    finally:
        await receiver.close()
        await sender.close()


def _count_lease_queries(monkeypatch: pytest.MonkeyPatch, bus: PostgresMessageBus) -> list[int]:
    calls = [0]
    lease = bus._lease

    async def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return await lease(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bus, "_lease", counted)
    return calls


async def test_a_waiting_receiver_is_woken_by_notify_not_by_polling(
    buses: tuple[PostgresMessageBus, PostgresMessageBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, sender = buses
    await sender.ensure_queue(name="notify-wake")
    calls = _count_lease_queries(monkeypatch, receiver)

    async def send_later() -> float:
        await asyncio.sleep(1.0)
        await sender.send(queue="notify-wake", message=OutboundMessage(body=b"hi"))
        return time.monotonic()

    task = asyncio.create_task(send_later())
    leases = await receiver.receive(source=Queue("notify-wake"), wait_s=10)
    woken_after = time.monotonic() - await task
    assert [lease.body for lease in leases] == [b"hi"]
    assert woken_after < 0.5
    assert calls[0] <= 3  # looked once, slept a second on LISTEN, looked again: no polling


async def test_polling_mode_looks_again_and_again(monkeypatch: pytest.MonkeyPatch) -> None:
    bus = PostgresMessageBus(PostgresDatabase(shared_url(), max_size=2), notify=False)
    try:
        await bus.ensure_queue(name="poll-mode")
        calls = _count_lease_queries(monkeypatch, bus)
        assert await bus.receive(source=Queue("poll-mode"), wait_s=1.0) == []
        # every 20-100 ms: 10 or more on a quiet machine; well above notify mode's 3 even
        # when a loaded machine stretches the sleeps
        assert calls[0] >= 5
    finally:
        await bus.close()


async def test_a_waiting_receiver_wakes_when_a_delayed_message_falls_due(
    buses: tuple[PostgresMessageBus, PostgresMessageBus],
) -> None:
    receiver, sender = buses
    await sender.ensure_queue(name="due-wake")
    started = time.monotonic()
    await sender.send(queue="due-wake", message=OutboundMessage(body=b"later"), delay_s=0.8)
    leases = await receiver.receive(source=Queue("due-wake"), wait_s=10)
    elapsed = time.monotonic() - started
    assert [lease.body for lease in leases] == [b"later"]
    assert 0.75 <= elapsed < 1.5  # at its due time, not at the next 5 s re-check


async def test_a_lost_listen_connection_loses_no_message(
    buses: tuple[PostgresMessageBus, PostgresMessageBus],
) -> None:
    receiver, sender = buses
    await sender.ensure_queue(name="relisten")
    assert await receiver.receive(source=Queue("relisten"), wait_s=0.1) == []  # now listening
    async with sender._database.connection("terminate") as conn:
        cur = await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = 'LISTEN skycrawl_bus'"
        )
        assert [row[0] for row in await cur.fetchall()] == [True]

    async def send_later() -> None:
        await asyncio.sleep(0.3)
        await sender.send(queue="relisten", message=OutboundMessage(body=b"still here"))

    task = asyncio.create_task(send_later())
    started = time.monotonic()
    leases = await receiver.receive(source=Queue("relisten"), wait_s=10)
    await task
    assert [lease.body for lease in leases] == [b"still here"]
    assert time.monotonic() - started < 2


async def test_timers_fall_due_by_the_database_clock() -> None:
    bus = PostgresMessageBus(PostgresDatabase(shared_url(), max_size=2))
    try:
        await bus.ensure_queue(name="db-clock")
        handle = await PostgresScheduler(bus).schedule(
            queue="db-clock", message=OutboundMessage(body=b"kill"), delay_s=42.5
        )
        async with bus._database.connection("inspect") as conn:
            cur = await conn.execute(
                "SELECT visible_at - enqueued_at FROM bus_messages WHERE message_id = %s",
                (handle,),
            )
            row = await cur.fetchone()
        assert row is not None
        assert row[0] == timedelta(seconds=42.5)  # the database's now() + delay, exactly
    finally:
        await bus.close()


async def test_migrations_apply_once_even_when_two_start_together() -> None:
    with fresh_database() as url:
        first, second = PostgresDatabase(url), PostgresDatabase(url)
        try:
            await asyncio.gather(first.pool(), second.pool())
            async with first.connection("check") as conn:
                cur = await conn.execute("SELECT version FROM skycrawl_migrations ORDER BY 1")
                versions = [row[0] for row in await cur.fetchall()]
                assert versions == [m.version for m in migrations()]
                assert await migrate(conn) == []  # nothing left to apply
        finally:
            await first.close()
            await second.close()


@pytest.mark.parametrize(("synchronous", "expected"), [(True, "on"), (False, "off")])
async def test_synchronous_commit_is_a_choice_of_the_pool(synchronous: bool, expected: str) -> None:
    database = PostgresDatabase(shared_url(), max_size=1, synchronous_commit=synchronous)
    try:
        async with database.connection("show") as conn:
            cur = await conn.execute("SHOW synchronous_commit")
            assert await cur.fetchone() == (expected,)
    finally:
        await database.close()


async def test_dead_letters_of_subscriptions_go_to_the_topic_queue(
    buses: tuple[PostgresMessageBus, PostgresMessageBus],
) -> None:
    bus, _ = buses
    topic = f"dispatch-{time.monotonic_ns()}"
    await bus.ensure_topic(topic=topic)
    sub = await bus.ensure_subscription(topic=topic, name="c1", filter={"container_id": "c1"})
    await bus.publish(topic=topic, message=OutboundMessage(b"x", {"container_id": "c1"}))
    (lease,) = await bus.receive(source=sub, visibility_timeout_s=30)
    await bus.dead_letter(lease=lease, reason="not mine")
    await bus.delete_subscription(topic=topic, name="c1")

    (dead,) = await bus.receive(source=Queue(f"{topic}-dlq"), visibility_timeout_s=30)
    assert dead.attributes["dead_letter_reason"] == "not mine"
    assert dead.attributes["dead_letter_source"] == f"{topic}/c1"
    assert dead.attributes["container_id"] == "c1"


async def test_bad_names_nul_attributes_and_unknown_sources(
    buses: tuple[PostgresMessageBus, PostgresMessageBus],
) -> None:
    bus, _ = buses
    for bad in ("", "a/b", "-x", "a b", "x" * 201):
        with pytest.raises(InvalidRequest):
            await bus.ensure_queue(name=bad)
    await bus.ensure_queue(name="nul-attrs")
    with pytest.raises(InvalidRequest, match="NUL"):
        await bus.send(queue="nul-attrs", message=OutboundMessage(b"x", {"k": "a\x00b"}))
    with pytest.raises(NotFound):
        await bus.receive(source=Queue("never-created"))
    with pytest.raises(NotFound):
        await bus.receive(source=Queue("never-created"), wait_s=0.2)
    with pytest.raises(NotFound):
        await bus.publish(topic="no-topic", message=OutboundMessage(b"x"))
    with pytest.raises(NotFound):
        await bus.ensure_subscription(topic="no-topic", name="s", filter={})
