"""Regression tests for the holes a review found in the conductor (issue "Conductor
correctness"): each drives the real Conductor and Housekeeper over the real SQLite ports
into one scenario that ended badly before — a crash between two writes, a cancel while a
slot was reserved, a backlog behind many dispatched crawls, clocks minutes apart, a stop
that failed, a report about an attempt that was replaced, heartbeats behind a long inbox.
"""

from __future__ import annotations

import pytest
from conductor_harness import (
    Harness,
    InstanceKilled,
    MakeHarness,
    fail_next,
    kill_timers,
    start_ready,
)

from core.messages import Progress
from core.models import ContainerState, CrawlCounts, CrawlState

FIVE_MINUTES = 300.0


# --------------------------------------------------------------------------- 1. lost placement


async def test_a_backlog_placement_cut_off_before_its_run_is_sent_still_reaches_the_engine(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=1)
    first, engine = await start_ready(harness)
    await engine.runs()
    waiting = await harness.submit()  # waits in the backlog: the only slot is taken
    await harness.pump()
    assert (await harness.crawl(waiting)).state is CrawlState.pending
    fail_next(harness.bus, "publish", when="crawl.run", error=InstanceKilled)

    await engine.complete(first)
    with pytest.raises(InstanceKilled):  # placed (stored dispatched), died before the send
        await harness.pump()
    assert (await harness.crawl(waiting)).state is CrawlState.dispatched

    await harness.advance(150, beating=(engine,))  # the completion's lease runs out

    assert {(r.crawl_id, r.attempt) for r in await engine.runs()} == {(waiting, 1)}
    await engine.complete(waiting)
    await harness.advance(harness.settings.idle_ttl_s + 5, beating=(engine,))
    assert (await harness.container(engine.id)).state is ContainerState.stopped  # to zero


async def test_a_dispatch_whose_every_redelivery_is_lost_is_repaired_by_heartbeats(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", parallel_per_container=2)
    _, engine = await start_ready(harness)
    await engine.runs()
    crawl_id = await harness.submit()
    # the run message is dropped on the floor (e.g. a broker that lost it after accepting)
    original = harness.bus.publish
    dropped: list[str] = []

    async def lossy(**kwargs: object) -> str:
        if "crawl.run" in repr(kwargs) and not dropped:
            dropped.append("run")
            return "lost"
        return await original(**kwargs)  # type: ignore[arg-type]

    harness.bus.publish = lossy  # type: ignore[method-assign]
    await harness.pump()
    assert dropped

    await harness.advance(20, beating=(engine,))  # heartbeats keep not listing it

    assert [(r.crawl_id, r.attempt) for r in await engine.runs()] == [(crawl_id, 1)]


# --------------------------------------------------------------------------- 2. cancel reserved


async def test_a_cancel_while_a_slot_is_reserved_frees_the_slot(harness: Harness) -> None:
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=1)
    first, engine = await start_ready(harness)
    await engine.complete(first)
    await harness.pump()
    # the next crawl is reserved on the container; the instance dies before the dispatch
    fail_next(harness.ports.state, "replace", when="'crawls'", error=InstanceKilled)
    reserved = await harness.submit()
    with pytest.raises(InstanceKilled):
        await harness.pump()
    assert reserved in (await harness.container(engine.id)).in_flight
    await harness.cancel("t1", reserved)  # while pending: the API knows no container
    await harness.pump()

    later = await harness.submit()
    await harness.run_for(15, beating=(engine,))

    assert (await harness.crawl(reserved)).state is CrawlState.cancelled
    assert (await harness.container(engine.id)).in_flight == (later,)
    assert (await harness.crawl(later)).state is CrawlState.dispatched


# --------------------------------------------------------------------------- 3. starvation


async def test_pending_crawls_do_not_starve_behind_many_dispatched_ones(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=60)
    first, engine = await start_ready(harness)
    dispatched = [first]
    for _ in range(59):
        dispatched.append(await harness.submit())
    await harness.pump()
    await engine.runs()
    pending = [await harness.submit() for _ in range(5)]
    await harness.pump()
    assert {(await harness.crawl(c)).state for c in pending} == {CrawlState.pending}

    for crawl_id in dispatched[-10:]:  # ten slots free up; fifty crawls stay dispatched
        await engine.complete(crawl_id)
    await harness.pump()

    states = {(await harness.crawl(c)).state for c in pending}
    assert states == {CrawlState.dispatched}


# --------------------------------------------------------------------------- 4. clock skew


