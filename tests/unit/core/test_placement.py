from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.conductor.placement import (
    Commit,
    Dispatch,
    Snapshot,
    Start,
    Wait,
    decide,
    pick_container,
)
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


def test_health_adds_up_across_heartbeats() -> None:
    h = EgressHealth().add(10, 1, 100.0).add(30, 3, 200.0)
    assert (h.requests, h.errors) == (40, 4)
    assert h.latency_ms == pytest.approx(175.0)


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


def test_at_the_topic_subscription_limit_the_crawl_waits_with_that_reason() -> None:
    full = container("a", POOL[1], work=2)
    below = Snapshot(
        crawl=_crawl(),
        containers=(full,),
        bound=None,
        fleet_size=1,
        max_containers=4,
        topic_limit=2,
    )
    assert decide(below, POOL[1]) == Start(POOL[1])
    at = Snapshot(
        crawl=_crawl(),
        containers=(full, container("b", POOL[1], work=2)),
        bound=None,
        fleet_size=2,
        max_containers=4,
        topic_limit=2,
    )
    waiting = decide(at, POOL[1])
    assert isinstance(waiting, Wait)
    assert "dispatch topic holds the broker's limit of 2 container subscriptions" in waiting.reason
