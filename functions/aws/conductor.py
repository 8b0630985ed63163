"""The conductor on AWS: a Lambda triggered by the inbox SQS queue, with partial batch failures.

The event source mapping delivers up to ``BatchSize`` inbox messages per invocation
(``FunctionResponseTypes: [ReportBatchItemFailures]`` in the template). The records are
handled concurrently, one task each on the instance's event loop, as ``core.inbox.drain_inbox``
handles a batch: so the conductor places the submissions of one tenant in a batch together
(``Router.place``: one read of its containers, one write per container). Every log line
carries its own record's correlation id (the crawl id, else the container GUID, else the
message id) and message type, kept per task by Powertools' context keys
(``Logger.append_context_keys``, a ``ContextVar``). The answer lists exactly the records that
failed (``batchItemFailures``, the shape of Powertools' ``process_partial_response``);
Lambda deletes the others.

Per record:

* the record becomes a lease (``SqsMessageBus.lease_from_record``: base64 bodies, claim checks
  and scheduler envelopes are resolved as for any receive). A record whose wire format cannot
  be decoded is moved to the dead-letter queue with the reason by the bus, and counts as done;
* ``core.inbox.settle`` runs ``Conductor.handle_raw(body)`` and returns the outcome, which
  this handler maps (the core is idempotent: a redelivered record changes nothing twice):

  - ``ack``: the record is reported processed; Lambda deletes it;
  - ``dead_letter`` (not an inbox message at all): sent to ``<inbox>-dlq`` with
    ``dead_letter_reason`` and deleted (``bus.dead_letter``) -- reported processed, so it is
    not retried until the redrive policy gives up on it;
  - ``retry``: the record is made visible again after the core's back-off (1, 2, 4 ... 60 s,
    by ``ChangeMessageVisibility``) and reported failed (``batchItemFailures``); after
    ``max_deliveries`` receives the queue's redrive policy moves it to the dead-letter queue.

Metrics (namespace ``skycrawl``): ``InboxMessages``, ``InboxFailures``, ``InboxDeadLettered``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from core.inbox import Settlement, apply_outcome, settle
from core.ports import Lease
from functions.aws import bootstrap, tracing

SERVICE = "skycrawl-conductor"

logger = Logger(service=SERVICE)
tracer = tracing.tracer(SERVICE)
metrics = Metrics(namespace="skycrawl", service=SERVICE)
bootstrap.route_core_logs(logger)


class RetryLater(Exception):
    """Raised for a ``retry`` outcome: Powertools lists the record in ``batchItemFailures``."""


def _correlation_id(body: bytes, fallback: str) -> str:
    try:
        fields = json.loads(body)
    except ValueError:
        return fallback
    if not isinstance(fields, dict):
        return fallback
    return str(fields.get("crawl_id") or fields.get("container_id") or fallback)


async def handle_record(record: dict[str, Any]) -> None:
    """Handle one inbox record; raises to have it retried (see the module docstring)."""
    stack = bootstrap.stack()
    lease = await stack.bus.lease_from_record(
        record,
        queue=stack.settings.inbox_queue,
        visibility_timeout_s=stack.aws.inbox_visibility_timeout_s,
    )
    if lease is None:
        logger.error("undecodable record moved to the dead-letter queue")
        metrics.add_metric(name="InboxDeadLettered", unit=MetricUnit.Count, value=1)
        return
    with logger.append_context_keys(
        correlation_id=_correlation_id(lease.body, lease.message_id),
        message_type=lease.attributes.get("type", ""),
    ):
        await _settle(stack, lease)


async def _settle(stack: bootstrap.AwsStack, lease: Lease) -> None:
    outcome = await settle(stack.conductor, lease.body, delivery_count=lease.delivery_count)
    if outcome.settlement is Settlement.ack:
        return  # reported processed: Lambda deletes the record
    await apply_outcome(stack.bus, lease, outcome)
    if outcome.settlement is Settlement.dead_letter:
        logger.error("dead-lettered inbox message", extra={"reason": outcome.reason})
        metrics.add_metric(name="InboxDeadLettered", unit=MetricUnit.Count, value=1)
        return
    logger.warning(
        "inbox message failed", extra={"delivery": lease.delivery_count, "reason": outcome.reason}
    )
    raise RetryLater(outcome.reason)


async def handle_records(records: list[dict[str, Any]]) -> list[str]:
    """Handle a batch's records concurrently; returns the message ids of those that failed."""

    async def one(record: dict[str, Any]) -> str | None:
        try:
            await handle_record(record)
        except Exception as exc:
            if not isinstance(exc, RetryLater):
                logger.exception("inbox record failed")
            return str(record.get("messageId", ""))
        return None

    # one task each: each runs in its own copy of the context (its own log keys)
    failed = await asyncio.gather(*(asyncio.create_task(one(r)) for r in records))
    return [message_id for message_id in failed if message_id is not None]


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records", [])
    metrics.add_metric(name="InboxMessages", unit=MetricUnit.Count, value=len(records))
    failed = bootstrap.run(handle_records(records))
    if failed:
        metrics.add_metric(name="InboxFailures", unit=MetricUnit.Count, value=len(failed))
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
