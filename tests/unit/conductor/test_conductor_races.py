"""Races and fault windows a tenant would notice, each driven over the real SQLite ports:
a kill timer of an earlier idle period outliving a short scheduler delay, a late report of
a replaced attempt on the same container, a container record seen by another instance in
the moment before its start lost the last fleet slot, and a container that never came up
while the region refuses the replacement once.

(These are also the tests that kill the named mutants of ``tests/mutants/``.)
"""

from __future__ import annotations

from typing import Any

import pytest
from conductor_harness import (
    Harness,
    InstanceKilled,
    MakeHarness,
    fail_next,
    start_ready,
)

from core.messages import CrawlFailed
from core.models import ContainerState, CrawlState

# --------------------------------------------------------------------------- kill timers


async def test_a_timer_chain_of_an_earlier_idle_period_does_not_cut_the_next_one_short(
    make_harness: MakeHarness,
) -> None:
    """A scheduler that waits at most 7 s (SQS waits 15 min) chains a 30 s idle_ttl in hops.
    A container that gets work and goes idle again before the first hop must still get its
    full idle_ttl from the second idle period: the old chain must die, not carry on."""
    harness = await make_harness(max_delay_s=7.0)
    await harness.add_tenant("t1")
    first, engine = await start_ready(harness)
    await engine.complete(first)
    await harness.pump()  # idle: a chain of hops starts (7 s, ... 30 s)
    await harness.advance(1, beating=(engine,))
    second = await harness.submit()  # work again, and done a few seconds later
    await harness.pump()
    assert (await harness.crawl(second)).container_id == engine.id
    await engine.runs()
    await harness.advance(4, beating=(engine,))
    await engine.complete(second)
    await harness.pump()
    idle_again = harness.clock.now()
    ttl = harness.settings.idle_ttl_s

    while (harness.clock.now() - idle_again).total_seconds() < ttl - 1:
        await harness.advance(1, beating=(engine,))
        waited = (harness.clock.now() - idle_again).total_seconds()
        assert harness.runtime.stopped == [], f"stopped after {waited:g}s idle of {ttl:g}"
    await harness.advance(3, beating=(engine,))

    assert harness.runtime.stopped == [engine.id]


# --------------------------------------------------------------------------- reports


async def test_a_redelivered_failure_of_attempt_one_does_not_requeue_attempt_two(
    harness: Harness,
) -> None:
    """At-least-once delivery: the retryable failure of attempt 1 arrives a second time
    while attempt 2 already runs on the same container. Attempt 2 must keep running, and
    the crawl must not burn an attempt (or be dead-lettered) for a failure it did not have."""
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=1)
    crawl_id, engine = await start_ready(harness)
    await engine.runs()
    failure = await engine.fail(crawl_id, retryable=True, error="HTTP 503 from the site")
    await harness.pump()
    assert [(r.crawl_id, r.attempt) for r in await engine.runs()] == [(crawl_id, 2)]

    for _ in range(3):  # the broker delivers the old failure again (and again)
        await harness.resend(failure)
        await harness.pump()

    crawl = await harness.crawl(crawl_id)
    assert (crawl.state, crawl.container_id, crawl.attempts) == (
        CrawlState.dispatched,
        engine.id,
        2,
    )
    assert await engine.runs() == []  # attempt 2 was not run a third time
    await engine.complete(crawl_id)
    await harness.pump()
    assert (await harness.crawl(crawl_id)).state is CrawlState.completed


async def test_a_late_failure_of_attempt_one_does_not_fail_attempt_two(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=1)
    crawl_id, engine = await start_ready(harness)
    await engine.runs()
    await engine.fail(crawl_id, retryable=True)
    await harness.pump()
    assert [r.attempt for r in await engine.runs()] == [2]

    late = CrawlFailed(
        container_id=engine.id,
        tenant_id="t1",
        crawl_id=crawl_id,
        attempt=1,
        error="robots.txt timed out",
        retryable=False,
    )
    await harness.send(late)
    await harness.pump()

    crawl = await harness.crawl(crawl_id)
    assert (crawl.state, crawl.attempts) == (CrawlState.dispatched, 2)
    assert crawl_id in (await harness.container(engine.id)).in_flight


# --------------------------------------------------------------------------- fleet slots


