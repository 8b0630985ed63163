"""``/v1/schedules`` (issue 12): cron + IANA zone + a crawl request; list, pause, resume,
delete; the first fire is sent with a relative delay to the next occurrence."""

from __future__ import annotations

from api_harness import SEED, START, Harness, assert_problem

from core.delivery_models import Schedule, schedules_table
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


async def test_a_schedule_shows_the_occurrences_its_budget_skipped(
    harness: Harness, tenant: Tenant
) -> None:
    tenant_id, key = tenant
    made = await _create(harness, key)
    path = f"/v1/schedules/{made['id']}"
    assert (made["skipped"], made["last_skipped_at"], made["last_skip_reason"]) == (0, None, None)

    def skipped(s: Schedule) -> Schedule:  # what the conductor stores over budget
        reason = "budget reached (6.00 of 5 spent in 2030-01)"
        update = {"skipped": 1, "last_skipped_at": START, "last_skip_reason": reason}
        return s.model_copy(update=update)

    await schedules_table(harness.records).mutate(tenant_id, made["id"], skipped)
    shown = (await harness.call("GET", path, key=key)).parsed()

    assert (shown["state"], shown["runs"], shown["skipped"]) == ("active", 0, 1)
    assert shown["last_skipped_at"] == START.isoformat().replace("+00:00", "Z")
    assert shown["last_skip_reason"].startswith("budget reached")
    await harness.inbox()
    await harness.call("POST", f"{path}/pause", key=key)
    await harness.call("POST", f"{path}/resume", key=key)
    [fire] = [m for m in await harness.inbox() if isinstance(m, ScheduleFire)]
    assert fire.skipped == 1, "a fire carries the count, so a stale skipped fire is a duplicate"
