"""Where a tenant's data lives: the shared store (pooled) or a store of its own (dedicated).

``SKYCRAWL_TENANT_DATA`` chooses, for the whole deployment:

``pooled`` (the default)
    Every record of every tenant in the control plane's one store, partitioned by tenant id
    (DynamoDB ``pk``, Table storage ``PartitionKey``, a Firestore sub-collection, a column of
    the PostgreSQL / SQLite table). One table to deploy, back up and pay for; a tenant's
    records are deleted one by one on teardown, and a busy tenant shares the table's
    throughput (hot partitions) with every other.
``dedicated``
    The tenant's data records -- ``TENANT_DATA_TABLES``: its crawls, their listing and
    finished indexes, its usage buckets -- in a store of its own (``core.ports.tenant_stores``),
    created by the provisioner with the tenant and dropped whole on teardown; everything the
    control plane decides with (tenants, API keys, containers, fleets, sessions, the
    ``active`` and ``backlog`` indexes, rate counters ...) stays in the control plane's store,
    so the conductor reads its routing records where it always did.

``TenantDataRouter`` is the StateStore the core sees in dedicated mode: a call on a tenant
data table goes to the store of the tenant named by the partition (every such table is
partitioned by tenant id), any other call to the control plane's store. In pooled mode the
providers hand the core their store directly: no router, nothing added on the hot path.
``scan`` of a tenant data table (the operator console only) reads every active tenant's store.
A tenant's store that is gone (its teardown dropped it; each adapter says so with
``core.errors.NotFound``) reads as empty, as the tenant's records do in pooled mode once
deleted, and refuses writes: nothing makes it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from core.errors import NotFound
from core.ports.state_store import Item, StateStore
from core.ports.tenant_stores import TenantStores

TenantDataMode = Literal["pooled", "dedicated"]

#: Tables whose records belong to one tenant's data (partition = tenant id) and move to the
#: tenant's own store in dedicated mode. ``usage`` is ``core.metering``'s.
TENANT_DATA_TABLES = frozenset({"crawls", "listing", "finished", "usage"})

# Where core.tenancy keeps the tenant records (table ``tenants``, partition ``tenants``).
_TENANTS_TABLE = "tenants"
_TENANTS_PARTITION = "tenants"


class TenantDataRouter:
    """StateStore sending tenant data tables to each tenant's own store (dedicated mode)."""

    def __init__(
        self,
        control: StateStore,
        stores: TenantStores,
        *,
        tables: frozenset[str] = TENANT_DATA_TABLES,
    ) -> None:
        self.control = control
        self.stores = stores
        self.tables = tables
        self.capabilities = control.capabilities
        self._open: dict[str, StateStore] = {}

    def _store(self, table: str, partition: str) -> StateStore:
        if table not in self.tables:
            return self.control
        store = self._open.get(partition)
        if store is None:
            store = self._open[partition] = self.stores.open_store(partition)
        return store

    async def get(self, *, table: str, partition: str, key: str) -> Item | None:
        """None also when the tenant's store is gone (a late message after its teardown
        reads what it would read in pooled mode: nothing)."""
        try:
            return await self._store(table, partition).get(
                table=table, partition=partition, key=key
            )
        except NotFound:
            return None

    async def create(
        self,
        *,
        table: str,
        partition: str,
        key: str,
        data: Mapping[str, Any],
        expires_at: datetime | None = None,
    ) -> Item:
        return await self._store(table, partition).create(
            table=table, partition=partition, key=key, data=data, expires_at=expires_at
        )

    async def replace(
        self, *, item: Item, data: Mapping[str, Any], expires_at: datetime | None = None
    ) -> Item:
        store = self._store(item.table, item.partition)
        return await store.replace(item=item, data=data, expires_at=expires_at)

    async def delete(self, *, item: Item) -> None:
        await self._store(item.table, item.partition).delete(item=item)

    async def query(
        self, *, table: str, partition: str, limit: int | None = None, after: str | None = None
    ) -> list[Item]:
        """Empty also when the tenant's store is gone (see ``get``)."""
        try:
            return await self._store(table, partition).query(
                table=table, partition=partition, limit=limit, after=after
            )
        except NotFound:
            return []

    async def scan(self, *, table: str) -> list[Item]:
        if table not in self.tables:
            return await self.control.scan(table=table)
        tenants = await self.control.query(table=_TENANTS_TABLE, partition=_TENANTS_PARTITION)
        found: list[Item] = []
        for tenant in tenants:
            if tenant.data.get("state", "active") != "active":
                continue  # being torn down: its store may be gone already
            found.extend(await self._store(table, tenant.key).scan(table=table))
        return sorted(found, key=lambda item: (item.partition, item.key))

    async def forget(self, tenant_id: str) -> None:
        """Close the client on a tenant's store (after its teardown dropped it)."""
        store = self._open.pop(tenant_id, None)
        if store is not None:
            await store.close()

    async def close(self) -> None:
        opened, self._open = list(self._open.values()), {}
        results = await asyncio.gather(*(store.close() for store in opened), return_exceptions=True)
        await self.stores.close()
        await self.control.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result


def routed_state(control: StateStore, stores: TenantStores | None) -> StateStore:
    """What a provider hands the core: ``control`` itself in pooled mode (``stores`` None),
    a ``TenantDataRouter`` over it and ``stores`` in dedicated mode."""
    return control if stores is None else TenantDataRouter(control, stores)


def dedicated_tables(state: StateStore) -> frozenset[str]:
    """The tables ``state`` keeps in each tenant's own store (none in pooled mode)."""
    return state.tables if isinstance(state, TenantDataRouter) else frozenset()


async def forget_tenant(state: StateStore, tenant_id: str) -> None:
    """After a teardown: release the client on the tenant's store, if ``state`` has one."""
    if isinstance(state, TenantDataRouter):
        await state.forget(tenant_id)
