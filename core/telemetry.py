"""OpenTelemetry traces and metrics, off unless the standard ``OTEL_*`` variables ask for them.

Features
    One trace follows a crawl: ``POST /v1/crawls`` (joining a client's ``traceparent``
    header), the conductor's handling of ``crawl.submitted``, the start of a container and
    its ``ready``, the engine's run of the crawl, and the container's kill and stop. The W3C
    ``traceparent`` travels in the messages (a ``traceparent`` field, copied into the bus
    message's attributes by ``core.messages.encode``) and on the records (``Crawl`` and
    ``Container``), so a crawl that waits in the backlog or is requeued stays in its trace.
    Metrics: ``skycrawl.backlog.size`` (pending crawls per tenant) and ``skycrawl.fleet.size``
    (live containers per tenant), measured by housekeeping, and ``skycrawl.container.starts``
    (cold starts, per tenant and egress), counted when the runtime started one.

Settings
    The SDK's own: telemetry is on when ``OTEL_TRACES_EXPORTER`` is set to something other
    than ``none``, or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (then traces go to OTLP), and
    never with ``OTEL_SDK_DISABLED=true``. Everything else -- ``OTEL_METRICS_EXPORTER``,
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_SERVICE_NAME`` (default ``skycrawl-control`` /
    ``skycrawl-engine``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
    ``OTEL_BSP_*`` -- is read by the SDK's configurator. Containers get the control plane's
    ``OTEL_*`` variables but the exporters' ``*_HEADERS`` (``container_env``). With an OTLP endpoint and no
    ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``, that signal goes to OTLP (the
    specification's default); metrics are exported only then or when
    ``OTEL_METRICS_EXPORTER`` names an exporter. Needs the ``[otel]`` extra.

Cost
    Off, nothing imports ``opentelemetry`` (the functions' cold start): ``span`` yields the
    traceparent it was given and the metric calls return at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Meter, MeterProvider, _Gauge
    from opentelemetry.trace import Tracer, TracerProvider

SpanKind = Literal["internal", "server", "client", "producer", "consumer"]

SCOPE = "skycrawl"
BACKLOG_SIZE = "skycrawl.backlog.size"
FLEET_SIZE = "skycrawl.fleet.size"
CONTAINER_STARTS = "skycrawl.container.starts"

#: compiled on first use (``re`` caches it), not at import: the functions' cold start
_TRACEPARENT = r"00-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-[0-9a-f]{2}"
_FORWARDED_NOT = {"OTEL_SERVICE_NAME"}  # each process names itself


class _Instruments:
    def __init__(self, tracer: Tracer, meter: Meter) -> None:
        self.tracer = tracer
        self.backlog: _Gauge = meter.create_gauge(
            BACKLOG_SIZE, unit="{crawl}", description="Pending crawls waiting for a container"
        )
        self.fleet: _Gauge = meter.create_gauge(
            FLEET_SIZE,
            unit="{container}",
            description="Live (starting, ready, draining) containers",
        )
        self.starts: Counter = meter.create_counter(
            CONTAINER_STARTS, unit="{container}", description="Containers started (cold starts)"
        )


_on: _Instruments | None = None


def requested(environ: Mapping[str, str] | None = None) -> bool:
    """Do the ``OTEL_*`` variables turn telemetry on (see the module docstring)?"""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return (bool(exporter) and exporter != "none") or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def enabled() -> bool:
    """Is telemetry recording in this process?"""
    return _on is not None


def setup(service: str) -> bool:
    """Configure the SDK from the ``OTEL_*`` variables if they ask for it (once per process;
    a no-op after ``install``). ``service`` names the process unless ``OTEL_SERVICE_NAME``
    does. True if telemetry is on."""
    if _on is not None:
        return True
    if not requested():
        return False
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk._configuration import _OTelSDKConfigurator
    except ImportError as exc:  # asked for, not installed: run without, and say so
        logging.getLogger("skycrawl.telemetry").warning(
            "OTEL_* variables ask for telemetry but the SDK is missing (%s): install the "
            "[otel] extra; telemetry stays off",
            exc,
        )
        return False
    attributes: dict[str, Any] = {}
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes["service.name"] = service

    class _SkycrawlConfigurator(_OTelSDKConfigurator):  # the SDK's way for a distro
        pass

    configurator = _SkycrawlConfigurator()  # type: ignore[no-untyped-call]
    configurator.configure(  # type: ignore[no-untyped-call]
        resource_attributes=attributes,
        trace_exporter_names=_default_otlp("TRACES"),
        metric_exporter_names=_default_otlp("METRICS"),
    )
    install(trace.get_tracer_provider(), metrics.get_meter_provider())
    return True


def install(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Record through these providers (an application that configures the SDK itself, or a
    test with in-memory exporters)."""
    global _on
    _on = _Instruments(tracer_provider.get_tracer(SCOPE), meter_provider.get_meter(SCOPE))


