"""The web app and the operator console through the API Lambda (API Gateway payload 2.0) on
moto: sessions in DynamoDB, the cookie through the event's ``cookies``, and a dead letter
read from and requeued to real (moto) SQS queues."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from core.ports.message_bus import OutboundMessage, dead_letter_queue
from functions.aws import api, bootstrap
from functions.aws.bootstrap import AwsStack
from tests.integration.aws.lambda_events import http_event, json_of, receive_batch
from tests.integration.aws.moto_deployment import OPERATOR_KEY, Deployment
from tests.integration.aws.moto_server import client
from tests.integration.aws.test_aws_functions import installed


@pytest.fixture
def stack(deployment: Deployment) -> Iterator[AwsStack]:
    yield from installed(deployment)


class Lambda:
    """A browser talking to the API function: one cookie, forms as API Gateway passes them."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.cookie: str | None = None

    def __call__(self, method: str, path: str, form: dict[str, str] | None = None) -> Any:
        headers = {}
        raw = None
        if form is not None:
            headers["content-type"] = "application/x-www-form-urlencoded"
            raw = urlencode(form).encode()
        event = http_event(method, path, headers=headers, raw_body=raw)
        if self.cookie:
            event["cookies"] = [self.cookie]
        result = api.handler(event, self.context)
        set_cookie = result["headers"].get("set-cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";", 1)[0]
        return result

    def csrf(self, path: str) -> str:
        page = self("GET", path)
        assert page["statusCode"] == 200, page
        match = re.search(r'name="csrf" value="([^"]+)"', page["body"])
        assert match
        return match.group(1)


def test_a_tenant_signs_in_and_starts_a_crawl_through_the_lambda(
    stack: AwsStack, lambda_context: Any
) -> None:
    created = api.handler(
        http_event("POST", "/v1/tenants", key=OPERATOR_KEY, body={"name": "acme"}), lambda_context
    )
    tenant = json_of(created)
    assert tenant["resources"]["web_app"].endswith(f"/t/{tenant['id']}/")
    browser = Lambda(lambda_context)
    base = f"/t/{tenant['id']}"
    signin = browser("GET", f"{base}/signin")
    assert (signin["statusCode"], signin["isBase64Encoded"]) == (200, False)
    assert "default-src 'self'" in signin["headers"]["content-security-policy"]
    signed = browser("POST", f"{base}/signin", {"key": tenant["api_key"]})
    assert signed["statusCode"] == 303
    assert "Secure" in signed["headers"]["set-cookie"]
    token = browser.csrf(f"{base}/new")
    started = browser("POST", f"{base}/new", {"csrf": token, "seeds": "https://example.com/"})
    assert started["statusCode"] == 303, started["body"][:1000]
    crawl_id = started["headers"]["location"].rsplit("/", 1)[1]
    listing = browser("GET", f"{base}/crawls.json")
    assert crawl_id in listing["body"]
    css = re.search(r'href="(/assets/app\.[0-9a-f]+\.css)"', browser("GET", f"{base}/new")["body"])
    assert css
    asset = browser("GET", css.group(1))
    assert (asset["statusCode"], asset["isBase64Encoded"]) == (200, False)


def test_the_operator_requeues_a_dead_letter_from_sqs(stack: AwsStack, lambda_context: Any) -> None:
    inbox = stack.settings.inbox_queue
    body = b'{"type": "crawl.submitted", "tenant_id": "tn_x", "crawl_id": "cr_y"}'
    message = OutboundMessage(body, {"type": "crawl.submitted", "dead_letter_reason": "gave up"})
    bootstrap.run(stack.ports.bus.send(queue=dead_letter_queue(inbox), message=message))
    operator = Lambda(lambda_context)
    assert operator("POST", "/console/signin", {"key": OPERATOR_KEY})["statusCode"] == 303
    page = operator("GET", "/console/dead-letters")
    assert "gave up" in page["body"]
    message_id = re.search(r'name="message_id" value="([^"]+)"', page["body"])
    assert message_id
    token = operator.csrf("/console/dead-letters")
    done = operator("POST", "/console/dead-letters", {"csrf": token, "message_id": message_id[1]})
    assert "Requeued" in done["body"]
    url = client("sqs").get_queue_url(QueueName=inbox)["QueueUrl"]
    [back] = receive_batch(client("sqs"), url)
    assert back["Body"] == body.decode()
    assert "dead_letter_reason" not in back.get("MessageAttributes", {})
