"""A tenant's Authorization and Cookie headers never travel on the bus nor sit in the
control plane's records: the API keeps them in the tenant's own prefix of the blob store and
the crawl carries only their names."""

from __future__ import annotations

import json

from api_harness import Harness

from adapters.local.message_bus import SqliteMessageBus
from core.layout import request_headers_key, tenant_prefix
from core.ports.message_bus import Queue

SECRET, COOKIE = "Bearer site-token-9f8e7d", "session=abc123secret"


async def _all_messages(bus: SqliteMessageBus, queue: str) -> list[bytes]:
    leases = await bus.receive(source=Queue(queue), max_messages=10)
    for lease in leases:
        await bus.release(lease=lease)
    return [lease.body + json.dumps(dict(lease.attributes)).encode() for lease in leases]


async def test_sensitive_headers_go_to_the_tenants_store_not_the_bus_or_state(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    body = {
        "seeds": ["https://example.com/"],
        "headers": {"Authorization": SECRET, "Cookie": COOKIE, "Accept-Language": "fr"},
        "sealed_headers": ["user-agent"],  # a tenant's own value here is ignored
    }
    response = await harness.call("POST", "/v1/crawls", key=key, json_body=body)
    assert response.status == 202, response.body
    crawl_id = response.parsed()["id"]

    crawl = (await harness.records.crawls.get(tenant_id, crawl_id)).value  # type: ignore[union-attr]
    assert crawl.spec.headers == {"accept-language": "fr"}
    assert crawl.spec.sealed_headers == ["authorization", "cookie"]
    stored = json.loads(await harness.blobs.get(key=request_headers_key(tenant_id, crawl_id)))
    assert stored == {"authorization": SECRET, "cookie": COOKIE}
    assert request_headers_key(tenant_id, crawl_id).startswith(tenant_prefix(tenant_id))

    # nowhere else: not in any record of the state store, not in any message on the bus
    for table in ("crawls", "active", "listing", "backlog", "idempotency"):
        for item in await harness.state.scan(table=table):
            text = json.dumps(item.data, default=str)
            assert "site-token" not in text, table
            assert "abc123secret" not in text, table
    for message in await _all_messages(harness.bus, harness.settings.inbox_queue):
        assert b"site-token" not in message
        assert b"abc123secret" not in message
    status = (await harness.call("GET", f"/v1/crawls/{crawl_id}", key=key)).body
    assert b"site-token" not in status


async def test_a_crawl_without_sensitive_headers_stores_nothing_extra(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    body = {"seeds": ["https://example.com/"], "headers": {"Accept": "text/html"}}
    response = await harness.call("POST", "/v1/crawls", key=key, json_body=body)
    crawl_id = response.parsed()["id"]
    assert not await harness.blobs.exists(key=request_headers_key(tenant_id, crawl_id))
    crawl = (await harness.records.crawls.get(tenant_id, crawl_id)).value  # type: ignore[union-attr]
    assert (crawl.spec.headers, crawl.spec.sealed_headers) == ({"accept": "text/html"}, [])
