"""The three Lambda handlers, invoked in-process with the events AWS sends, on a deployment in
moto (DynamoDB, S3, SQS, SNS, ECS, CloudFormation). The tests are synchronous, like the
Lambda runtime that calls the handlers."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from core.errors import Retryable
from core.layout import warc_key
from core.messages import Heartbeat, encode
from core.models import Container, ContainerState
from functions.aws import api, bootstrap, conductor, housekeeping
from functions.aws.bootstrap import AwsStack
from tests.integration.aws.lambda_events import (
    http_event,
    json_of,
    receive_batch,
    scheduled_event,
    sqs_event,
)
from tests.integration.aws.moto_deployment import OPERATOR_KEY, Deployment, deploy
from tests.integration.aws.moto_server import client


def installed(deployment: Deployment) -> Iterator[AwsStack]:
    stack = bootstrap.build_aws_stack(deployment.settings, deployment.aws)
    bootstrap.install(stack)
    try:
        yield stack
    finally:
        bootstrap.install(None)
        bootstrap.run(stack.ports.close())


@pytest.fixture
def stack(deployment: Deployment) -> Iterator[AwsStack]:
    yield from installed(deployment)


def call(context: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    result = api.handler(http_event(method, path, **kwargs), context)
    assert set(result) == {"statusCode", "headers", "body", "isBase64Encoded"}
    return result


def new_tenant(context: Any, name: str = "acme") -> tuple[str, str]:
    created = call(context, "POST", "/v1/tenants", key=OPERATOR_KEY, body={"name": name})
    assert created["statusCode"] == 201, created
    payload = json_of(created)
    return payload["id"], payload["api_key"]


# --------------------------------------------------------------------------- API


def test_the_event_becomes_the_request_the_core_expects() -> None:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

    event = http_event(
        "post",
        "/v1/crawls/a b",
        query={"limit": "5", "cursor": ""},
        headers={"X-Trace": "1"},
        raw_body=b"\x00\x01",
        stage="prod",
    )
    event["rawQueryString"] += "&limit=9"  # a repeated name: the first one wins
    event["cookies"] = ["a=1", "b=2"]
    request = api.to_request(APIGatewayProxyEventV2(event))
    assert (request.method, request.path) == ("POST", "/v1/crawls/a b")
    assert request.query == {"limit": "5", "cursor": ""}
    assert request.headers["x-trace"] == "1"
    assert request.headers["cookie"] == "a=1; b=2"
    assert request.body == b"\x00\x01"


def test_the_api_answers_through_api_gateway(stack: AwsStack, lambda_context: Any) -> None:
    health = call(lambda_context, "GET", "/healthz")
    assert (health["statusCode"], health["isBase64Encoded"]) == (200, False)
    assert json_of(health)["status"] == "ok"
    missing = call(lambda_context, "GET", "/nope")
    assert missing["statusCode"] == 404
    assert missing["headers"]["content-type"] == "application/problem+json"

    tenant_id, key = new_tenant(lambda_context)
    stacks = client("cloudformation").describe_stacks()["Stacks"]
    [tenant_stack] = [
        s for s in stacks if s["StackName"].startswith(f"{stack.aws.stack_prefix}-tenant-")
    ]
    assert tenant_stack["StackStatus"] == "CREATE_COMPLETE"

    submitted = call(
        lambda_context, "POST", "/v1/crawls", key=key, body={"seeds": ["https://example.com/"]}
    )
    assert submitted["statusCode"] == 202, submitted
    crawl_id = json_of(submitted)["id"]
    url = client("sqs").get_queue_url(QueueName=stack.settings.inbox_queue)["QueueUrl"]
    [message] = receive_batch(client("sqs"), url)
    assert json.loads(message["Body"]) == {
        "type": "crawl.submitted",
        "tenant_id": tenant_id,
        "crawl_id": crawl_id,
    }

    status = call(lambda_context, "GET", f"/v1/crawls/{crawl_id}", key=key)
    assert json_of(status)["status"] == "pending"

    warc = b"\x1f\x8b\x08\x00 not really gzip \xff"
    bootstrap.run(stack.ports.blobs.put(key=warc_key(tenant_id, crawl_id, 0), data=warc))
    export = call(
        lambda_context, "GET", f"/v1/crawls/{crawl_id}/export", key=key, query={"format": "warc"}
    )
    assert (export["statusCode"], export["isBase64Encoded"]) == (200, True)
    assert base64.b64decode(export["body"]) == warc

    deleted = call(lambda_context, "DELETE", f"/v1/tenants/{tenant_id}", key=OPERATOR_KEY)
    assert deleted["statusCode"] == 204
    stacks = client("cloudformation").describe_stacks(StackName=tenant_stack["StackId"])["Stacks"]
    assert stacks[0]["StackStatus"] == "DELETE_COMPLETE"


def test_an_oversize_response_is_a_clear_problem(
    stack: AwsStack, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, key = new_tenant(lambda_context)
    submitted = call(
        lambda_context, "POST", "/v1/crawls", key=key, body={"seeds": ["https://example.com/"]}
    )
    monkeypatch.setattr(api, "MAX_RESPONSE_BODY", 1000)  # Lambda's is 6 MB
    crawl_id = json_of(submitted)["id"]
    bootstrap.run(stack.ports.blobs.put(key=warc_key(tenant_id, crawl_id, 0), data=b"\xff" * 2000))
    export = call(
        lambda_context, "GET", f"/v1/crawls/{crawl_id}/export", key=key, query={"format": "warc"}
    )
    assert export["statusCode"] == 413
    assert "/pages" in json_of(export)["detail"]


def test_a_large_export_is_a_presigned_s3_url(moto_endpoint: str, lambda_context: Any) -> None:
    """Over SKYCRAWL_EXPORT_URL_BYTES the Lambda answers 303 to a presigned GET of the export,
    written once to the tenant's prefix; the URL answers the bytes the stream would have."""
    for stack in installed(deploy(ecs=False, export_url_bytes=1000)):
        tenant_id, key = new_tenant(lambda_context)
        submitted = call(
            lambda_context, "POST", "/v1/crawls", key=key, body={"seeds": ["https://example.com/"]}
        )
        crawl_id = json_of(submitted)["id"]
        warc = bytes(range(256)) * 10
        bootstrap.run(stack.ports.blobs.put(key=warc_key(tenant_id, crawl_id, 0), data=warc))
        path = f"/v1/crawls/{crawl_id}/export"
        export = call(lambda_context, "GET", path, key=key, query={"format": "warc"})
        assert export["statusCode"] == 303, export
        location = export["headers"]["location"]
        assert location.startswith(f"{moto_endpoint}/{stack.aws.bucket}/tenants/{tenant_id}/")
        assert "X-Amz-Signature=" in location
        got = httpx.get(location)
        assert got.status_code == 200
        assert got.content == warc
        assert f'filename="{crawl_id}.warc.gz"' in got.headers["content-disposition"]
        streamed = call(
            lambda_context, "GET", path, key=key, query={"format": "warc", "delivery": "stream"}
        )
        assert base64.b64decode(streamed["body"]) == warc


