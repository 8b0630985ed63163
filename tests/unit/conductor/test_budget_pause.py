"""A budget stop pauses and a lifted budget resumes (issue 14), over the real conductor and
the real local ports (``conductor_harness``): a paused crawl continues on its next attempt
once the amount is raised or the budget removed, a container that dies while pausing leaves
the crawl paused (not requeued, not dead-lettered), a limit lifted while the engine finishes
its pages resumes the crawl as soon as it answers, and a schedule's occurrence over budget
is skipped with the reason while the schedule stays armed.

The engine's side (pages in flight finished and stored, the frontier checkpointed, no page
fetched twice) is ``tests/integration/engine/test_engine_budget_pause.py``.
"""

from __future__ import annotations

from conductor_harness import FakeEngine, Harness, MakeHarness, start_ready

from core.budgets import BUDGET_KEY, Budget, Budgets, budgets_table
from core.delivery_models import Schedule, schedules_table
from core.messages import CancelCrawl, PauseCrawl, RunCrawl, ScheduleFire, decode_inbox
from core.models import ContainerState, CrawlSpec, CrawlState, Egress
from core.paused import announce, resume_paused_by_budget
from core.schedules import fire_message, run_crawl_id

#: 1 cent a second, billed at least 60 s: a running container has cost 0.60 at once.
FARGATE = Egress(name="fargate", cost_per_second=0.01, min_billed_s=60.0)


async def _over_budget(h: Harness) -> tuple[str, FakeEngine]:
    """One crawl running on a ready container, then a budget it has already spent."""
    await h.add_tenant()
    crawl_id, engine = await start_ready(h)
    await engine.runs()
    await budgets_table(h.records).create("t1", BUDGET_KEY, Budget(monthly_amount=0.5))
    await h.housekeeping()  # 0.60 spent: the limit
    return crawl_id, engine


async def _raise_budget(h: Harness, amount: float) -> None:
    """What ``PUT /v1/budget`` does (``core.api.usage_routes``)."""
    table = budgets_table(h.records)
    found = await table.get("t1", BUDGET_KEY)
    assert found is not None
    await table.replace(found, Budget(monthly_amount=amount))
    month = await Budgets(h.records).evaluate("t1", h.clock.now(), rearm=True)
    assert month is not None
    assert not month.reached
    now, inbox = h.clock.now(), h.settings.inbox_queue
    await announce(h.bus, inbox, await resume_paused_by_budget(h.records, "t1", now, inbox))


