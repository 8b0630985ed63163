"""Domain records: what tenants ask for and what the conductor keeps.

Every model is a frozen pydantic v2 model; records change by ``model_copy(update=...)`` and
are written back through the StateStore with compare-and-set.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from core.output import (
    DEFAULT_ALLOW_TYPES,
    DEFAULT_FORMATS,
    ExtractSpec,
    Format,
    MediaPattern,
    PageContent,
    check_media_patterns,
)

if TYPE_CHECKING:
    import re2


class Frozen(BaseModel):
    """Base of the core's models: immutable, unknown fields refused. Validators are built on
    a model's first use, not at import (``defer_build``): a cold start answering one request
    builds only the models that request needs."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


# --------------------------------------------------------------------------- requests

#: Request headers a tenant may set on its crawl (lower-case). Anything else is refused, in
#: particular headers that unlock cloud metadata services (``Metadata-Flavor``, ``Metadata``,
#: ``X-aws-ec2-metadata-token``) and hop-by-hop or routing headers (``Host``, ``X-Forwarded-*``).
ALLOWED_HEADERS = frozenset(
    {
        "accept",
        "accept-language",
        "authorization",
        "cache-control",
        "cookie",
        "referer",
        "user-agent",
    }
)

MAX_URL_LENGTH = 2048


@cache
def _re2_options() -> re2.Options:
    import re2  # imported when first needed: ~3 MB that pattern-free processes never pay

    options = re2.Options()
    options.max_mem = 8 << 20  # a pattern that needs more than 8 MiB of automaton is refused
    options.log_errors = False
    return options


def check_http_url(value: str) -> str:
    """Syntactic check of a crawlable URL: http(s), a host, no whitespace, bounded length."""
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"URL longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() for ch in value):
        raise ValueError("URL contains whitespace")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError("only http and https URLs can be crawled")
    if not host:
        raise ValueError("URL has no host")
    return value


def compile_url_pattern(pattern: str) -> re2._Regexp:
    """``pattern`` compiled by RE2 (linear time: no pattern can stall a crawl), or ValueError.

    RE2 has no backreferences (``\\1``) and no lookaround (``(?=``, ``(?!``, ``(?<=``); such
    patterns are refused with a message naming the pattern, so the API answers 422.
    """
    import re2

    try:
        return re2.compile(pattern, _re2_options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"regular expression {pattern!r} cannot be used: {reason} (patterns run on RE2, "
            "which has no backreferences or lookaround)"
        ) from exc


#: What the OpenAPI description says of a crawlable URL: absolute http(s) with a host name
#: (``check_http_url`` and the SSRF guard check the rest). The pattern documents the usual
#: form so that schema-driven clients and fuzzers make URLs the API accepts; it is not
#: enforced here (IP literals and userinfo are accepted, and checked by the guard).
HTTP_URL_SCHEMA = {
    "format": "uri",
    "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*"
    r"(:[1-9][0-9]{0,3})?(/[!-~]*)?$",
}
SeedUrl = Annotated[
    str, Field(min_length=8, max_length=MAX_URL_LENGTH, json_schema_extra=HTTP_URL_SCHEMA)
]


def _json_number(value: object) -> object:
    """Refuse what JSON would not call a number (``"10"``, ``true``); pydantic then checks
    the number (``10.0`` is the integer 10, as JSON Schema says; ``10.5`` is not)."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("Input should be a JSON number, not a string or boolean")
    return value


#: Put last in a number's ``Annotated``: strict about JSON types, as the OpenAPI says.
JSON_NUMBER = BeforeValidator(_json_number)

#: A URL pattern: a regular expression RE2 can run (no backreferences or lookaround).
UrlPattern = Annotated[str, Field(json_schema_extra={"format": "regex", "maxLength": 500})]
_HEADERS_SCHEMA = {
    "propertyNames": {"enum": sorted(ALLOWED_HEADERS)},
    "additionalProperties": {"type": "string", "maxLength": 8192, "pattern": "^[^\\r\\n]*$"},
}


class Scope(StrEnum):
    """Which discovered links a crawl follows (seeds are always fetched)."""

    same_host = "same-host"
    same_domain = "same-domain"  # same registrable domain (public suffix list)
    any = "any"


BlockedResource = Literal["image", "font", "media", "stylesheet"]


class ScreenshotSpec(Frozen):
    """A screenshot of each rendered page (``CrawlSpec.screenshot``), stored as a blob."""

    full_page: Annotated[bool, Field(strict=True)] = False  # the whole page, not the viewport
    format: Literal["png", "jpeg"] = "png"


#: The most scrolls a rendered page may ask for (``ScrollSpec.max_scrolls``).
MAX_SCROLLS = 50


class ScrollSpec(Frozen):
    """Scroll each rendered page to its bottom, again and again, for infinite-scroll pages
    (``CrawlSpec.scroll``). Scrolling stops when the page stops growing, after
    ``max_scrolls``, or when the page's ``page_timeout_s`` is nearly spent."""

    max_scrolls: Annotated[int, Field(ge=1, le=MAX_SCROLLS), JSON_NUMBER] = 10
    #: After each scroll, the page has grown when its height did; it has stopped growing when
    #: its height did not change while no request was in flight for this long.
    delay_ms: Annotated[int, Field(ge=100, le=10_000), JSON_NUMBER] = 1000


