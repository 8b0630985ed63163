"""The conductor keeps a crawl in its trace across a dead container and a new one, and counts
the fleet (core.telemetry, with the SDK's in-memory exporter and reader)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conductor_harness import Harness, start_ready
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core import telemetry
from core.messages import RunCrawl, decode_dispatch

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@dataclass
class Recorded:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def values(self, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
        data = self.metrics.get_metrics_data()
        found: dict[tuple[tuple[str, str], ...], float] = {}
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        for p in m.data.data_points:
                            found[tuple(sorted(p.attributes.items()))] = p.value
        return found


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.install(tracer_provider, meter_provider)
    try:
        yield Recorded(spans, reader)
    finally:
        telemetry.uninstall()
        tracer_provider.shutdown()
        meter_provider.shutdown()


def _ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def _parent(span: ReadableSpan) -> str:
    return f"{span.parent.span_id:016x}" if span.parent is not None else ""


async def _runs(harness: Harness, container_id: str) -> list[tuple[RunCrawl, dict[str, str]]]:
    """The runs on a container's subscription, with their bus attributes (acknowledged)."""
    engine = harness.engine(container_id)
    runs = []
    for lease in await harness.bus.receive(source=engine.subscription, max_messages=10):
        message = decode_dispatch(lease.body)
        if isinstance(message, RunCrawl):
            runs.append((message, dict(lease.attributes)))
        await harness.bus.ack(lease=lease)
    return runs


async def test_a_requeued_crawl_stays_in_its_trace_on_its_new_container(
    harness: Harness, recorded: Recorded
) -> None:
    await harness.add_tenant("t1")
    crawl_id, first = await start_ready(harness, traceparent=PARENT)
    ((run, attributes),) = await _runs(harness, first.id)
    assert attributes["traceparent"] == run.traceparent  # the bus attribute, and the body
    (ready,) = recorded.named("container.ready")
    assert run.traceparent == f"00-{TRACE}-{_ids(ready)[1]}-01"  # dispatched in its span

    await first.exited(137, reason="OOM killed")
    await harness.pump()  # reaped; the crawl goes back to the inbox, then to a new container
    second = harness.engine((await harness.crawl(crawl_id)).container_id or "")
    assert second.id != first.id
    await second.ready()
    await harness.pump()
    ((rerun, _),) = await _runs(harness, second.id)

    submitted = recorded.named("conductor crawl.submitted")
    starts = {s.attributes["skycrawl.container_id"]: s for s in recorded.named("container.start")}
    readies = {s.attributes["skycrawl.container_id"]: s for s in recorded.named("container.ready")}
    (stop,) = recorded.named("container.stop")
    assert {_ids(s)[0] for s in [*submitted, *starts.values(), *readies.values(), stop]} == {TRACE}
    assert {_parent(s) for s in submitted} == {"00f067aa0ba902b7"}  # each delivery
    assert _parent(starts[first.id]) == _ids(submitted[0])[1]
    assert _parent(readies[second.id]) == _ids(starts[second.id])[1]
    assert _parent(stop) == _ids(starts[first.id])[1]
    assert stop.attributes["skycrawl.reason"] == "OOM killed"
    assert (rerun.attempt, rerun.traceparent) == (2, f"00-{TRACE}-{_ids(readies[second.id])[1]}-01")

    # two cold starts; housekeeping measures one live container and an empty backlog
    assert recorded.values(telemetry.CONTAINER_STARTS) == {
        (("skycrawl.egress", "local"), ("skycrawl.tenant_id", "t1")): 2
    }
    await harness.housekeeping()
    assert recorded.values(telemetry.FLEET_SIZE) == {(("skycrawl.tenant_id", "t1"),): 1}
    assert recorded.values(telemetry.BACKLOG_SIZE) == {(("skycrawl.tenant_id", "t1"),): 0}


async def test_a_crawl_waiting_in_the_backlog_is_counted(
    harness: Harness, recorded: Recorded
) -> None:
    await harness.add_tenant("t1", max_containers=1, parallel_per_container=1)
    await start_ready(harness)
    await harness.submit()
    await harness.submit()
    await harness.pump()
    await harness.housekeeping()
    assert recorded.values(telemetry.BACKLOG_SIZE) == {(("skycrawl.tenant_id", "t1"),): 2}
    assert recorded.values(telemetry.FLEET_SIZE) == {(("skycrawl.tenant_id", "t1"),): 1}


async def test_off_the_conductor_records_nothing(harness: Harness) -> None:
    await harness.add_tenant("t1")
    _, engine = await start_ready(harness, traceparent=PARENT)
    ((run, attributes),) = await _runs(harness, engine.id)
    assert (run.traceparent, attributes["traceparent"]) == (PARENT, PARENT)  # passed on as is
    assert not telemetry.enabled()
