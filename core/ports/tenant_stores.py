"""TenantStores port: one StateStore per tenant, for ``SKYCRAWL_TENANT_DATA=dedicated``.

In dedicated mode a tenant's data records (``core.tenant_data.TENANT_DATA_TABLES``: its
crawls, their listings and its usage) live in a store of the tenant's own -- a DynamoDB table,
an Azure table, a PostgreSQL schema, a SQLite file, a Firestore collection prefix -- whose name
is derived from the tenant id, so that no lookup is needed to find it. The provisioner creates
it (``create_store``) with the tenant's other resources and removes it on teardown
(``drop_store``); ``core.tenant_data.TenantDataRouter`` sends the tenant's records to it
(``open_store``). ``tests/contract/test_tenant_stores.py`` runs against every implementation.
"""

from __future__ import annotations

from typing import Protocol

from core.ports.state_store import StateStore


class TenantStores(Protocol):
    def store_name(self, tenant_id: str) -> str:
        """The name of the tenant's store (``InvalidRequest`` for a bad tenant id)."""
        ...

    async def create_store(self, *, tenant_id: str) -> str:
        """Create the tenant's store, ready to use when this returns; idempotent. Returns
        ``store_name(tenant_id)``."""
        ...

    async def drop_store(self, *, tenant_id: str) -> None:
        """Remove the tenant's store and everything in it; a missing store is fine."""
        ...

    def open_store(self, tenant_id: str) -> StateStore:
        """A client on the tenant's store (creating nothing); its ``close`` releases only
        what it opened itself, never a client it shares with the other tenants' stores."""
        ...

    async def close(self) -> None:
        """Release the clients shared by the stores this opened."""
        ...
