"""What the SQS/SNS bus does beyond the contract: claim checks, the wire format, subscription
queues and their clean-up, dead letters, leases from Lambda records -- checked on moto with
raw boto3 clients where the point is what AWS holds."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.aws.message_bus import SqsMessageBus
from adapters.aws.sqs_wire import CLAIM, ENCODING, ENVELOPE_PREFIX
from core.errors import Conflict, InvalidRequest, NotFound
from core.ports import OutboundMessage, Queue, Subscription
from tests.integration.aws.moto_server import client, unique


@pytest.fixture
async def bus(moto_endpoint: str) -> AsyncIterator[SqsMessageBus]:
    bucket = unique("claims")
    client("s3").create_bucket(Bucket=bucket)
    bus = SqsMessageBus(
        sqs=client("sqs"),
        sns=client("sns"),
        s3=client("s3"),
        bucket=bucket,
        subscription_queue_prefix="it-sub-",
    )
    yield bus
    await bus.close()


def raw_receive(name: str) -> list[dict[str, Any]]:
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    response = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=1
    )
    return list(response.get("Messages", []))


async def test_large_bodies_travel_through_s3_and_come_back_whole(bus: SqsMessageBus) -> None:
    name, topic = unique("q"), unique("dispatch")
    await bus.ensure_queue(name=name)
    await bus.ensure_topic(topic=topic)
    sub = await bus.ensure_subscription(topic=topic, name="c-1", filter={"container_id": "c-1"})
    body = json.dumps({"seeds": ["https://example.com/" + "x" * 2000] * 200}).encode()
    assert len(body) > 256 * 1024

    await bus.send(queue=name, message=OutboundMessage(body, {"type": "crawl.run"}))
    raw = raw_receive(name)[0]
    key = raw["MessageAttributes"][CLAIM]["StringValue"]
    assert key.startswith("bus-claims/")
    assert raw["Body"].startswith("s3://")

    await bus.publish(topic=topic, message=OutboundMessage(body, {"container_id": "c-1"}))
    [lease] = await bus.receive(source=sub, visibility_timeout_s=30)
    assert (lease.body, dict(lease.attributes)) == (body, {"container_id": "c-1"})


async def test_binary_and_empty_bodies_round_trip(bus: SqsMessageBus) -> None:
    name = unique("q")
    await bus.ensure_queue(name=name)
    bodies = [b"\x00\xff binary", b"", (ENVELOPE_PREFIX + "{}").encode(), "ünïcode ✓".encode()]
    for body in bodies:
        await bus.send(queue=name, message=OutboundMessage(body))
    raw = raw_receive(name)
    encodings = sorted(
        m.get("MessageAttributes", {}).get(ENCODING, {}).get("StringValue", "") for m in raw
    )
    assert encodings == ["", "base64", "base64", "empty"]  # an envelope look-alike is encoded
    received = await bus.receive(source=Queue(name), visibility_timeout_s=30, wait_s=2)
    assert sorted(lease.body for lease in received) == sorted(bodies)


async def test_an_envelope_as_eventbridge_delivers_it_is_opened(bus: SqsMessageBus) -> None:
    name = unique("q")
    await bus.ensure_queue(name=name)
    wire = await bus.encode(OutboundMessage(b"\x01kill", {"generation": "7"}))
    url = client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
    client("sqs").send_message(QueueUrl=url, MessageBody=wire.envelope())  # no attributes
    [lease] = await bus.receive(source=Queue(name), visibility_timeout_s=30)
    assert (lease.body, dict(lease.attributes)) == (b"\x01kill", {"generation": "7"})


@pytest.mark.parametrize(
    "attributes",
    [
        {f"a{i}": "x" for i in range(7)},
        {"AWS.trace": "x"},
        {"skycrawl_claim": "bus-claims/forged"},
        {"a..b": "x"},
        {"empty": ""},
    ],
)
async def test_attributes_sqs_cannot_carry_are_invalid(
    bus: SqsMessageBus, attributes: dict[str, str]
) -> None:
    name = unique("q")
    await bus.ensure_queue(name=name)
    with pytest.raises(InvalidRequest):
        await bus.send(queue=name, message=OutboundMessage(b"x", attributes))


async def test_subscription_queue_is_wired_to_the_topic_and_removed_without_leaks(
    bus: SqsMessageBus,
) -> None:
    topic = unique("dispatch")
    await bus.ensure_topic(topic=topic)
    await bus.ensure_subscription(topic=topic, name="c-42", filter={"container_id": "c-42"})
    await bus.ensure_subscription(topic=topic, name="c-42", filter={"container_id": "c-42"})
    queue = bus.topics.subscription_queue(topic, "c-42")
    assert queue.startswith("it-sub-")
    sqs, sns = client("sqs"), client("sns")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    topic_arn = await bus.topics.arn(topic)
    policy = json.loads(attributes["Policy"])["Statement"][0]
    assert policy["Condition"] == {"ArnEquals": {"aws:SourceArn": topic_arn}}
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 5
    [subscription] = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    sub_attributes = sns.get_subscription_attributes(
        SubscriptionArn=subscription["SubscriptionArn"]
    )
    assert sub_attributes["Attributes"]["RawMessageDelivery"] == "true"
    assert json.loads(sub_attributes["Attributes"]["FilterPolicy"]) == {"container_id": ["c-42"]}

    await bus.delete_subscription(topic=topic, name="c-42")
    assert sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"] == []
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=queue)
    with pytest.raises(NotFound):
        await bus.receive(source=Subscription(topic, "c-42"))


async def test_delete_finds_a_subscription_whose_queue_was_never_tagged(
    bus: SqsMessageBus,
) -> None:
    topic = unique("dispatch")
    await bus.ensure_topic(topic=topic)
    await bus.ensure_subscription(topic=topic, name="c-7", filter={"container_id": "c-7"})
    queue = bus.topics.subscription_queue(topic, "c-7")
    sqs, sns = client("sqs"), client("sns")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    sqs.untag_queue(QueueUrl=url, TagKeys=["skycrawl:subscription-arn"])  # a crash came first
    sqs.delete_queue(QueueUrl=url)  # ... and even the queue is gone
    await bus.delete_subscription(topic=topic, name="c-7")
    topic_arn = await bus.topics.arn(topic)
    assert sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"] == []


async def test_undecodable_messages_go_to_the_dead_letter_queue_with_the_reason(
    bus: SqsMessageBus,
) -> None:
    name = unique("q")
    await bus.ensure_queue(name=name)
    url = client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
    client("sqs").send_message(
        QueueUrl=url,
        MessageBody="not base64 at all!",
        MessageAttributes={ENCODING: {"DataType": "String", "StringValue": "base64"}},
    )
    client("sqs").send_message(
        QueueUrl=url,
        MessageBody="s3://gone",
        MessageAttributes={CLAIM: {"DataType": "String", "StringValue": "bus-claims/expired"}},
    )
    assert await bus.receive(source=Queue(name), visibility_timeout_s=30) == []
    dead = await bus.receive(source=Queue(f"{name}-dlq"), visibility_timeout_s=30, wait_s=2)
    reasons = " | ".join(sorted(lease.attributes["dead_letter_reason"] for lease in dead))
    assert len(dead) == 2
    assert "malformed base64" in reasons
    assert "is gone" in reasons
    assert {lease.attributes["dead_letter_source"] for lease in dead} == {name}


async def test_an_expired_lease_is_conflict_and_leaves_the_message_alone(
    bus: SqsMessageBus,
) -> None:
    name = unique("q")
    await bus.ensure_queue(name=name)
    await bus.send(queue=name, message=OutboundMessage(b"work"))
    [lease] = await bus.receive(source=Queue(name), visibility_timeout_s=1)
    # the same lease with its deadline in the past
    expired = dataclasses.replace(lease, receipt="0.0|" + lease.receipt.partition("|")[2])
    with pytest.raises(Conflict):
        await bus.ack(lease=expired)
    with pytest.raises(Conflict):
        await bus.release(lease=expired)
    with pytest.raises(Conflict):
        await bus.dead_letter(lease=expired, reason="late")
    await bus.ack(lease=lease)  # the live lease still works


async def test_a_lambda_record_becomes_a_lease(bus: SqsMessageBus) -> None:
    name = unique("q")
    await bus.ensure_queue(name=name)
    await bus.send(queue=name, message=OutboundMessage(b"\x00hi", {"type": "x"}))
    [raw] = raw_receive(name)
    record = {
        "messageId": raw["MessageId"],
        "receiptHandle": raw["ReceiptHandle"],
        "body": raw["Body"],
        "attributes": {"ApproximateReceiveCount": "3"},
        "messageAttributes": {
            k: {"stringValue": v["StringValue"], "dataType": v["DataType"]}
            for k, v in raw["MessageAttributes"].items()
        },
        "eventSource": "aws:sqs",
    }
    lease = await bus.lease_from_record(record, queue=name, visibility_timeout_s=30)
    assert lease is not None
    assert (lease.body, dict(lease.attributes), lease.delivery_count) == (
        b"\x00hi",
        {"type": "x"},
        3,
    )
    await bus.dead_letter(lease=lease, reason="bad")
    [dead] = await bus.receive(source=Queue(f"{name}-dlq"), visibility_timeout_s=30)
    assert dead.attributes["dead_letter_reason"] == "bad"
    assert dead.body == b"\x00hi"


async def test_bad_names_and_arguments(bus: SqsMessageBus) -> None:
    for bad in ("", "a/b", "x" * 77):
        with pytest.raises(InvalidRequest):
            await bus.ensure_queue(name=bad)
    name = unique("q")
    await bus.ensure_queue(name=name)
    with pytest.raises(InvalidRequest):
        await bus.send(queue=name, message=OutboundMessage(b"x"), delay_s=901)
    with pytest.raises(InvalidRequest):
        await bus.receive(source=Queue(name), visibility_timeout_s=12 * 3600 + 1)
    with pytest.raises(NotFound):
        await bus.publish(topic=unique("no-topic"), message=OutboundMessage(b"x"))
    dead = await _lease_on_dlq(bus, name)
    with pytest.raises(InvalidRequest):
        await bus.dead_letter(lease=dead, reason="again")  # a dead letter stays where it is


async def _lease_on_dlq(bus: SqsMessageBus, name: str) -> Any:
    await bus.send(queue=f"{name}-dlq", message=OutboundMessage(b"dead"))
    [lease] = await bus.receive(source=Queue(f"{name}-dlq"), visibility_timeout_s=30)
    return lease