class CrawlSpec(Frozen):
    """What a tenant asks to crawl: the body of ``POST /v1/crawls``."""

    seeds: Annotated[list[SeedUrl], Field(min_length=1, max_length=1000)]
    scope: Scope = Scope.same_host
    include: Annotated[list[UrlPattern], Field(max_length=100)] = []
    exclude: Annotated[list[UrlPattern], Field(max_length=100)] = []
    max_depth: Annotated[int, Field(ge=0, le=100), JSON_NUMBER] = 3
    max_pages: Annotated[int, Field(ge=1, le=1_000_000), JSON_NUMBER] = 100
    session: Annotated[str | None, Field(min_length=1, max_length=128)] = None
    egress: Annotated[str | None, Field(max_length=64)] = None
    region: Annotated[str | None, Field(max_length=64)] = None
    webhook_url: SeedUrl | None = None
    headers: Annotated[dict[str, str], Field(json_schema_extra=_HEADERS_SCHEMA)] = {}
    #: Names of the sensitive headers kept in the tenant's store instead (set by the API,
    #: ``core.sealed_headers``; what a tenant sends here is ignored).
    sealed_headers: Annotated[
        list[str], Field(max_length=8, json_schema_extra={"readOnly": True})
    ] = []
    respect_robots: Annotated[bool, Field(strict=True)] = True
    # -- crawl rules (issue 12): sitemaps, per-page time budget, conditional re-crawl --------
    use_sitemaps: Annotated[bool, Field(strict=True)] = True
    page_timeout_s: Annotated[float, Field(ge=1, le=300), JSON_NUMBER] = 30.0
    recrawl_of: Annotated[str | None, Field(pattern=r"^(latest|[A-Za-z0-9_-]{1,64})$")] = None
    # -- end of crawl rules -------------------------------------------------------------------
    # -- output (issue 12): formats per page, extraction, documents (core/output.py) ---------
    formats: Annotated[list[Format], Field(max_length=7)] = list(DEFAULT_FORMATS)
    extract: ExtractSpec | None = None
    handler: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] = None
    allow_types: Annotated[list[MediaPattern], Field(max_length=50)] = list(DEFAULT_ALLOW_TYPES)
    refuse_types: Annotated[list[MediaPattern], Field(max_length=50)] = []
    # -- end of output --------------------------------------------------------------------------
    # -- browser (issue 15): render pages in Chromium (engine_container/browser.py) ----------
    #: ``never``: the fetched HTML as is; ``always``: every HTML page rendered; ``auto``: pages
    #: whose fetched HTML has almost no text but scripts (an app shell).
    render: Literal["never", "always", "auto"] = "never"
    #: After the page's ``load``: wait until this CSS selector is in the DOM, or
    #: ``networkidle`` (no request for 500 ms); within the page's ``page_timeout_s``.
    wait_for: Annotated[str | None, Field(min_length=1, max_length=500)] = None
    #: Resource types a rendered page may not load (refused before they leave the browser).
    block_resources: Annotated[list[BlockedResource], Field(max_length=4)] = [
        "image",
        "font",
        "media",
    ]
    #: A screenshot of every rendered page (pages that are not rendered have none).
    screenshot: ScreenshotSpec | None = None
    #: Scroll rendered pages to load more (infinite scroll), after ``wait_for``.
    scroll: ScrollSpec | None = None
    # -- end of browser ---------------------------------------------------------------------------

    @field_validator("seeds")
    @classmethod
    def _seeds_are_http(cls, seeds: list[str]) -> list[str]:
        return [check_http_url(s.strip()) for s in seeds]

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_http(cls, url: str | None) -> str | None:
        return None if url is None else check_http_url(url)

    @field_validator("include", "exclude")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if len(pattern) > 500:
                raise ValueError("pattern longer than 500 characters")
            compile_url_pattern(pattern)
        return patterns

    @field_validator("allow_types", "refuse_types")
    @classmethod
    def _media_types(cls, patterns: list[str]) -> list[str]:
        return check_media_patterns(patterns)

    @field_validator("formats")
    @classmethod
    def _formats_once(cls, formats: list[Format]) -> list[Format]:
        return list(dict.fromkeys(formats))

    @field_validator("headers")
    @classmethod
    def _headers_allowed(cls, headers: dict[str, str]) -> dict[str, str]:
        clean: dict[str, str] = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower not in ALLOWED_HEADERS:
                allowed = ", ".join(sorted(ALLOWED_HEADERS))
                raise ValueError(f"header {name!r} may not be set (allowed: {allowed})")
            if "\n" in value or "\r" in value or len(value) > 8192:
                raise ValueError(f"header {name!r} has an invalid value")
            clean[lower] = value
        return clean


