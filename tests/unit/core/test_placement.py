from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.conductor.placement import (
    Commit,
    Dispatch,
    Snapshot,
    Start,
    Wait,
    choose_egress,
    decide,
    egress_health,
    pick_container,
)
from core.errors import InvalidRequest
from core.models import Container, ContainerState, Crawl, CrawlSpec, Egress, EgressHealth

NOW = datetime(2030, 1, 1, tzinfo=UTC)
POOL = [
    Egress(name="eu-proxy", region="eu", proxy_url="http://p1:3128", cost_per_second=0.002),
    Egress(name="us-direct", region="us", cost_per_second=0.001),
    Egress(name="us-proxy", region="us", proxy_url="http://p2:3128", cost_per_second=0.001),
]


def spec(**kw: object) -> CrawlSpec:
    return CrawlSpec.model_validate({"seeds": ["https://example.com/"], **kw})


def container(
    cid: str,
    egress: Egress,
    *,
    work: int = 0,
    state: str = "ready",
    health: EgressHealth | None = None,
) -> Container:
    return Container(
        id=cid,
        tenant_id="t",
        egress=egress,
        state=ContainerState(state),
        in_flight=tuple(f"k{i}" for i in range(work)),
        capacity=2,
        started_at=NOW,
        health=health or EgressHealth(),
    )


def test_explicit_egress_wins_and_unknown_names_are_refused() -> None:
    assert choose_egress(spec(egress="eu-proxy"), POOL).name == "eu-proxy"
    with pytest.raises(InvalidRequest, match="unknown egress 'mars'"):
        choose_egress(spec(egress="mars"), POOL)


def test_region_narrows_and_cheapest_wins() -> None:
    assert choose_egress(spec(region="eu"), POOL).name == "eu-proxy"
    assert choose_egress(spec(), POOL).name == "us-direct"
    with pytest.raises(InvalidRequest, match="no egress in region"):
        choose_egress(spec(region="ap"), POOL)


def test_a_failing_proxy_is_passed_over_while_a_healthy_one_can_serve() -> None:
    failing = EgressHealth(requests=40, errors=30, latency_ms=900.0)
    busy = [container("a", POOL[1], health=failing)]
    assert choose_egress(spec(region="us"), POOL, egress_health(busy)).name == "us-proxy"
    # with every candidate failing, the cheapest is still used rather than nothing
    assert choose_egress(spec(region="eu"), POOL, {"eu-proxy": failing}).name == "eu-proxy"
    # a few errors on little traffic are not enough to avoid it
    early = EgressHealth(requests=5, errors=5)
    assert choose_egress(spec(region="us"), POOL, {"us-direct": early}).name == "us-proxy"


def test_health_adds_up_across_heartbeats_and_containers() -> None:
    h = EgressHealth().add(10, 1, 100.0).add(30, 3, 200.0)
    assert (h.requests, h.errors) == (40, 4)
    assert h.latency_ms == pytest.approx(175.0)
    merged = egress_health([container("a", POOL[0], health=h), container("b", POOL[0], health=h)])
    assert merged["eu-proxy"].requests == 80
    assert merged["eu-proxy"].error_rate == pytest.approx(0.1)


def test_least_loaded_ready_container_of_the_egress_with_room() -> None:
    cs = [
        container("full", POOL[1], work=2),
        container("busy", POOL[1], work=1),
        container("other-egress", POOL[2]),
        container("draining", POOL[1], state="draining"),
        container("idle-starting", POOL[1], state="starting"),
        container("idle-ready", POOL[1]),
    ]
    picked = pick_container(cs, POOL[1])
    assert picked is not None
    assert picked.id == "idle-ready"
    assert pick_container([cs[0], cs[3]], POOL[1]) is None


# --------------------------------------------------------------------------- decide()


def _crawl(crawl_id: str = "c1", **spec_fields: object) -> Crawl:
    return Crawl(
        id=crawl_id, tenant_id="t", spec=spec(**spec_fields), created_at=NOW, updated_at=NOW
    )


def _snapshot(
    *containers: Container,
    bound: Container | None = None,
    limit: int = 2,
    crawl: Crawl | None = None,
) -> Snapshot:
    return Snapshot(
        crawl=crawl or _crawl(),
        containers=tuple(containers),
        bound=bound,
        fleet_size=len(containers),
        max_containers=limit,
    )


def test_a_crawl_reserved_already_is_committed_where_it_is() -> None:
    holder = container("a", POOL[1], work=1).model_copy(update={"in_flight": ("c1",)})
    assert decide(_snapshot(holder, container("b", POOL[1])), POOL[1]) == Commit(holder)


def test_a_bound_session_goes_to_its_container_even_when_it_is_full() -> None:
    full = container("a", POOL[1], work=2)
    assert decide(_snapshot(full, bound=full), POOL[1]) == Dispatch(full, sticky=True)


def test_free_slot_then_start_then_wait_with_a_reason() -> None:
    free, full = container("a", POOL[1], work=1), container("b", POOL[1], work=2)
    assert decide(_snapshot(free, full), POOL[1]) == Dispatch(free, sticky=False)
    assert decide(_snapshot(full, limit=2), POOL[1]) == Start(POOL[1])
    waiting = decide(_snapshot(full, container("c", POOL[1], work=2), limit=2), POOL[1])
    assert isinstance(waiting, Wait)
    assert "limit of 2 containers" in waiting.reason
    assert "parallel limit" in waiting.reason
