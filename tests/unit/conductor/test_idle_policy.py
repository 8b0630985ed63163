"""The idle policies: what each decides from a tenant's gaps (pure), and how the conductor
applies them — kill timers chained through the histogram's edges, gaps counted on records,
pre-warming from housekeeping — over the real local ports."""

from __future__ import annotations

import random

import pytest
from conductor_harness import Harness, MakeHarness, kill_timers, make_settings, start_ready

from core.conductor.idle_policy import (
    BINS,
    EDGES_S,
    AdaptiveIdle,
    BreakEvenIdle,
    FixedIdle,
    KeepAlive,
    bin_of,
    policy_from,
)
from core.models import ContainerState, Egress
from core.records import IdleStats

FARGATE_START_S = 45.0


def learned(policy: AdaptiveIdle, gaps: list[float], start_s: float = FARGATE_START_S) -> IdleStats:
    stats = IdleStats(tenant_id="t1")
    for gap in gaps:
        stats = policy.observe(stats, gap, start_s)
    return stats


def realized_cost(
    plan: KeepAlive, gaps: list[float], start_s: float, weight: float, early_s: float = 0.0
) -> float:
    """What a plan costs on these gaps, in container-seconds (cold start: L (1 + w)); a
    pre-warm bills ``early_s`` more (it starts at a housekeeping run before its moment)."""
    cold = start_s * (1 + weight)
    total = 0.0
    for g in gaps:
        if g < plan.keep_alive_s:
            total += g
        elif plan.prewarm_at_s is not None and plan.prewarm_at_s <= g:
            window_end = plan.prewarm_at_s + plan.prewarm_keep_s
            warm = g < window_end
            total += plan.keep_alive_s + start_s + (min(g, window_end) - plan.prewarm_at_s)
            total += early_s
            total += 0 if warm else cold
        else:
            total += plan.keep_alive_s + cold
    return total


# --------------------------------------------------------------------------- pure policies


def test_fixed_keeps_every_container_its_ttl_whatever_it_has_seen() -> None:
    policy = FixedIdle(300.0)
    stats = learned(AdaptiveIdle(10.0, 60.0), [5.0] * 40)
    assert policy.decide(None, FARGATE_START_S).keep_alive_s == 300.0
    assert policy.decide(stats, FARGATE_START_S).keep_alive_s == 300.0
    assert not policy.measures


def test_break_even_is_cold_start_cost_over_idle_price() -> None:
    # billing only: idling longer than the boot costs more than booting again
    assert BreakEvenIdle(0.0).decide(None, FARGATE_START_S).keep_alive_s == 45.0
    # a second of waiting weighs as 10 idle seconds: T = 45 s x 11
    assert BreakEvenIdle(10.0).decide(None, FARGATE_START_S).keep_alive_s == 495.0
    assert BreakEvenIdle(10.0).decide(None, 2.0).keep_alive_s == 22.0


def test_the_policy_is_chosen_by_settings() -> None:
    assert policy_from(make_settings(idle_policy="fixed", idle_ttl_s=42.0)) == FixedIdle(42.0)
    assert policy_from(make_settings(idle_policy="break_even", idle_wait_weight=2.0)) == (
        BreakEvenIdle(2.0)
    )
    adaptive = policy_from(make_settings(idle_policy="adaptive", idle_fallback="break_even"))
    assert isinstance(adaptive, AdaptiveIdle)
    assert adaptive.measures
    assert adaptive.fallback == "break_even"
    every_minute = policy_from(make_settings(idle_policy="adaptive", timer_period_s=60.0))
    assert isinstance(every_minute, AdaptiveIdle)
    assert every_minute.prewarm_early_s == 30.0  # a pre-warm starts half a period early


def test_adaptive_falls_back_until_it_has_seen_enough_gaps() -> None:
    fixed_fallback = AdaptiveIdle(10.0, 60.0)
    assert fixed_fallback.decide(None, FARGATE_START_S).keep_alive_s == 60.0
    few = learned(fixed_fallback, [20.0] * 5)
    decision = fixed_fallback.decide(few, FARGATE_START_S)
    assert decision.keep_alive_s == 60.0
    assert decision.basis.startswith("fallback")
    to_break_even = AdaptiveIdle(10.0, 60.0, fallback="break_even")
    assert to_break_even.decide(few, FARGATE_START_S).keep_alive_s == 495.0


def test_adaptive_keeps_a_bursty_tenant_just_past_its_gaps() -> None:
    policy = AdaptiveIdle(10.0, 600.0)
    rng = random.Random(1)
    gaps = [rng.uniform(2, 25) for _ in range(60)]
    decision = policy.decide(learned(policy, gaps), FARGATE_START_S)
    assert decision.keep_alive_s == 30.0  # the edge above every gap, not the 600 s fallback
    assert decision.prewarm_at_s is None


