"""Egress and proxy scoring: which egress, and which of its proxies, a crawl leaves through.

Pure functions over records (no port, no clock), so every rule is unit-tested alone
(``tests/unit/core/test_egress_scoring.py``); the conductor reads the records, calls
``choose_route`` and applies the answer with compare-and-set.

The order of the decision:

1. **Preference.** ``spec.egress`` must name a pool entry (else ``InvalidRequest``);
   ``spec.region`` narrows the pool. A sticky session follows its stored route (egress and
   proxy) whatever the preference says.
2. **Health.** Each proxy (``direct`` for an egress without one) has a ``ProxyHealth``
   folded from the engines' heartbeats: requests, network errors, ban signals (403/429
   bursts, CAPTCHA pages) and latency, each decayed by ``ScoringPolicy.decay`` per heartbeat
   (a window in heartbeat counts, not in time). ``judge`` scores a proxy out when too many of
   enough requests failed, were refused as a ban, or were slow. An out proxy comes back only
   when its cool-down message (a relative delay, measured by the scheduler) arrives, with
   fresh stats. An egress whose every proxy is out is scored out.
3. **Price and start latency.** Among what is left: the lowest ``cost_per_second``, then
   the lowest expected start latency (0 when the tenant already has a container there with a
   free slot, else the egress's ``start_latency_s`` or its runtime's typical start), then the
   fewest crawls already on it (crawls spread over equal egresses), then health, then the
   order of the pool. A crawl that renders (``render`` not ``never``) is priced at each
   egress's browser figures (``Egress.for_browser``), and when some entries of the pool
   declare ``browser`` it goes only to those.

A session never moves silently: when the proxy of its stored route is scored out the answer
is ``Blocked`` with a reason, which the conductor shows in the crawl's status while it waits
for the cool-down (rather than leave from another IP, or keep hammering a site that bans
it). Other crawls are never stopped by the scoring alone: when every candidate is out, the
least bad one is used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field

from core.errors import InvalidRequest
from core.models import CrawlSpec, Egress, Frozen, OutboxEntry

DIRECT = "direct"
#: The StateStore table of ``EgressHealthRecord`` (partition ``fleet``, key = egress name).
HEALTH_TABLE = "egress_health"
HEALTH_PARTITION = "fleet"


def proxy_id(url: str | None) -> str:
    """A stable, secret-free name of a proxy URL (``direct`` for none): ``px-`` and 10 hex
    digits of its SHA-256. Messages and records carry this, never the URL."""
    if not url:
        return DIRECT
    return "px-" + hashlib.sha256(url.encode()).hexdigest()[:10]


def redact_proxy(url: str | None) -> str:
    """``url`` without its password (``http://user:***@host:port``); ``direct`` for none."""
    if not url:
        return DIRECT
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    return urlunsplit((parts.scheme, netloc, "", "", ""))


def proxies_of(egress: Egress) -> dict[str, str | None]:
    """The egress's proxies by id (``{"direct": None}`` for an egress without any)."""
    pool = egress.proxy_pool
    return {proxy_id(url): url for url in pool} if pool else {DIRECT: None}


# --------------------------------------------------------------------------- health


@dataclass(frozen=True, slots=True)
class ScoringPolicy:
    """When a proxy is scored out. Counts are decayed sums (see ``fold``)."""

    min_requests: float = 20.0
    max_error_rate: float = 0.5
    min_bans: float = 5.0
    max_ban_rate: float = 0.3
    slow_ms: float = 15_000.0
    decay: float = 0.9  # per heartbeat: a window of about 10 heartbeats


class ProxyHealth(Frozen):
    """What the heartbeats say about one proxy of one egress, fleet-wide."""

    requests: float = 0.0
    errors: float = 0.0
    bans: float = 0.0
    latency_ms: float = 0.0
    out: bool = False
    reason: str | None = None
    #: Bumped each time the proxy is scored out: a cool-down message of another epoch is stale.
    epoch: Annotated[int, Field(ge=0)] = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def ban_rate(self) -> float:
        return self.bans / self.requests if self.requests else 0.0


class EgressHealthRecord(Frozen):
    """Table ``egress_health``, partition ``fleet``, key = egress name: its proxies' health
    and the cool-down timers a scoring-out implies (relayed by the outbox)."""

    egress: str
    proxies: dict[str, ProxyHealth] = {}
    outbox: tuple[OutboxEntry, ...] = ()

    def usable(self, proxy: str) -> bool:
        health = self.proxies.get(proxy)
        return health is None or not health.out


@dataclass(frozen=True, slots=True)
class Sample:
    """One heartbeat's numbers for one proxy."""

    requests: int
    errors: int
    bans: int
    mean_latency_ms: float


def fold(health: ProxyHealth, sample: Sample, policy: ScoringPolicy) -> ProxyHealth:
    """``health`` with one heartbeat folded in: old counts decay, the sample adds."""
    d = policy.decay
    requests = health.requests * d + sample.requests
    if requests <= 0:
        return health
    weight = sample.requests / requests if requests else 0.0
    latency = health.latency_ms + (sample.mean_latency_ms - health.latency_ms) * weight
    return health.model_copy(
        update={
            "requests": requests,
            "errors": health.errors * d + sample.errors,
            "bans": health.bans * d + sample.bans,
            "latency_ms": latency,
        }
    )


def judge(health: ProxyHealth, policy: ScoringPolicy) -> str | None:
    """Why ``health`` scores its proxy out, or None while it is fine."""
    if health.requests < policy.min_requests:
        return None
    seen = f"of the last ~{health.requests:.0f} requests"
    if health.error_rate >= policy.max_error_rate:
        return f"network errors on {health.error_rate:.0%} {seen}"
    if health.bans >= policy.min_bans and health.ban_rate >= policy.max_ban_rate:
        return f"ban signals (403/429/CAPTCHA) on {health.ban_rate:.0%} {seen}"
    if health.latency_ms >= policy.slow_ms:
        return f"slow: {health.latency_ms / 1000:.1f} s a request"
    return None


def recovered(health: ProxyHealth) -> ProxyHealth:
    """Back in after its cool-down, on probation: fresh stats, same epoch."""
    return ProxyHealth(epoch=health.epoch)


# --------------------------------------------------------------------------- choosing


@dataclass(frozen=True, slots=True)
class EgressLoad:
    """The tenant's live containers in one egress: crawls on them and free slots."""

    crawls: int = 0
    free_slots: int = 0


@dataclass(frozen=True, slots=True)
class StickyRoute:
    """Where a session left from before: its egress and proxy (kept across restarts)."""

    session: str
    egress: str
    proxy: str


@dataclass(frozen=True, slots=True)
class Route:
    egress: Egress
    proxy: str  # a proxy id of ``egress`` (``direct`` for none)


@dataclass(frozen=True, slots=True)
class Blocked:
    reason: str


def _out_reason(egress: Egress, health: EgressHealthRecord | None) -> str | None:
    """Why every proxy of ``egress`` is out (None while one is usable)."""
    if health is None:
        return None
    reasons = []
    for pid in proxies_of(egress):
        if health.usable(pid):
            return None
        reasons.append(health.proxies[pid].reason or "scored out")
    return "; ".join(dict.fromkeys(reasons))


def best_proxy(egress: Egress, health: EgressHealthRecord | None) -> str:
    """The usable proxy of ``egress`` with the fewest errors, bans and latency (ties: the
    order of the pool); the least bad one if every proxy is out."""
    ids = list(proxies_of(egress))
    seen = health.proxies if health is not None else {}

    def rank(pid: str) -> tuple[bool, float, float, int]:
        h = seen.get(pid, ProxyHealth())
        return (h.out, h.error_rate + h.ban_rate, h.latency_ms, ids.index(pid))

    return min(ids, key=rank)


def candidates(spec: CrawlSpec, pool: Sequence[Egress]) -> list[Egress]:
    """The pool entries ``spec`` allows; ``InvalidRequest`` for an unknown egress or region."""
    if not pool:
        raise InvalidRequest("no egress is configured")
    if spec.egress is not None:
        for egress in pool:
            if egress.name == spec.egress:
                return [egress]
        names = ", ".join(e.name for e in pool)
        raise InvalidRequest(f"unknown egress {spec.egress!r} (configured: {names})")
    allowed = [e for e in pool if spec.region is None or e.region == spec.region]
    if not allowed:
        raise InvalidRequest(f"no egress in region {spec.region!r}")
    return allowed


def _sticky(
    route: StickyRoute, pool: Sequence[Egress], health: Mapping[str, EgressHealthRecord]
) -> Route | Blocked | None:
    egress = next((e for e in pool if e.name == route.egress), None)
    if egress is None or route.proxy not in proxies_of(egress):
        return None  # its egress or proxy left the pool: the session starts afresh
    seen = health.get(egress.name)
    if seen is not None and not seen.usable(route.proxy):
        why = seen.proxies[route.proxy].reason or "scored out"
        where = egress.name if route.proxy == DIRECT else f"{egress.name} ({route.proxy})"
        return Blocked(
            f"waiting: session {route.session!r} leaves from {where}, which is scored out "
            f"({why}); it stays there rather than change IP, until the proxy's cool-down ends"
        )
    return Route(egress, route.proxy)


def choose_route(
    spec: CrawlSpec,
    pool: Sequence[Egress],
    *,
    health: Mapping[str, EgressHealthRecord] | None = None,
    load: Mapping[str, EgressLoad] | None = None,
    typical_start_s: Mapping[str, float] | None = None,
    sticky: StickyRoute | None = None,
) -> Route | Blocked:
    """Where a crawl leaves from (see the module docstring for the order of the rules).

    ``health`` by egress name, ``load`` the tenant's containers by egress name,
    ``typical_start_s`` each egress's runtime start latency (when the entry gives none),
    ``sticky`` the session's stored route, if it has one."""
    seen = health or {}
    if sticky is not None:
        followed = _sticky(sticky, pool, seen)
        if followed is not None:
            return followed
    allowed = candidates(spec, pool)
    renders = spec.render != "never"
    if renders and any(e.browser is not None for e in allowed):
        allowed = [e for e in allowed if e.browser is not None]
    usable = [e for e in allowed if _out_reason(e, seen.get(e.name)) is None]
    if not usable:
        usable = allowed  # nothing is healthy: the least bad one rather than no work
    loads = load or {}
    starts = typical_start_s or {}

    def rank(egress: Egress) -> tuple[float, float, int, float, float, int]:
        here = loads.get(egress.name, EgressLoad())
        priced = egress.for_browser() if renders else egress
        start = 0.0 if here.free_slots > 0 else priced.start_latency_s
        if start is None:
            start = starts.get(egress.name, 0.0)
        h = seen.get(egress.name)
        best = h.proxies.get(best_proxy(egress, h), ProxyHealth()) if h else ProxyHealth()
        return (
            priced.cost_per_second,
            start,
            here.crawls,
            best.error_rate + best.ban_rate,
            best.latency_ms,
            list(pool).index(egress),
        )

    chosen = min(usable, key=rank)
    return Route(chosen, best_proxy(chosen, seen.get(chosen.name)))
