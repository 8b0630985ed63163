"""The scheduler's two paths: SQS delays (within 15 minutes) and EventBridge Scheduler one-time
schedules beyond. moto stores schedules but never fires them, so the EventBridge tests check
the stored schedule and then deliver its target input to the queue themselves -- exactly the
body the Scheduler's SQS target would send."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from adapters.aws.message_bus import SqsMessageBus
from adapters.aws.scheduler import SqsScheduler
from core.clock import FakeClock
from core.errors import InvalidRequest
from core.ports import OutboundMessage, Queue
from tests.integration.aws.moto_server import client, unique

ROLE = "arn:aws:iam::123456789012:role/skycrawl-scheduler"


@pytest.fixture
async def bus(moto_endpoint: str) -> AsyncIterator[SqsMessageBus]:
    bucket = unique("claims")
    client("s3").create_bucket(Bucket=bucket)
    bus = SqsMessageBus(sqs=client("sqs"), sns=client("sns"), s3=client("s3"), bucket=bucket)
    yield bus
    await bus.close()


async def test_without_eventbridge_the_core_must_chain(bus: SqsMessageBus) -> None:
    scheduler = SqsScheduler(bus)
    assert (scheduler.capabilities.max_delay_s, scheduler.capabilities.can_cancel) == (900, False)
    name = unique("timers")
    await bus.ensure_queue(name=name)
    with pytest.raises(InvalidRequest):
        await scheduler.schedule(queue=name, message=OutboundMessage(b"x"), delay_s=901)
    handle = await scheduler.schedule(queue=name, message=OutboundMessage(b"x"), delay_s=0)
    assert handle.startswith("sqs:")
    assert await scheduler.cancel(handle=handle) is False


async def test_a_long_delay_becomes_a_one_time_schedule(bus: SqsMessageBus) -> None:
    name, group = unique("timers"), "default"
    await bus.ensure_queue(name=name)
    clock = FakeClock(datetime(2030, 5, 1, 12, 0, tzinfo=UTC))
    scheduler = SqsScheduler(
        bus, scheduler=client("scheduler"), role_arn=ROLE, group=group, clock=clock
    )
    assert scheduler.capabilities.max_delay_s > 900
    message = OutboundMessage(b'{"type": "container.kill-timer"}', {"generation": "7"})
    handle = await scheduler.schedule(queue=name, message=message, delay_s=7200.000001)
    assert handle.startswith(f"schedule:{group}/skycrawl-")

    schedule = client("scheduler").get_schedule(Name=handle.rsplit("/", 1)[1], GroupName=group)
    assert schedule["ScheduleExpression"] == "at(2030-05-01T14:00:01)"  # rounded up, never early
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = schedule["Target"]
    assert (target["Arn"], target["RoleArn"]) == (await bus.queue_arn(name), ROLE)

    url = client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
    client("sqs").send_message(QueueUrl=url, MessageBody=target["Input"])  # "it fires"
    [lease] = await bus.receive(source=Queue(name), visibility_timeout_s=30)
    assert (lease.body, dict(lease.attributes)) == (message.body, {"generation": "7"})

    assert await scheduler.cancel(handle=handle) is True
    assert await scheduler.cancel(handle=handle) is False


async def test_a_large_scheduled_body_goes_through_the_claim_check(bus: SqsMessageBus) -> None:
    name = unique("timers")
    await bus.ensure_queue(name=name)
    scheduler = SqsScheduler(bus, scheduler=client("scheduler"), role_arn=ROLE)
    body = json.dumps({"pad": "x" * 20_000}).encode()
    handle = await scheduler.schedule(
        queue=name,
        message=OutboundMessage(body),
        delay_s=86400,
    )
    schedule = client("scheduler").get_schedule(Name=handle.rsplit("/", 1)[1])
    assert len(schedule["Target"]["Input"]) < 8192
    url = client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
    client("sqs").send_message(QueueUrl=url, MessageBody=schedule["Target"]["Input"])
    [lease] = await bus.receive(source=Queue(name), visibility_timeout_s=30)
    assert lease.body == body


async def test_a_fraction_of_a_second_is_waited_out_not_rounded(bus: SqsMessageBus) -> None:
    name = unique("timers")
    await bus.ensure_queue(name=name)
    scheduler = SqsScheduler(bus)
    start = datetime.now(UTC)
    await scheduler.schedule(queue=name, message=OutboundMessage(b"soon"), delay_s=0.3)
    assert datetime.now(UTC) >= start + timedelta(seconds=0.3)
    assert len(await bus.receive(source=Queue(name), visibility_timeout_s=30)) == 1
