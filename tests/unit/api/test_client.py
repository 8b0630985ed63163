"""The typed Python client (issue 12): one method per OpenAPI operation, sync and async,
answers as the API's models and problems as ``ApiError`` — against the real API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from api_harness import SEED, START, Harness

from core.layout import crawl_prefix
from core.metering import Meter, MeterEvent, Usage
from functions.local.asgi import create_asgi_app
from skycrawl_client import ApiError, AsyncSkycrawl, Skycrawl

Tenant = tuple[str, str]


async def test_every_operation_of_the_spec_has_a_client_method(harness: Harness) -> None:
    document = (await harness.call("GET", "/openapi.json")).parsed()
    operations = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    assert len(operations) >= 26
    missing = sorted(op for op in operations if not callable(getattr(AsyncSkycrawl, op, None)))
    assert missing == []


@pytest.fixture
async def client(harness: Harness, tenant: Tenant) -> AsyncIterator[AsyncSkycrawl]:
    transport = httpx.ASGITransport(app=create_asgi_app(harness.api))
    async with AsyncSkycrawl("http://testserver", api_key=tenant[1], transport=transport) as api:
        yield api


async def test_the_async_client_round_trips_typed_answers(
    harness: Harness, tenant: Tenant, client: AsyncSkycrawl
) -> None:
    accepted = await client.submit_crawl(SEED, idempotency_key="k1")
    again = await client.submit_crawl(SEED, idempotency_key="k1")
    assert again.id == accepted.id
    status = await client.get_crawl(accepted.id)
    assert status.status.value == "pending"
    assert [c.id for c in (await client.list_crawls(limit=5)).items] == [accepted.id]
    assert (await client.list_pages(accepted.id)).items == []
    prefix = crawl_prefix(tenant[0], accepted.id)
    await harness.blobs.put(key=f"{prefix}items.jsonl", data=b'{"a": 1}\n{"a": 2}\n')
    csv_text = b"".join([c async for c in client.export_crawl(accepted.id, format="items.csv")])
    assert csv_text.decode().splitlines() == ["a", "1", "2"]
    secret = await client.rotate_webhook_secret()
    assert (await client.get_webhook_secret()).current.id == secret.current.id
    await client.revoke_webhook_secrets()
    with pytest.raises(ApiError) as gone:
        await client.get_webhook_secret()
    assert gone.value.status == 404
    made = await client.create_schedule({"cron": "0 3 * * *", "crawl": SEED})
    assert (await client.pause_schedule(made.id)).state == "paused"
    await client.delete_schedule(made.id)
    assert (await client.list_schedules()).items == []
    assert (await client.cancel_crawl(accepted.id)).status.value == "cancelled"
    assert (await client.healthz()).status == "ok"
    assert await client.healthz_head() == 200


async def test_the_client_reads_usage_and_sets_a_budget(
    harness: Harness, tenant: Tenant, client: AsyncSkycrawl
) -> None:
    usage = Usage(cost=1.25, pages=4)
    event = MeterEvent(tenant_id=tenant[0], hour=START, event="crawl:x", usage=usage)
    await Meter(harness.state).apply(event)

    report = await client.get_usage(start="2030-01-01", end="2030-01-02", granularity="hour")
    set_ = await client.put_budget({"monthly_amount": 10, "thresholds": [50, 100]})
    await client.delete_budget()

    [mine] = report.tenants
    assert (mine.tenant_id, mine.total.cost, mine.total.pages) == (tenant[0], 1.25, 4)
    assert set_.budget is not None
    assert set_.budget.thresholds == [50, 100]
    assert set_.spent == 1.25
    assert (await client.get_budget()).budget is None


async def test_a_problem_is_an_api_error_with_its_fields(client: AsyncSkycrawl) -> None:
    with pytest.raises(ApiError) as caught:
        await client.submit_crawl({"seeds": ["https://example.com/"], "max_pages": "10"})
    assert caught.value.status == 422
    assert caught.value.errors[0]["loc"] == ["max_pages"]
    with pytest.raises(ApiError) as missing:
        await client.get_crawl("cr_" + "0" * 32)
    assert missing.value.status == 404
    with pytest.raises(ApiError) as forbidden:
        await client.list_tenants()
    assert forbidden.value.status == 403


@pytest.mark.e2e
def test_the_sync_client_against_skycrawl_up(tmp_path: Path) -> None:
    from tests.e2e.cli_support import free_port, skycrawl_up

    seed = f"http://127.0.0.1:{free_port()}/"  # nobody listens: nothing leaves the machine
    with skycrawl_up(tmp_path) as (_, url):
        operator_key = (tmp_path / ".skycrawl" / "operator.key").read_text().strip()
        with Skycrawl(url, api_key=operator_key) as operator:
            tenant = operator.create_tenant({"name": "client-test"})
            assert tenant.api_key.startswith("sk_")
        with Skycrawl(url, api_key=tenant.api_key) as api:
            accepted = api.submit_crawl({"seeds": [seed], "max_pages": 1})
            assert api.get_crawl(accepted.id).id == accepted.id
            exported = b"".join(api.export_crawl(accepted.id))
            assert isinstance(exported, bytes)
            api.cancel_crawl(accepted.id)
            with pytest.raises(ApiError):
                api.get_schedule("sc_nope")


async def test_the_cli_reaches_an_embedded_api_through_this_client(harness: Harness) -> None:
    """``skycrawl`` without a running server: the same typed client, in process, one per key
    (operator and tenant), with the API's problems as ``ApiError``."""
    from api_harness import OPERATOR_KEY

    from functions.local.client import CliClient

    cli = CliClient.in_process(harness.api)
    try:
        operator = cli.as_(OPERATOR_KEY)
        assert cli.as_(OPERATOR_KEY) is operator
        made = await operator.create_tenant({"name": "cli"})
        tenant = cli.as_(made.api_key)
        accepted = await tenant.submit_crawl(SEED)
        assert (await tenant.get_crawl(accepted.id)).status.value == "pending"
        with pytest.raises(ApiError) as refused:
            await tenant.list_tenants()  # a tenant key is not the operator's
        assert refused.value.status == 403
        assert [t.id for t in (await operator.list_tenants()).items] == [made.id]
    finally:
        await cli.close()