def test_adaptive_prewarms_a_cron_like_tenant_and_stops_at_once() -> None:
    policy = AdaptiveIdle(10.0, 600.0)
    rng = random.Random(2)
    gaps = [3600.0 + rng.uniform(-120, 500) for _ in range(40)]  # hourly, a little jitter
    decision = policy.decide(learned(policy, gaps), FARGATE_START_S)
    assert decision.keep_alive_s == 0.0
    assert decision.prewarm_at_s is not None
    window = (decision.prewarm_at_s, decision.prewarm_at_s + decision.prewarm_keep_s)
    assert sum(window[0] <= g < window[1] for g in gaps) >= 0.8 * len(gaps)  # met warm
    fixed_hour = KeepAlive(5400.0, "fixed")
    assert realized_cost(decision, gaps, FARGATE_START_S, 10) < 0.2 * realized_cost(
        fixed_hour, gaps, FARGATE_START_S, 10
    )


def test_adaptive_counts_the_seconds_a_prewarm_starts_early() -> None:
    """Housekeeping every minute starts a pre-warm up to a minute before its moment (30 s on
    average): a plan that weighs those seconds costs no more on unseen gaps, and pre-warms
    less (a shorter window, or a cold start instead) than one that ignores them."""
    changed = 0
    for seed in range(6):
        rng = random.Random(seed)
        gaps = [900.0 + rng.uniform(0, 240) for _ in range(40)]  # every 15 min, jittered
        unseen = [900.0 + rng.uniform(0, 240) for _ in range(2000)]
        naive = AdaptiveIdle(3.0, 60.0)
        aware = AdaptiveIdle(3.0, 60.0, prewarm_early_s=30.0)
        before, after = (p.decide(learned(p, gaps), FARGATE_START_S) for p in (naive, aware))
        assert before.prewarm_at_s is not None
        cost = [realized_cost(p, unseen, FARGATE_START_S, 3, early_s=30.0) for p in (before, after)]
        assert cost[1] <= cost[0] + 1e-6
        assert after.prewarm_at_s is None or after.prewarm_keep_s <= before.prewarm_keep_s
        changed += after != before
    assert changed >= 2


@pytest.mark.parametrize("mean_s", [20.0, 200.0, 900.0, 4000.0])
def test_adaptive_is_never_much_worse_than_the_best_fixed_window_in_hindsight(
    mean_s: float,
) -> None:
    policy = AdaptiveIdle(10.0, 60.0)
    rng = random.Random(int(mean_s))
    train = [rng.expovariate(1 / mean_s) for _ in range(200)]
    test = [rng.expovariate(1 / mean_s) for _ in range(2000)]
    decision = policy.decide(learned(policy, train), FARGATE_START_S)
    ours = realized_cost(decision, test, FARGATE_START_S, 10)
    best = min(
        realized_cost(KeepAlive(edge, "fixed"), test, FARGATE_START_S, 10)
        for edge in (0.0, *EDGES_S)
    )
    assert ours <= 1.15 * best


def test_adaptive_follows_a_tenant_whose_pattern_changed() -> None:
    policy = AdaptiveIdle(10.0, 60.0)
    stats = learned(policy, [15.0] * 50)
    assert policy.decide(stats, FARGATE_START_S).keep_alive_s == 20.0
    assert policy.decide(stats, FARGATE_START_S).prewarm_at_s is None
    stats = learned(policy, [15.0] * 50 + [2000.0] * 80)  # now it comes back every 2000 s
    decision = policy.decide(stats, FARGATE_START_S)
    assert decision.prewarm_at_s is not None
    assert decision.prewarm_at_s <= 2000.0 < decision.prewarm_at_s + decision.prewarm_keep_s


def test_adaptive_falls_back_when_most_gaps_are_out_of_range() -> None:
    policy = AdaptiveIdle(10.0, 60.0, fallback="break_even")
    decision = policy.decide(learned(policy, [50_000.0] * 30), FARGATE_START_S)
    assert decision.keep_alive_s == 495.0
    assert "4 h" in decision.basis


def test_histogram_bins_follow_the_edges() -> None:
    assert bin_of(0) == 0
    assert bin_of(9.9) == 0
    assert bin_of(10) == 1
    assert bin_of(14_399) == BINS - 2
    assert bin_of(14_400) == BINS - 1


# --------------------------------------------------------------------------- in the conductor


