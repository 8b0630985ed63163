"""What one simulated run measured, per policy and per tenant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def percentile(sorted_values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100, nearest rank) of already sorted values; 0 if none."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


@dataclass
class TenantResult:
    crawls: int = 0
    cold: int = 0  # crawls that waited for a container to start
    starts: int = 0
    slo_misses: int = 0
    container_s: float = 0.0
    browser_s: float = 0.0  # the part of ``container_s`` billed by browser containers
    browser_starts: int = 0
    waits: list[float] = field(default_factory=list)

    def add_crawl(self, wait: float, cold: bool, slo_s: float) -> None:
        self.crawls += 1
        self.cold += cold
        self.slo_misses += wait > slo_s
        self.waits.append(wait)

    def cost(self, price: float, browser_price: float | None = None) -> float:
        """Billed seconds at ``price``, browser containers' at ``browser_price``."""
        browser = price if browser_price is None else browser_price
        return (self.container_s - self.browser_s) * price + self.browser_s * browser

    def summary(self, price: float, browser_price: float | None = None) -> dict[str, Any]:
        waits = sorted(self.waits)
        return {
            "crawls": self.crawls,
            "cold_crawls": self.cold,
            "cold_starts": self.starts,
            "slo_misses": self.slo_misses,
            "container_s": round(self.container_s, 1),
            "browser_container_s": round(self.browser_s, 1),
            "browser_starts": self.browser_starts,
            "cost": round(self.cost(price, browser_price), 6),
            "wait_p50_s": round(percentile(waits, 50), 3),
            "wait_p95_s": round(percentile(waits, 95), 3),
            "wait_p99_s": round(percentile(waits, 99), 3),
        }


@dataclass
class RunResult(TenantResult):
    label: str = ""
    prewarms: int = 0
    failed_starts: int = 0
    horizon_s: float = 0.0
    fleet: list[tuple[float, int]] = field(default_factory=list)  # (time, live containers)
    _live: int = 0
    wall_s: float = 0.0
    tenants: dict[str, TenantResult] = field(default_factory=dict)

    def fleet_change(self, at: float, delta: int) -> None:
        self._live += delta
        if self.fleet and self.fleet[-1][0] == at:
            self.fleet[-1] = (at, self._live)
        else:
            self.fleet.append((at, self._live))

    @property
    def peak_fleet(self) -> int:
        return max((n for _, n in self.fleet), default=0)
