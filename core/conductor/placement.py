"""Pure placement decisions: which egress a crawl leaves from, which container takes it.

No I/O here, so every rule is unit-testable in isolation; the conductor applies the result
with compare-and-set and retries when another instance got there first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.errors import InvalidRequest
from core.models import Container, ContainerState, Crawl, CrawlSpec, Egress, EgressHealth

#: An egress whose containers saw at least this many requests, of which at least this share
#: failed at the network level, is avoided while a healthier one can serve.
UNHEALTHY_MIN_REQUESTS = 20
UNHEALTHY_ERROR_RATE = 0.5


def egress_health(containers: Sequence[Container]) -> dict[str, EgressHealth]:
    """Health per egress name, summed over the given containers' heartbeats."""
    health: dict[str, EgressHealth] = {}
    for c in containers:
        seen = health.get(c.egress.name, EgressHealth())
        health[c.egress.name] = seen.add(c.health.requests, c.health.errors, c.health.latency_ms)
    return health


def _unhealthy(health: EgressHealth | None) -> bool:
    return (
        health is not None
        and health.requests >= UNHEALTHY_MIN_REQUESTS
        and health.error_rate >= UNHEALTHY_ERROR_RATE
    )


def choose_egress(
    spec: CrawlSpec, pool: Sequence[Egress], health: Mapping[str, EgressHealth] | None = None
) -> Egress:
    """The egress a crawl should leave from.

    An explicit ``spec.egress`` must name a pool entry; otherwise ``spec.region`` narrows the
    pool; egresses whose proxies are failing (see ``UNHEALTHY_*``) are passed over while a
    healthy one remains; then the cheapest wins, and on equal cost the lower error rate and
    latency (ties: first listed).
    """
    if not pool:
        raise InvalidRequest("no egress is configured")
    if spec.egress is not None:
        for egress in pool:
            if egress.name == spec.egress:
                return egress
        names = ", ".join(e.name for e in pool)
        raise InvalidRequest(f"unknown egress {spec.egress!r} (configured: {names})")
    candidates = [e for e in pool if spec.region is None or e.region == spec.region]
    if not candidates:
        raise InvalidRequest(f"no egress in region {spec.region!r}")
    seen = health or {}
    healthy = [e for e in candidates if not _unhealthy(seen.get(e.name))] or candidates

    def score(egress: Egress) -> tuple[float, float, float]:
        h = seen.get(egress.name, EgressHealth())
        return (egress.cost_per_second, h.error_rate, h.latency_ms)

    return min(healthy, key=score)


def accepts_work(container: Container) -> bool:
    """Ready or starting containers take new work; draining and dead ones never do."""
    return container.state in (ContainerState.ready, ContainerState.starting)


def pick_container(containers: Sequence[Container], egress: Egress) -> Container | None:
    """Least-loaded container of ``egress`` with a free slot; ready beats starting on ties."""
    fits = [
        c
        for c in containers
        if accepts_work(c) and c.egress.name == egress.name and c.free_slots > 0
    ]
    if not fits:
        return None
    return min(
        fits,
        key=lambda c: (len(c.in_flight), c.state is not ContainerState.ready, c.started_at, c.id),
    )


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What routing one crawl depends on, read once: the crawl, the tenant's live containers
    that hold a fleet slot, the container its session is bound to (if any), the fleet size
    and the tenant's container limit."""

    crawl: Crawl
    containers: tuple[Container, ...]
    bound: Container | None
    fleet_size: int
    max_containers: int


@dataclass(frozen=True, slots=True)
class Commit:
    """The crawl is already reserved on ``container`` (a crash or a duplicate came between
    the reservation and the dispatch): finish the dispatch there."""

    container: Container


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Reserve a slot on ``container`` (``sticky``: even when full — its session is there)."""

    container: Container
    sticky: bool


@dataclass(frozen=True, slots=True)
class Start:
    """Start a new container in ``egress`` for the crawl."""

    egress: Egress


@dataclass(frozen=True, slots=True)
class Wait:
    """Leave the crawl pending in the backlog; ``reason`` is shown in its status."""

    reason: str


Decision = Commit | Dispatch | Start | Wait


def decide(snapshot: Snapshot, egress: Egress) -> Decision:
    """Where a pending crawl goes — a pure function of ``snapshot``: the conductor applies
    the answer with compare-and-set and decides again on fresh records if it lost a race."""
    crawl = snapshot.crawl
    holder = next((c for c in snapshot.containers if crawl.id in c.in_flight), None)
    if holder is not None:
        return Commit(holder)
    if snapshot.bound is not None and accepts_work(snapshot.bound):
        return Dispatch(snapshot.bound, sticky=True)
    target = pick_container(snapshot.containers, egress)
    if target is not None:
        return Dispatch(target, sticky=False)
    if snapshot.fleet_size >= snapshot.max_containers:
        limit = f"waiting: the tenant is at its limit of {snapshot.max_containers} containers"
        if snapshot.containers:
            return Wait(f"{limit} (every container is at its parallel limit)")
        return Wait(limit)
    return Start(egress)
