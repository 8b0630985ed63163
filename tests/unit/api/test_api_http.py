"""Routing, problems, health, OpenAPI, and the ASGI adapter (through httpx)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from api_harness import BASE_URL, OPERATOR_KEY, SEED, Harness, assert_problem
from openapi_spec_validator import validate

from core.api import ApiResponse
from core.api.routing import Context, Route, Router
from core.messages import CrawlSubmitted
from functions.local.asgi import create_asgi_app

Tenant = tuple[str, str]


async def test_healthz(harness: Harness) -> None:
    response = await harness.call("GET", "/healthz")
    assert response.status == 200
    assert response.parsed() == {"status": "ok"}


@pytest.mark.parametrize(
    "path", ["/", "/v2/crawls", "/v1/crawls/", "/v1/crawls/x/y/z", "/healthz/"]
)
async def test_unknown_route_is_404_problem(harness: Harness, path: str) -> None:
    problem = assert_problem(await harness.call("GET", path), 404)
    assert problem["instance"] == path


async def test_wrong_method_is_405_with_allow(harness: Harness, tenant: Tenant) -> None:
    response = await harness.call("PUT", "/v1/crawls", key=tenant[1])
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, POST"
    response = await harness.call("PATCH", "/v1/crawls/cr_1")
    assert response.headers["allow"] == "DELETE, GET"
    await harness.assert_nothing_stored()


async def test_unexpected_error_is_500_without_details(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(ctx: Context) -> ApiResponse:
        raise ValueError("secret internal detail")

    api = harness.api
    api.router = Router([*api.router.routes, Route("GET", "/boom", boom, "Boom", auth="none")])
    with caplog.at_level(logging.ERROR, logger="skycrawl.api"):
        response = await harness.call("GET", "/boom")
    problem = assert_problem(response, 500)
    assert b"secret internal detail" not in response.body
    assert problem["type"] == "about:blank"
    assert "secret internal detail" in caplog.text  # logged, with its traceback


# ------------------------------------------------------------------ OpenAPI


async def openapi(harness: Harness) -> dict[str, Any]:
    response = await harness.call("GET", "/openapi.json")
    assert response.status == 200
    document = response.parsed()
    assert isinstance(document, dict)
    return document


async def test_openapi_document_is_valid_3_1(harness: Harness) -> None:
    document = await openapi(harness)
    assert document["openapi"] == "3.1.0"
    validate(document)  # openapi-spec-validator: the whole document against the 3.1 schema


async def test_openapi_lists_every_route_with_security_and_schemas(harness: Harness) -> None:
    document = await openapi(harness)
    routes = {(r.method.lower(), r.path) for r in harness.api.router.routes}
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert documented == routes
    assert {
        "/v1/crawls",
        "/v1/crawls/{crawl_id}",
        "/v1/crawls/{crawl_id}/resume",
        "/v1/crawls/{crawl_id}/pages",
        "/v1/crawls/{crawl_id}/export",
        "/v1/crawls/{crawl_id}/screenshots/{name}",
        "/v1/crawls/{crawl_id}/items",
        "/v1/tenants",
        "/v1/tenants/{tenant_id}",
        "/v1/containers",
        "/v1/keys",
        "/v1/keys/{prefix}",
        "/v1/keys/{prefix}/rotate",
        "/healthz",
        "/openapi.json",
        "/v1/webhooks/secret",
        "/v1/schedules",
        "/v1/schedules/{schedule_id}",
        "/v1/schedules/{schedule_id}/pause",
        "/v1/schedules/{schedule_id}/resume",
        "/v1/schedules/{schedule_id}/runs",
        "/v1/usage",
        "/v1/budget",
    } == set(document["paths"])
    schemes = document["components"]["securitySchemes"]
    assert schemes["tenantKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Tenant key.",
    }
    schemas = document["components"]["schemas"]
    for name in (
        "CrawlSpec",
        "CrawlAccepted",
        "CrawlStatus",
        "PageList",
        "PageRecord",
        "Problem",
        "TenantCreate",
        "TenantCreated",
    ):
        assert name in schemas, name
    submit = document["paths"]["/v1/crawls"]["post"]
    assert submit["security"] == [{"tenantKey": []}]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CrawlSpec"
    }
    assert "application/problem+json" in submit["responses"]["422"]["content"]
    assert submit["responses"]["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    assert document["paths"]["/v1/tenants"]["post"]["security"] == [{"operatorKey": []}]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    either = [{"tenantKey": []}, {"operatorKey": []}]  # a tenant its own, the operator all
    assert document["paths"]["/v1/usage"]["get"]["security"] == either
    assert "402" in submit["responses"]  # a spent budget
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    text = json.dumps(document)
    assert "$defs" not in text
    assert document["servers"] == [{"url": BASE_URL}]


# ------------------------------------------------------------------ ASGI


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_asgi_app(harness.api))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_asgi_submit_and_read_back(
    harness: Harness, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    tenant_id, key = tenant
    auth = {"Authorization": f"Bearer {key}"}
    response = await client.post("/v1/crawls", json=SEED, headers=auth | {"Idempotency-Key": "a"})
    assert response.status_code == 202
    crawl_id = response.json()["id"]
    assert response.headers["location"] == f"{BASE_URL}/v1/crawls/{crawl_id}"
    assert await harness.inbox() == [CrawlSubmitted(tenant_id=tenant_id, crawl_id=crawl_id)]
    status = await client.get(f"/v1/crawls/{crawl_id}", headers=auth)
    assert status.json()["status"] == "pending"
    pages = await client.get(
        f"/v1/crawls/{crawl_id}/pages", params={"limit": "5", "cursor": ""}, headers=auth
    )
    assert pages.json() == {"items": [], "next_cursor": None}
    assert_problem_http(
        await client.get(f"/v1/crawls/{crawl_id}/pages", params={"limit": "0"}, headers=auth), 400
    )


def assert_problem_http(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert {"type", "title", "detail", "instance"} <= problem.keys()
    return problem  # type: ignore[no-any-return]


async def test_asgi_errors_are_problems(
    harness: Harness, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    response = await client.post("/v1/crawls", json=SEED)
    assert_problem_http(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_problem_http(await client.get("/nowhere"), 404)
    auth = {"Authorization": f"Bearer {tenant[1]}"}
    assert_problem_http(
        await client.post(
            "/v1/crawls", content=b"{", headers=auth | {"Content-Type": "application/json"}
        ),
        400,
    )
    assert_problem_http(
        await client.post(
            "/v1/crawls", content=b"{}", headers=auth | {"Content-Type": "text/plain"}
        ),
        415,
    )
    assert_problem_http(await client.get("/v1/tenants", headers=auth), 403)
    await harness.assert_nothing_stored()


async def test_asgi_oversize_body_is_413_declared_or_streamed(
    harness: Harness, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    auth = {"Authorization": f"Bearer {tenant[1]}", "Content-Type": "application/json"}
    limit = harness.settings.max_request_bytes
    big = json.dumps({"seeds": ["https://example.com/"], "include": ["x" * limit]}).encode()
    response = await client.post("/v1/crawls", content=big, headers=auth)
    assert_problem_http(response, 413)

    chunks_sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(1000):  # 16 MB if read to the end
            chunks_sent += 1
            yield b" " * 16384

    response = await client.post("/v1/crawls", content=stream(), headers=auth)
    assert_problem_http(response, 413)
    assert chunks_sent <= limit // 16384 + 2  # stopped reading just past the limit
    await harness.assert_nothing_stored()


async def test_asgi_operator_flow(harness: Harness, client: httpx.AsyncClient) -> None:
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    created = await client.post("/v1/tenants", json={"name": "acme"}, headers=operator)
    assert created.status_code == 201
    tenant_id = created.json()["id"]
    key = created.json()["api_key"]
    assert (await client.get("/v1/tenants", headers=operator)).json()["items"][0]["id"] == tenant_id
    deleted = await client.delete(f"/v1/tenants/{tenant_id}", headers=operator)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem_http(
        await client.get("/v1/crawls", headers={"Authorization": f"Bearer {key}"}), 401
    )


async def test_asgi_lifespan(harness: Harness) -> None:
    app = create_asgi_app(harness.api)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
