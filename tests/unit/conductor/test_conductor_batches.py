"""Placements of one tenant that arrive together are applied together (``Router._place_batch``).

The handlers of one inbox batch run concurrently; the crawls of one tenant among them are
decided on one read of the tenant's containers and reserved with one compare-and-set per
container. These tests hold that path to what the one-by-one path guarantees: the
least-loaded spread, the tenant's limits, the backlog's order, and -- with the instance dying
at any of its port calls -- every crawl dispatched exactly once, with no slot leaked.
"""

from __future__ import annotations

import asyncio

import pytest
from conductor_harness import FaultPlan, Harness, InstanceKilled, MakeHarness, fail_next

from core.inbox import process_lease
from core.models import Container, CrawlState
from core.ports import Item, Queue


async def _ready_containers(h: Harness, count: int, **quotas: int) -> list[Container]:
    """``count`` ready containers of tenant t1, with no work."""
    tenant = await h.add_tenant(**quotas)
    for _ in range(count):
        started = await h.conductor.fleet.start(tenant, h.settings.egresses[0])
        assert started is not None
        await h.engine(started.id).ready()
    await h.pump()
    live = await h.live()
    assert [c.state.value for c in live] == ["ready"] * count
    return live


async def _runs_by_container(h: Harness, containers: list[Container]) -> dict[str, list[str]]:
    """The crawl ids each container's engine received, in order, duplicates kept."""
    return {c.id: [run.crawl_id for run in await h.engine(c.id).runs()] for c in containers}


async def test_a_burst_of_one_tenant_is_spread_least_loaded_with_one_write_per_container(
    harness: Harness,
) -> None:
    h = harness
    ready = await _ready_containers(h, 2, max_containers=2, parallel_per_container=4)
    generations = {c.id: c.generation for c in ready}

    ids = [await h.submit() for _ in range(7)]
    await h.pump()  # the 7 submissions arrive in one batch of messages

    crawls = [await h.crawl(i) for i in ids]
    assert [c.state for c in crawls] == [CrawlState.dispatched] * 7
    live = {c.id: c for c in await h.live()}
    assert sorted(len(c.in_flight) for c in live.values()) == [3, 4]
    # one reservation each for all the crawls it took (the kill timer's generation moved once)
    assert {i: c.generation - generations[i] for i, c in live.items()} == {i: 1 for i in live}
    runs = await _runs_by_container(h, ready)
    for c in crawls:
        assert runs[c.container_id or ""].count(c.id) == 1  # its RunCrawl, once, to its holder
    assert sum(len(r) for r in runs.values()) == 7


async def test_a_burst_past_the_tenants_limit_leaves_the_newest_pending_then_drains_in_order(
    harness: Harness,
) -> None:
    h = harness
    (only,) = await _ready_containers(h, 1, max_containers=1, parallel_per_container=2)

    ids = [await h.submit() for _ in range(5)]
    await h.pump()

    states = [(await h.crawl(i)).state for i in ids]
    assert states[:2] == [CrawlState.dispatched] * 2
    assert states[2:] == [CrawlState.pending] * 3
    waiting = await h.crawl(ids[2])
    assert waiting.reason is not None
    assert "limit of 1 containers" in waiting.reason
    assert set((await h.container(only.id)).in_flight) == set(ids[:2])

    engine = h.engine(only.id)
    await engine.work()
    await engine.complete(ids[0])
    await h.pump()  # the completion places the backlog's oldest pending crawl

    assert (await h.crawl(ids[2])).state is CrawlState.dispatched
    assert [(await h.crawl(i)).state for i in ids[3:]] == [CrawlState.pending] * 2
    assert set((await h.container(only.id)).in_flight) == {ids[1], ids[2]}


