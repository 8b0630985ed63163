"""Pure placement decisions: which container of the chosen egress takes a crawl (the egress
itself is chosen by ``core.egress_scoring``).

No I/O here, so every rule is unit-testable in isolation; the conductor applies the result
with compare-and-set and retries when another instance got there first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.models import Container, ContainerState, Crawl, Egress


def accepts_work(container: Container) -> bool:
    """Ready or starting containers take new work; draining and dead ones never do."""
    return container.state in (ContainerState.ready, ContainerState.starting)


def pick_container(
    containers: Sequence[Container], egress: Egress, *, browser: bool = False
) -> Container | None:
    """Least-loaded container of ``egress`` with a free slot; ready beats starting on ties.
    ``browser``: only containers whose ``ready`` said they can render (not starting ones,
    which have not said yet)."""
    fits = [
        c
        for c in containers
        if accepts_work(c)
        and c.egress.name == egress.name
        and c.free_slots > 0
        and (c.browser or not browser)
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
    that hold a fleet slot, the container its session is bound to (if any), the fleet size,
    the tenant's container limit and how many subscriptions its dispatch topic may hold."""

    crawl: Crawl
    containers: tuple[Container, ...]
    bound: Container | None
    fleet_size: int
    max_containers: int
    slots: tuple[str, ...] = ()  # the fleet record's containers, in slot order
    topic_limit: int | None = None  # the broker's subscriptions per topic (one per container)


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
    """Start a new container in ``egress`` for the crawl (for a crawl that renders, the
    egress's browser figures: ``Egress.for_browser``, which its record keeps and bills)."""

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
    bound = snapshot.bound
    if bound is not None and accepts_work(bound):
        return Dispatch(bound, sticky=True)
    if bound is not None and bound.state.live and bound.in_flight:
        # its container is being stopped (reaped, or its stop failed and is retried) and
        # still holds the session's work: until that work is taken back, a new container
        # would be a second IP for the session at once (the old one may still be running)
        return Wait(
            f"waiting: the session's container {bound.id} is being stopped; the session "
            "moves once its work is taken back"
        )
    renders = crawl.spec.render != "never"
    target = pick_container(snapshot.containers, egress, browser=renders)
    if target is not None:
        return Dispatch(target, sticky=False)
    if snapshot.topic_limit is not None and snapshot.fleet_size >= snapshot.topic_limit:
        return Wait(
            f"waiting: the tenant's dispatch topic holds the broker's limit of "
            f"{snapshot.topic_limit} container subscriptions"
        )
    if snapshot.fleet_size >= snapshot.max_containers:
        limit = f"waiting: the tenant is at its limit of {snapshot.max_containers} containers"
        if snapshot.containers:
            return Wait(f"{limit} (every container is at its parallel limit)")
        return Wait(limit)
    # a render crawl starts a browser container: priced and timed as the egress declares
    return Start(egress.for_browser() if renders else egress)
