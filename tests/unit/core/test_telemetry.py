"""core.telemetry: off by default (nothing imported), on through the standard OTEL_* variables,
and the W3C trace context it hands from span to span and message to message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from core import telemetry
from core.messages import CrawlSubmitted, RunCrawl, decode_dispatch, decode_inbox, encode
from core.models import CrawlSpec

ROOT = Path(__file__).resolve().parents[3]
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

# what a cold start of each entry point imports, then a span and each metric call
PROBE = f"""
import json, sys
import functions.local.bootstrap, core.control_plane, core.inbox
import engine_container.worker, engine_container.bus_crawl
from core import telemetry
on = telemetry.setup("probe")
with telemetry.span("probe", {PARENT!r}, tenant_id="t") as tp:
    telemetry.set_attributes(x=1)
    telemetry.record_backlog("t", 3)
    telemetry.record_fleet("t", 1)
    telemetry.count_start("t", "local")
telemetry.shutdown()
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
print(json.dumps({{"on": on, "traceparent": tp, "loaded": loaded}}))
"""


def _probe(**otel: str) -> tuple[dict[str, object], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(otel, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


@pytest.mark.parametrize(
    "otel",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "TRUE"},
    ],
    ids=["unset", "none", "disabled", "endpoint-but-disabled"],
)
def test_off_nothing_is_imported_and_the_traceparent_passes_through(
    otel: dict[str, str],
) -> None:
    result, printed = _probe(**otel)
    assert result == {"on": False, "traceparent": PARENT, "loaded": []}
    assert printed == ""


def test_on_the_sdk_is_configured_from_the_otel_variables() -> None:
    result, printed = _probe(OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="console")
    assert result["on"] is True
    trace_id = PARENT.split("-")[1]
    assert isinstance(result["traceparent"], str)
    assert result["traceparent"].split("-")[1] == trace_id  # a child in the caller's trace
    assert result["traceparent"] != PARENT
    # the console exporters wrote the span and the metrics, named by the service
    assert '"name": "probe"' in printed
    assert f'"trace_id": "0x{trace_id}"' in printed
    assert '"skycrawl.tenant_id": "t"' in printed
    assert '"service.name": "probe"' in printed
    assert telemetry.CONTAINER_STARTS in printed
    assert telemetry.BACKLOG_SIZE in printed


def test_otel_service_name_wins_over_the_default() -> None:
    _, printed = _probe(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="crawl-fleet")
    assert '"service.name": "crawl-fleet"' in printed


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": " None "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_METRICS_EXPORTER": "otlp"}, False),  # traces decide
    ],
)
def test_requested_follows_the_standard_variables(env: dict[str, str], on: bool) -> None:
    assert telemetry.requested(env) is on


def test_containers_get_the_otel_variables_but_no_credentials_and_name_themselves() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_SERVICE_NAME": "control",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer secret",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-key=secret",
        "SKYCRAWL_X": "1",
    }
    assert telemetry.container_env(env) == {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (PARENT, PARENT),
        (f"  {PARENT.upper()} ", PARENT),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_a_client_traceparent_is_continued_only_if_valid(header: str | None, kept: str) -> None:
    assert telemetry.valid_traceparent(header) == kept


def test_messages_carry_the_traceparent_in_body_and_attributes() -> None:
    submitted = CrawlSubmitted(tenant_id="t", crawl_id="c", traceparent=PARENT)
    out = encode(submitted)
    assert out.attributes["traceparent"] == PARENT
    assert decode_inbox(out.body) == submitted
    run = RunCrawl(
        container_id="g",
        tenant_id="t",
        crawl_id="c",
        attempt=1,
        spec=CrawlSpec(seeds=["https://example.test/"]),
        traceparent=OTHER,
    )
    out = encode(run)
    assert (out.attributes["traceparent"], out.attributes["container_id"]) == (OTHER, "g")
    assert decode_dispatch(out.body) == run
    assert "traceparent" not in encode(CrawlSubmitted(tenant_id="t", crawl_id="c")).attributes


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    telemetry.install(provider, meters)
    try:
        yield exporter
    finally:
        telemetry.uninstall()
        provider.shutdown()
        meters.shutdown()


def test_spans_nest_and_messages_stay_in_their_crawls_trace(
    spans: InMemorySpanExporter,
) -> None:
    with telemetry.span("outer", PARENT, kind="consumer", crawl_id="c", gone=None) as outer:
        assert outer is not None
        with telemetry.span("inner") as inner:
            assert telemetry.current_traceparent() == inner
            assert telemetry.current_traceparent(PARENT) == inner  # same trace: the span
            assert telemetry.current_traceparent(OTHER) == OTHER  # another crawl's trace
    assert telemetry.current_traceparent(OTHER) == OTHER  # no span: the crawl's own
    done = {s.name: s for s in spans.get_finished_spans()}
    assert done["inner"].parent is not None
    assert done["outer"].context is not None
    assert done["inner"].parent.span_id == done["outer"].context.span_id
    assert done["outer"].parent is not None
    assert f"{done['outer'].parent.span_id:016x}" == "00f067aa0ba902b7"
    assert dict(done["outer"].attributes or {}) == {"skycrawl.crawl_id": "c"}
    assert done["outer"].kind.name == "CONSUMER"


def test_a_failure_inside_a_span_is_recorded_and_raised(spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError, match="runtime said no"), telemetry.span("container.start"):
        raise RuntimeError("runtime said no")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_in_trace_says_whether_a_crawl_must_be_joined(spans: InMemorySpanExporter) -> None:
    assert not telemetry.in_trace(PARENT)  # no span: join the crawl's trace
    assert not telemetry.in_trace(None)
    with telemetry.span("handler", PARENT):
        assert telemetry.in_trace(PARENT)
        assert telemetry.in_trace(None)
        assert not telemetry.in_trace(OTHER)  # a span of another crawl's trace


def test_in_trace_is_true_when_off() -> None:
    assert telemetry.in_trace(PARENT)
    assert telemetry.current_traceparent(PARENT) == PARENT


def test_an_untraced_message_is_the_body_an_older_release_reads() -> None:
    """Without a trace the body has no ``traceparent`` at all: an engine or conductor of an
    earlier release, whose models refuse unknown fields, still reads it."""
    plain = encode(CrawlSubmitted(tenant_id="t1", crawl_id="cr_1"))
    traced = encode(CrawlSubmitted(tenant_id="t1", crawl_id="cr_1", traceparent=PARENT))

    assert json.loads(plain.body) == {
        "type": "crawl.submitted",
        "tenant_id": "t1",
        "crawl_id": "cr_1",
    }
    assert "traceparent" not in plain.attributes
    assert json.loads(traced.body)["traceparent"] == PARENT
    assert decode_inbox(traced.body) == CrawlSubmitted(
        tenant_id="t1", crawl_id="cr_1", traceparent=PARENT
    )
