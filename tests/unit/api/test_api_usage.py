"""``GET /v1/usage`` and the budget routes: what a tenant and the operator see, and the
402 a tenant gets once its monthly budget is spent."""

from __future__ import annotations

from datetime import timedelta

from api_harness import OPERATOR_KEY, START, Harness, assert_problem

from core.budgets import Budgets
from core.metering import EgressUsage, Meter, MeterEvent, Usage


async def _use(
    h: Harness, tenant_id: str, hours_after_start: float, cost: float, pages: int = 0
) -> None:
    usage = Usage(
        container_seconds=100.0,
        billed_seconds=100.0,
        cost=cost,
        pages=pages,
        egress={"local": EgressUsage(container_seconds=100.0, billed_seconds=100.0, cost=cost)},
    )
    at = START + timedelta(hours=hours_after_start)
    event = MeterEvent(tenant_id=tenant_id, hour=at, event=f"run:{at.isoformat()}", usage=usage)
    await Meter(h.state).apply(event)


async def test_a_tenant_sees_its_own_usage_per_day_and_per_hour(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    other_id, _ = await harness.create_tenant("other")
    await _use(harness, tenant_id, 0, 1.5, pages=10)
    await _use(harness, tenant_id, 2, 0.5, pages=5)
    await _use(harness, tenant_id, 30, 2.0)
    await _use(harness, other_id, 1, 99.0)
    harness.clock.advance(3 * 24 * 3600)
    query = {"from": "2030-01-01", "to": "2030-01-03T00:00:00Z"}

    by_day = await harness.call("GET", "/v1/usage", key=key, query=query)
    by_hour = await harness.call(
        "GET", "/v1/usage", key=key, query={**query, "granularity": "hour"}
    )

    assert by_day.status == 200, by_day.body
    [mine] = by_day.parsed()["tenants"]
    assert mine["tenant_id"] == tenant_id
    assert [p["start"][:10] for p in mine["periods"]] == ["2030-01-01", "2030-01-02"]
    assert [p["usage"]["cost"] for p in mine["periods"]] == [2.0, 2.0]
    assert mine["total"]["cost"] == 4.0
    assert mine["total"]["pages"] == 15
    assert mine["total"]["egress"]["local"]["container_seconds"] == 300.0
    hours = by_hour.parsed()["tenants"][0]["periods"]
    assert [p["start"][11:13] for p in hours] == ["00", "02", "06"]


async def test_a_tenant_cannot_read_another_tenants_usage(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    _, key = tenant
    other_id, _ = await harness.create_tenant("other")
    await _use(harness, other_id, 0, 99.0)

    response = await harness.call("GET", "/v1/usage", key=key, query={"tenant": other_id})

    assert_problem(response, 404)


async def test_the_operator_sees_every_tenant_or_one(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, _ = tenant
    other_id, _ = await harness.create_tenant("other")
    await _use(harness, tenant_id, 0, 1.0)
    await _use(harness, other_id, 0, 3.0)
    harness.clock.advance(7200)

    everyone = await harness.call("GET", "/v1/usage", key=OPERATOR_KEY)
    one = await harness.call("GET", "/v1/usage", key=OPERATOR_KEY, query={"tenant": other_id})
    unknown = await harness.call("GET", "/v1/usage", key=OPERATOR_KEY, query={"tenant": "t_nope"})

    costs = {t["tenant_id"]: t["total"]["cost"] for t in everyone.parsed()["tenants"]}
    assert costs == {tenant_id: 1.0, other_id: 3.0}
    assert [t["tenant_id"] for t in one.parsed()["tenants"]] == [other_id]
    assert_problem(unknown, 404)


async def test_bad_usage_queries_are_problems_and_an_empty_range_is_empty(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    await _use(harness, tenant_id, 0, 1.0)

    bad_date = await harness.call("GET", "/v1/usage", key=key, query={"from": "yesterday"})
    bad_unit = await harness.call("GET", "/v1/usage", key=key, query={"granularity": "week"})
    backwards = await harness.call(
        "GET", "/v1/usage", key=key, query={"from": "2030-02-01", "to": "2030-01-01"}
    )
    nobody = await harness.call("GET", "/v1/usage")

    assert "from" in assert_problem(bad_date, 400)["detail"]
    assert "granularity" in assert_problem(bad_unit, 400)["detail"]
    assert backwards.status == 200
    assert backwards.parsed()["tenants"][0]["periods"] == []
    assert_problem(nobody, 401)


async def test_a_spent_budget_refuses_new_crawls_with_402_until_it_is_raised(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    put = await harness.call(
        "PUT", "/v1/budget", key=key, json_body={"monthly_amount": 5, "thresholds": [80, 50]}
    )
    assert put.status == 200, put.body
    assert put.parsed()["budget"]["thresholds"] == [50, 80]
    assert put.parsed()["reached"] is False
    await _use(harness, tenant_id, 0, 6.0)
    harness.clock.advance(3600)
    await Budgets(harness.records).evaluate(tenant_id, harness.clock.now())  # housekeeping's

    refused = await harness.submit(key)
    view = (await harness.call("GET", "/v1/budget", key=key)).parsed()
    raised = await harness.call("PUT", "/v1/budget", key=key, json_body={"monthly_amount": 50})
    accepted = await harness.submit(key)

    problem = assert_problem(refused, 402)
    assert problem["type"].endswith("budget-reached")
    assert "budget" in problem["detail"]
    assert (view["spent"], view["reached"]) == (6.0, True)
    assert raised.parsed()["reached"] is False
    assert accepted.status == 202, accepted.body


async def test_an_invalid_budget_is_refused_and_nothing_changes(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    _, key = tenant

    negative = await harness.call("PUT", "/v1/budget", key=key, json_body={"monthly_amount": -1})
    private = await harness.call(
        "PUT",
        "/v1/budget",
        key=key,
        json_body={"monthly_amount": 5, "webhook_url": "http://10.0.0.1/hook"},
    )
    after = (await harness.call("GET", "/v1/budget", key=key)).parsed()

    assert_problem(negative, 422)
    assert_problem(private, 422)
    assert after["budget"] is None


async def test_teardown_removes_the_usage_and_the_budget(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    await _use(harness, tenant_id, 0, 6.0)
    await harness.call("PUT", "/v1/budget", key=key, json_body={"monthly_amount": 5})
    assert await harness.count("budget_months") == 1

    response = await harness.call("DELETE", f"/v1/tenants/{tenant_id}", key=OPERATOR_KEY)

    assert response.status == 204, response.body
    assert await harness.count("usage") == 0
    assert await harness.count("budgets") == 0
    assert await harness.count("budget_months") == 0