async def test_a_paused_crawl_resumes_on_its_next_attempt_when_the_budget_is_raised(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(egresses=[FARGATE], idle_ttl_s=300.0, heartbeat_timeout_s=400.0)
    crawl_id, engine = await _over_budget(h)
    await engine.paused(crawl_id, fetched=2)
    await h.pump()
    assert (await h.crawl(crawl_id)).state is CrawlState.paused
    await engine.work()  # what it was sent before it paused (a real engine drops attempt 1)

    await h.housekeeping()  # still over: it stays paused, nothing is dispatched
    assert (await h.crawl(crawl_id)).state is CrawlState.paused
    assert await engine.runs() == []

    await _raise_budget(h, 100.0)
    await h.pump()

    crawl = await h.crawl(crawl_id)
    assert (crawl.state, crawl.container_id, crawl.attempts) == (
        CrawlState.dispatched,
        engine.id,
        2,
    )
    assert [(r.crawl_id, r.attempt) for r in await engine.runs()] == [(crawl_id, 2)]
    assert len(h.runtime.started) == 1, "the idle container took it back"
    await engine.complete(crawl_id, fetched=5)
    await h.pump()
    done = await h.crawl(crawl_id)
    assert (done.state, done.counts.fetched) == (CrawlState.completed, 5)
    assert await h.active_ids() == set()


async def test_housekeeping_resumes_paused_crawls_once_the_budget_is_removed(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(egresses=[FARGATE], idle_ttl_s=300.0, heartbeat_timeout_s=400.0)
    crawl_id, engine = await _over_budget(h)
    waiting = await h.submit()  # submitted just before the limit was seen
    await h.housekeeping()
    assert (await h.crawl(waiting)).state is CrawlState.paused
    await engine.paused(crawl_id)
    await h.pump()

    await budgets_table(h.records).discard("t1", BUDGET_KEY)  # DELETE /v1/budget, unannounced
    await h.housekeeping()

    for cid in (crawl_id, waiting):
        crawl = await h.crawl(cid)
        assert crawl.state is CrawlState.dispatched, cid
        assert crawl.reason == "resumed after: budget reached"
    assert {r.crawl_id for r in await engine.runs()} == {crawl_id, waiting}


async def test_a_container_that_dies_while_pausing_leaves_the_crawl_paused(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(egresses=[FARGATE], max_attempts=1)
    crawl_id, engine = await _over_budget(h)
    assert (await h.crawl(crawl_id)).pause_requested == "budget reached"

    await engine.exited(137)
    await h.pump()

    crawl = await h.crawl(crawl_id)
    assert (crawl.state, crawl.reason) == (CrawlState.paused, "budget reached")
    assert await h.records.backlog.query("t1") == [], "not requeued"
    assert (await h.container(engine.id)).state is ContainerState.failed


async def test_a_budget_raised_while_the_engine_pauses_resumes_when_it_answers(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(egresses=[FARGATE], idle_ttl_s=300.0, heartbeat_timeout_s=400.0)
    crawl_id, engine = await _over_budget(h)
    await _raise_budget(h, 100.0)  # the pause request is withdrawn ...
    assert (await h.crawl(crawl_id)).pause_requested is None

    await engine.paused(crawl_id)  # ... but the engine had it already
    await h.pump()

    crawl = await h.crawl(crawl_id)
    assert (crawl.state, crawl.attempts) == (CrawlState.dispatched, 2)
    runs = [(r.crawl_id, r.attempt) for r in await engine.runs()]
    assert runs[-1] == (crawl_id, 2), "dispatched again, as its next attempt"


async def test_the_pause_is_sent_again_until_the_engine_answers(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(egresses=[FARGATE], idle_ttl_s=300.0, heartbeat_timeout_s=400.0)
    crawl_id, engine = await _over_budget(h)

    def pauses(work: list[RunCrawl | CancelCrawl | PauseCrawl]) -> list[str]:
        return [m.crawl_id for m in work if isinstance(m, PauseCrawl)]

    assert pauses(await engine.work()) == [crawl_id]
    await h.housekeeping()
    assert pauses(await engine.work()) == [crawl_id], "asked again"
    await engine.paused(crawl_id)
    await h.pump()
    await h.housekeeping()
    assert pauses(await engine.work()) == [], "answered: not asked again"


# --------------------------------------------------------------------------- schedules


async def _schedule(h: Harness) -> Schedule:
    s = Schedule(
        id="sc_" + "b" * 32,
        tenant_id="t1",
        cron="*/10 * * * *",
        timezone="UTC",
        crawl=CrawlSpec(seeds=["https://example.com/"]),
        created_at=h.clock.now(),
    )
    await schedules_table(h.records).create("t1", s.id, s)
    await h.send(fire_message(s, h.clock.now()))
    return s


async def _stored(h: Harness, s: Schedule) -> Schedule:
    found = await schedules_table(h.records).get("t1", s.id)
    assert found is not None
    return found.value


async def test_an_occurrence_over_budget_is_skipped_and_the_schedule_stays_armed(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(egresses=[FARGATE], idle_ttl_s=30.0, heartbeat_timeout_s=4000.0)
    _running, _engine = await _over_budget(h)
    s = await _schedule(h)
    await h.pump()
    wait = fire_message(s, h.clock.now()).remaining_s

    await h.advance(wait)  # the occurrence

    stored = await _stored(h, s)
    assert (stored.state, stored.runs, stored.skipped) == ("active", 0, 1)
    assert stored.last_skipped_at == h.clock.now()
    assert stored.last_skip_reason is not None
    assert stored.last_skip_reason.startswith("budget reached (0.60 of 0.5 spent in 2030-01)")
    assert await h.records.crawls.get("t1", run_crawl_id(s.id, 1)) is None, "no crawl"
    skipped_fire = ScheduleFire(tenant_id="t1", schedule_id=s.id, generation=0, run=1)
    await h.send(skipped_fire)  # a duplicate of the skipped fire
    await h.pump()
    assert (await _stored(h, s)).skipped == 1, "a duplicate skips nothing more"
    fires = [decode_inbox(m.body) for _, m in h.scheduler.scheduled]
    armed = [f for f in fires if isinstance(f, ScheduleFire)]
    assert [(f.run, f.skipped) for f in armed][-1] == (1, 1), "the next occurrence is armed"

    await _raise_budget(h, 100.0)
    await h.advance(600)  # the next occurrence starts run 1

    assert (await h.crawl(run_crawl_id(s.id, 1))).state is not CrawlState.paused
    assert ((await _stored(h, s)).runs, (await _stored(h, s)).skipped) == (1, 1)