# --------------------------------------------------------------------------- crawls


class CrawlState(StrEnum):
    pending = "pending"
    dispatched = "dispatched"
    #: Stopped before its end (the tenant's budget is spent), its frontier checkpointed:
    #: not terminal, out of the backlog, resumed into it (``core.paused``).
    paused = "paused"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    dead_lettered = "dead-lettered"

    @property
    def terminal(self) -> bool:
        return self not in (CrawlState.pending, CrawlState.dispatched, CrawlState.paused)


class CrawlCounts(Frozen):
    queued: int = 0
    fetched: int = 0
    failed: int = 0
    bytes: int = 0


class OutboxEntry(Frozen):
    """A message a stored transition implies, written in the same compare-and-set as the
    state change and relayed right after it (``core.conductor.outbox``): a crash between the
    write and the send leaves the entry on the record, where the next handler of that record
    or housekeeping relays it. Receivers are idempotent, so a relay that happens twice is
    harmless.

    ``kind``: ``send`` puts ``body`` on queue ``target``; ``publish`` on topic ``target``;
    ``schedule`` delivers to queue ``target`` after ``delay_s`` (measured by the scheduler's
    own clock, never by an instance's); ``meter`` adds ``body`` (a ``core.metering.MeterEvent``)
    to tenant ``target``'s usage, once (the bucket keeps the event's dedupe key).
    """

    id: str
    kind: Literal["send", "publish", "schedule", "meter"]
    target: str
    body: str
    attributes: dict[str, str] = {}
    delay_s: Annotated[float, Field(ge=0)] = 0.0


class Crawl(Frozen):
    """A crawl request and where it stands. Stored in table ``crawls``, partition = tenant."""

    id: str
    tenant_id: str
    spec: CrawlSpec
    state: CrawlState = CrawlState.pending
    container_id: str | None = None
    attempts: int = 0
    counts: CrawlCounts = CrawlCounts()
    reason: str | None = None
    created_at: datetime
    updated_at: datetime
    dispatched_at: datetime | None = None
    finished_at: datetime | None = None
    outbox: tuple[OutboxEntry, ...] = ()
    #: The proxy id (``core.egress_scoring.proxy_id``) of the egress it leaves through.
    proxy: str | None = None
    #: W3C trace context of the request that created it (``core.telemetry``).
    traceparent: str | None = None
    #: Why a dispatched crawl was told to pause (``PauseCrawl`` sent, the engine not yet
    #: done with the page in flight); it becomes ``paused`` with this reason.
    pause_requested: str | None = None


# --------------------------------------------------------------------------- containers


class ContainerState(StrEnum):
    starting = "starting"
    ready = "ready"
    draining = "draining"
    stopped = "stopped"
    failed = "failed"

    @property
    def live(self) -> bool:
        return self in (ContainerState.starting, ContainerState.ready, ContainerState.draining)


class BrowserEgress(Frozen):
    """What a browser container of an egress costs (issue 15): the engine's ``browser`` image
    (Chromium) is larger, slower to pull and needs more memory than the plain one.

    Each field left out is the egress's own: ``cost_per_second`` defaults to the egress's
    price times ``cost_multiplier``; ``start_latency_s`` and ``min_billed_s`` to the
    egress's. ``"browser": true`` in an entry is ``BrowserEgress()`` (same figures).
    """

    cost_per_second: Annotated[float | None, Field(ge=0)] = None
    cost_multiplier: Annotated[float, Field(ge=0)] = 1.0
    start_latency_s: Annotated[float | None, Field(ge=0)] = None
    min_billed_s: Annotated[float | None, Field(ge=0)] = None
    #: The image browser containers of this egress start from (else
    #: ``SKYCRAWL_ENGINE_BROWSER_IMAGE``, else the engine image).
    image: Annotated[str | None, Field(min_length=1)] = None


