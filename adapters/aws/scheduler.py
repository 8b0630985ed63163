"""AWS Scheduler: SQS ``DelaySeconds`` up to 15 minutes, EventBridge Scheduler beyond (optional).

Features
    * ``schedule(queue, message, deliver_at)`` with ``deliver_at`` at most 900 s ahead sends
      the message with ``DelaySeconds = ceil(seconds left)``: never early, at most a second
      late (SQS counts whole seconds). Less than a second ahead, ``schedule`` waits that
      fraction and sends at once; a past ``deliver_at`` delivers at once. The handle is
      ``sqs:<message id>``.
    * Further ahead, without EventBridge: ``core.errors.InvalidRequest``. The core never asks
      for that: ``capabilities.max_delay_s`` is 900, so it chains a long kill timer as
      15-minute hops (``core.conductor.fleet``), each hop one SQS message and one Lambda run.
    * With EventBridge Scheduler (``SKYCRAWL_AWS_SCHEDULER_ROLE_ARN`` set): a one-time
      schedule ``at(deliver_at, rounded up to the second)`` in UTC with
      ``ActionAfterCompletion=DELETE`` and no flexible window, whose target is the queue
      (the role must allow ``sqs:SendMessage`` on it). The SQS target cannot set message
      attributes, so the message travels as an envelope (``adapters.aws.sqs_wire``) that
      ``SqsMessageBus.receive`` opens; bodies over ~6 KB go through the claim-check bucket.
      ``max_delay_s`` is then a year. The handle is ``schedule:<group>/<name>``.
    * ``cancel``: an SQS delayed message cannot be withdrawn (False). A schedule is deleted
      (True) if it has not fired yet. ``can_cancel`` is False because of the SQS half: the
      core does not rely on cancel -- a kill timer carries the container's generation, and a
      stale one is ignored when it arrives.

Limits
    ``deliver_at`` must be timezone-aware. SQS delays have 1-second granularity; EventBridge
    Scheduler fires within about a minute of the time, never before it.

Testing
    moto stores EventBridge schedules but never fires them; the tests check the
    ``CreateSchedule`` request (expression, target, envelope) and deliver the stored target
    input themselves.

Settings
    ``SKYCRAWL_AWS_SCHEDULER_ROLE_ARN`` (unset: SQS only), ``SKYCRAWL_AWS_SCHEDULE_GROUP``.

Cost
    Nothing at idle. SQS delays cost one request; EventBridge Scheduler has 14 million free
    invocations a month, then $1.00 per million.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.aws.errors import ClientError, call, error_code
from adapters.aws.message_bus import MAX_DELAY_S, SqsMessageBus
from core.clock import Clock, SystemClock
from core.errors import InvalidRequest
from core.ports.message_bus import OutboundMessage
from core.ports.scheduler import SchedulerCapabilities

EVENTBRIDGE_MAX_DELAY_S = 365 * 86400.0
ENVELOPE_LIMIT = 8192  # characters of a schedule's target input
_INLINE_LIMIT = 6000  # wire bytes kept in the envelope; larger bodies go through S3


def _at_expression(moment: datetime) -> str:
    """``at(...)`` of ``moment`` in UTC, rounded up to the second (never early)."""
    rounded = moment.astimezone(UTC).replace(microsecond=0)
    if rounded < moment:
        rounded += timedelta(seconds=1)
    return f"at({rounded:%Y-%m-%dT%H:%M:%S})"


class SqsScheduler:
    """Scheduler on SQS delays, with EventBridge Scheduler for delays past 15 minutes."""

    def __init__(
        self,
        bus: SqsMessageBus,
        *,
        scheduler: Any | None = None,  # a boto3 "scheduler" client (Any: no type stubs)
        role_arn: str | None = None,
        group: str = "default",
        clock: Clock | None = None,
    ) -> None:
        self._bus = bus
        self._eventbridge = scheduler if scheduler is not None and role_arn else None
        self._role_arn = role_arn or ""
        self._group = group
        self._clock: Clock = clock or SystemClock()
        longest = EVENTBRIDGE_MAX_DELAY_S if self._eventbridge is not None else MAX_DELAY_S
        self.capabilities = SchedulerCapabilities(max_delay_s=longest, can_cancel=False)

    async def close(self) -> None:
        """Close the EventBridge Scheduler client (the SQS bus is closed by its owner)."""
        if self._eventbridge is not None:
            self._eventbridge.close()

    async def schedule(self, *, queue: str, message: OutboundMessage, delay_s: float) -> str:
        # SQS DelaySeconds is relative and measured by SQS; only the EventBridge path needs an
        # absolute time, taken from this instance's clock at this edge
        deliver_at = self._clock.now() + timedelta(seconds=max(0.0, delay_s))
        if 0 < delay_s < 1:  # SQS counts whole seconds: wait out a fraction rather than round
            await asyncio.sleep(delay_s)
            delay_s = 0
        if delay_s <= MAX_DELAY_S:
            message_id = await self._bus.send(
                queue=queue, message=message, delay_s=max(0.0, delay_s)
            )
            return f"sqs:{message_id}"
        if self._eventbridge is None or delay_s > EVENTBRIDGE_MAX_DELAY_S:
            raise InvalidRequest(
                f"delay of {delay_s:.0f} s is more than {self.capabilities.max_delay_s:.0f} s"
            )
        return await self._schedule(queue, message, deliver_at)

    async def _schedule(self, queue: str, message: OutboundMessage, deliver_at: datetime) -> str:
        eventbridge = self._eventbridge
        assert eventbridge is not None
        wire = await self._bus.encode(message, inline_limit=_INLINE_LIMIT)
        envelope = wire.envelope()
        if len(envelope) > ENVELOPE_LIMIT:
            raise InvalidRequest("message attributes too large for an EventBridge schedule")
        name = f"skycrawl-{uuid.uuid4().hex}"
        await call(
            eventbridge.create_schedule,
            Name=name,
            GroupName=self._group,
            ScheduleExpression=_at_expression(deliver_at),
            ScheduleExpressionTimezone="UTC",
            FlexibleTimeWindow={"Mode": "OFF"},
            ActionAfterCompletion="DELETE",
            State="ENABLED",
            Target={
                "Arn": await self._bus.queue_arn(queue),
                "RoleArn": self._role_arn,
                "Input": envelope,
            },
        )
        return f"schedule:{self._group}/{name}"

    async def cancel(self, *, handle: str) -> bool:
        kind, _, ref = handle.partition(":")
        if kind != "schedule" or self._eventbridge is None:
            return False  # an SQS delayed message cannot be withdrawn
        group, _, name = ref.partition("/")
        try:
            await call(self._eventbridge.delete_schedule, Name=name, GroupName=group)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return False
            raise
        return True
