"""The Cloud Functions entry points (functions/gcp/main.py) through functions-framework's test
client, on a whole stack over the emulators: HTTP API mapping, the OIDC-protected internal
endpoints, and the conductor's CloudEvent function with both push formats."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from adapters.gcp.scheduler import encode_timer
from core.errors import InvalidRequest, Retryable
from core.messages import CrawlSubmitted, encode
from core.ports import OutboundMessage, Queue, dead_letter_queue
from core.ports.message_bus import DEAD_LETTER_REASON, DEAD_LETTER_SOURCE
from functions.gcp import bootstrap
from functions.gcp.bootstrap import GcpStack
from functions.gcp.main import delivery_attempt, pushed_body
from tests.integration.gcp.conftest import CALLER, OPERATOR_KEY, TIMER_URL
from tests.integration.gcp.fake_cloud_tasks import FakeIdTokens

MAIN = str(Path(__file__).resolve().parents[3] / "functions" / "gcp" / "main.py")
TOKENS = FakeIdTokens()


@pytest.fixture(scope="module")
def apps(gcp_stack: GcpStack) -> Iterator[dict[str, Any]]:
    previous = bootstrap.install_stack(gcp_stack)
    try:
        yield {
            "api": functions_framework.create_app("api", MAIN).test_client(),
            "conductor": functions_framework.create_app("conductor", MAIN).test_client(),
        }
    finally:
        bootstrap.install_stack(previous)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def drain(stack: GcpStack, queue: str, wait_s: float = 2) -> list[Any]:
    async def take() -> list[Any]:
        leases = await stack.ports.bus.receive(source=Queue(queue), max_messages=10, wait_s=wait_s)
        for lease in leases:
            await stack.ports.bus.ack(lease=lease)
        return leases

    return stack.run(take())


def test_http_requests_map_to_the_api(apps: dict[str, Any]) -> None:
    api = apps["api"]
    health = api.get("/healthz")
    assert (health.status_code, health.headers["cache-control"]) == (200, "no-store")
    created = api.post("/v1/tenants", headers=bearer(OPERATOR_KEY), json={"name": "acme"})
    assert created.status_code == 201, created.get_data()
    key = created.get_json()["api_key"]
    assert created.get_json()["resources"]["marker"].startswith("gs://skycrawl-it/tenants/")
    assert api.get("/v1/tenants", headers=bearer(key)).status_code == 403
    listed = api.get("/v1/crawls?limit=1", headers=bearer(key))
    assert (listed.status_code, listed.get_json()["items"]) == (200, [])
    bad = api.get("/v1/crawls?limit=0", headers=bearer(key))
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    too_big = api.post("/v1/crawls", headers=bearer(key), data=b"x" * 10_001)
    assert too_big.status_code == 413


def test_timer_endpoint_requires_the_right_token(apps: dict[str, Any], gcp_stack: GcpStack) -> None:
    api, inbox = apps["api"], gcp_stack.settings.inbox_queue
    drain(gcp_stack, inbox, wait_s=0)
    body = encode_timer(inbox, OutboundMessage(b'{"hello": 1}', {"type": "test"}))
    assert api.post("/internal/timers", data=body).status_code == 401
    wrong_audience = TOKENS.issue(CALLER, "https://elsewhere.test")
    assert (
        api.post("/internal/timers", headers=bearer(wrong_audience), data=body).status_code == 401
    )
    stranger = TOKENS.issue("someone@else.iam.gserviceaccount.com", TIMER_URL)
    assert api.post("/internal/timers", headers=bearer(stranger), data=body).status_code == 403
    assert drain(gcp_stack, inbox, wait_s=0.5) == []

    good = bearer(TOKENS.issue(CALLER, TIMER_URL))
    assert api.post("/internal/timers", headers=good, data=b"garbage").status_code == 422
    assert api.post("/internal/timers", headers=good, data=body).status_code == 204
    [delivered] = drain(gcp_stack, inbox)
    assert (delivered.body, delivered.attributes["type"]) == (b'{"hello": 1}', "test")

    assert api.get("/internal/timers", headers=good).status_code == 404
    report = api.post("/internal/housekeeping", headers=good)
    assert report.status_code == 200
    assert set(report.get_json()) == {"reaped", "stopped_idle", "placed"}


def test_conductor_takes_cloud_events_and_raw_pushes(
    apps: dict[str, Any], gcp_stack: GcpStack
) -> None:
    conductor, dlq = apps["conductor"], dead_letter_queue(gcp_stack.settings.inbox_queue)
    drain(gcp_stack, dlq, wait_s=0)
    known = encode(CrawlSubmitted(tenant_id="tn_nobody", crawl_id="cr_nothing")).body
    headers = {
        "ce-id": "1",
        "ce-specversion": "1.0",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/skycrawl-inbox",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "Content-Type": "application/json",
    }
    event = {"message": {"data": base64.b64encode(known).decode(), "messageId": "1"}}
    assert conductor.post("/", headers=headers, data=json.dumps(event)).status_code == 200

    raw = {  # a plain Pub/Sub push subscription's body, converted by functions-framework
        "message": {"data": base64.b64encode(b"not json").decode(), "messageId": "2"},
        "subscription": "projects/p/subscriptions/skycrawl-inbox",
    }
    response = conductor.post("/", headers={"Content-Type": "application/json"}, json=raw)
    assert response.status_code == 200
    [dead] = drain(gcp_stack, dlq)
    assert dead.body == b"not json"
    assert dead.attributes[DEAD_LETTER_REASON].startswith("undecodable inbox message")
    assert dead.attributes[DEAD_LETTER_SOURCE] == gcp_stack.settings.inbox_queue


def test_a_retryable_failure_answers_500_so_pubsub_redelivers(
    apps: dict[str, Any], gcp_stack: GcpStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlq = dead_letter_queue(gcp_stack.settings.inbox_queue)
    drain(gcp_stack, dlq, wait_s=0)
    seen: list[bytes] = []

    async def broken(body: bytes) -> None:
        seen.append(body)
        raise Retryable("Firestore is down")

    monkeypatch.setattr(gcp_stack.conductor, "handle_raw", broken)
    raw = {
        "message": {"data": base64.b64encode(b"{}").decode(), "messageId": "3"},
        "subscription": "projects/p/subscriptions/skycrawl-inbox",
        "deliveryAttempt": 4,
    }
    assert apps["conductor"].post("/", json=raw).status_code == 500
    assert seen == [b"{}"]
    assert drain(gcp_stack, dlq, wait_s=0) == []  # retried by Pub/Sub, not dead-lettered


def test_delivery_attempt_of_a_push() -> None:
    assert delivery_attempt({"deliveryAttempt": 3}) == 3
    assert delivery_attempt({}) == delivery_attempt(None) == delivery_attempt({"x": 1}) == 1


def test_pushed_body_needs_a_pubsub_message() -> None:
    assert pushed_body({"message": {"data": base64.b64encode(b"x").decode()}}) == b"x"
    for bad in (None, {}, {"message": {"data": "***"}}, {"message": "x"}):
        with pytest.raises(InvalidRequest):
            pushed_body(bad)
