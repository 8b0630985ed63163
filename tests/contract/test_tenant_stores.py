"""TenantStores contract (dedicated tenant data): each tenant's own store is created exactly
once, holds that tenant's crawl records and no one else's, and is dropped whole.

Run against every backend's stores (``TENANT_STORES_FACTORIES``: SQLite files, PostgreSQL
schemas, DynamoDB tables on the moto server ...), listing what exists with the backend's own
API before and after."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from core.errors import Conflict, InvalidRequest, NotFound
from core.models import Container, Crawl, CrawlSpec, Egress, Tenant
from core.records import Records
from core.tenant_data import TenantDataRouter

if TYPE_CHECKING:
    from tests.contract.harness import TenantStoresHarness

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def tenant_id() -> str:
    return f"tn_{uuid.uuid4().hex}"


def crawl(tenant: str, number: int) -> Crawl:
    return Crawl(
        id=f"cr_{number:04d}",
        tenant_id=tenant,
        spec=CrawlSpec(seeds=["https://example.com/"]),
        created_at=NOW,
        updated_at=NOW,
    )


async def test_create_is_idempotent_and_drop_removes_everything(
    tenant_stores_h: TenantStoresHarness,
) -> None:
    stores, tenant = tenant_stores_h.stores, tenant_id()
    before = await tenant_stores_h.listing()
    name = await stores.create_store(tenant_id=tenant)
    assert name == stores.store_name(tenant)
    assert await tenant_stores_h.listing() - before == {name}

    store = stores.open_store(tenant)
    try:
        item = await store.create(table="crawls", partition=tenant, key="cr_1", data={"n": 1})
        assert await stores.create_store(tenant_id=tenant) == name  # again: nothing changes
        assert await tenant_stores_h.listing() - before == {name}
        assert await store.get(table="crawls", partition=tenant, key="cr_1") == item
    finally:
        await store.close()

    await stores.drop_store(tenant_id=tenant)
    assert await tenant_stores_h.listing() == before
    await stores.drop_store(tenant_id=tenant)  # gone already: fine
    assert await tenant_stores_h.listing() == before


async def test_a_dropped_store_is_not_made_again_by_a_late_write(
    tenant_stores_h: TenantStoresHarness,
) -> None:
    """After the teardown a late message (a container's report, a retried submission) reads
    the tenant's records as gone, as in pooled mode, and cannot write them back."""
    stores, tenant = tenant_stores_h.stores, tenant_id()
    before = await tenant_stores_h.listing()
    await stores.create_store(tenant_id=tenant)
    await stores.drop_store(tenant_id=tenant)
    router = TenantDataRouter(tenant_stores_h.control, stores)
    try:
        assert await router.get(table="crawls", partition=tenant, key="late") is None
        assert await router.query(table="crawls", partition=tenant) == []
        with pytest.raises(NotFound):
            await router.create(table="crawls", partition=tenant, key="late", data={})
    finally:
        await router.forget(tenant)
    assert await tenant_stores_h.listing() == before


async def test_router_keeps_each_tenants_crawls_in_its_own_store(
    tenant_stores_h: TenantStoresHarness,
) -> None:
    stores, control = tenant_stores_h.stores, tenant_stores_h.control
    a, b = tenant_id(), tenant_id()
    router = TenantDataRouter(control, stores)
    records = Records(router)
    try:
        for tenant in (a, b):
            await stores.create_store(tenant_id=tenant)
            await records.tenants.create(
                "tenants",
                tenant,
                Tenant(id=tenant, name=tenant, key_prefix="0", key_sha256="0", created_at=NOW),
            )
        await records.crawls.create(a, "cr_0001", crawl(a, 1))
        await records.crawls.create(a, "cr_0002", crawl(a, 2))
        await records.crawls.create(b, "cr_0001", crawl(b, 1))
        container = Container(id="c1", tenant_id=a, egress=Egress(name="local"), started_at=NOW)
        await records.containers.create(a, "c1", container)

        # A's crawls are in A's store, not in B's and not in the shared (control) store
        a_store, b_store = stores.open_store(a), stores.open_store(b)
        try:
            assert [i.key for i in await a_store.query(table="crawls", partition=a)] == [
                "cr_0001",
                "cr_0002",
            ]
            assert await b_store.query(table="crawls", partition=a) == []
            assert [i.key for i in await b_store.query(table="crawls", partition=b)] == ["cr_0001"]
            assert await a_store.get(table="containers", partition=a, key="c1") is None
        finally:
            await a_store.close()
            await b_store.close()
        assert await control.scan(table="crawls") == []
        assert await control.query(table="crawls", partition=a) == []
        # control-plane records stay in the control plane's store
        assert [i.key for i in await control.query(table="containers", partition=a)] == ["c1"]

        # through the router everything reads as one store, compare-and-set included
        found = await records.crawls.get(a, "cr_0002")
        assert found is not None
        assert found.value == crawl(a, 2)
        changed = found.value.model_copy(update={"reason": "changed"})
        await records.crawls.replace(found, changed)
        with pytest.raises(Conflict):
            await records.crawls.replace(found, changed)
        scanned = [(i.partition, i.key) for i in await router.scan(table="crawls")]
        assert scanned == sorted([(a, "cr_0001"), (a, "cr_0002"), (b, "cr_0001")])
        assert [c.id for c in await records.live_containers(a)] == ["c1"]
    finally:
        for tenant in (a, b):
            await router.forget(tenant)
            await stores.drop_store(tenant_id=tenant)
        await control.scan(table="tenants")  # still open: the harness closes it


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "a b", "-x", "x" * 65])
async def test_bad_tenant_ids_are_refused(tenant_stores_h: TenantStoresHarness, bad: str) -> None:
    with pytest.raises(InvalidRequest):
        tenant_stores_h.stores.store_name(bad)
    with pytest.raises(InvalidRequest):
        await tenant_stores_h.stores.create_store(tenant_id=bad)
