"""What the simulator simulates: runtimes (per egress) and the policies it compares.

A ``SimRuntime`` is an egress as the core knows it (``core.models.Egress``: name, price per
second, ``start_latency_s``, ``min_billed_s``) plus what only the simulator needs: the
spread of start latencies (log-normal, ``start_cv``), how long a stop takes (``stop_s``,
billed) and the share of starts that fail (``failure_rate``: the container never says
ready; it is billed for its boot and its crawls are placed again). ``RUNTIMES`` holds
published figures (2024-2026 list prices, us-east-1 or equivalent, 1 vCPU / 2 GB).

An egress with ``browser`` figures (``with_browser``) starts browser containers for the
trace's rendering crawls at those figures (``for_browser``): its price, start latency and
minimum billed duration, as the conductor does (``placement.decide``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

from core.conductor.idle_policy import (
    AdaptiveIdle,
    BreakEvenIdle,
    FixedIdle,
    IdlePolicy,
    break_even_s,
)
from core.models import BrowserEgress, Egress
from core.settings import SkycrawlSettings


@dataclass(frozen=True, slots=True)
class SimRuntime:
    egress: Egress
    start_cv: float = 0.25
    stop_s: float = 5.0
    failure_rate: float = 0.0

    @property
    def start_s(self) -> float:
        return self.egress.start_latency_s or 0.0

    @property
    def price(self) -> float:
        return self.egress.cost_per_second

    def sample_start(self, rng: random.Random) -> float:
        if self.start_cv <= 0 or self.start_s <= 0:
            return self.start_s
        sigma = math.sqrt(math.log(1 + self.start_cv**2))
        return self.start_s * rng.lognormvariate(-sigma * sigma / 2, sigma)

    def billed(self, seconds: float) -> float:
        return max(seconds, self.egress.min_billed_s)

    def for_browser(self) -> SimRuntime:
        """The runtime of this egress's browser containers (itself when it declares none)."""
        return replace(self, egress=self.egress.for_browser())

    def with_browser(self, *, cost_multiplier: float, start_s: float) -> SimRuntime:
        """This runtime with browser containers priced ``cost_multiplier`` times its own,
        taking ``start_s`` to start (billed with the same minimum)."""
        browser = BrowserEgress(cost_multiplier=cost_multiplier, start_latency_s=start_s)
        return replace(self, egress=self.egress.model_copy(update={"browser": browser}))


def _egress(name: str, price_per_hour: float, start_s: float, min_billed_s: float) -> Egress:
    return Egress(
        name=name,
        runtime=name,
        cost_per_second=price_per_hour / 3600,
        start_latency_s=start_s,
        min_billed_s=min_billed_s,
    )


#: Fargate 1 vCPU + 2 GB: $0.04048 + 2 x $0.004445 per hour, 60 s minimum, ~35-45 s start;
#: ACI ~ $0.0486/h, ~35 s, per-second; Cloud Run jobs ~ $0.0864/h at 1 vCPU/2 GiB, ~5 s.
RUNTIMES: dict[str, SimRuntime] = {
    "fargate": SimRuntime(_egress("fargate", 0.04937, 40.0, 60.0), start_cv=0.25, stop_s=10.0),
    "aci": SimRuntime(_egress("aci", 0.0486, 35.0, 0.0), start_cv=0.3, stop_s=5.0),
    "cloudrun": SimRuntime(_egress("cloudrun", 0.0864, 5.0, 0.0), start_cv=0.4, stop_s=2.0),
}


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """One policy of a comparison: ``always_on`` containers per tenant that never stop, or
    an ``IdlePolicy`` over an elastic fleet."""

    label: str
    policy: IdlePolicy | None = None
    always_on: int = 0
    #: Always on, each tenant as many containers as its busiest moment needs (no waiting).
    always_on_peak: bool = False


@dataclass(frozen=True, slots=True)
class SimConfig:
    runtime: SimRuntime = field(default_factory=lambda: RUNTIMES["fargate"])
    capacity: int = 4  # parallel crawls per container
    max_containers: int = 50  # per tenant
    housekeeping_s: float = 60.0  # timer period (the clouds' every-minute schedule)
    slo_s: float = 60.0  # a crawl waiting longer to start misses its SLO
    wait_weight: float = 3.0  # SKYCRAWL_IDLE_WAIT_WEIGHT's default
    seed: int = 1


#: The conductor's settings as a deployment gets them: "adaptive (default)" falls back as it
#: does (``SKYCRAWL_IDLE_FALLBACK``, ``SKYCRAWL_IDLE_TTL_S``) while a tenant's histogram is young.
_PRODUCT = SkycrawlSettings.model_fields


def standard_policies(config: SimConfig, *, always_on: int = 1) -> list[PolicySpec]:
    """The comparison of the issue: always-on, fixed 60/300/600 s, break-even, adaptive."""
    lat = config.runtime.start_s
    t = break_even_s(lat, config.wait_weight)
    return [
        PolicySpec(f"always-on {always_on}", always_on=always_on),
        PolicySpec("always-on at peak", always_on_peak=True),
        PolicySpec("fixed 60 s", FixedIdle(60.0)),
        PolicySpec("fixed 300 s", FixedIdle(300.0)),
        PolicySpec("fixed 600 s", FixedIdle(600.0)),
        PolicySpec(f"break-even {break_even_s(lat, 0):g} s (billing)", BreakEvenIdle(0.0)),
        PolicySpec(f"break-even {t:g} s", BreakEvenIdle(config.wait_weight)),
        PolicySpec(
            "adaptive (default)",
            AdaptiveIdle(
                config.wait_weight,
                _PRODUCT["idle_ttl_s"].default,
                fallback=_PRODUCT["idle_fallback"].default,
                prewarm_early_s=config.housekeeping_s / 2,
            ),
        ),
    ]


#: Fixed windows swept to compare the default with "every fixed window of equal cost".
SWEEP_S: tuple[float, ...] = (0, 15, 30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600)
