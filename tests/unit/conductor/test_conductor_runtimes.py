"""One deployment, several runtimes: every start, describe and stop goes to the runtime of
the container's own egress, and a container record says where it lives."""

from __future__ import annotations

from conductor_harness import MakeHarness, start_ready

from core.models import ContainerState, Egress
from core.ports import RunState

POOL = [
    Egress(name="use1", runtime="ecs", region="us-east-1"),
    Egress(name="euw1", runtime="cloud-run", region="europe-west1"),
]


async def test_containers_start_on_the_runtime_of_their_egress(make_harness: MakeHarness) -> None:
    harness = await make_harness(egresses=POOL, runtime_per_egress=True)
    ecs, run = harness.runtimes["use1"], harness.runtimes["euw1"]
    await harness.add_tenant("t1")
    _, east = await start_ready(harness, "t1", egress="use1")
    _, west = await start_ready(harness, "t1", egress="euw1")

    assert ecs.started_ids == [east.id]
    assert run.started_ids == [west.id]
    record = await harness.container(west.id)
    assert (record.egress.runtime, record.egress.region) == ("cloud-run", "europe-west1")
    assert [s.container_id for s in await harness.ports.list_running(POOL)] == [east.id, west.id]


async def test_liveness_and_stops_ask_the_container_s_own_runtime(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(egresses=POOL, runtime_per_egress=True)
    ecs, run = harness.runtimes["use1"], harness.runtimes["euw1"]
    await harness.add_tenant("t1")
    crawl, east = await start_ready(harness, "t1", egress="use1")
    _, west = await start_ready(harness, "t1", egress="euw1")
    run.set_state(west.id, RunState.exited, 137)  # the Cloud Run task died, silently

    await harness.advance(harness.settings.heartbeat_timeout_s / 4 + 1)

    assert (await harness.container(west.id)).state is ContainerState.failed
    assert run.stopped == [west.id]  # stopped where it ran
    assert ecs.stopped == []  # the ECS one was never asked about
    assert (await harness.container(east.id)).state is ContainerState.ready
    await east.complete(crawl)
    await harness.pump()
    await harness.advance(harness.settings.idle_ttl_s)
    await harness.advance(harness.settings.drain_timeout_s)
    assert ecs.stopped == [east.id]


async def test_crawls_placed_at_once_spread_over_equal_egresses(make_harness: MakeHarness) -> None:
    """Two crawls handled concurrently (one inbox batch) both read an empty fleet; the one
    whose start comes second must see the first container and take the other egress,
    rather than both landing on the first egress of the pool."""
    equal = [Egress(name="home"), Egress(name="lab")]
    harness = await make_harness(egresses=equal)
    await harness.add_tenant("t1", max_containers=3, parallel_per_container=1)
    crawls = [await harness.submit("t1"), await harness.submit("t1")]
    await harness.pump()

    placed = [await harness.crawl(c) for c in crawls]
    egresses = {(await harness.container(c.container_id or "")).egress.name for c in placed}
    assert egresses == {"home", "lab"}
    assert len(await harness.fleet()) == 2