# --------------------------------------------------------------------------- conductor


def test_a_batch_reports_exactly_the_record_that_failed(
    moto_endpoint: str, lambda_context: Any
) -> None:
    # No task definition is registered: starting a container for the crawl fails in ECS.
    deployment = deploy(task_definition=False)
    for stack in installed(deployment):
        tenant_id, key = new_tenant(lambda_context)
        call(
            lambda_context, "POST", "/v1/crawls", key=key, body={"seeds": ["https://example.com/"]}
        )
        sqs = client("sqs")
        url = sqs.get_queue_url(QueueName=stack.settings.inbox_queue)["QueueUrl"]
        beat = encode(Heartbeat(tenant_id=tenant_id, container_id="no-such-container"))
        sqs.send_message(
            QueueUrl=url,
            MessageBody=beat.body.decode(),
            MessageAttributes={
                k: {"DataType": "String", "StringValue": v} for k, v in beat.attributes.items()
            },
        )
        sqs.send_message(QueueUrl=url, MessageBody='{"type": "no.such.message"}')
        messages: list[dict[str, Any]] = []
        while len(messages) < 3:
            messages += receive_batch(sqs, url)
        inbox_arn = bootstrap.run(stack.bus.queue_arn(stack.settings.inbox_queue))

        result = conductor.handler(sqs_event(messages, inbox_arn), lambda_context)

        submitted = next(m for m in messages if "crawl.submitted" in m["Body"])
        assert result == {"batchItemFailures": [{"itemIdentifier": submitted["MessageId"]}]}
        [dead] = receive_batch(
            sqs, sqs.get_queue_url(QueueName=f"{stack.settings.inbox_queue}-dlq")["QueueUrl"]
        )
        assert dead["Body"] == '{"type": "no.such.message"}'
        assert "undecodable" in dead["MessageAttributes"]["dead_letter_reason"]["StringValue"]
        time.sleep(1.2)  # the failed record was released with the core's back-off (1 s)
        again = receive_batch(sqs, url)
        assert [m["MessageId"] for m in again] == [submitted["MessageId"]]
        assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_retryable_failure_is_a_batch_item_failure_not_a_dead_letter(
    stack: AwsStack, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(body: bytes) -> None:
        if b"throttled" in body:
            raise Retryable("DynamoDB is throttling")

    monkeypatch.setattr(stack.conductor, "handle_raw", down)
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=stack.settings.inbox_queue)["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=f"{stack.settings.inbox_queue}-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody='{"type": "throttled"}')
    sqs.send_message(QueueUrl=url, MessageBody='{"type": "fine"}')
    messages: list[dict[str, Any]] = []
    while len(messages) < 2:
        messages += receive_batch(sqs, url)
    inbox_arn = bootstrap.run(stack.bus.queue_arn(stack.settings.inbox_queue))

    result = conductor.handler(sqs_event(messages, inbox_arn), lambda_context)

    throttled = next(m for m in messages if "throttled" in m["Body"])
    assert result == {"batchItemFailures": [{"itemIdentifier": throttled["MessageId"]}]}
    assert receive_batch(sqs, dlq) == []


# --------------------------------------------------------------------------- housekeeping


def test_scheduled_housekeeping_finishes_a_reap_whose_stop_was_cut_short(
    stack: AwsStack, lambda_context: Any
) -> None:
    tenant_id, _ = new_tenant(lambda_context)
    long_ago = stack.ports.clock.now() - timedelta(hours=1)
    stale = Container(  # its watchdog found it not ready; the instance died before the stop
        id="c-stale",
        tenant_id=tenant_id,
        egress=stack.settings.egresses[0],  # the deployment's own egress
        started_at=long_ago,
        state=ContainerState.draining,
        stop_requested=True,
        final_state=ContainerState.failed,
        reason="not ready within 120s",
    )
    bootstrap.run(stack.records.containers.create(tenant_id, stale.id, stale))

    result = housekeeping.handler(scheduled_event(), lambda_context)

    assert result["reaped"] == ["c-stale"]
    record = bootstrap.run(stack.records.containers.get(tenant_id, "c-stale"))
    assert record is not None
    assert record.value.state.value == "failed"
    assert "not ready" in (record.value.reason or "")
