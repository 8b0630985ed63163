"""Recurring crawls in the conductor (issue 12): a ``ScheduleFire`` waits out its delay
through the Scheduler (relative steps), starts the run's crawl conditional on the previous
run (``recrawl_of``), arms the next occurrence, and is idempotent and generation-checked."""

from __future__ import annotations

from conductor_harness import Harness

from core.delivery_models import Schedule, schedules_table
from core.messages import ScheduleFire, decode_inbox
from core.models import CrawlSpec
from core.schedules import fire_message, run_crawl_id


async def _schedule(harness: Harness, cron: str = "*/10 * * * *") -> Schedule:
    await harness.add_tenant("t1")
    s = Schedule(
        id="sc_" + "a" * 32,
        tenant_id="t1",
        cron=cron,
        timezone="UTC",
        crawl=CrawlSpec(seeds=["https://example.com/"]),
        created_at=harness.clock.now(),
    )
    await schedules_table(harness.records).create("t1", s.id, s)
    await harness.send(fire_message(s, harness.clock.now()))
    return s


async def _stored(harness: Harness, s: Schedule) -> Schedule:
    found = await schedules_table(harness.records).get("t1", s.id)
    assert found is not None
    return found.value


async def test_each_run_is_a_crawl_conditional_on_the_last(harness: Harness) -> None:
    s = await _schedule(harness)
    await harness.pump()
    assert await harness.active_ids() == set(), "not before the occurrence"
    wait = fire_message(s, harness.clock.now()).remaining_s
    await harness.advance(wait)
    first = run_crawl_id(s.id, 1)
    assert (await harness.crawl(first)).spec.recrawl_of is None
    await harness.advance(600)
    second = run_crawl_id(s.id, 2)
    assert (await harness.crawl(second)).spec.recrawl_of == first, "conditional on run 1"
    stored = await _stored(harness, s)
    assert (stored.runs, stored.last_crawl_id, stored.outbox) == (2, second, ())
    fires = [decode_inbox(m.body) for _, m in harness.scheduler.scheduled]
    runs = [f.run for f in fires if isinstance(f, ScheduleFire)]
    assert runs == [1, 2, 3], "each run arms the next, through the Scheduler"


async def test_a_duplicate_fire_starts_nothing_twice(harness: Harness) -> None:
    s = await _schedule(harness)
    wait = fire_message(s, harness.clock.now()).remaining_s
    await harness.advance(wait)
    await harness.send(ScheduleFire(tenant_id="t1", schedule_id=s.id, generation=0, run=1))
    await harness.pump()
    assert len([c for c in await harness.records.crawls.query("t1")]) == 1
    assert (await _stored(harness, s)).runs == 1


async def test_a_paused_schedule_does_not_fire(harness: Harness) -> None:
    s = await _schedule(harness)

    def pause(current: Schedule) -> Schedule:
        return current.model_copy(update={"state": "paused", "generation": 1})

    await schedules_table(harness.records).mutate("t1", s.id, pause)
    await harness.advance(3600)
    assert await harness.records.crawls.query("t1") == []
    assert (await _stored(harness, s)).runs == 0
