"""How long an idle container is kept, and when one is started before work arrives.

One ``IdlePolicy`` (``SKYCRAWL_IDLE_POLICY``) answers for the kill timer (``fleet.py``: the
keep-alive stored on the container record as ``keep_alive_s``) and for housekeeping
(pre-warming, and counting the idle time of a tenant that has no container):

``fixed``
    Keep every idle container ``idle_ttl_s`` (KEDA's cooldown; the behaviour before policies).
``break_even``
    The ski-rental rule: keep it as long as idling costs less than one cold start,
    ``T = cold-start cost / idle price``. A cold start bills the boot (``L`` seconds at the
    egress's price) and makes a crawl wait ``L`` seconds, which counts as ``idle_wait_weight``
    seconds of an idle container each; so ``T = L * (1 + idle_wait_weight)`` — the price
    cancels. At most twice the offline optimum's cost (deterministic ski rental).
``adaptive`` (the default)
    Learns each tenant's distribution of idle gaps, in the spirit of the hybrid histogram of
    Shahrad et al., "Serverless in the Wild" (ATC '20): a decayed histogram over ``EDGES_S``
    (10 s … 2 min, then minute bins to 4 h; the last bin holds longer gaps) kept in the tenant's ``idle`` record. Once
    it holds ``MIN_SAMPLES`` gaps it picks the plan of least expected cost over that
    histogram — either keep alive up to an edge, or stop at once and *pre-warm*: start a
    container again ``L`` seconds before the head of the distribution and keep it until
    its tail. Pre-warming wins only when the gaps are concentrated (a cron-like tenant). A
    young or mostly-out-of-range histogram falls back to ``idle_ttl_s``, or to break-even
    with ``SKYCRAWL_IDLE_FALLBACK=break_even``.

Gaps are measured without comparing any two clocks (README, "Reliability"): the kill timer
is chained through the histogram's edges (each link a relative delay, counted on the
container record as ``idle_bin``), and the time a tenant spends with no container is counted
in housekeeping runs (``timer_period_s`` each) on its ``idle`` record. Limits: the measured
gap is rounded down to an edge (in-window) or to a housekeeping period (beyond); a pre-warm
starts up to one housekeeping period early; the minimum billed duration of a runtime is not
part of the cold-start cost.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from operator import mul
from typing import Literal, Protocol

from core.models import Egress
from core.records import IdlePlan, IdleStats
from core.settings import SkycrawlSettings

PolicyName = Literal["fixed", "break_even", "adaptive"]

#: Upper edges of the histogram's bins, in seconds; bin ``i`` holds gaps in
#: ``[EDGES_S[i-1], EDGES_S[i])``, the last bin gaps of 4 h and more.
EDGES_S: tuple[float, ...] = (10, 20, 30, 45, 60, 90, *range(120, 14401, 60))
BINS = len(EDGES_S) + 1
#: A gap of a bin stands for its midpoint; the out-of-range bin for 1.5 times the last edge.
_MIDPOINTS = [(lo + hi) / 2 for lo, hi in zip((0.0, *EDGES_S[:-1]), EDGES_S, strict=True)]
_REPR: tuple[float, ...] = (*_MIDPOINTS, EDGES_S[-1] * 1.5)

#: Gaps (decayed) the histogram needs before it is trusted.
MIN_SAMPLES = 10.0
#: Each new gap multiplies the older counts by this (an effective memory of ~30 gaps).
DECAY = 0.97
#: When this share of gaps is out of range (≥ 4 h) the histogram says nothing useful.
MAX_OUT_OF_RANGE = 0.5
#: The plan is recomputed on every gap while the histogram is young, then every this many.
REPLAN_EVERY = 8


def bin_of(gap_s: float) -> int:
    """The histogram bin of an idle gap of ``gap_s`` seconds."""
    return bisect_right(EDGES_S, gap_s)


def next_edge(elapsed_s: float) -> float | None:
    """The first edge after ``elapsed_s`` (where the kill timer's next link fires)."""
    i = bisect_right(EDGES_S, elapsed_s)
    return EDGES_S[i] if i < len(EDGES_S) else None


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A decision: keep an idle container ``keep_alive_s``; after it stopped, start one again
    when the tenant has been idle ``prewarm_at_s - start_latency_s`` (None: never), and keep
    that one ``prewarm_keep_s``. ``basis`` says why, for logs and the simulator."""

    keep_alive_s: float
    basis: str
    prewarm_at_s: float | None = None
    prewarm_keep_s: float = 0.0


class IdlePolicy(Protocol):
    @property
    def name(self) -> PolicyName: ...

    @property
    def measures(self) -> bool:
        """Whether the conductor must measure idle gaps for it (chained kill timers, counts)."""
        ...

    def decide(self, stats: IdleStats | None, start_latency_s: float) -> KeepAlive:
        """The keep-alive for a container of a tenant with ``stats``, in an egress whose
        containers take ``start_latency_s`` to start."""
        ...

    def observe(self, stats: IdleStats, gap_s: float, start_latency_s: float) -> IdleStats:
        """``stats`` with one more idle gap of (at least) ``gap_s`` folded in."""
        ...


@dataclass(frozen=True, slots=True)
class FixedIdle:
    ttl_s: float
    name: PolicyName = "fixed"
    measures: bool = False

    def decide(self, stats: IdleStats | None, start_latency_s: float) -> KeepAlive:
        return KeepAlive(self.ttl_s, f"fixed {self.ttl_s:g} s")

    def observe(self, stats: IdleStats, gap_s: float, start_latency_s: float) -> IdleStats:
        return stats


@dataclass(frozen=True, slots=True)
class BreakEvenIdle:
    wait_weight: float
    name: PolicyName = "break_even"
    measures: bool = False

    def decide(self, stats: IdleStats | None, start_latency_s: float) -> KeepAlive:
        t = break_even_s(start_latency_s, self.wait_weight)
        return KeepAlive(t, f"break-even {t:g} s")

    def observe(self, stats: IdleStats, gap_s: float, start_latency_s: float) -> IdleStats:
        return stats


def break_even_s(start_latency_s: float, wait_weight: float) -> float:
    """Cold-start cost over idle price, in seconds of an idle container."""
    return start_latency_s * (1.0 + wait_weight)


@dataclass(frozen=True, slots=True)
class AdaptiveIdle:
    wait_weight: float
    fallback_ttl_s: float
    max_keep_s: float = EDGES_S[-1]
    #: Until the histogram is trusted: break-even, or ``fallback_ttl_s`` (``idle_ttl_s``).
    fallback: Literal["fixed", "break_even"] = "fixed"
    #: A pre-warm starts at a housekeeping run, up to one period before the plan's moment:
    #: the seconds it bills early on average (half the period), weighed against its saving.
    prewarm_early_s: float = 0.0
    name: PolicyName = "adaptive"
    measures: bool = True

    def _fallback(self, start_latency_s: float, why: str) -> KeepAlive:
        if self.fallback == "break_even":
            t = break_even_s(start_latency_s, self.wait_weight)
            return KeepAlive(t, f"fallback break-even {t:g} s ({why})")
        return KeepAlive(self.fallback_ttl_s, f"fallback {self.fallback_ttl_s:g} s ({why})")

    def decide(self, stats: IdleStats | None, start_latency_s: float) -> KeepAlive:
        if stats is None or stats.plan is None:
            n = 0.0 if stats is None else sum(stats.counts)
            return self._fallback(start_latency_s, f"{n:.0f} gaps seen")
        plan = stats.plan
        if plan.keep_alive_s is None:
            return self._fallback(start_latency_s, plan.basis)
        return KeepAlive(plan.keep_alive_s, plan.basis, plan.prewarm_at_s, plan.prewarm_keep_s)

    def observe(self, stats: IdleStats, gap_s: float, start_latency_s: float) -> IdleStats:
        counts = list(stats.counts) if len(stats.counts) == BINS else [0.0] * BINS
        counts = [c * DECAY for c in counts]
        counts[bin_of(gap_s)] += 1.0
        seen = stats.observed + 1
        plan = stats.plan
        if plan is None or sum(counts) < MIN_SAMPLES * 2 or seen % REPLAN_EVERY == 0:
            plan = self.plan(counts, start_latency_s)
        return stats.model_copy(update={"counts": tuple(counts), "observed": seen, "plan": plan})

    def plan(self, counts: list[float], start_latency_s: float) -> IdlePlan | None:
        """The plan of least expected cost per idle gap over the histogram ``counts``."""
        total = sum(counts)
        if total < MIN_SAMPLES:
            return None
        if counts[-1] / total > MAX_OUT_OF_RANGE:
            return IdlePlan(keep_alive_s=None, basis="mostly gaps over 4 h")
        return cheapest_plan(
            [c / total for c in counts],
            start_latency_s,
            self.wait_weight,
            self.max_keep_s,
            prewarm_early_s=self.prewarm_early_s,
        )


#: Percentiles of the gap distribution tried as a pre-warm's head (ready by then) and tail.
#: Keep-alive candidates: index k stands for ``_KEEPS[k]`` (bins [0, k) lie below it).
_KEEPS: tuple[float, ...] = (0.0, *EDGES_S)
_HEADS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
_TAILS = (0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def _first_within(costs: list[float], least: float) -> int:
    """The shortest keep-alive whose cost is the least (ties within rounding error)."""
    return next(k for k, cost in enumerate(costs) if cost <= least + 1e-6)


def cheapest_plan(
    q: list[float],
    start_latency_s: float,
    wait_weight: float,
    max_keep_s: float,
    *,
    prewarm_early_s: float = 0.0,
) -> IdlePlan:
    """Least expected cost, in container-seconds, over the gap distribution ``q`` (per bin).

    A plan keeps an idle container to edge ``K``, and may then start one again to be ready
    at edge ``h`` (a percentile of the gaps) and keep it to edge ``t``. With a cold start
    costing ``C = L (1 + w)``, a gap ``g`` costs: ``g`` below ``K``; ``K + C`` below ``h``
    (or with no pre-warm); ``K + L + (g - h)`` below ``t``; ``K + L + (t - h) + C`` beyond.
    O(bins): ``B[k]`` below is the part that depends on ``K``, minimised over a prefix."""
    cold = start_latency_s * (1.0 + wait_weight)
    # mass[i], gaps[i]: probability and expected gap of bins [0, i)
    mass = list(accumulate(q, initial=0.0))
    gaps = list(accumulate(map(mul, q, _REPR), initial=0.0))
    n_keep = bisect_right(_KEEPS, max_keep_s)
    # B[k] = E[g; g < K] - P(g < K) (K + C) + K: the keep-alive part of any plan's cost
    b = [g - m * (e + cold) + e for g, m, e in zip(gaps, mass, _KEEPS[:n_keep], strict=False)]
    least = list(accumulate(b, min))  # least[i]: the least B over K of index <= i
    best_k = _first_within(b, least[-1])
    best_cost = least[-1] + cold
    edges = _KEEPS
    best = IdlePlan(keep_alive_s=edges[best_k], basis=f"histogram: keep {edges[best_k]:g} s")

    def bin_at(p: float) -> int:  # the bin holding the p-th quantile
        return min(len(q) - 1, max(0, bisect_right(mass, p) - 1))

    for h in sorted({bin_at(p) for p in _HEADS}):
        head = edges[h]
        usable = min(n_keep, bisect_right(edges, head - start_latency_s)) - 1
        if head <= start_latency_s or usable < 0 or h >= len(EDGES_S):
            continue
        k = _first_within(b, least[usable])
        for t in sorted({bin_at(p) + 1 for p in _TAILS}):
            if t <= h or t > len(EDGES_S) or edges[t] - head > max_keep_s:
                continue
            tail = edges[t]
            inside = mass[t] - mass[h]
            cost = (
                b[k]
                + mass[h] * cold
                + (1.0 - mass[h]) * prewarm_early_s
                + inside * (start_latency_s - head)
                + (gaps[t] - gaps[h])
                + (1.0 - mass[t]) * (start_latency_s + tail - head + cold)
            )
            if cost < best_cost - 1e-9:
                best_cost = cost
                best = IdlePlan(
                    keep_alive_s=edges[k],
                    prewarm_at_s=head,
                    prewarm_keep_s=tail - head,
                    basis=f"histogram: keep {edges[k]:g} s, pre-warm at {head:g} s "
                    f"for {tail - head:g} s",
                )
    return best


def idle_policy(
    name: PolicyName,
    *,
    idle_ttl_s: float,
    wait_weight: float,
    fallback: Literal["fixed", "break_even"] = "fixed",
    max_keep_s: float = EDGES_S[-1],
    prewarm_early_s: float = 0.0,
) -> IdlePolicy:
    """The policy called ``name``, with the settings it reads."""
    if name == "fixed":
        return FixedIdle(idle_ttl_s)
    if name == "break_even":
        return BreakEvenIdle(wait_weight)
    return AdaptiveIdle(
        wait_weight,
        idle_ttl_s,
        max_keep_s=max_keep_s,
        fallback=fallback,
        prewarm_early_s=prewarm_early_s,
    )


def start_latency(egress: Egress, typical_start_s: float) -> float:
    """How long a container of ``egress`` takes to start: its own figure, else the runtime's."""
    return egress.start_latency_s if egress.start_latency_s is not None else typical_start_s


def policy_from(settings: SkycrawlSettings) -> IdlePolicy:
    """The policy ``settings`` choose (``SKYCRAWL_IDLE_POLICY`` and friends)."""
    return idle_policy(
        settings.idle_policy,
        idle_ttl_s=settings.idle_ttl_s,
        wait_weight=settings.idle_wait_weight,
        fallback=settings.idle_fallback,
        max_keep_s=settings.idle_max_keep_s,
        prewarm_early_s=settings.timer_period_s / 2,
    )