def uninstall() -> None:
    """Stop recording (telemetry off again in this process)."""
    global _on
    _on = None


def shutdown() -> None:
    """Flush and close the SDK's providers, if ``setup`` configured them (an exiting engine)."""
    global _on
    if _on is None:
        return
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        close = getattr(provider, "shutdown", None)
        if close is not None:
            close()
    _on = None


def flush(timeout_ms: int = 5_000) -> None:
    """Export what is buffered now, waiting up to ``timeout_ms`` (a no-op when off). For a
    function whose process is frozen (Lambda) or throttled (Cloud Run) between invocations,
    after each one; a long-running process exports in the background."""
    if _on is None:
        return
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        force = getattr(provider, "force_flush", None)
        if force is not None:
            force(timeout_ms)


def container_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``OTEL_*`` variables a container needs to export like this process does -- not
    the exporters' headers, which may hold the collector's credentials: a tenant's container
    gets nothing of the control plane's secrets."""
    env = os.environ if environ is None else environ
    return {
        k: v
        for k, v in env.items()
        if k.startswith("OTEL_") and k not in _FORWARDED_NOT and not k.endswith("_HEADERS")
    }


@contextlib.contextmanager
def span(
    name: str, traceparent: str | None = None, *, kind: SpanKind = "internal", **attrs: Any
) -> Iterator[str | None]:
    """A span named ``name``, child of ``traceparent`` (a W3C ``traceparent``) if given, else
    of the current span; yields the new span's traceparent to propagate. Attributes are
    prefixed ``skycrawl.``; None values are left out. An exception is recorded on the span.
    Off: yields ``traceparent`` unchanged."""
    if _on is None:
        yield traceparent
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    context = propagator.extract({"traceparent": traceparent}) if traceparent else None
    attributes = {f"skycrawl.{k}": v for k, v in attrs.items() if v is not None}
    with _on.tracer.start_as_current_span(
        name, context=context, kind=trace.SpanKind[kind.upper()], attributes=attributes
    ):
        carrier: dict[str, str] = {}
        propagator.inject(carrier)
        yield carrier.get("traceparent", traceparent)


def current_traceparent(within: str | None = None) -> str | None:
    """The current span's traceparent if it belongs to the trace of ``within`` (or ``within``
    is None), else ``within``: what a message sent from here should carry."""
    if _on is None:
        return within
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    current = carrier.get("traceparent")
    if current is None:
        return within
    if within is None or _trace_id(current) == _trace_id(within):
        return current
    return within


def in_trace(traceparent: str | None) -> bool:
    """Is the current span in the trace of ``traceparent`` (any span, for None)? True when
    off: then there is nothing to join."""
    if _on is None:
        return True
    from opentelemetry import trace

    current = trace.get_current_span().get_span_context()
    if not current.is_valid:
        return False
    return traceparent is None or f"{current.trace_id:032x}" == _trace_id(traceparent)


def set_attributes(**attrs: Any) -> None:
    """Add ``skycrawl.``-prefixed attributes to the current span (None values left out)."""
    if _on is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    for key, value in attrs.items():
        if value is not None:
            current.set_attribute(f"skycrawl.{key}", value)


def record_backlog(tenant_id: str, size: int) -> None:
    if _on is not None:
        _on.backlog.set(size, {"skycrawl.tenant_id": tenant_id})


def record_fleet(tenant_id: str, size: int) -> None:
    if _on is not None:
        _on.fleet.set(size, {"skycrawl.tenant_id": tenant_id})


def count_start(tenant_id: str, egress: str) -> None:
    if _on is not None:
        _on.starts.add(1, {"skycrawl.tenant_id": tenant_id, "skycrawl.egress": egress})


def valid_traceparent(value: str | None) -> str | None:
    """``value`` if it is a W3C ``traceparent`` this service can continue (version 00, ids
    not all zeros), else None: an invalid header starts a new trace, as the standard says."""
    if value is None:
        return None
    value = value.strip().lower()
    match = re.fullmatch(_TRACEPARENT, value)
    if match is None or set(match["trace"]) == {"0"} or set(match["span"]) == {"0"}:
        return None
    return value


def _trace_id(traceparent: str) -> str:
    parts = traceparent.split("-")
    return parts[1] if len(parts) > 2 else ""


def _default_otlp(signal: Literal["TRACES", "METRICS"]) -> list[str]:
    """The OTLP exporter (of the configured protocol) for a signal whose exporter variable is
    unset while an OTLP endpoint is: the specification's default, which the SDK leaves to
    distributions."""
    env = os.environ
    if env.get(f"OTEL_{signal}_EXPORTER"):
        return []  # the SDK reads it
    if not (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    ):
        return []
    protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    return ["otlp_proto_http" if protocol.strip().startswith("http") else "otlp_proto_grpc"]