async def _batch_dying_at(make_harness: MakeHarness, die_at: int) -> bool:
    """Four crawls of one tenant handled as one batch by an instance that dies at its
    ``die_at``-th port call (False if it made fewer calls than that), then the messages
    delivered again to a healthy instance and housekeeping run; checks the outcome."""
    h = await make_harness()
    ready = await _ready_containers(h, 2, max_containers=2, parallel_per_container=4)
    ids = [await h.submit() for _ in range(4)]
    plan = FaultPlan()
    dying = h.another_conductor(plan=plan)
    bus = dying.ports.bus
    leases = await bus.receive(
        source=Queue(h.settings.inbox_queue), max_messages=10, visibility_timeout_s=10
    )
    assert len(leases) == 4
    plan.die_at_call(die_at)
    outcomes = await asyncio.gather(
        *(process_lease(dying, bus, lease) for lease in leases), return_exceptions=True
    )
    died = any(isinstance(o, InstanceKilled) for o in outcomes)
    assert all(o is True or isinstance(o, InstanceKilled) for o in outcomes), outcomes
    h.clock.advance(
        11
    )  # the leases run out (before any idle timer): what was not acked comes again
    await h.pump()
    await h.housekeeping()
    await h.pump()

    crawls = [await h.crawl(i) for i in ids]
    assert [c.state for c in crawls] == [CrawlState.dispatched] * 4, (die_at, crawls)
    live = await h.live()
    held = {crawl_id: c.id for c in live for crawl_id in c.in_flight}
    assert held == {c.id: c.container_id for c in crawls}, die_at  # no slot leaked or lost
    runs = await _runs_by_container(h, ready)
    for c in crawls:
        assert c.id in runs[c.container_id or ""], (die_at, c.id)  # it reached its container
    return died


async def test_an_instance_dying_at_any_port_call_of_a_batch_loses_and_leaks_nothing(
    make_harness: MakeHarness,
) -> None:
    die_at, died = 0, True
    while died:  # every call of the batch, until the instance makes it to the end
        died = await _batch_dying_at(make_harness, die_at)
        die_at += 1
    # the batch really was cut at each of its calls: 39 points today (64 before a batch's
    # dispatches, its runs, and its outbox clears with backlog deletes became one write each)
    assert die_at > 35


async def test_crawls_reserved_before_a_failed_reservation_of_their_batch_are_dispatched(
    harness: Harness,
) -> None:
    """A batch reserves on every chosen container before it commits any crawl: when one
    reservation fails (a transient store error), the crawls reserved before it are still
    committed and their handlers answered, as when each container's crawls were committed
    right after its reservation; the others' messages come again and are placed then."""
    h = harness
    await _ready_containers(h, 2, max_containers=2, parallel_per_container=4)
    ids = [await h.submit() for _ in range(4)]
    state = h.ports.state
    original = state.replace
    reservations: list[str] = []

    async def second_reservation_fails(**kwargs: object) -> object:
        item = kwargs["item"]
        if isinstance(item, Item) and item.table == h.conductor.records.containers.name:
            reservations.append("containers")
            if len(reservations) == 2:
                raise ConnectionError("replace: connection reset by peer")
        return await original(**kwargs)  # type: ignore[arg-type]

    state.replace = second_reservation_fails  # type: ignore[method-assign,assignment]
    bus = h.conductor.ports.bus
    leases = await bus.receive(
        source=Queue(h.settings.inbox_queue), max_messages=10, visibility_timeout_s=10
    )
    assert len(leases) == 4
    outcomes = await asyncio.gather(*(process_lease(h.conductor, bus, lease) for lease in leases))
    state.replace = original  # type: ignore[method-assign]
    dispatched = [i for i in ids if (await h.crawl(i)).state is CrawlState.dispatched]
    assert len(dispatched) == 2  # the first container's, committed despite the failure
    assert outcomes.count(True) == 2

    h.clock.advance(11)  # the failed ones' leases run out: their messages come again
    await h.pump()
    assert [(await h.crawl(i)).state for i in ids] == [CrawlState.dispatched] * 4


@pytest.mark.parametrize(("port", "method"), [("state", "write_chains"), ("bus", "publish_many")])
async def test_a_grouped_write_that_fails_as_a_whole_is_made_one_by_one(
    harness: Harness, port: str, method: str
) -> None:
    """A batch's grouped dispatches, clears and publishes fail as a whole, storing nothing
    (a transient error of the one commit): each crawl's writes are then made one by one,
    as before there were groups, and every handler of the batch still succeeds."""
    h = harness
    ready = await _ready_containers(h, 2, max_containers=2, parallel_per_container=4)
    ids = [await h.submit() for _ in range(4)]
    failures = fail_next(h.ports.state if port == "state" else h.bus, method, times=2)
    bus = h.conductor.ports.bus
    leases = await bus.receive(
        source=Queue(h.settings.inbox_queue), max_messages=10, visibility_timeout_s=10
    )
    outcomes = await asyncio.gather(*(process_lease(h.conductor, bus, lease) for lease in leases))
    assert failures  # the group was tried, and failed
    assert outcomes == [True] * 4
    assert [(await h.crawl(i)).state for i in ids] == [CrawlState.dispatched] * 4
    runs = await _runs_by_container(h, ready)
    assert sorted(r for rs in runs.values() for r in rs) == sorted(ids)  # each run once
