"""TenantService directly: quotas under concurrency, rate buckets, key parsing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from api_harness import Harness

from core.errors import QuotaExceeded, Unauthorized
from core.models import Quotas
from core.tenancy import bearer_token, minute_bucket

Tenant = tuple[str, str]


async def test_concurrent_submissions_respect_the_rate_exactly(harness: Harness) -> None:
    _, key = await harness.create_tenant("busy", Quotas(submissions_per_minute=5))
    responses = await asyncio.gather(*(harness.submit(key) for _ in range(12)))
    assert sorted(r.status for r in responses) == [202] * 5 + [429] * 7
    assert await harness.count("crawls") == 5
    assert len(await harness.inbox()) == 5


async def test_concurrent_retries_with_one_idempotency_key_make_one_crawl(
    harness: Harness, tenant: Tenant
) -> None:
    _, key = tenant
    headers = {"Idempotency-Key": "retry-storm"}
    responses = await asyncio.gather(*(harness.submit(key, headers=headers) for _ in range(8)))
    accepted = {r.parsed()["id"] for r in responses if r.status == 202}
    assert len(accepted) == 1
    assert all(r.status in (202, 409) for r in responses)
    assert await harness.count("crawls") == 1
    assert await harness.count("active") == 1
    assert len(await harness.inbox()) == 1


async def test_rate_counters_expire(harness: Harness) -> None:
    tenant_id, _ = await harness.create_tenant("x", Quotas(submissions_per_minute=1))
    tenant = await harness.tenants.get(tenant_id)
    await harness.tenants.check_submission(tenant)
    with pytest.raises(QuotaExceeded) as info:
        await harness.tenants.check_submission(tenant)
    assert info.value.retry_after == 50
    assert await harness.count("rate") == 1
    harness.clock.advance(3 * 60)
    assert await harness.count("rate") == 0  # expired after 2 minutes
    await harness.tenants.check_submission(tenant)


def test_minute_bucket_and_retry_after_edges() -> None:
    bucket, next_minute = minute_bucket(datetime(2030, 5, 6, 7, 8, 59, 999_999, tzinfo=UTC))
    assert bucket == "20300506T0708"
    assert next_minute == datetime(2030, 5, 6, 7, 9, tzinfo=UTC)


async def test_retry_after_is_at_least_one_second(harness: Harness) -> None:
    tenant_id, _ = await harness.create_tenant("x", Quotas(submissions_per_minute=1))
    tenant = await harness.tenants.get(tenant_id)
    harness.clock.advance(49.9)  # hh:mm:59.9
    await harness.tenants.check_submission(tenant)
    with pytest.raises(QuotaExceeded) as info:
        await harness.tenants.check_submission(tenant)
    assert info.value.retry_after == 1


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER   abc ", "abc")],
)
def test_bearer_token(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer a b", "Basic abc", "Bearerabc"])
def test_bearer_token_refuses(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        bearer_token(header)
