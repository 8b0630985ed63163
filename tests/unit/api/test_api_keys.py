"""A tenant's own API keys: create, rotate, revoke (shown once, hashes only), and teardown."""

from __future__ import annotations

from api_harness import OPERATOR_KEY, Harness, assert_problem


async def test_create_lists_prefix_only_and_the_new_key_works(harness: Harness) -> None:
    _tenant_id, key = await harness.create_tenant("acme")
    created = await harness.call("POST", "/v1/keys", key=key)
    assert created.status == 201
    new = created.parsed()
    assert new["api_key"].startswith(f"sk_{new['prefix']}_")
    listed = (await harness.call("GET", "/v1/keys", key=new["api_key"])).parsed()
    assert {k["prefix"] for k in listed["items"]} == {key.split("_")[1], new["prefix"]}
    assert "api_key" not in listed["items"][0]
    assert new["api_key"] not in str(await harness.state.scan(table="api_keys"))


async def test_rotate_replaces_the_key_the_old_one_stops_working(harness: Harness) -> None:
    _, key = await harness.create_tenant("acme")
    prefix = key.split("_")[1]
    rotated = await harness.call("POST", f"/v1/keys/{prefix}/rotate", key=key)
    assert rotated.status == 201
    new_key = rotated.parsed()["api_key"]
    assert_problem(await harness.call("GET", "/v1/crawls", key=key), 401)
    assert (await harness.call("GET", "/v1/crawls", key=new_key)).status == 200
    listed = (await harness.call("GET", "/v1/keys", key=new_key)).parsed()["items"]
    assert [k["prefix"] for k in listed] == [rotated.parsed()["prefix"]]


async def test_the_last_key_cannot_be_revoked_others_can(harness: Harness) -> None:
    _, key = await harness.create_tenant("acme")
    prefix = key.split("_")[1]
    problem = assert_problem(await harness.call("DELETE", f"/v1/keys/{prefix}", key=key), 409)
    assert "last" in problem["detail"]
    second = (await harness.call("POST", "/v1/keys", key=key)).parsed()
    assert (await harness.call("DELETE", f"/v1/keys/{prefix}", key=second["api_key"])).status == 204
    assert_problem(await harness.call("GET", "/v1/crawls", key=key), 401)


async def test_another_tenants_key_is_not_found(harness: Harness) -> None:
    _, key_a = await harness.create_tenant("a")
    _, key_b = await harness.create_tenant("b")
    prefix_b = key_b.split("_")[1]
    assert_problem(await harness.call("POST", f"/v1/keys/{prefix_b}/rotate", key=key_a), 404)
    assert_problem(await harness.call("DELETE", f"/v1/keys/{prefix_b}", key=key_a), 404)
    assert (await harness.call("GET", "/v1/crawls", key=key_b)).status == 200


async def test_teardown_removes_every_key_and_the_web_app_address(harness: Harness) -> None:
    tenant_id, key = await harness.create_tenant("acme")
    extra = (await harness.call("POST", "/v1/keys", key=key)).parsed()["api_key"]
    view = (await harness.call("GET", f"/v1/tenants/{tenant_id}", key=OPERATOR_KEY)).parsed()
    assert view["resources"]["web_app"] == f"https://api.example.test/t/{tenant_id}/"
    deleted = await harness.call("DELETE", f"/v1/tenants/{tenant_id}", key=OPERATOR_KEY)
    assert deleted.status == 204
    assert_problem(await harness.call("GET", "/v1/crawls", key=extra), 401)
    assert await harness.count("api_keys") == 0
    assert await harness.count("key_index") == 0


async def test_operator_key_cannot_manage_tenant_keys(harness: Harness) -> None:
    await harness.create_tenant("acme")
    assert_problem(await harness.call("POST", "/v1/keys", key=OPERATOR_KEY), 403)
