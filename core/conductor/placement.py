"""Pure placement decisions: which egress a crawl leaves from, which container takes it.

No I/O here, so every rule is unit-testable in isolation; the conductor applies the result
with compare-and-set and retries when another instance got there first.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import InvalidRequest
from core.models import Container, ContainerState, CrawlSpec, Egress


def choose_egress(spec: CrawlSpec, pool: Sequence[Egress]) -> Egress:
    """The egress a crawl should leave from.

    An explicit ``spec.egress`` must name a pool entry; otherwise ``spec.region`` narrows the
    pool; the cheapest remaining entry wins (ties: first listed).
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
    return min(candidates, key=lambda e: e.cost_per_second)


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
