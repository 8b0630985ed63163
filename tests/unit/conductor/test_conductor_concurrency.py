"""Two conductor instances over the same SQLite files, handling the inbox at the same time."""

from __future__ import annotations

import asyncio
from collections import Counter

from conductor_harness import Harness

from core.conductor import Conductor
from core.models import CrawlState
from core.ports import ContainerSpec

TENANTS = ("t1", "t2", "t3")
LIMIT = 2


async def _both(harness: Harness, other: Conductor) -> None:
    """Both instances drain the inbox at once, each in batches handled concurrently."""
    for _ in range(50):
        seen = await asyncio.gather(harness.pump(), harness.pump(other))
        if sum(seen) == 0:
            return


def _watch_starts(harness: Harness) -> list[str]:
    """Fail at the moment a start would exceed a tenant's limit; returns the violations."""
    violations: list[str] = []

    async def on_start(spec: ContainerSpec) -> None:
        fleet = await harness.fleet(spec.tenant_id)
        started = [s for s in harness.runtime.started if s.tenant_id == spec.tenant_id]
        running = {s.container_id for s in started} - set(harness.runtime.stopped)
        dead = {c.id for c in await harness.containers(spec.tenant_id) if not c.state.live}
        if len(fleet) > LIMIT or len(running - dead) > LIMIT:
            violations.append(f"{spec.tenant_id}: {fleet} in the fleet, {running} running")

    harness.runtime.on_start = on_start
    return violations


async def test_two_instances_never_exceed_the_container_limit(harness: Harness) -> None:
    other = harness.another_conductor()
    for tenant in TENANTS:
        await harness.add_tenant(tenant, max_containers=LIMIT, parallel_per_container=1)
    violations = _watch_starts(harness)
    crawls = {t: [await harness.submit(t) for _ in range(6)] for t in TENANTS}

    await _both(harness, other)

    for tenant in TENANTS:
        started = [s for s in harness.runtime.started if s.tenant_id == tenant]
        assert len(started) == LIMIT, tenant
        states = Counter([(await harness.crawl(c, tenant)).state for c in crawls[tenant]])
        assert states == {CrawlState.dispatched: LIMIT, CrawlState.pending: 6 - LIMIT}
        assert len(await harness.fleet(tenant)) == LIMIT

    # the fleets come up and work through the backlog, both instances handling the inbox
    for _ in range(10):
        for spec in list(harness.runtime.started):
            if spec.container_id in harness.runtime.stopped:
                continue
            engine = harness.engine(spec.container_id, spec.tenant_id)
            if (await harness.container(spec.container_id, spec.tenant_id)).state.value == (
                "starting"
            ):
                await engine.ready()
            for run in await engine.runs():
                await engine.complete(run.crawl_id)
        await _both(harness, other)

    assert violations == []
    for tenant in TENANTS:
        for crawl_id in crawls[tenant]:
            assert (await harness.crawl(crawl_id, tenant)).state is CrawlState.completed
        assert len([s for s in harness.runtime.started if s.tenant_id == tenant]) == LIMIT


async def test_two_instances_start_one_container_per_session(harness: Harness) -> None:
    other = harness.another_conductor()
    await harness.add_tenant("t1", max_containers=5, parallel_per_container=1)
    sessions = ("s1", "s2")
    for round_ in range(3):
        before = len(harness.runtime.started)
        crawls = {s: [await harness.submit("t1", session=s) for _ in range(5)] for s in sessions}

        await _both(harness, other)
        # a crawl may have met the limit filled by containers that were withdrawn a moment
        # later (their session went elsewhere); the timer places it
        await asyncio.gather(harness.housekeeping(), harness.housekeeping(other))

        for session in sessions:
            holders = {(await harness.crawl(c)).container_id for c in crawls[session]}
            assert len(holders) == 1, (round_, session, holders)
            binding = await harness.binding(session)
            assert binding is not None
            assert holders == {binding.container_id}
        live = await harness.live()
        assert len(live) == len(sessions), [c.id for c in live]
        assert len(harness.runtime.started) - before == len(sessions)
        # the crawls are cancelled and the containers die: the next round starts afresh
        for session in sessions:
            for crawl_id in crawls[session]:
                await harness.cancel("t1", crawl_id)
        await _both(harness, other)
        for container in live:
            await harness.engine(container.id).exited(137)
        await _both(harness, other)
        assert await harness.live() == []
        assert await harness.binding("s1") is None
