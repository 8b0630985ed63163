"""Housekeeping on AWS: a Lambda an EventBridge schedule runs every minute (``rate(1 minute)``,
EventBridge's finest), running ``core.conductor.Housekeeper`` once per invocation.

It reaps containers that never became ready or stopped heartbeating (their work is
re-dispatched), stops idle containers whose kill timer was lost, frees fleet slots and places
backlogged crawls -- the safety net under the event-driven conductor, idempotent like it, so
an overlapping or repeated run is harmless. Kill timers themselves do not depend on it: they
arrive through the inbox (SQS delays). ``SKYCRAWL_TIMER_PERIOD_S`` has no effect here; the
schedule in the template sets the period.

The result (also logged): ``{"reaped": [...], "stopped_idle": [...], "placed": n}``.
Metrics (namespace ``skycrawl``): ``HousekeepingRuns``, ``ContainersReaped``,
``ContainersStoppedIdle``, ``BacklogPlaced``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws import bootstrap, tracing

SERVICE = "skycrawl-housekeeping"

logger = Logger(service=SERVICE)
tracer = tracing.tracer(SERVICE)
metrics = Metrics(namespace="skycrawl", service=SERVICE)
bootstrap.route_core_logs(logger)


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    scheduled = EventBridgeEvent(event)
    logger.set_correlation_id(scheduled.get_id or None)
    report = bootstrap.run(bootstrap.stack().housekeeper.run())
    metrics.add_metric(name="HousekeepingRuns", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ContainersReaped", unit=MetricUnit.Count, value=len(report.reaped))
    metrics.add_metric(
        name="ContainersStoppedIdle", unit=MetricUnit.Count, value=len(report.stopped_idle)
    )
    metrics.add_metric(name="BacklogPlaced", unit=MetricUnit.Count, value=report.placed)
    result = {
        "reaped": report.reaped,
        "stopped_idle": report.stopped_idle,
        "placed": report.placed,
        "scheduled_at": scheduled.time,
    }
    logger.info("housekeeping done", extra=result)
    return result
