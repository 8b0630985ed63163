"""Choosing an egress and a proxy: preference, then health, then price and start latency."""

from __future__ import annotations

import pytest

from core.egress_scoring import (
    DIRECT,
    Blocked,
    EgressHealthRecord,
    EgressLoad,
    ProxyHealth,
    Route,
    Sample,
    ScoringPolicy,
    StickyRoute,
    choose_route,
    fold,
    judge,
    proxy_id,
    recovered,
    redact_proxy,
)
from core.errors import InvalidRequest
from core.models import CrawlSpec, Egress

P1, P2 = "http://user:secret@p1.test:3128", "http://p2.test:3128"
POOL = [
    Egress(name="eu-proxy", region="eu", proxies=[P1, P2], cost_per_second=0.002),
    Egress(name="us-direct", region="us", cost_per_second=0.001),
    Egress(name="us-proxy", region="us", proxy_url=P2, cost_per_second=0.001),
]
POLICY = ScoringPolicy()


def spec(**kw: object) -> CrawlSpec:
    return CrawlSpec.model_validate({"seeds": ["https://example.com/"], **kw})


def route(**kw: object) -> Route:
    chosen = choose_route(spec(**{k: v for k, v in kw.items() if k in ("egress", "region")}), POOL)
    assert isinstance(chosen, Route)
    return chosen


def out(reason: str = "ban signals", epoch: int = 1) -> ProxyHealth:
    return ProxyHealth(requests=40, bans=30, out=True, reason=reason, epoch=epoch)


def test_explicit_egress_wins_and_unknown_names_are_refused() -> None:
    assert route(egress="eu-proxy").egress.name == "eu-proxy"
    with pytest.raises(InvalidRequest, match="unknown egress 'mars'"):
        choose_route(spec(egress="mars"), POOL)


def test_region_narrows_then_the_cheapest_wins() -> None:
    assert route(region="eu").egress.name == "eu-proxy"
    assert route().egress.name == "us-direct"  # cheapest; first listed of equal price
    with pytest.raises(InvalidRequest, match="no egress in region"):
        choose_route(spec(region="ap"), POOL)


def test_proxies_have_ids_without_secrets_and_redacted_urls() -> None:
    assert route(egress="us-direct").proxy == DIRECT
    assert route(egress="eu-proxy").proxy == proxy_id(P1)  # the pool's first, on equal health
    assert proxy_id(P1).startswith("px-")
    assert "secret" not in proxy_id(P1)
    assert proxy_id(P1) != proxy_id(P1.replace("user", "other"))  # another identity
    assert redact_proxy(P1) == "http://user:***@p1.test:3128"
    assert redact_proxy(None) == "direct"


def test_an_egress_whose_proxies_are_out_is_passed_over() -> None:
    health = {"us-direct": EgressHealthRecord(egress="us-direct", proxies={DIRECT: out()})}
    chosen = choose_route(spec(region="us"), POOL, health=health)
    assert isinstance(chosen, Route)
    assert chosen.egress.name == "us-proxy"
    # with every candidate out, the least bad one still serves: scoring alone stops no work
    both = {
        **health,
        "us-proxy": EgressHealthRecord(egress="us-proxy", proxies={proxy_id(P2): out()}),
    }
    assert isinstance(choose_route(spec(region="us"), POOL, health=both), Route)


def test_within_an_egress_the_healthy_proxy_is_chosen() -> None:
    health = {"eu-proxy": EgressHealthRecord(egress="eu-proxy", proxies={proxy_id(P1): out()})}
    chosen = choose_route(spec(egress="eu-proxy"), POOL, health=health)
    assert chosen == Route(POOL[0], proxy_id(P2))


