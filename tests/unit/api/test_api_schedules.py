"""``/v1/schedules`` (issue 12): cron + IANA zone + a crawl request; list, pause, resume,
delete; the first fire is sent with a relative delay to the next occurrence."""

from __future__ import annotations

from api_harness import SEED, Harness, assert_problem

from core.messages import ScheduleFire

Tenant = tuple[str, str]


async def _create(harness: Harness, key: str, **body: object) -> dict:
    payload = {"cron": "0 3 * * *", "crawl": SEED, **body}
    response = await harness.call("POST", "/v1/schedules", key=key, json_body=payload)
    assert response.status == 201, response.body
    return response.parsed()  # type: ignore[no-any-return]


async def test_a_schedule_fires_at_the_next_occurrence_in_its_zone(
    harness: Harness, tenant: Tenant
) -> None:
    tenant_id, key = tenant  # the clock reads 2030-01-01 00:00:10 UTC
    utc = await _create(harness, key)
    berlin = await _create(harness, key, timezone="Europe/Berlin")
    assert utc["next_run_at"] == "2030-01-01T03:00:00Z"
    assert berlin["next_run_at"] == "2030-01-01T03:00:00+01:00"
    assert await harness.inbox() == [
        ScheduleFire(
            tenant_id=tenant_id, schedule_id=utc["id"], generation=0, run=1, remaining_s=10790.0
        ),
        ScheduleFire(
            tenant_id=tenant_id, schedule_id=berlin["id"], generation=0, run=1, remaining_s=7190.0
        ),
    ]
    listed = (await harness.call("GET", "/v1/schedules", key=key)).parsed()["items"]
    assert {s["id"] for s in listed} == {utc["id"], berlin["id"]}


async def test_pause_resume_and_delete(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    made = await _create(harness, key)
    await harness.inbox()
    path = f"/v1/schedules/{made['id']}"
    paused = (await harness.call("POST", f"{path}/pause", key=key)).parsed()
    assert paused["state"] == "paused"
    assert paused["next_run_at"] is None
    resumed = (await harness.call("POST", f"{path}/resume", key=key)).parsed()
    assert resumed["state"] == "active"
    assert [m.generation for m in await harness.inbox()] == [2], "a new fire, new generation"
    assert (await harness.call("DELETE", path, key=key)).status == 204
    assert_problem(await harness.call("GET", path, key=key), 404)


async def test_bad_schedules_are_422_naming_the_field(harness: Harness, tenant: Tenant) -> None:
    for body, field in (
        ({"cron": "61 * * * *", "crawl": SEED}, "cron"),
        ({"cron": "every day", "crawl": SEED}, "cron"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus", "crawl": SEED}, "timezone"),
        ({"cron": "0 3 * * *", "crawl": {"seeds": ["ftp://x.test/"]}}, "crawl"),
    ):
        response = await harness.call("POST", "/v1/schedules", key=tenant[1], json_body=body)
        problem = assert_problem(response, 422)
        assert problem["errors"][0]["loc"][0] == field
    await harness.assert_nothing_stored()


async def test_another_tenants_schedule_is_404(harness: Harness, tenant: Tenant) -> None:
    made = await _create(harness, tenant[1])
    _, other = await harness.create_tenant("other")
    assert_problem(await harness.call("GET", f"/v1/schedules/{made['id']}", key=other), 404)
    assert_problem(await harness.call("POST", f"/v1/schedules/{made['id']}/pause", key=other), 404)
