"""Heartbeats score proxies; a scored-out proxy is avoided, then comes back after a
cool-down counted by the scheduler; a session keeps its egress and proxy, and waits (saying
so) while they are out."""

from __future__ import annotations

import pytest
from conductor_harness import (
    FakeEngine,
    Harness,
    InstanceKilled,
    MakeHarness,
    fail_next,
    start_ready,
)

from core.egress_scoring import proxy_id
from core.messages import ProxyStats
from core.models import CrawlState, Egress

BAD, GOOD = "http://bad.test:3128", "http://good.test:3128"
POOL = [Egress(name="proxied", proxies=[BAD, GOOD])]


def errors(n: int = 20) -> dict[str, ProxyStats]:
    return {proxy_id(BAD): ProxyStats(requests=n, errors=n, mean_latency_ms=5.0)}


async def health_of(harness: Harness, proxy: str) -> tuple[bool, str | None]:
    record = (await harness.conductor.health.snapshot())["proxied"]
    h = record.proxies[proxy]
    return h.out, h.reason


async def scored_out(harness: Harness) -> FakeEngine:
    """A container whose heartbeat reports every request through BAD failing."""
    await harness.add_tenant("t1")
    _, engine = await start_ready(harness, "t1")
    await engine.heartbeat(errors())
    await harness.pump()
    return engine


async def test_a_failing_proxy_is_scored_out_and_new_crawls_avoid_it(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(egresses=POOL)
    await harness.add_tenant("t1")
    first, engine = await start_ready(harness, "t1")
    assert (await harness.crawl(first)).proxy == proxy_id(BAD)  # the first of equal proxies
    (run,) = await engine.runs()
    assert run.proxy == proxy_id(BAD)  # the engine is told which proxy to use

    await engine.heartbeat(errors())
    await harness.pump()
    out, reason = await health_of(harness, proxy_id(BAD))
    assert out
    assert "network errors on 100%" in (reason or "")

    second = await harness.submit("t1")
    await harness.pump()
    assert (await harness.crawl(second)).proxy == proxy_id(GOOD)


async def test_a_duplicate_heartbeat_is_counted_once(make_harness: MakeHarness) -> None:
    harness = await make_harness(egresses=POOL)
    await harness.add_tenant("t1")
    _, engine = await start_ready(harness, "t1")
    beat = await engine.heartbeat(errors(12))  # 12 of 20 needed: not yet enough
    await harness.resend(beat)  # delivered twice
    await harness.pump()
    record = (await harness.conductor.health.snapshot())["proxied"]
    assert record.proxies[proxy_id(BAD)].requests == 12
    assert not record.proxies[proxy_id(BAD)].out


async def test_the_cool_down_is_counted_by_the_scheduler_then_the_proxy_is_back(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(egresses=POOL, proxy_cooldown_s=120.0)
    await scored_out(harness)
    await harness.advance(115)
    assert (await health_of(harness, proxy_id(BAD)))[0]  # still out just before
    await harness.advance(10)
    record = (await harness.conductor.health.snapshot())["proxied"]
    back = record.proxies[proxy_id(BAD)]
    assert (back.out, back.requests, back.epoch) == (False, 0.0, 1)  # on probation, fresh


async def test_a_clock_five_minutes_ahead_does_not_end_the_cool_down_early(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(egresses=POOL, proxy_cooldown_s=120.0)
    await scored_out(harness)  # judged by an instance with the true time
    skewed = harness.another_conductor(skew_s=300.0)  # this one's clock is 5 min ahead
    await harness.advance(60)
    crawl = await harness.submit("t1")
    await harness.pump(skewed)  # routed by the skewed instance, mid cool-down
    assert (await harness.crawl(crawl)).proxy == proxy_id(GOOD)
    assert (await health_of(harness, proxy_id(BAD)))[0]


async def test_a_session_keeps_its_proxy_across_containers_and_waits_while_it_is_out(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(egresses=POOL, proxy_cooldown_s=120.0)
    await harness.add_tenant("t1")
    first, engine = await start_ready(harness, "t1", session="login")
    assert (await harness.crawl(first)).proxy == proxy_id(BAD)
    await engine.complete(first)
    await harness.pump()
    await harness.advance(harness.settings.idle_ttl_s + harness.settings.drain_timeout_s)
    assert harness.runtime.stopped == [engine.id]  # its container is gone

    await harness.engine(engine.id).heartbeat()  # (a stopped container's beat changes nothing)
    # another tenant's container reports the proxy failing: it is scored out, fleet-wide
    await harness.add_tenant("t2")
    _, other = await start_ready(harness, "t2")
    await other.heartbeat(errors())
    await harness.pump()

    again = await harness.submit("t1", session="login")
    await harness.pump()
    waiting = await harness.crawl(again)
    assert waiting.state is CrawlState.pending  # not moved to the good proxy
    assert "session 'login'" in (waiting.reason or "")
    assert "scored out" in (waiting.reason or "")

    await harness.advance(125)  # the cool-down ends; the backlog is placed again
    await harness.housekeeping()
    await harness.pump()
    placed = await harness.crawl(again)
    assert placed.state is CrawlState.dispatched
    assert placed.proxy == proxy_id(BAD)  # the same IP as before
    assert placed.container_id != engine.id  # on a new container


async def test_a_dispatch_cut_short_by_a_crash_still_names_the_session_s_proxy(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(egresses=POOL)
    await harness.add_tenant("t1", max_containers=1)
    first, engine = await start_ready(harness, "t1", session="login")
    await engine.complete(first)
    await harness.pump()
    # the session's route is GOOD; the next crawl is reserved, then the instance dies
    # before the dispatch is stored
    route = await harness.conductor.health.routes.get("t1", "login")
    assert route is not None
    await harness.conductor.health.routes.replace(
        route, route.value.model_copy(update={"proxy": proxy_id(GOOD)})
    )
    fail_next(harness.ports.state, "replace", when="'crawls'", error=InstanceKilled)
    again = await harness.submit("t1", session="login")
    with pytest.raises(InstanceKilled):
        await harness.pump()
    await engine.heartbeat()  # reconciling: the reserved crawl is committed from here
    await harness.run_for(10, beating=(engine,))

    crawl = await harness.crawl(again)
    assert crawl.state is CrawlState.dispatched
    assert crawl.proxy == proxy_id(GOOD)
    assert {r.proxy for r in await engine.runs() if r.crawl_id == again} == {proxy_id(GOOD)}
