"""The offline optimum: the cheapest fleet that knows every arrival in advance.

Every crawl starts the moment it arrives (no wait), so at each instant a tenant needs
``n(t) = ceil(running crawls / capacity)`` containers. Containers are interchangeable, so
the fleet splits into levels — level ``k`` is busy while ``n(t) >= k`` — and each level is
a one-machine problem solved exactly: over its busy intervals, a dynamic programme chooses
which idle gaps to bridge (keep alive, billed) and where to stop and start again just in
time (billed the boot ``L`` before, the stop after, and at least the minimum billed
duration per container). O(intervals) per level.

Exact for one crawl per container; with ``capacity > 1`` it assumes crawls can always be
packed onto the fewest containers, so it is a lower bound no online policy can beat.
Start latency is taken at its mean; failed starts are not charged.

Rendering crawls (``TraceCrawl.render``) are covered by browser containers (the egress's
``browser`` figures: boot, minimum, price) and the others by plain ones, each kind solved
as above; ``cost`` prices each kind's seconds. Splitting the kinds is exact when browser
containers cost more and plain crawls should not use them; when a plain crawl could bridge
a browser container's idle gap more cheaply the true optimum is a little lower.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from simulator.model import SimConfig
from simulator.trace import Trace


@dataclass
class Optimum:
    container_s: float = 0.0
    cost: float = 0.0
    browser_s: float = 0.0
    starts: int = 0
    per_tenant: dict[str, tuple[float, int]] = field(default_factory=dict)  # (s, starts)


def levels(intervals: list[tuple[float, float]], capacity: int) -> list[list[tuple[float, float]]]:
    """Busy intervals of each level of ``n(t) = ceil(running / capacity)``."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = 0
    opened: list[float] = []  # start of the open interval of level k + 1
    out: list[list[tuple[float, float]]] = []
    for at, delta in events:  # ends sort before starts at the same instant
        running += delta
        need = math.ceil(running / capacity)
        while len(opened) < need:
            opened.append(at)
        while len(opened) > need:
            k = len(opened) - 1
            start = opened.pop()
            while len(out) <= k:
                out.append([])
            if at > start:
                out[k].append((start, at))
    return out


def level_cost(
    busy: list[tuple[float, float]], *, boot_s: float, stop_s: float, min_billed_s: float
) -> tuple[float, int]:
    """Least billed seconds to cover ``busy`` (sorted, disjoint) and the containers used.

    ``best[j]``: covering intervals ``[0, j)``. A container covering intervals ``i..j-1``
    bills ``max(boot + end_j - start_i + stop, min_billed)``; ``best`` grows with ``j``,
    so the flat (minimum-billed) candidates are led by the earliest of them and the linear
    ones by a running minimum of ``best[i] - start_i``."""
    n = len(busy)
    best = [0.0] * (n + 1)
    count = [0] * (n + 1)
    linear_min = math.inf  # min over linear i of best[i] - start_i
    linear_arg = -1
    boundary = 0  # intervals i < boundary make a container longer than the minimum
    for j in range(1, n + 1):
        end = busy[j - 1][1]
        while boundary < j and boot_s + end - busy[boundary][0] + stop_s >= min_billed_s:
            value = best[boundary] - busy[boundary][0]
            if value < linear_min:
                linear_min, linear_arg = value, boundary
            boundary += 1
        candidates = []
        if linear_arg >= 0:
            candidates.append((linear_min + end + boot_s + stop_s, count[linear_arg] + 1))
        if boundary < j:
            candidates.append((best[boundary] + min_billed_s, count[boundary] + 1))
        best[j], count[j] = min(candidates)
    return best[n], count[n]


def optimum(trace: Trace, config: SimConfig) -> Optimum:
    kinds = {False: config.runtime, True: config.runtime.for_browser()}
    by_tenant: dict[str, dict[bool, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for c in trace.crawls:
        by_tenant[c.tenant][c.render].append((c.at_s, c.at_s + c.duration_s))
    result = Optimum()
    for tenant, by_kind in sorted(by_tenant.items()):
        seconds, starts = 0.0, 0
        for render, intervals in sorted(by_kind.items()):
            runtime = kinds[render]
            for busy in levels(intervals, config.capacity):
                s, n = level_cost(
                    busy,
                    boot_s=runtime.start_s,
                    stop_s=runtime.stop_s,
                    min_billed_s=runtime.egress.min_billed_s,
                )
                seconds += s
                starts += n
                result.cost += s * runtime.price
                result.browser_s += s if render else 0.0
        result.per_tenant[tenant] = (seconds, starts)
        result.container_s += seconds
        result.starts += starts
    return result