async def test_a_housekeeper_whose_clock_is_ahead_does_not_reap_a_healthy_container(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    ahead = harness.another_conductor(skew_s=FIVE_MINUTES)

    for _ in range(12):  # a minute of heartbeats, housekeeping on the fast instance
        await harness.advance(5, beating=(engine,))
        await harness.housekeeping(ahead)

    assert (await harness.container(engine.id)).state is ContainerState.ready
    assert (await harness.crawl(crawl_id)).attempts == 1  # never run twice
    assert harness.runtime.stopped == []


async def test_a_container_released_by_an_instance_whose_clock_is_behind_waits_idle_ttl(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    behind = harness.another_conductor(skew_s=-FIVE_MINUTES)
    await engine.complete(crawl_id)
    await harness.pump(behind)  # the slow instance arms the kill timer

    await harness.advance(harness.settings.idle_ttl_s - 1, beating=(engine,))
    assert (await harness.container(engine.id)).state is ContainerState.ready

    await harness.advance(2, beating=(engine,))
    assert (await harness.container(engine.id)).state is ContainerState.stopped


async def test_a_due_kill_timer_is_not_rechained_by_an_instance_whose_clock_is_behind(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(max_delay_s=10.0)  # the timer must be chained
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    behind = harness.another_conductor(skew_s=-FIVE_MINUTES)
    await engine.complete(crawl_id)
    await harness.pump()

    for _ in range(8):  # every delivery goes to the slow instance
        await engine.heartbeat()
        harness.clock.advance(5)
        await harness.pump(behind)  # a hot loop of re-armed timers would never drain
        if await harness.answer_drains():
            await harness.pump(behind)

    assert (await harness.container(engine.id)).state is ContainerState.stopped
    assert len(kill_timers(harness)) <= 5  # 10 + 10 + 10 s: no timer re-armed into the past


# --------------------------------------------------------------------------- 6. failed stops


async def test_a_failed_stop_keeps_the_container_and_its_slot_until_it_is_retried(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", max_containers=1)
    crawl_id, engine = await start_ready(harness)
    await engine.complete(crawl_id)
    await harness.pump()
    harness.runtime.fail_stops = 1_000  # the runtime's API is down

    await harness.advance(harness.settings.idle_ttl_s + 5, beating=(engine,))
    later = await harness.submit()
    await harness.run_for(20)

    container = await harness.container(engine.id)
    assert container.state.live  # not "stopped": it still runs
    assert container.stop_requested
    assert await harness.fleet() == (engine.id,)  # the slot stays taken
    assert len(harness.runtime.started) == 1  # so no second container beside it
    assert (await harness.crawl(later)).state is CrawlState.pending

    harness.runtime.fail_stops = 0  # the API is back: housekeeping finishes the stop
    await harness.run_for(10)

    assert (await harness.container(engine.id)).state is ContainerState.stopped
    assert len(harness.runtime.started) == 2
    assert (await harness.crawl(later)).state is CrawlState.dispatched


# --------------------------------------------------------------------------- drain before stop


async def test_an_idle_container_is_told_to_drain_before_the_runtime_stops_it(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.complete(crawl_id)
    await harness.pump()
    seen_at_stop: list[bool] = []

    async def on_stop(container_id: str) -> None:
        seen_at_stop.append(harness.engine(container_id).drained)

    harness.runtime.on_stop = on_stop
    engine.alive = False  # it will not answer: the stop comes after drain_timeout_s
    await harness.advance(harness.settings.idle_ttl_s, beating=(engine,))
    assert harness.runtime.stopped == []
    await engine.work()
    assert engine.drained

    await harness.advance(harness.settings.drain_timeout_s + 1)

    assert seen_at_stop == [True]
    assert (await harness.container(engine.id)).state is ContainerState.stopped


# --------------------------------------------------------------------------- check-then-act


async def test_a_report_about_a_replaced_attempt_neither_requeues_nor_ends_the_new_one(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    stale = await harness.crawl(crawl_id)  # attempt 1, as a handler read it
    await engine.fail(crawl_id, retryable=True)  # meanwhile: requeued and run again
    await harness.pump()
    current = await harness.crawl(crawl_id)
    assert (current.container_id, current.attempts) == (engine.id, 2)

    await harness.conductor.transitions.requeue(stale, engine.id, reason="late")
    await harness.conductor.transitions.finish(
        stale, CrawlState.failed, reason="late", expect=(engine.id, stale.attempts)
    )

    after = await harness.crawl(crawl_id)
    assert (after.state, after.attempts) == (CrawlState.dispatched, 2)


# --------------------------------------------------------------------------- heartbeat starvation


async def test_heartbeats_behind_a_long_inbox_backlog_do_not_get_a_container_reaped(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.runs()
    timeout = harness.settings.heartbeat_timeout_s
    # the conductor falls behind: a minute and a half of crawl traffic and heartbeats queue
    for _ in range(int(1.5 * timeout / 5)):
        for n in range(40):
            await engine.send(
                Progress(
                    container_id=engine.id,
                    tenant_id="t1",
                    crawl_id=crawl_id,
                    attempt=1,
                    counts=CrawlCounts(fetched=n),
                )
            )
        await engine.heartbeat()
        harness.clock.advance(5)
    await harness.housekeeping()  # the timer and the backlog are handled only now

    assert (await harness.container(engine.id)).state is ContainerState.ready
    assert (await harness.crawl(crawl_id)).attempts == 1


# --------------------------------------------------------------------------- retention, listing


async def test_finished_crawls_and_their_blobs_are_purged_after_the_retention(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", retention_days=2)
    old, engine = await start_ready(harness)
    await harness.ports.blobs.put(
        key=f"tenants/t1/crawls/{old}/manifest/00000000.jsonl", data=b"{}"
    )
    await engine.complete(old)
    await harness.pump()
    harness.clock.advance(86400)
    young, later_engine = await start_ready(harness)
    await later_engine.complete(young)
    await harness.pump()

    harness.clock.advance(86400 + 60)  # the old one is 2 days and a minute old
    report = await harness.housekeeping()

    assert report.purged_crawls == [old]
    assert await harness.records.crawls.get("t1", old) is None
    assert await harness.ports.blobs.list(prefix=f"tenants/t1/crawls/{old}/") == []
    assert (await harness.crawl(young)).state is CrawlState.completed
