"""``/v1/webhooks/secret`` (made, rotated, shown once) and the webhook attempts in a crawl's
status (issue 12)."""

from __future__ import annotations

from api_harness import OPERATOR_KEY, SEED, Harness, assert_problem

from core.delivery_models import (
    WebhookAttempt,
    WebhookDeliveries,
    webhook_deliveries_table,
    webhook_secrets_table,
)
from core.messages import WebhookSecretRetire
from core.webhooks import SECRETS_KEY

Tenant = tuple[str, str]


async def test_the_first_secret_is_shown_once(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    assert_problem(await harness.call("GET", "/v1/webhooks/secret", key=key), 404)
    made = await harness.call("POST", "/v1/webhooks/secret", key=key, json_body={})
    assert made.status == 201, made.body
    body = made.parsed()
    assert body["secret"].startswith("whsec_")
    assert len(body["secret"]) >= 40
    assert body["retiring"] == []
    shown = await harness.call("GET", "/v1/webhooks/secret", key=key)
    assert shown.status == 200
    assert body["secret"].encode() not in shown.body
    assert shown.parsed()["current"]["id"] == body["current"]["id"]
    assert await harness.inbox() == [], "nothing to retire"


async def test_rotating_keeps_the_old_secret_for_its_grace(
    harness: Harness, tenant: Tenant
) -> None:
    tenant_id, key = tenant
    first = (await harness.call("POST", "/v1/webhooks/secret", key=key, json_body={})).parsed()
    rotated = await harness.call("POST", "/v1/webhooks/secret", key=key, json_body={"grace_s": 600})
    assert rotated.status == 201
    body = rotated.parsed()
    assert body["secret"] != first["secret"]
    assert [s["id"] for s in body["retiring"]] == [first["current"]["id"]]
    assert body["retiring_for_s"] == 600
    assert await harness.inbox() == [
        WebhookSecretRetire(
            tenant_id=tenant_id, secret_id=first["current"]["id"], remaining_s=600.0
        )
    ]
    at_once = await harness.call("POST", "/v1/webhooks/secret", key=key, json_body={"grace_s": 0})
    assert [s["id"] for s in at_once.parsed()["retiring"]] == [first["current"]["id"]]
    assert at_once.parsed()["retiring_for_s"] == 0


async def test_a_bad_grace_is_422(harness: Harness, tenant: Tenant) -> None:
    for grace in (-1, 8 * 86400, "60"):
        response = await harness.call(
            "POST", "/v1/webhooks/secret", key=tenant[1], json_body={"grace_s": grace}
        )
        assert_problem(response, 422)


async def test_the_crawl_status_shows_each_webhook_attempt(
    harness: Harness, tenant: Tenant
) -> None:
    tenant_id, key = tenant
    crawl_id = (
        await harness.submit(key, {**SEED, "webhook_url": "https://hooks.example.com/"})
    ).parsed()["id"]
    status = (await harness.call("GET", f"/v1/crawls/{crawl_id}", key=key)).parsed()
    assert status["webhook"] is None
    attempts = (
        WebhookAttempt(attempt=1, sent_at=harness.clock.now(), status=503, retry_in_s=10.0),
        WebhookAttempt(attempt=2, sent_at=harness.clock.now(), status=204, signed=True),
    )
    record = WebhookDeliveries(
        tenant_id=tenant_id, crawl_id=crawl_id, state="delivered", attempts=attempts
    )
    await webhook_deliveries_table(harness.records).create(tenant_id, crawl_id, record)
    status = (await harness.call("GET", f"/v1/crawls/{crawl_id}", key=key)).parsed()
    assert status["webhook"]["state"] == "delivered"
    assert [
        (a["attempt"], a["status"], a["retry_in_s"]) for a in status["webhook"]["attempts"]
    ] == [
        (1, 503, 10.0),
        (2, 204, None),
    ]


async def test_teardown_removes_the_secrets(harness: Harness, tenant: Tenant) -> None:
    tenant_id, key = tenant
    await harness.call("POST", "/v1/webhooks/secret", key=key, json_body={})
    assert await webhook_secrets_table(harness.records).get(tenant_id, SECRETS_KEY) is not None
    response = await harness.call("DELETE", f"/v1/tenants/{tenant_id}", key=OPERATOR_KEY)
    assert response.status == 204, response.body
    assert await webhook_secrets_table(harness.records).get(tenant_id, SECRETS_KEY) is None


async def test_revoking_drops_every_secret_at_once(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    assert_problem(await harness.call("DELETE", "/v1/webhooks/secret", key=key), 404)
    await harness.call("POST", "/v1/webhooks/secret", key=key, json_body={})
    await harness.call("POST", "/v1/webhooks/secret", key=key, json_body={"grace_s": 600})
    revoked = await harness.call("DELETE", "/v1/webhooks/secret", key=key)
    assert revoked.status == 204
    assert_problem(await harness.call("GET", "/v1/webhooks/secret", key=key), 404)
