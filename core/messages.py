"""Messages on the bus.

Two channels:

* the conductor's **inbox** queue (``InboxMessage``): everything the conductor reacts to;
* the **dispatch** topic (``DispatchMessage``): work for one container, carried with the
  attribute ``container_id`` so that each container's subscription can filter on it.

Every message is JSON with a ``type`` discriminator. ``encode``/``decode_*`` turn them into
the bus's ``OutboundMessage`` (body bytes + string attributes) and back. A message with a
``traceparent`` (W3C trace context, ``core.telemetry``) carries it in its body and as the
attribute ``traceparent``; receivers read the body, which every bus keeps.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, TypeAdapter

from core.models import CrawlCounts, CrawlSpec, Frozen
from core.ports.message_bus import OutboundMessage

# --------------------------------------------------------------------------- inbox


class CrawlSubmitted(Frozen):
    type: Literal["crawl.submitted"] = "crawl.submitted"
    tenant_id: str
    crawl_id: str
    #: W3C trace context of the span that sent it (``core.telemetry``); also an attribute.
    traceparent: str | None = None


class ContainerReady(Frozen):
    """``ready: GUID`` — the container's subscription exists and it takes work."""

    type: Literal["container.ready"] = "container.ready"
    tenant_id: str
    container_id: str
    egress_ip: str | None = None
    version: str = ""
    capacity: int = 1
    #: It can render pages (issue 15: Playwright and Chromium are there): ``render`` crawls
    #: are dispatched only to containers that said so.
    browser: bool = False


class Progress(Frozen):
    type: Literal["crawl.progress"] = "crawl.progress"
    container_id: str
    tenant_id: str
    crawl_id: str
    attempt: int = 0  # the RunCrawl attempt this reports on (0: unknown)
    counts: CrawlCounts


class CrawlCompleted(Frozen):
    type: Literal["crawl.completed"] = "crawl.completed"
    container_id: str
    tenant_id: str
    crawl_id: str
    attempt: int = 0  # the RunCrawl attempt this reports on (0: unknown)
    counts: CrawlCounts


class CrawlPaused(Frozen):
    """The engine stopped a crawl it was told to pause (``PauseCrawl``): the pages in flight
    were finished and stored, the frontier checkpointed; a later ``RunCrawl`` resumes it."""

    type: Literal["crawl.paused"] = "crawl.paused"
    container_id: str
    tenant_id: str
    crawl_id: str
    attempt: int = 0  # the RunCrawl attempt this reports on (0: unknown)
    counts: CrawlCounts


class CrawlFailed(Frozen):
    type: Literal["crawl.failed"] = "crawl.failed"
    container_id: str
    tenant_id: str
    crawl_id: str
    attempt: int = 0  # the RunCrawl attempt this reports on (0: unknown)
    error: str
    retryable: bool = False
    counts: CrawlCounts = CrawlCounts()


class ProxyStats(Frozen):
    requests: int = 0
    errors: int = 0
    mean_latency_ms: float = 0.0
    #: Responses that look like a ban: 403 or 429, or a CAPTCHA page (egress scoring).
    bans: int = 0


class Heartbeat(Frozen):
    type: Literal["container.heartbeat"] = "container.heartbeat"
    tenant_id: str
    container_id: str
    in_flight: list[str] = []
    proxy: ProxyStats = ProxyStats()
    seq: int = 0  # 1, 2, 3 … per container: a duplicate or late heartbeat changes nothing
    #: The same numbers per proxy id (``core.egress_scoring.proxy_id``; ``direct``).
    proxies: dict[str, ProxyStats] = {}
    browser: bool = False  # as in its ``ready``: a heartbeat may stand in for a late one


class KillTimer(Frozen):
    """Stop ``container_id`` if it is still idle at ``generation`` when this fires.

    The idle time is measured by the scheduler, not by any instance's clock: the timer is
    armed with a delay, and ``remaining_s`` is what is still to wait when a scheduler whose
    native delay is shorter delivers it (the conductor chains it with that relative delay,
    so skewed clocks can neither fire it early nor re-arm it into the past).
    """

    type: Literal["container.kill-timer"] = "container.kill-timer"
    tenant_id: str
    container_id: str
    generation: int
    remaining_s: float = 0.0
    #: Idle time reached when it fires: a link of a chain through the idle histogram's
    #: edges, counted on the container (``Container.idle_bin``) by the adaptive policy.
    elapsed_s: float = 0.0


class Watchdog(Frozen):
    """Liveness check, delivered by the scheduler every ``heartbeat_timeout_s / 4`` (once,
    ``startup_timeout_s`` after the start, for ``startup``): ``misses`` counts the checks in a
    row at which the container's ``beats`` had not moved; at 4 it is reaped — silent for
    between 1 and 1.25 ``heartbeat_timeout_s``, as measured by the scheduler. ``seq`` names
    the chain; a message of an older chain (a duplicate) changes nothing."""

    type: Literal["container.watchdog"] = "container.watchdog"
    tenant_id: str
    container_id: str
    seq: int
    beats: int
    startup: bool = False
    misses: int = 0
    runtime_unknown: int = 0  # consecutive checks the runtime did not know the container


class StopDue(Frozen):
    """The drain of ``container_id`` (at ``generation``) has had its time: stop it now."""

    type: Literal["container.stop-due"] = "container.stop-due"
    tenant_id: str
    container_id: str
    generation: int


class ContainerExited(Frozen):
    type: Literal["container.exited"] = "container.exited"
    tenant_id: str
    container_id: str
    exit_code: int | None = None
    reason: str = ""