def _browser_flag(value: object) -> object:
    """``true`` is the egress's figures; ``false`` (or none) is no browser containers."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


class Egress(Frozen):
    """One entry of the egress pool: where containers run (a runtime kind and region) and
    how they leave (no proxy, or a pool of proxies), at what price and start latency.

    ``runtime`` names a runtime kind (``adapters.runtimes``: ``local``, ``ecs``, ``aci``,
    ``cloud-run``); empty means the home provider's own (settings fill it in).
    ``proxy_url`` is a pool of one, kept for older settings; ``proxies`` lists several.
    ``start_latency_s``: the expected time to ``ready`` (None: the runtime's typical one).
    """

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    runtime: str = ""
    region: str = "local"
    proxy_url: str | None = None
    cost_per_second: Annotated[float, Field(ge=0)] = 0.0
    proxies: Annotated[list[str], Field(max_length=100)] = []
    #: Seconds a container here takes to become ready (None: the runtime's typical figure);
    #: the idle policy weighs a cold start with it.
    start_latency_s: Annotated[float | None, Field(ge=0)] = None
    #: Shortest duration a container here is billed (Fargate: 60 s); the simulator's bill.
    min_billed_s: Annotated[float, Field(ge=0)] = 0.0
    #: This egress starts browser containers for crawls that render, at these figures
    #: (``for_browser``); None: it declares none (any egress may still take a render crawl
    #: when no entry of the pool declares one).
    browser: Annotated[BrowserEgress | None, BeforeValidator(_browser_flag)] = None

    @field_validator("proxy_url")
    @classmethod
    def _proxy_is_http(cls, url: str | None) -> str | None:
        return None if url is None else _check_proxy(url)

    @field_validator("proxies")
    @classmethod
    def _proxies_are_http(cls, urls: list[str]) -> list[str]:
        return [_check_proxy(url) for url in urls]

    def for_browser(self) -> Egress:
        """This egress as a browser container of it is priced and started: its
        ``browser`` figures in place of its own (itself when it declares none). Applying it
        again changes nothing: the figures it resolved are written back into ``browser``."""
        b = self.browser
        if b is None:
            return self
        cost = b.cost_per_second
        if cost is None:
            cost = self.cost_per_second * b.cost_multiplier
        start = b.start_latency_s if b.start_latency_s is not None else self.start_latency_s
        billed = b.min_billed_s if b.min_billed_s is not None else self.min_billed_s
        resolved = BrowserEgress(
            cost_per_second=cost, start_latency_s=start, min_billed_s=billed, image=b.image
        )
        update = {
            "cost_per_second": cost,
            "start_latency_s": start,
            "min_billed_s": billed,
            "browser": resolved,
        }
        return self.model_copy(update=update)

    @property
    def proxy_pool(self) -> tuple[str, ...]:
        """Every proxy of this egress, ``proxy_url`` first (empty: direct)."""
        pool = ([self.proxy_url] if self.proxy_url else []) + self.proxies
        return tuple(dict.fromkeys(pool))


def _check_proxy(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("a proxy must be an http:// or https:// URL with a host")
    return url


class EgressHealth(Frozen):
    """What a container's heartbeats say about its egress (proxy): requests, network errors
    and a moving average of latency."""

    requests: int = 0
    errors: int = 0
    latency_ms: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def add(self, requests: int, errors: int, mean_latency_ms: float) -> EgressHealth:
        """Fold one heartbeat's numbers in (latency weighted by request count)."""
        total = self.requests + requests
        if total == 0:
            return self
        latency = (self.latency_ms * self.requests + mean_latency_ms * requests) / total
        return EgressHealth(requests=total, errors=self.errors + errors, latency_ms=latency)


class Container(Frozen):
    """A crawler container. Stored in table ``containers``, partition = tenant."""

    id: str
    tenant_id: str
    egress: Egress
    state: ContainerState = ContainerState.starting
    in_flight: tuple[str, ...] = ()
    capacity: Annotated[int, Field(ge=1)] = 4
    generation: int = 0
    started_at: datetime
    ready_at: datetime | None = None
    last_heartbeat: datetime | None = None
    stopped_at: datetime | None = None
    idle_since: datetime | None = None  # when in_flight last became empty (informational)
    egress_ip: str | None = None
    reason: str | None = None
    health: EgressHealth = EgressHealth()
    browser: bool = False  # its ``ready`` said it can render pages (issue 15)
    #: Signs of life counted (ready, heartbeats, progress): liveness is "this count moved
    #: while a watchdog timer ran", never a difference of two instances' clocks.
    beats: int = 0
    heartbeat_seq: int = 0  # the newest heartbeat's sequence number seen
    #: The watchdog chain that is current; a watchdog message of another number is stale.
    watch_seq: int = 0
    #: Heartbeats seen since a crawl was dispatched here without the engine listing it: the
    #: run is sent again when this reaches a threshold (a lost publish is repaired).
    unconfirmed: dict[str, int] = {}
    #: Set once the runtime must stop it now (drain over, reaped); housekeeping retries a stop
    #: that failed until the runtime confirms, and only then is the record ``stopped``.
    stop_requested: bool = False
    #: The state the record takes once the runtime confirmed the stop.
    final_state: ContainerState | None = None
    outbox: tuple[OutboxEntry, ...] = ()
    #: The keep-alive the idle policy chose when it last became idle (None: not idle yet).
    keep_alive_s: float | None = None
    #: Edges of the idle histogram its current idle period has passed (kill-timer links).
    idle_bin: int = 0
    #: Started ahead of predicted work (adaptive policy); cleared by its first crawl.
    prewarm: bool = False
    #: W3C trace context of its start (``core.telemetry``): its ready, kill and stop spans.
    traceparent: str | None = None

    @property
    def free_slots(self) -> int:
        return self.capacity - len(self.in_flight)


class SessionBinding(Frozen):
    """Sticky session: (tenant, session key) → container. Table ``sessions``."""

    tenant_id: str
    session: str
    container_id: str
    egress: str
    bound_at: datetime


# --------------------------------------------------------------------------- tenants


class Quotas(Frozen):
    max_containers: Annotated[int, Field(ge=1, le=1000), JSON_NUMBER] = 4
    parallel_per_container: Annotated[int, Field(ge=1, le=256), JSON_NUMBER] = 4
    max_pending: Annotated[int, Field(ge=1, le=1_000_000), JSON_NUMBER] = 1000
    submissions_per_minute: Annotated[int, Field(ge=1, le=100_000), JSON_NUMBER] = 120
    #: Days a finished crawl (record, pages, exports) is kept before housekeeping purges it.
    retention_days: Annotated[int, Field(ge=1, le=3650), JSON_NUMBER] = 30


class TenantState(StrEnum):
    active = "active"
    deleting = "deleting"


class Tenant(Frozen):
    """A customer account. Table ``tenants``, partition ``tenants``."""

    id: str
    name: str
    key_prefix: str
    key_sha256: str
    quotas: Quotas = Quotas()
    state: TenantState = TenantState.active
    resources: dict[str, str] = {}
    created_at: datetime


class TenantCreate(Frozen):
    """Body of ``POST /v1/tenants``."""

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[\w .@-]+$")]
    quotas: Quotas = Quotas()


class PageRecord(BaseModel):
    """One fetched (or failed) URL, as written to the manifest and ``pages.jsonl``."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    url: str
    final_url: str | None = None
    status: int | None = None
    headers: dict[str, str] = {}
    fetched_at: datetime
    elapsed_ms: float = 0.0
    bytes: int = 0
    sha256: str | None = None
    title: str | None = None
    links: int = 0
    depth: int = 0
    content_type: str | None = None
    error: str | None = None
    # -- crawl rules (issue 12) ----------------------------------------------------------------
    attempts: int = 1  # requests made for this URL (1 + retries)
    unchanged: bool = False  # 304 to a conditional request: as in the ``recrawl_of`` crawl
    # -- output (issue 12) ---------------------------------------------------------------------
    #: The formats asked for (``core.output``): stored beside the manifest, joined in by the
    #: API, the exports and ``pages.jsonl``; never in the manifest itself.
    content: PageContent | None = None
    item_count: int = 0  # items this page added to the crawl's dataset (items.jsonl)
    missing_fields: list[str] = []  # extract fields that matched nothing on this page
    item_errors: list[str] = []  # items refused by the JSON Schema, handler errors
    #: Against the run it re-crawled (``recrawl_of``): set by ``GET .../pages?change=``
    #: (``core.run_changes``), never stored.
    change: Literal["new", "changed", "unchanged", "gone"] | None = None
    # -- browser (issue 15) ----------------------------------------------------------------------
    rendered: bool = False  # formats and links come from Chromium's DOM after the scripts ran
    screenshot: str | None = None  # its screenshot, relative to the crawl (``screenshots/...``)


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-safe dict of a model, as stored in the StateStore."""
    return model.model_dump(mode="json")
