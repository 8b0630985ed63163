"""Container lifecycle: kill timers (scale to zero), reaping, retries, cancel."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from conductor_harness import (
    Harness,
    InstanceKilled,
    MakeHarness,
    fail_next,
    kill_timers,
    start_ready,
)

from core.messages import CancelCrawl, Heartbeat, KillTimer, ProxyStats, RunCrawl
from core.models import ContainerState, CrawlState
from core.ports import RunState

# --------------------------------------------------------------------------- scale to zero


async def test_an_idle_container_is_stopped_by_its_kill_timer_after_idle_ttl(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.complete(crawl_id)
    await harness.pump()
    ttl = harness.settings.idle_ttl_s

    await harness.advance(ttl - 1, beating=(engine,))
    assert (await harness.container(engine.id)).state is ContainerState.ready
    assert harness.runtime.stopped == []

    await harness.advance(1, beating=(engine,))  # the timer only: no housekeeping ran

    container = await harness.container(engine.id)
    assert container.state is ContainerState.stopped
    assert container.reason == "idle"
    assert harness.runtime.stopped == [engine.id]
    assert await harness.fleet() == ()
    assert not await harness.subscription_exists(engine.id)
    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.completed
    assert crawl.counts.fetched == 3


async def test_a_stale_kill_timer_is_ignored(harness: Harness) -> None:
    await harness.add_tenant("t1")
    first, engine = await start_ready(harness)
    await engine.complete(first)
    await harness.pump()
    first_idle = harness.clock.now()
    await harness.advance(20, beating=(engine,))
    second = await harness.submit()  # new work: the generation moves on
    await harness.pump()
    assert (await harness.crawl(second)).container_id == engine.id
    await harness.advance(5, beating=(engine,))
    await engine.complete(second)
    await harness.pump()
    generation = (await harness.container(engine.id)).generation

    await harness.advance(10, beating=(engine,))  # the first idle period's timer fires here

    assert (await harness.container(engine.id)).state is ContainerState.ready
    assert harness.runtime.stopped == []
    first_due = first_idle + timedelta(seconds=30)
    first_timer = [t for at, t in kill_timers(harness) if at == first_due]
    assert first_timer, "the first idle period armed a timer"
    assert first_timer[0].generation < generation
    assert first_due < harness.clock.now()  # delivered, and ignored

    await harness.advance(20, beating=(engine,))  # 30 s after the second completion

    assert harness.runtime.stopped == [engine.id]


async def test_a_container_with_work_in_flight_is_never_killed(harness: Harness) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    current = await harness.container(engine.id)
    # a timer at the very current generation, already due: still refused (drain-before-kill)
    await harness.send(
        KillTimer(
            tenant_id="t1",
            container_id=engine.id,
            generation=current.generation,
        )
    )
    await harness.pump()

    await harness.run_for(5 * harness.settings.idle_ttl_s, beating=(engine,))

    assert harness.runtime.stopped == []
    container = await harness.container(engine.id)
    assert container.state is ContainerState.ready
    assert container.in_flight == (crawl_id,)


async def test_kill_timers_chain_when_the_scheduler_cannot_wait_idle_ttl(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(max_delay_s=7.0)
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.complete(crawl_id)
    await harness.pump()
    idle_since = harness.clock.now()
    ttl = harness.settings.idle_ttl_s

    for _ in range(int(ttl) - 1):  # second by second, timers only
        await harness.advance(1, beating=(engine,))
        assert harness.runtime.stopped == [], f"stopped early, at {harness.clock.now()}"
    await harness.advance(1, beating=(engine,))

    assert harness.runtime.stopped == [engine.id]
    timers = kill_timers(harness)
    last = timers[-1][1]
    assert last.remaining_s == 0
    chained = [(at, t) for at, t in timers if t.generation == last.generation]
    # 7 s hops, each a relative delay: 7, 14, 21, 28, then the last 2 s to 30
    assert [at - idle_since for at, _ in chained] == [
        timedelta(seconds=s) for s in (7, 14, 21, 28, 30)
    ]
    assert [t.remaining_s for _, t in chained] == [23, 16, 9, 2, 0]
    for (earlier, _), (later, _) in itertools.pairwise(chained):
        assert later - earlier <= timedelta(seconds=7)


# --------------------------------------------------------------------------- reaping


async def test_a_container_not_ready_in_time_is_reaped_and_its_crawl_goes_to_a_new_one(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id = await harness.submit()
    await harness.pump()
    (slow,) = harness.runtime.started_ids

    await harness.run_for(harness.settings.startup_timeout_s + harness.settings.timer_period_s)

    container = await harness.container(slow)
    assert container.state is ContainerState.failed
    assert container.reason == "not ready within 60s"
    assert slow in harness.runtime.stopped
    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.dispatched
    assert crawl.container_id not in (None, slow)
    assert crawl.attempts == 2
    assert await harness.fleet() == (crawl.container_id,)

    fresh = harness.engine(crawl.container_id or "")
    await fresh.ready()
    await harness.pump()
    assert [(r.crawl_id, r.attempt) for r in await fresh.runs()] == [(crawl_id, 2)]


async def test_a_silent_container_is_reaped_and_its_crawl_goes_to_a_new_one(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await harness.run_for(30, beating=(engine,))
    assert (await harness.container(engine.id)).state is ContainerState.ready

    await harness.run_for(harness.settings.heartbeat_timeout_s + 5)  # it hangs: no heartbeats

    container = await harness.container(engine.id)
    assert container.state is ContainerState.failed
    assert container.reason == "no heartbeat for 40s"
    assert engine.id in harness.runtime.stopped
    assert not await harness.subscription_exists(engine.id)
    crawl = await harness.crawl(crawl_id)
    assert crawl.container_id not in (None, engine.id)
    assert crawl.state is CrawlState.dispatched


async def test_a_container_the_runtime_reports_exited_is_reaped(harness: Harness) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    harness.runtime.set_state(engine.id, RunState.exited, 1)  # it died, and said nothing

    await harness.run_for(10, beating=(engine,))

    container = await harness.container(engine.id)
    assert container.state is ContainerState.failed
    assert container.reason == "exited with code 1"
    crawl = await harness.crawl(crawl_id)
    assert crawl.container_id not in (None, engine.id)
    assert crawl.attempts == 2


async def test_a_container_the_runtime_lost_is_reaped(harness: Harness) -> None:
    await harness.add_tenant("t1")
    _, engine = await start_ready(harness)
    harness.runtime.set_state(engine.id, RunState.unknown)
    check = harness.settings.heartbeat_timeout_s / 4  # the watchdog's period

    await harness.run_for(check + 1, beating=(engine,))  # unknown once: it may be new there
    assert (await harness.container(engine.id)).state is ContainerState.ready

    await harness.run_for(check, beating=(engine,))  # unknown twice in a row: lost

    assert (await harness.container(engine.id)).reason == "lost by the runtime"


async def test_container_exited_reaps_at_once_and_redispatches(harness: Harness) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.exited(137, reason="OOM killed")
    await harness.pump()

    container = await harness.container(engine.id)
    assert container.state is ContainerState.failed
    assert container.reason == "OOM killed"
    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.dispatched
    assert crawl.container_id not in (None, engine.id)
    assert crawl.reason == "container OOM killed"


async def test_attempts_are_bounded_then_the_crawl_is_dead_lettered_with_a_reason(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(max_attempts=2)
    await harness.add_tenant("t1")
    crawl_id, first = await start_ready(harness)
    await first.exited(137)
    await harness.pump()
    second = harness.engine((await harness.crawl(crawl_id)).container_id or "")
    await second.ready()
    await harness.pump()
    assert [r.attempt for r in await second.runs()] == [2]

    await second.exited(139)
    await harness.pump()

    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.dead_lettered
    assert crawl.reason == "container exited with code 139; gave up after 2 attempts"
    assert crawl.finished_at == harness.clock.now()
    assert crawl_id not in await harness.active_ids()
    assert len(harness.runtime.started) == 2  # no third container for it
    assert await harness.live() == []


async def test_a_retryable_failure_runs_the_crawl_again(harness: Harness) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    assert [r.attempt for r in await engine.runs()] == [1]

    await engine.fail(crawl_id, retryable=True, error="proxy refused")
    await harness.pump()

    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.dispatched
    assert crawl.attempts == 2
    assert crawl.reason == "proxy refused"
    runs = await harness.engine(crawl.container_id or "").runs()
    assert [(r.crawl_id, r.attempt) for r in runs] == [(crawl_id, 2)]


async def test_a_retryable_failure_on_the_last_attempt_is_final(make_harness: MakeHarness) -> None:
    harness = await make_harness(max_attempts=1)
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.runs()

    await engine.fail(crawl_id, retryable=True, error="proxy refused")
    await harness.pump()

    crawl = await harness.crawl(crawl_id)
    assert crawl.state.terminal
    assert "proxy refused" in (crawl.reason or "")
    assert await engine.runs() == []
    assert len(harness.runtime.started) == 1
    assert (await harness.container(engine.id)).in_flight == ()


async def test_a_non_retryable_failure_fails_the_crawl_and_frees_the_slot(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=1)
    crawl_id, engine = await start_ready(harness)
    waiting = await harness.submit()
    await harness.pump()

    await engine.fail(crawl_id, retryable=False, error="robots.txt forbids everything")
    await harness.pump()

    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.failed
    assert crawl.reason == "robots.txt forbids everything"
    assert crawl.attempts == 1
    assert crawl_id not in await harness.active_ids()
    assert (await harness.container(engine.id)).in_flight == (waiting,)


async def test_a_container_that_fails_to_start_is_retried_later(harness: Harness) -> None:
    await harness.add_tenant("t1", max_containers=1)
    harness.runtime.fail_starts = 1
    crawl_id = await harness.submit()
    await harness.pump()

    (broken,) = harness.runtime.started_ids
    assert (await harness.container(broken)).state is ContainerState.failed
    assert (await harness.crawl(crawl_id)).state is CrawlState.pending
    assert await harness.fleet() == ()  # the limit of one is free again

    await harness.advance(1)  # the inbox message comes back after its back-off

    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.dispatched
    assert crawl.container_id not in (None, broken)
    assert crawl.attempts == 1


# --------------------------------------------------------------------------- cancel


async def test_cancel_frees_the_slot_and_tells_the_container(harness: Harness) -> None:
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=1)
    crawl_id, engine = await start_ready(harness)
    await engine.runs()
    waiting = await harness.submit()
    await harness.pump()

    await harness.cancel("t1", crawl_id)
    await harness.pump()

    assert await engine.work() == [
        CancelCrawl(container_id=engine.id, tenant_id="t1", crawl_id=crawl_id),
        RunCrawl.model_validate(
            {
                "container_id": engine.id,
                "tenant_id": "t1",
                "crawl_id": waiting,
                "attempt": 1,
                "spec": (await harness.crawl(waiting)).spec,
            }
        ),
    ]
    assert (await harness.container(engine.id)).in_flight == (waiting,)
    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.cancelled
    # the container's late report does not resurrect the crawl
    await engine.complete(crawl_id)
    await harness.pump()
    assert (await harness.crawl(crawl_id)).state is CrawlState.cancelled


async def test_a_cancelled_backlog_crawl_is_never_placed(harness: Harness) -> None:
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=1)
    crawl_id, engine = await start_ready(harness)
    waiting = await harness.submit()
    await harness.pump()
    await harness.cancel("t1", waiting)
    await harness.pump()

    await engine.complete(crawl_id)
    await harness.pump()
    await harness.housekeeping()

    assert (await harness.crawl(waiting)).state is CrawlState.cancelled
    assert [r.crawl_id for r in await engine.runs()] == [crawl_id]
    assert (await harness.container(engine.id)).in_flight == ()


async def test_cancel_while_the_container_starts_sends_it_nothing(harness: Harness) -> None:
    await harness.add_tenant("t1")
    crawl_id = await harness.submit()
    await harness.pump()
    engine = harness.engine(harness.runtime.started_ids[0])
    await harness.cancel("t1", crawl_id)
    await harness.pump()

    await engine.ready()
    await harness.pump()

    assert [m for m in await engine.work() if isinstance(m, RunCrawl)] == []
    assert (await harness.container(engine.id)).in_flight == ()
    await harness.advance(harness.settings.idle_ttl_s, beating=(engine,))
    assert harness.runtime.stopped == [engine.id]


# --------------------------------------------------------------------------- leaks and faults


async def test_a_container_ready_after_it_was_reaped_is_stopped_and_unsubscribed(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id = await harness.submit()
    await harness.pump()
    (late,) = harness.runtime.started_ids
    await harness.run_for(harness.settings.startup_timeout_s + harness.settings.timer_period_s)
    assert (await harness.container(late)).state is ContainerState.failed
    stops = harness.runtime.stopped.count(late)

    await harness.engine(late).ready()  # it was only slow: it subscribes and says ready
    await harness.pump()

    assert harness.runtime.stopped.count(late) == stops + 1
    assert not await harness.subscription_exists(late)
    assert (await harness.container(late)).state is ContainerState.failed
    assert (await harness.crawl(crawl_id)).container_id != late


async def test_a_stop_left_half_done_is_finished_even_if_the_container_still_heartbeats(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", max_containers=1)
    crawl_id, engine = await start_ready(harness)
    await engine.complete(crawl_id)
    await harness.pump()
    # the kill timer's conductor stored the drain and died before telling the container;
    # the process runs on and heartbeats
    fail_next(harness.bus, "publish", when="container.drain", error=InstanceKilled)
    with pytest.raises(InstanceKilled):
        await harness.advance(harness.settings.idle_ttl_s, beating=(engine,))
    assert (await harness.container(engine.id)).state is ContainerState.draining
    assert harness.runtime.stopped == []

    await harness.run_for(30, beating=(engine,))  # housekeeping relays what it left

    assert harness.runtime.stopped == [engine.id]
    assert (await harness.container(engine.id)).state is ContainerState.stopped
    assert await harness.fleet() == ()
    assert not await harness.subscription_exists(engine.id)


async def test_work_of_a_reap_interrupted_by_a_fault_is_recovered(harness: Harness) -> None:
    await harness.add_tenant("t1", parallel_per_container=2)
    first, engine = await start_ready(harness)
    second = await harness.submit()
    await harness.pump()
    failures = fail_next(harness.bus, "send", when="crawl.submitted")

    await engine.exited(137)
    await harness.pump()  # the reap marks it failed, then cannot send the resubmission
    assert failures
    await harness.run_for(harness.settings.timer_period_s)

    for crawl_id in (first, second):
        crawl = await harness.crawl(crawl_id)
        assert crawl.state is CrawlState.dispatched, crawl_id
        assert crawl.container_id not in (None, engine.id)


async def test_a_dispatch_whose_run_message_failed_is_sent_again(harness: Harness) -> None:
    await harness.add_tenant("t1", parallel_per_container=2)
    _, engine = await start_ready(harness)
    await engine.runs()
    failures = fail_next(harness.bus, "publish", when="crawl.run")

    crawl_id = await harness.submit()
    await harness.pump()  # dispatch stored, RunCrawl lost: the inbox message is retried
    assert failures
    await harness.advance(1, beating=(engine,))

    assert [(r.crawl_id, r.attempt) for r in await engine.runs()] == [(crawl_id, 1)]
    assert (await harness.crawl(crawl_id)).attempts == 1


async def test_a_dispatch_cut_off_before_its_run_message_is_sent_on_redelivery(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", parallel_per_container=2)
    _, engine = await start_ready(harness)
    await engine.runs()
    fail_next(harness.bus, "publish", when="crawl.run", error=InstanceKilled)

    crawl_id = await harness.submit()
    with pytest.raises(InstanceKilled):
        await harness.pump()
    assert (await harness.crawl(crawl_id)).state is CrawlState.dispatched  # stored, not sent
    await harness.advance(120, beating=(engine,))  # the inbox lease runs out

    # at least once: the redelivery relays the stored run, and the heartbeats that do not
    # list it send it again; the engine keeps one run per (crawl, attempt)
    assert {(r.crawl_id, r.attempt) for r in await engine.runs()} == {(crawl_id, 1)}


async def test_backlog_placement_whose_run_message_failed_is_placed_again(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=1)
    first, engine = await start_ready(harness)
    await engine.runs()
    waiting = await harness.submit()
    await harness.pump()
    failures = fail_next(harness.bus, "publish", when="crawl.run")

    await engine.complete(first)
    await harness.pump()
    assert failures
    await harness.advance(1, beating=(engine,))

    assert [(r.crawl_id, r.attempt) for r in await engine.runs()] == [(waiting, 1)]
    crawl = await harness.crawl(waiting)
    assert crawl.state is CrawlState.dispatched
    assert crawl.attempts == 1
    assert (await harness.container(engine.id)).in_flight == (waiting,)


async def test_records_of_long_stopped_containers_are_forgotten(make_harness: MakeHarness) -> None:
    harness = await make_harness(container_record_ttl_s=3600.0)
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.complete(crawl_id)
    await harness.pump()
    await harness.advance(harness.settings.idle_ttl_s, beating=(engine,))
    assert (await harness.container(engine.id)).state is ContainerState.stopped

    await harness.advance(3000)
    report = await harness.housekeeping()
    assert report.purged == []
    assert await harness.containers()  # still listed an hour after it stopped

    await harness.advance(700)
    report = await harness.housekeeping()
    assert report.purged == [engine.id]
    assert await harness.containers() == []
    assert (await harness.crawl(crawl_id)).state is CrawlState.completed  # results stay


async def test_heartbeats_accumulate_the_egress_health_that_routing_reads(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    _, engine = await start_ready(harness)
    for requests, errors, latency in ((10, 1, 100.0), (30, 3, 200.0)):
        beat = Heartbeat(
            tenant_id="t1",
            container_id=engine.id,
            proxy=ProxyStats(requests=requests, errors=errors, mean_latency_ms=latency),
        )
        await harness.send(beat)
        await harness.pump()

    health = (await harness.container(engine.id)).health
    assert (health.requests, health.errors) == (40, 4)
    assert health.latency_ms == 175.0
