"""A browser egress has its own price and start latency (issue 15): an entry's ``browser``
figures price and time the containers the conductor starts for crawls that render -- their
records keep them, usage bills them, the idle policy weighs their cold start -- and egress
scoring ranks render crawls by them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conductor_harness import START, Harness, MakeHarness, kill_timers, start_ready

from core.egress_scoring import choose_route
from core.metering import Meter, Usage
from core.models import ContainerState, CrawlSpec, Egress

FARGATE = Egress(
    name="fargate",
    cost_per_second=0.01,
    start_latency_s=40.0,
    min_billed_s=60.0,
    browser={"cost_multiplier": 2.5, "start_latency_s": 70.0, "min_billed_s": 120.0},
)


async def _usage(h: Harness, tenant_id: str) -> Usage:
    return await Meter(h.ports.state).total(tenant_id, START, START + timedelta(days=2))


async def _crawl_and_stop(h: Harness, tenant_id: str, **spec: object) -> str:
    """One crawl in a fresh container of ``tenant_id``, then the container stops idle."""
    await h.add_tenant(tenant_id)
    crawl_id, engine = await start_ready(h, tenant_id, **spec)
    h.clock.advance(10)
    await engine.complete(crawl_id, fetched=1)
    await h.pump()
    await h.advance(h.settings.idle_ttl_s + 10, beating=(engine,))
    container = await h.container(engine.id, tenant_id)
    assert container.state is ContainerState.stopped
    return engine.id


@pytest.fixture
async def fargate(make_harness: MakeHarness) -> Harness:
    return await make_harness(egresses=[FARGATE])


async def test_a_render_crawl_starts_a_container_billed_at_the_browser_price(
    fargate: Harness,
) -> None:
    plain_id = await _crawl_and_stop(fargate, "plain")
    browser_id = await _crawl_and_stop(fargate, "shop", render="always")

    plain = await fargate.container(plain_id, "plain")
    browser = await fargate.container(browser_id, "shop")
    assert (plain.egress.cost_per_second, plain.egress.start_latency_s) == (0.01, 40.0)
    assert (browser.egress.cost_per_second, browser.egress.start_latency_s) == (0.025, 70.0)
    assert browser.egress.name == "fargate"  # the same entry, its runtime and region

    plain_usage, browser_usage = await _usage(fargate, "plain"), await _usage(fargate, "shop")
    assert plain_usage.billed_seconds == pytest.approx(60.0)  # the egress's minimum
    assert plain_usage.cost == pytest.approx(0.6)
    assert browser_usage.billed_seconds == pytest.approx(120.0)  # the browser's minimum
    assert browser_usage.cost == pytest.approx(3.0)  # 120 s x 0.01 x 2.5
    assert browser_usage.egress["fargate"].cost == pytest.approx(3.0)


async def test_the_idle_policy_weighs_the_browser_start_latency(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(egresses=[FARGATE], idle_policy="break_even", idle_wait_weight=0.0)
    await h.add_tenant("t1")
    for spec in ({}, {"render": "always"}):
        crawl_id, engine = await start_ready(h, "t1", **spec)
        await engine.complete(crawl_id, fetched=1)
        await h.pump()
    windows = sorted(round((at - START).total_seconds()) for at, _ in kill_timers(h))
    # break-even with no weight on waiting: keep a container as long as its start takes
    assert windows == [40, 70]


def test_render_crawls_are_ranked_by_browser_prices_and_go_to_browser_egresses() -> None:
    cheap_plain = Egress(name="a", cost_per_second=0.01, browser={"cost_multiplier": 3.0})
    cheap_browser = Egress(name="b", cost_per_second=0.02, browser=True)
    no_browser = Egress(name="c", cost_per_second=0.001)
    pool = [cheap_plain, cheap_browser, no_browser]

    assert choose_route(CrawlSpec(seeds=["https://x.test/"]), pool).egress.name == "c"
    render = CrawlSpec(seeds=["https://x.test/"], render="auto")
    # c is cheapest but starts no browser containers; a's browser costs 0.03, b's 0.02
    assert choose_route(render, pool).egress.name == "b"
    # a pool where no entry declares browser containers: any egress, as before
    assert choose_route(render, [no_browser]).egress.name == "c"


def test_browser_figures_default_to_the_egress_and_resolve_once() -> None:
    assert Egress(name="x", browser=False).browser is None
    same = Egress(name="x", cost_per_second=0.5, start_latency_s=9.0, browser=True)
    assert same.for_browser().cost_per_second == 0.5
    assert same.for_browser().start_latency_s == 9.0
    assert Egress(name="x").for_browser() == Egress(name="x")  # declares none: itself
    doubled = FARGATE.for_browser()
    assert doubled.for_browser() == doubled  # the multiplier is not applied twice
    assert Egress.model_validate_json(doubled.model_dump_json()) == doubled