def test_expected_start_latency_breaks_price_ties_and_ready_slots_start_at_once() -> None:
    pool = [
        Egress(name="slow", start_latency_s=45.0),
        Egress(name="fast", start_latency_s=5.0),
    ]
    chosen = choose_route(spec(), pool)
    assert isinstance(chosen, Route)
    assert chosen.egress.name == "fast"
    # a container with a free slot in "slow" starts nothing: no start latency at all
    loaded = choose_route(spec(), pool, load={"slow": EgressLoad(crawls=1, free_slots=3)})
    assert isinstance(loaded, Route)
    assert loaded.egress.name == "slow"
    # the runtime's typical start when the entry names none
    hinted = [Egress(name="a"), Egress(name="b")]
    typical = {"a": 45.0, "b": 15.0}
    by_runtime = choose_route(spec(), hinted, typical_start_s=typical)
    assert isinstance(by_runtime, Route)
    assert by_runtime.egress.name == "b"
    # price first: a cheaper egress wins however slow it starts
    cheap = [Egress(name="x", start_latency_s=1.0, cost_per_second=0.1), Egress(name="y")]
    priced = choose_route(spec(), cheap)
    assert isinstance(priced, Route)
    assert priced.egress.name == "y"


def test_crawls_spread_over_equal_egresses() -> None:
    pool = [Egress(name="a"), Egress(name="b")]
    full = {"a": EgressLoad(crawls=4, free_slots=0)}
    chosen = choose_route(spec(), pool, load=full)
    assert isinstance(chosen, Route)
    assert chosen.egress.name == "b"


def test_a_session_keeps_its_route_and_waits_while_its_proxy_is_out() -> None:
    sticky = StickyRoute(session="s1", egress="eu-proxy", proxy=proxy_id(P2))
    kept = choose_route(spec(session="s1"), POOL, sticky=sticky)
    assert kept == Route(POOL[0], proxy_id(P2))  # not the cheaper us-direct
    health = {"eu-proxy": EgressHealthRecord(egress="eu-proxy", proxies={proxy_id(P2): out()})}
    blocked = choose_route(spec(session="s1"), POOL, health=health, sticky=sticky)
    assert isinstance(blocked, Blocked)
    assert "session 's1'" in blocked.reason
    assert "scored out (ban signals)" in blocked.reason
    # a route whose proxy left the pool starts afresh
    gone = StickyRoute(session="s1", egress="eu-proxy", proxy="px-0000000000")
    assert isinstance(choose_route(spec(session="s1"), POOL, sticky=gone), Route)


def test_judge_scores_out_errors_bans_and_slowness_on_enough_traffic() -> None:
    assert judge(ProxyHealth(requests=5, errors=5), POLICY) is None  # too little traffic
    assert "network errors" in (judge(ProxyHealth(requests=20, errors=10), POLICY) or "")
    assert "ban signals" in (judge(ProxyHealth(requests=20, bans=6), POLICY) or "")
    assert judge(ProxyHealth(requests=20, bans=4), POLICY) is None  # a few 403s: no burst
    assert "slow" in (judge(ProxyHealth(requests=20, latency_ms=20_000), POLICY) or "")
    assert judge(ProxyHealth(requests=40, errors=2, bans=1, latency_ms=300), POLICY) is None


def test_fold_decays_per_heartbeat_so_old_trouble_fades() -> None:
    bad = fold(ProxyHealth(), Sample(requests=20, errors=15, bans=0, mean_latency_ms=800), POLICY)
    assert judge(bad, POLICY) is not None
    h = bad.model_copy(update={"errors": 0.0, "requests": 0.0})  # reset, then clean traffic
    for _ in range(10):
        h = fold(h, Sample(requests=10, errors=0, bans=0, mean_latency_ms=100), POLICY)
    assert judge(h, POLICY) is None
    assert h.latency_ms == pytest.approx(100, rel=0.3)
    old = bad
    for _ in range(30):  # ten heartbeats of good traffic outweigh a burst of errors
        old = fold(old, Sample(requests=10, errors=0, bans=0, mean_latency_ms=100), POLICY)
    assert judge(old, POLICY) is None
    assert fold(old, Sample(0, 0, 0, 0.0), POLICY).requests < old.requests  # idle beats decay


def test_recovered_keeps_the_epoch_and_forgets_the_numbers() -> None:
    back = recovered(out(epoch=3))
    assert (back.out, back.requests, back.epoch) == (False, 0.0, 3)
