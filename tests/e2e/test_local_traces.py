"""One trace per crawl across the embedded stack and its engine subprocess, and the fleet's
metrics (issue 14). The control plane records into the SDK's in-memory exporter and reader;
the engine, a separate process configured only by the standard ``OTEL_*`` variables, exports
OTLP/HTTP to a receiver this test serves on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core import telemetry
from core.api import ApiRequest
from tests.e2e.support import Harness, serve_site

pytestmark = pytest.mark.e2e

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


@dataclass
class Exported:
    """A span as the engine exported it over OTLP."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Receiver:
    endpoint: str
    spans: list[Exported] = field(default_factory=list)


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    """A loopback OTLP/HTTP trace receiver (the collector's protobuf request)."""
    receiver = Receiver(endpoint="")

    async def traces(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in s.attributes}
                    receiver.spans.append(
                        Exported(
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            attributes,
                        )
                    )
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class Memory:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, metric: str, tenant_id: str) -> list[float]:
        data = self.metrics.get_metrics_data()
        values: list[float] = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name != metric:
                        continue
                    for p in m.data.data_points:
                        if p.attributes.get("skycrawl.tenant_id") == tenant_id:
                            values.append(p.value)
        return values


@pytest.fixture
def memory() -> Iterator[Memory]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.install(tracer_provider, meter_provider)
    try:
        yield Memory(spans, reader)
    finally:
        telemetry.uninstall()
        tracer_provider.shutdown()
        meter_provider.shutdown()


def _hex(span: ReadableSpan) -> tuple[str, str, str]:
    """(trace id, span id, parent span id) as OTLP spells them."""
    assert span.context is not None
    parent = span.parent.span_id if span.parent is not None else 0
    return (
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
        f"{parent:016x}" if parent else "",
    )


def _one(spans: list[ReadableSpan], key: str, value: str) -> ReadableSpan:
    found = [s for s in spans if (s.attributes or {}).get(key) == value]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


@pytest.fixture
async def otlp(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receiver]:
    """The receiver, and the variables an operator sets: the engine subprocesses inherit
    them (and get them in their environment, as containers on a cloud do)."""
    async with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        yield receiver


@pytest.fixture
def harness(otlp: Receiver, memory: Memory, harness: Harness) -> Harness:
    """The e2e stack, built once the variables are set and the in-memory SDK installed."""
    return harness


async def test_one_trace_follows_a_crawl_from_the_api_to_the_engine(
    harness: Harness, memory: Memory, otlp: Receiver
) -> None:
    h, receiver = harness, otlp
    tenant_id, key = await h.tenant("traced", max_containers=1, parallel=1)
    backlog_seen: list[float] = []
    fleet_seen: list[float] = []
    async with serve_site(pages=20, delay_s=0.05) as site:
        spec = json.dumps({"seeds": [site.url], "max_pages": 100, "max_depth": 10}).encode()
        ids = []
        for parent in (CLIENT_PARENT, None):  # the first joins its client's trace
            headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
            if parent:
                headers["traceparent"] = parent
            response = await h.stack.api.handle(
                ApiRequest(method="POST", path="/v1/crawls", headers=headers, body=spec)
            )
            assert response.status == 202, response.body
            ids.append(json.loads(response.body)["id"])

        async def both_done() -> bool:
            backlog_seen.extend(memory.points(telemetry.BACKLOG_SIZE, tenant_id))
            fleet_seen.extend(memory.points(telemetry.FLEET_SIZE, tenant_id))
            states = [(await h.json("GET", f"/v1/crawls/{i}", key))["status"] for i in ids]
            return all(s == "completed" for s in states)

        await h.wait_for(both_done, 90, "two crawls on one container")

    async def scaled_to_zero() -> bool:
        fleet_seen.extend(memory.points(telemetry.FLEET_SIZE, tenant_id))
        engine_spans = [s for s in receiver.spans if s.name == "engine crawl.run"]
        return not await h.live_containers(tenant_id) and len(engine_spans) == 2

    await h.wait_for(scaled_to_zero, 20, "the container to stop and the engine to export")
    await asyncio.sleep(0.6)  # one more housekeeping run measures the empty fleet
    final_fleet = memory.points(telemetry.FLEET_SIZE, tenant_id)

    first, second = ids
    api = _one(memory.finished("POST /v1/crawls"), "skycrawl.crawl_id", first)
    conducted = _one(memory.finished("conductor crawl.submitted"), "skycrawl.crawl_id", first)
    (start,) = memory.finished("container.start")
    readies = memory.finished("container.ready")  # a heartbeat may stand in for a late one
    (kill,) = [s for s in memory.finished("container.kill") if s.attributes["skycrawl.drained"]]
    stops = memory.finished("container.stop")  # two handlers may race to finish it
    engine = {s.attributes["skycrawl.crawl_id"]: s for s in receiver.spans}

    # one trace, the client's, and each hop the child of the one before
    trace_id, api_id, api_parent = _hex(api)
    assert (trace_id, api_parent) == (CLIENT_TRACE, "00f067aa0ba902b7")
    assert _hex(conducted)[0::2] == (trace_id, api_id)
    assert _hex(start)[0::2] == (trace_id, _hex(conducted)[1])
    assert readies
    assert {_hex(r)[0::2] for r in readies} == {(trace_id, _hex(start)[1])}
    ran = engine[first]
    assert ran.trace_id == trace_id
    assert ran.parent_id in {_hex(r)[1] for r in readies}  # dispatched when it said ready
    assert ran.attributes["skycrawl.fetched"] == 21  # "/" and /p/0 … /p/19
    assert ran.attributes["skycrawl.attempt"] == 1
    # the container's end is in the trace of the crawl that started it
    assert _hex(kill)[0::2] == (trace_id, _hex(start)[1])
    assert stops
    assert {_hex(s)[0::2] for s in stops} == {(trace_id, _hex(start)[1])}
    assert {s.attributes["skycrawl.reason"] for s in stops} == {"idle"}
    guid = start.attributes["skycrawl.container_id"]
    assert {r.attributes["skycrawl.container_id"] for r in readies} == {guid}
    assert ran.attributes["skycrawl.container_id"] == guid

    # the second crawl waited in the backlog, in a trace of its own, and ran on that container
    api2 = _one(memory.finished("POST /v1/crawls"), "skycrawl.crawl_id", second)
    trace2, api2_id, root = _hex(api2)
    assert trace2 != trace_id
    assert root == ""  # no client trace: it starts one
    placed = [
        s
        for s in memory.finished("conductor place")
        if s.attributes["skycrawl.crawl_id"] == second and s.attributes["skycrawl.placed"]
    ]
    assert [_hex(p)[0::2] for p in placed] == [(trace2, api2_id)]  # from the backlog
    assert (engine[second].trace_id, engine[second].parent_id) == (trace2, _hex(placed[0])[1])

    # metrics: one cold start; the backlog held the second crawl; the fleet went 1 → 0
    assert memory.points(telemetry.CONTAINER_STARTS, tenant_id) == [1]
    assert max(backlog_seen) == 1
    assert 1 in fleet_seen
    assert final_fleet == [0]
