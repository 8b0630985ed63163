"""Authentication: tenant keys, the operator key, and who may call what."""

from __future__ import annotations

import pytest
from api_harness import OPERATOR_KEY, SEED, Harness, assert_problem, make_settings

from core.errors import Unauthorized
from core.models import TenantState
from core.tenancy import TenantService, generate_api_key

Tenant = tuple[str, str]


def assert_unauthorized(response: object) -> None:
    problem = assert_problem(response, 401)  # type: ignore[arg-type]
    assert problem["type"] == "about:blank"
    assert response.headers["www-authenticate"].startswith("Bearer")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token sk_abcdef01_" + "A" * 43,
        "Bearer sk_short_secret",
        "Bearer sk_ABCDEF01_" + "A" * 43,  # prefix must be lower-case hex
        "Bearer sk_abcdef01_" + "A" * 42,
        "Bearer sk_abcdef01_" + "A" * 43 + " extra",
        "Bearer " + OPERATOR_KEY + "x",
    ],
)
async def test_missing_or_malformed_key_is_401_and_stores_nothing(
    harness: Harness, tenant: Tenant, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    response = await harness.call("POST", "/v1/crawls", json_body=SEED, headers=headers)
    assert_unauthorized(response)
    await harness.assert_nothing_stored()


async def test_wrong_secret_for_a_known_prefix_is_401(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    prefix = key.split("_")[1]
    forged = f"sk_{prefix}_{generate_api_key()[0].split('_', 2)[2]}"
    assert forged != key
    assert_unauthorized(await harness.submit(forged))
    unknown = generate_api_key()[0]
    assert_unauthorized(await harness.submit(unknown))
    await harness.assert_nothing_stored()


async def test_bearer_scheme_is_case_insensitive(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    response = await harness.call("GET", "/v1/crawls", headers={"authorization": f"bearer {key}"})
    assert response.status == 200


async def test_deleted_tenants_key_is_401(harness: Harness, tenant: Tenant) -> None:
    tenant_id, key = tenant
    assert (
        await harness.call("DELETE", f"/v1/tenants/{tenant_id}", key=OPERATOR_KEY)
    ).status == 204
    assert_unauthorized(await harness.submit(key))
    await harness.assert_nothing_stored()


async def test_deleting_tenants_key_is_401(harness: Harness, tenant: Tenant) -> None:
    """Once teardown has started (state ``deleting``) the key stops working."""
    tenant_id, key = tenant
    await harness.records.tenants.mutate(
        "tenants", tenant_id, lambda t: t.model_copy(update={"state": TenantState.deleting})
    )
    with pytest.raises(Unauthorized):
        await harness.tenants.authenticate(f"Bearer {key}")
    assert_unauthorized(await harness.submit(key))


OPERATOR_ROUTES = [
    ("POST", "/v1/tenants"),
    ("GET", "/v1/tenants"),
    ("GET", "/v1/tenants/tn_00000000000000000000000000000000"),
    ("DELETE", "/v1/tenants/tn_00000000000000000000000000000000"),
    ("GET", "/v1/containers"),
]


@pytest.mark.parametrize(("method", "path"), OPERATOR_ROUTES)
async def test_operator_routes_refuse_tenant_keys_with_403(
    harness: Harness, tenant: Tenant, method: str, path: str
) -> None:
    tenant_id, key = tenant
    body = {"name": "sneaky"} if method == "POST" else None
    problem = assert_problem(await harness.call(method, path, key=key, json_body=body), 403)
    assert "operator" in problem["detail"]
    assert [t.id for t in await harness.tenants.list()] == [tenant_id]


@pytest.mark.parametrize(("method", "path"), OPERATOR_ROUTES)
async def test_operator_routes_refuse_missing_or_wrong_keys_with_401(
    harness: Harness, method: str, path: str
) -> None:
    body = {"name": "sneaky"} if method == "POST" else None
    assert_unauthorized(await harness.call(method, path, json_body=body))
    assert_unauthorized(await harness.call(method, path, key="not-the-operator", json_body=body))
    assert await harness.tenants.list() == []


async def test_tenant_routes_refuse_the_operator_key_with_403(harness: Harness) -> None:
    assert_problem(await harness.submit(OPERATOR_KEY), 403)
    assert_problem(await harness.call("GET", "/v1/crawls", key=OPERATOR_KEY), 403)
    await harness.assert_nothing_stored()


async def test_without_an_operator_key_every_operator_call_is_401(harness: Harness) -> None:
    api = harness.with_settings(operator_key=None)
    for method, path in OPERATOR_ROUTES:
        response = await harness.call(method, path, key=OPERATOR_KEY, json_body=None, api=api)
        assert_unauthorized(response)
    empty = harness.with_settings(operator_key="")
    assert_unauthorized(await harness.call("GET", "/v1/tenants", key="", api=empty))
    service = TenantService(
        harness.records,
        harness.provisioner,
        harness.bus,
        harness.blobs,
        harness.runtime_for,
        harness.clock,
        make_settings(operator_key=None),
    )
    with pytest.raises(Unauthorized):
        service.authenticate_operator(f"Bearer {OPERATOR_KEY}")


def test_generated_keys_have_the_documented_shape() -> None:
    keys = {generate_api_key() for _ in range(200)}
    assert len(keys) == 200
    for plaintext, prefix, digest in keys:
        head, got_prefix, secret = plaintext.split("_", 2)
        assert head == "sk"
        assert got_prefix == prefix
        assert len(prefix) == 8
        assert len(secret) == 43
        assert len(digest) == 64
        assert plaintext not in digest