class CancelRequested(Frozen):
    """The API marked a crawl cancelled; the conductor frees its slot and tells the container."""

    type: Literal["crawl.cancel-requested"] = "crawl.cancel-requested"
    tenant_id: str
    crawl_id: str
    container_id: str | None = None


class WebhookDue(Frozen):
    type: Literal["crawl.webhook"] = "crawl.webhook"
    tenant_id: str
    crawl_id: str
    attempt: int = 1  # retries are scheduled with a relative back-off (core.webhooks)


class WebhookSecretRetire(Frozen):
    """Retire a rotated webhook secret once ``remaining_s`` more seconds have passed (chained
    through the Scheduler in steps of its longest native delay)."""

    type: Literal["webhook.secret.retire"] = "webhook.secret.retire"
    tenant_id: str
    secret_id: str
    remaining_s: float = 0.0


class ScheduleFire(Frozen):
    """Start run ``run`` of a recurring crawl once ``remaining_s`` more seconds have passed
    (chained through the Scheduler); stale unless ``generation`` is the schedule's own."""

    type: Literal["schedule.fire"] = "schedule.fire"
    tenant_id: str
    schedule_id: str
    generation: int
    run: int
    remaining_s: float = 0.0
    #: Occurrences skipped so far (over budget) when this fire was sent: a fire of a count
    #: the schedule has passed is a duplicate of a skip.
    skipped: int = 0


class ProxyCooldown(Frozen):
    """A scored-out proxy's cool-down is over (a relative delay, measured by the scheduler):
    it comes back, on probation, if it is still out at ``epoch``."""

    type: Literal["egress.proxy-cooldown"] = "egress.proxy-cooldown"
    egress: str
    proxy: str
    epoch: int


class BudgetWarning(Frozen):
    """A tenant's spending reached ``threshold`` percent of its monthly budget (sent once
    per threshold and month, from the outbox of the ``BudgetMonth`` that recorded it)."""

    type: Literal["budget.warning"] = "budget.warning"
    tenant_id: str
    month: str
    threshold: int
    spent: float
    amount: float


InboxMessage = Annotated[
    CrawlSubmitted
    | ContainerReady
    | Progress
    | CrawlCompleted
    | CrawlPaused
    | CrawlFailed
    | Heartbeat
    | KillTimer
    | Watchdog
    | StopDue
    | ContainerExited
    | CancelRequested
    | WebhookDue
    | WebhookSecretRetire
    | ScheduleFire
    | ProxyCooldown
    | BudgetWarning,
    Field(discriminator="type"),
]

# --------------------------------------------------------------------------- dispatch


class RunCrawl(Frozen):
    """Work for one container: run (or resume, from its checkpoint) this crawl."""

    type: Literal["crawl.run"] = "crawl.run"
    container_id: str
    tenant_id: str
    crawl_id: str
    attempt: int
    spec: CrawlSpec
    session: str | None = None
    proxy: str | None = None  # the id of the proxy (of the container's pool) to leave through
    #: W3C trace context of the crawl's trace (``core.telemetry``); also an attribute.
    traceparent: str | None = None


class CancelCrawl(Frozen):
    type: Literal["crawl.cancel"] = "crawl.cancel"
    container_id: str
    tenant_id: str
    crawl_id: str


class PauseCrawl(Frozen):
    """Finish the pages in flight, take no new URL, checkpoint, answer ``CrawlPaused``."""

    type: Literal["crawl.pause"] = "crawl.pause"
    container_id: str
    tenant_id: str
    crawl_id: str
    reason: str = ""


class DrainContainer(Frozen):
    """Stop taking work, checkpoint, say ``ContainerExited`` and exit: sent down the
    container's own subscription before the runtime is asked to stop it, because some
    runtimes (Azure Container Instances) stop without SIGTERM."""

    type: Literal["container.drain"] = "container.drain"
    container_id: str
    tenant_id: str


DispatchMessage = Annotated[
    RunCrawl | CancelCrawl | PauseCrawl | DrainContainer, Field(discriminator="type")
]

# built on the first message, not at import: a cold start answering something else skips them
_LATER = ConfigDict(defer_build=True)
_inbox: TypeAdapter[InboxMessage] = TypeAdapter(InboxMessage, config=_LATER)
_dispatch: TypeAdapter[DispatchMessage] = TypeAdapter(DispatchMessage, config=_LATER)


def encode(message: Frozen) -> OutboundMessage:
    """Serialise a message for the bus; dispatch messages carry ``container_id``."""
    attributes = {"type": str(getattr(message, "type", ""))}
    container_id = getattr(message, "container_id", None)
    if container_id:
        attributes["container_id"] = str(container_id)
    tenant_id = getattr(message, "tenant_id", None)
    if tenant_id:
        attributes["tenant_id"] = str(tenant_id)
    traceparent = getattr(message, "traceparent", None)
    if traceparent:  # W3C trace context, where brokers and tracing tools look for it
        attributes["traceparent"] = str(traceparent)
    # untraced, the body is what it was before tracing existed: an engine or conductor of an
    # older release (which refuses unknown fields) still reads it
    untraced = {"traceparent"} if traceparent is None else None
    body = message.model_dump_json(exclude=untraced).encode()
    return OutboundMessage(body=body, attributes=attributes)


def decode_inbox(body: bytes) -> InboxMessage:
    """Parse an inbox message; raises ``pydantic.ValidationError`` on garbage."""
    return _inbox.validate_json(body)


def decode_dispatch(body: bytes) -> DispatchMessage:
    return _dispatch.validate_json(body)