async def adaptive(make_harness: MakeHarness, **overrides: object) -> Harness:
    h = await make_harness(idle_policy="adaptive", idle_ttl_s=30.0, **overrides)
    await h.add_tenant("t1")
    return h


async def test_fixed_and_break_even_arm_one_timer_for_their_keep_alive(
    make_harness: MakeHarness,
) -> None:
    egress = Egress(name="fargate", start_latency_s=20.0)
    h = await make_harness(idle_policy="break_even", idle_wait_weight=0.5, egresses=[egress])
    await h.add_tenant("t1")
    crawl_id, engine = await start_ready(h)
    await engine.complete(crawl_id)
    await h.pump()
    assert (await h.container(engine.id)).keep_alive_s == 30.0  # 20 s x 1.5
    assert [t.remaining_s for _, t in kill_timers(h)] == [0.0]
    await h.advance(29, beating=(engine,))
    assert (await h.container(engine.id)).state is ContainerState.ready
    await h.advance(1, beating=(engine,))
    assert (await h.container(engine.id)).state is ContainerState.stopped


async def test_adaptive_counts_a_gap_in_kill_timer_links_and_learns_it(
    make_harness: MakeHarness,
) -> None:
    h = await adaptive(make_harness)
    crawl_id, engine = await start_ready(h)
    await engine.complete(crawl_id)
    await h.pump()
    container = await h.container(engine.id)
    assert container.keep_alive_s == 30.0  # nothing learned yet: idle_ttl_s
    await h.advance(15, beating=(engine,))  # the 10 s link fired: one edge passed
    assert (await h.container(engine.id)).idle_bin == 1

    second = await h.submit()
    await h.pump()
    assert (await h.crawl(second)).container_id == engine.id
    found = await h.records.idle.get("t1", "idle")
    assert found is not None
    assert found.value.counts[1] == 1.0
    assert sum(found.value.counts) == 1.0
    assert (await h.container(engine.id)).idle_bin == 0


async def test_a_tenant_without_containers_has_its_gap_counted_by_housekeeping(
    make_harness: MakeHarness,
) -> None:
    h = await adaptive(make_harness)
    crawl_id, engine = await start_ready(h)
    await engine.complete(crawl_id)
    await h.pump()
    await h.run_for(35, beating=(engine,))  # stopped after its 30 s keep-alive
    assert (await h.container(engine.id)).state is ContainerState.stopped
    stats = await h.records.idle.get("t1", "idle")
    assert stats is not None
    assert stats.value.open_s is not None

    await h.run_for(100)  # 20 more housekeeping runs of 5 s
    await h.submit()
    await h.pump()
    found = await h.records.idle.get("t1", "idle")
    assert found is not None
    assert found.value.open_s is None
    # 30 s keep-alive + about 100 s counted: the bin [120, 180)
    assert found.value.counts[bin_of(130)] == 1.0


async def test_housekeeping_prewarms_before_a_predicted_arrival(make_harness: MakeHarness) -> None:
    egress = Egress(name="fargate", start_latency_s=20.0)
    h = await adaptive(make_harness, egresses=[egress], idle_fallback="break_even")
    policy = h.conductor.fleet.idle.policy
    assert isinstance(policy, AdaptiveIdle)
    cron = learned(policy, [300.0 + i % 5 * 10 for i in range(40)], start_s=20.0)
    await h.records.idle.create("t1", "idle", cron)
    plan = policy.decide(cron, 20.0)
    assert plan.prewarm_at_s == 300.0
    assert plan.keep_alive_s == 0.0

    crawl_id, engine = await start_ready(h)
    await engine.complete(crawl_id)
    await h.pump()
    await h.run_for(10, beating=(engine,))  # keep-alive 0: stopped at once
    assert (await h.container(engine.id)).state is ContainerState.stopped
    assert len(h.runtime.started) == 1

    prewarmed = []
    for _ in range(60):  # 5 s housekeeping runs, until it pre-warms (due at 300 - 20 s)
        report = await h.housekeeping()
        h.clock.advance(5)
        prewarmed += report.prewarmed
        if prewarmed:
            break
    assert len(prewarmed) == 1
    assert len(h.runtime.started) == 2
    warm = await h.container(prewarmed[0])
    assert warm.prewarm
    assert warm.keep_alive_s is not None
    assert warm.keep_alive_s >= plan.prewarm_keep_s
    await h.engine(warm.id).ready()
    await h.pump()

    second = await h.submit()  # the predicted crawl: no cold start
    await h.pump()
    assert (await h.crawl(second)).container_id == warm.id
    assert len(h.runtime.started) == 2
    found = await h.records.idle.get("t1", "idle")
    assert found is not None
    assert found.value.open_s is None
    assert found.value.observed == 41
