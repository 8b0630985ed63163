"""Metering: usage is recorded as the conductor's state changes, and counted once.

A tenant's bill must not depend on how often the bus delivered a message or where an
instance died: every count rides in the compare-and-set of the change that implies it and is
applied to the hour bucket under a dedupe key.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from conductor_harness import START, FaultPlan, Harness, InstanceKilled, MakeHarness, start_ready

from core.inbox import process_lease
from core.metering import Meter, Usage, cold_start, container_time
from core.models import Container, ContainerState, Egress
from core.ports import Queue

FARGATE = Egress(name="fargate", cost_per_second=0.01, min_billed_s=60.0)


async def _usage(h: Harness, tenant_id: str = "t1") -> Usage:
    return await Meter(h.ports.state).total(tenant_id, START, START + timedelta(days=2))


async def _crawl_and_stop(h: Harness) -> tuple[str, Container]:
    """One crawl of 3 pages, then the container goes idle and stops; returns its record."""
    await h.add_tenant()
    crawl_id, engine = await start_ready(h)
    h.clock.advance(10)
    await engine.complete(crawl_id, fetched=3)
    await h.pump()
    await h.advance(h.settings.idle_ttl_s + 10, beating=(engine,))  # kill timer, drain, stop
    container = await h.container(engine.id)
    assert container.state is ContainerState.stopped
    return crawl_id, container


@pytest.fixture
async def fargate(make_harness: MakeHarness) -> Harness:
    return await make_harness(egresses=[FARGATE])


async def test_a_crawl_and_its_container_are_billed_once_when_they_end(fargate: Harness) -> None:
    _, container = await _crawl_and_stop(fargate)
    assert container.stopped_at is not None
    ran = (container.stopped_at - container.started_at).total_seconds()
    assert ran < 60  # so the minimum billing applies

    usage = await _usage(fargate)

    assert (usage.cold_starts, usage.crawls, usage.pages, usage.bytes) == (1, 1, 3, 3000)
    assert usage.container_seconds == pytest.approx(ran)
    assert usage.billed_seconds == pytest.approx(60.0)
    assert usage.cost == pytest.approx(0.6)
    assert usage.egress["fargate"].cold_starts == 1
    assert usage.egress["fargate"].cost == pytest.approx(0.6)


async def test_redelivered_messages_and_repeated_housekeeping_count_nothing_twice(
    fargate: Harness,
) -> None:
    await _crawl_and_stop(fargate)
    before = await _usage(fargate)

    for outbound in list(fargate.sent):  # every inbox message, delivered once more
        await fargate.resend(outbound)
    await fargate.pump()
    await fargate.housekeeping()
    await fargate.housekeeping()

    assert await _usage(fargate) == before


async def test_a_meter_entry_relayed_twice_is_counted_once(fargate: Harness) -> None:
    await fargate.add_tenant()
    _crawl_id, engine = await start_ready(fargate)
    container = await fargate.container(engine.id)
    outbox = fargate.conductor.outbox
    before = await _usage(fargate)

    entry = cold_start(container)  # a fresh entry for the same start: same dedupe key
    await outbox.deliver(entry)
    await outbox.deliver(entry)

    assert (await _usage(fargate)).cold_starts == before.cold_starts == 1


@pytest.mark.parametrize("die_at", range(0, 24))
async def test_an_instance_dying_anywhere_in_a_completion_neither_loses_nor_doubles_it(
    make_harness: MakeHarness, die_at: int
) -> None:
    h = await make_harness(egresses=[FARGATE])
    await h.add_tenant()
    crawl_id, engine = await start_ready(h)
    await engine.complete(crawl_id, fetched=5)
    plan = FaultPlan()
    dying = h.another_conductor(plan=plan)
    bus = dying.ports.bus
    leases = await bus.receive(
        source=Queue(h.settings.inbox_queue), max_messages=1, visibility_timeout_s=30
    )
    plan.die_at_call(die_at)
    with pytest.raises(InstanceKilled):  # at its die_at-th port call (before or after it)
        await process_lease(dying, bus, leases[0])
    h.clock.advance(31)  # the lease runs out: the completion is delivered again
    await h.pump()
    await h.housekeeping()  # relays what the dead instance left on the records

    usage = await _usage(h)
    assert (usage.crawls, usage.pages, usage.bytes) == (1, 5, 5000)


async def test_a_container_that_ran_across_hours_is_billed_in_each_hour(
    fargate: Harness,
) -> None:
    started = START + timedelta(minutes=50)
    container = Container(id="c-1", tenant_id="t1", egress=FARGATE, started_at=started)
    stopped = started + timedelta(minutes=75)  # 10 min in the first hour, 60, then 5

    for entry in container_time(container, stopped):
        await fargate.conductor.outbox.deliver(entry)

    hours = await Meter(fargate.ports.state).hours("t1", START, START + timedelta(hours=4))
    assert [b.hour for b in hours] == [START + timedelta(hours=n) for n in range(3)]
    assert [b.usage.container_seconds for b in hours] == [600.0, 3600.0, 300.0]
    assert sum(b.usage.cost for b in hours) == pytest.approx(45.0)


async def test_a_short_container_is_billed_its_egress_minimum(fargate: Harness) -> None:
    container = Container(id="c-2", tenant_id="t1", egress=FARGATE, started_at=START)
    for entry in container_time(container, START + timedelta(seconds=12)):
        await fargate.conductor.outbox.deliver(entry)

    usage = await _usage(fargate)

    assert (usage.container_seconds, usage.billed_seconds) == (12.0, 60.0)
    assert usage.cost == pytest.approx(0.6)


async def test_a_cancelled_crawl_counts_the_pages_it_fetched(fargate: Harness) -> None:
    await fargate.add_tenant()
    crawl_id, engine = await start_ready(fargate)
    await engine.progress(crawl_id, fetched=2)
    await fargate.pump()

    await fargate.cancel("t1", crawl_id)
    await fargate.pump()

    usage = await _usage(fargate)
    assert (usage.crawls, usage.pages) == (1, 2)


@pytest.mark.parametrize("die_at", range(0, 16))
async def test_an_instance_dying_anywhere_in_a_stop_bills_the_container_once(
    make_harness: MakeHarness, die_at: int
) -> None:
    h = await make_harness(egresses=[FARGATE])
    await h.add_tenant()
    crawl_id, engine = await start_ready(h)
    await engine.complete(crawl_id, fetched=1)
    await h.pump()
    h.clock.advance(h.settings.idle_ttl_s + 1)
    await h.pump()  # the kill timer: drain
    assert await engine.take_drain()  # the engine says it exited
    plan = FaultPlan()
    dying = h.another_conductor(plan=plan)
    bus = dying.ports.bus
    leases = await bus.receive(
        source=Queue(h.settings.inbox_queue), max_messages=1, visibility_timeout_s=30
    )
    assert leases[0].attributes["type"] == "container.exited"
    plan.die_at_call(die_at)
    with pytest.raises(InstanceKilled):
        await process_lease(dying, bus, leases[0])
    h.clock.advance(31)
    await h.pump()
    await h.housekeeping()

    container = await h.container(engine.id)
    assert container.state is ContainerState.stopped
    assert container.stopped_at is not None
    billed = max(60.0, (container.stopped_at - container.started_at).total_seconds())
    usage = await _usage(h)
    assert (usage.cold_starts, usage.billed_seconds) == (1, billed)
    assert usage.cost == pytest.approx(billed * 0.01)


async def test_a_container_the_runtime_refused_to_start_is_not_billed(fargate: Harness) -> None:
    await fargate.add_tenant()
    fargate.runtime.fail_starts = 1
    await fargate.submit()
    await fargate.pump()
    refused = next(c for c in await fargate.containers() if c.reason)
    assert refused.state is ContainerState.failed

    usage = await _usage(fargate)

    assert (usage.container_seconds, usage.billed_seconds, usage.cost) == (0.0, 0.0, 0.0)
