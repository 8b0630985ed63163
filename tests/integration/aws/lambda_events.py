"""Lambda events in the shapes AWS sends them: API Gateway HTTP API (payload 2.0), SQS batches
built from messages really received from (moto's) SQS, and EventBridge scheduled events."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from tests.integration.aws.moto_server import ACCOUNT, REGION


def http_event(
    method: str,
    path: str,
    *,
    key: str | None = None,
    body: Any = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    raw_body: bytes | None = None,
    stage: str = "$default",
) -> dict[str, Any]:
    all_headers = {"host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "pytest"}
    if key:
        all_headers["authorization"] = f"Bearer {key}"
    data: bytes | None = raw_body
    if body is not None:
        data = json.dumps(body).encode()
        all_headers["content-type"] = "application/json"
    all_headers.update(headers or {})
    raw_path = quote(path) if stage == "$default" else f"/{stage}{quote(path)}"
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": urlencode(query or {}),
        "headers": all_headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "abc123",
            "domainName": all_headers["host"],
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "pytest",
            },
            "requestId": uuid.uuid4().hex[:16],
            "routeKey": "$default",
            "stage": stage,
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    if data is not None:
        event["body"] = base64.b64encode(data).decode()
        event["isBase64Encoded"] = True
    return event


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS trigger sends for ``messages`` (from ``ReceiveMessage`` with
    ``AttributeNames=["All"]`` and ``MessageAttributeNames=["All"]``)."""
    records = []
    for message in messages:
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": dict(message.get("Attributes", {})),
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def receive_batch(
    sqs: Any, queue_url: str, *, wait_s: int = 1, visibility_s: int = 30
) -> list[Any]:
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_s,
        VisibilityTimeout=visibility_s,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    return list(response.get("Messages", []))


def scheduled_event() -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/skycrawl-housekeeping"],
        "detail": {},
    }


def body_of(result: dict[str, Any]) -> bytes:
    """The body bytes of an HTTP API (2.0) result."""
    if result.get("isBase64Encoded"):
        return base64.b64decode(result["body"])
    return str(result.get("body", "")).encode()


def json_of(result: dict[str, Any]) -> Any:
    return json.loads(body_of(result))