async def test_work_never_goes_to_a_container_whose_start_lost_the_last_slot(
    harness: Harness,
) -> None:
    """Two instances start a container at once for a tenant with room for one. The loser's
    record exists for a moment before it finds the fleet full and withdraws it; the other
    instance, placing crawls in that moment, must not put one on it (it would be reported
    dispatched to a container that never runs, until housekeeping gives up on it)."""
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=1)
    other = harness.another_conductor()
    first = await harness.submit()
    racing = [await harness.submit(), await harness.submit()]
    state = harness.ports.state
    original = state.create
    raced: list[bool] = []

    async def create_then_let_the_other_instance_run(**kwargs: Any) -> Any:
        item = await original(**kwargs)
        if kwargs["table"] == "containers" and not raced:
            raced.append(True)  # the record exists; the fleet slot is not claimed yet
            await harness.pump(other, batch=1)
        return item

    state.create = create_then_let_the_other_instance_run  # type: ignore[method-assign]
    await harness.pump(batch=1)
    assert raced

    started = harness.runtime.started_ids
    assert len(started) == 1
    for crawl_id in (first, *racing):
        crawl = await harness.crawl(crawl_id)
        if crawl.state is CrawlState.dispatched:
            assert crawl.container_id in started, (crawl_id, crawl.container_id, started)
    assert [c.id for c in await harness.live()] == started

    engine = harness.engine(started[0])
    await engine.ready()
    for _ in range(6):  # the one container works through all three, one at a time
        await harness.pump()
        for run in await engine.runs():
            await engine.complete(run.crawl_id)
        await harness.pump()
    for crawl_id in (first, *racing):
        crawl = await harness.crawl(crawl_id)
        assert (crawl.state, crawl.attempts) == (CrawlState.completed, 1), crawl


# --------------------------------------------------------------------------- reaping


async def test_a_crawl_reserved_on_a_container_that_never_came_up_gets_another_one_at_once(
    harness: Harness,
) -> None:
    """An instance reserves a slot for a crawl on a new container and dies before storing
    the dispatch; the container never says ready and is reaped; the region refuses the
    first replacement. The crawl must still get a new container right away -- not two
    minutes later, when the dead instance's lease on its message runs out (and no
    housekeeping runs in this test)."""
    await harness.add_tenant("t1", max_containers=1)
    fail_next(harness.ports.state, "replace", when="'crawls'", error=InstanceKilled)
    crawl_id = await harness.submit()
    with pytest.raises(InstanceKilled):
        await harness.pump()
    never_ready = harness.runtime.started_ids[0]
    assert crawl_id in (await harness.container(never_ready)).in_flight
    assert (await harness.crawl(crawl_id)).state is CrawlState.pending  # reserved only
    harness.runtime.fail_starts = 1

    await harness.advance(harness.settings.startup_timeout_s + 5)  # well within the lease

    assert (await harness.container(never_ready)).state is ContainerState.failed
    assert len(harness.runtime.started) == 3  # the refused one, then one that runs
    replacement = harness.engine(harness.runtime.started_ids[-1])
    await replacement.ready()
    await harness.pump()
    assert [(r.crawl_id, r.attempt) for r in await replacement.runs()] == [(crawl_id, 1)]


async def test_a_container_whose_ready_a_dead_instance_holds_is_not_reaped_while_it_beats(
    harness: Harness,
) -> None:
    """The instance handling ``ready`` dies before storing it; the message comes back only
    when its lease runs out (120 s here; a function's timeout on a cloud), after the
    startup timeout (60 s). The container subscribed, said ready and heartbeats: it is up,
    and must get its work -- not be reaped as "not ready" and replaced."""
    await harness.add_tenant("t1")
    crawl_id = await harness.submit()
    await harness.pump()
    container_id = (await harness.crawl(crawl_id)).container_id
    assert container_id is not None
    engine = harness.engine(container_id)
    fail_next(harness.ports.state, "replace", when="'containers'", error=InstanceKilled)
    await engine.ready()
    with pytest.raises(InstanceKilled):
        await harness.pump()

    await harness.advance(harness.settings.startup_timeout_s + 10, beating=(engine,))

    assert (await harness.container(container_id)).state is ContainerState.ready
    assert [(r.crawl_id, r.attempt) for r in await engine.runs()] == [(crawl_id, 1)]
    assert harness.runtime.stopped == []
    assert len(harness.runtime.started) == 1


async def test_a_late_ready_of_a_reaped_container_gets_no_work_even_if_its_stop_fails(
    harness: Harness,
) -> None:
    """A container reaped as not ready comes up after all, subscribes and says ready while
    the runtime's API fails: its subscription (the only way work reaches it) must go at
    once, and the stop is retried until it succeeds."""
    await harness.add_tenant("t1")
    crawl_id = await harness.submit()
    await harness.pump()
    late = (await harness.crawl(crawl_id)).container_id
    assert late is not None
    await harness.advance(harness.settings.startup_timeout_s + 5)
    assert (await harness.container(late)).state is ContainerState.failed
    assert harness.runtime.stopped == [late]  # stopped when reaped -- but it came up anyway
    harness.runtime.fail_stops = 2

    await harness.engine(late).ready()
    await harness.pump()

    assert not await harness.subscription_exists(late)
    await harness.advance(10)  # the ready is handled again: the stop goes through
    assert harness.runtime.stopped == [late, late]
