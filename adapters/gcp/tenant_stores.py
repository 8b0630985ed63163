"""GCP TenantStores: Firestore collections per tenant, for ``SKYCRAWL_TENANT_DATA=dedicated``.

Features
    The store of tenant ``T`` is named ``<SKYCRAWL_GCP_FIRESTORE_PREFIX>t-<t>-<8 hex>``
    (``store_name``: the tenant id lowercased, ``-`` for other characters, shortened; 8 hex of
    its SHA-256). Its records live in root collections of their own, laid out as the shared
    ones (``FirestoreStateStore`` with ``<name>-`` as its prefix:
    ``<name>-crawls/<tenant>/<name>-crawls-items/<crawl>``), so no query, index or collection
    group of one tenant ever touches another's. Firestore has no collection to create: what
    ``create_store`` makes is the store's marker document ``<prefix>tenant-stores/<name>``
    (the tenant id and when it was provisioned), which a tenant store checks before its first
    write, so that a late write after the teardown does not make the collections again.
    ``drop_store`` deletes every document of the store's collections and sub-collections, in
    batched commits of 500 (listed with ``list_documents``: ``recursive_delete``'s
    all-descendants query leaves the nested documents behind on the emulator), then the
    marker;
    ``open_store`` is a ``FirestoreStateStore`` on the one client every tenant store shares.

Why not a database per tenant
    ``firestore_admin_v1`` ``create_database`` takes minutes, and a project holds a limited
    number of databases (a quota); collections cost nothing until written and go with the
    documents in them.

Limits and cost
    A tenant's teardown deletes its documents one by one (each billed as a delete), within
    Firestore's write limits; its throughput is the database's, shared with every tenant, as
    in pooled mode.

Settings
    ``SKYCRAWL_GCP_FIRESTORE_PREFIX``, ``SKYCRAWL_TENANT_DATA=dedicated``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.async_collection import AsyncCollectionReference
from google.cloud.firestore_v1.async_document import AsyncDocumentReference

from adapters.gcp.errors import translate
from adapters.gcp.state_store import FirestoreStateStore, close_client
from core.clock import Clock
from core.layout import tenant_store_name

#: Deletes per batched commit (Firestore allows 500 writes in one).
_BATCH = 500


class FirestoreTenantStores:
    """Collections of its own per tenant, with a marker document per provisioned tenant."""

    def __init__(
        self,
        *,
        client: firestore.AsyncClient,
        prefix: str = "skycrawl-",
        clock: Clock | None = None,
        owns_client: bool = True,
    ) -> None:
        """``owns_client=False``: ``close`` leaves ``client`` open (the provider shares the
        control plane's Firestore client, closed by its state store)."""
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._owns_client = owns_client

    def store_name(self, tenant_id: str) -> str:
        return tenant_store_name(f"{self._prefix}t-", tenant_id, max_chars=120, separator="-")

    def _marker(self, name: str) -> AsyncDocumentReference:
        return self._client.collection(f"{self._prefix}tenant-stores").document(name)

    async def create_store(self, *, tenant_id: str) -> str:
        name = self.store_name(tenant_id)
        marker = {"tenant_id": tenant_id, "provisioned_at": datetime.now(UTC)}
        try:
            await self._marker(name).create(marker)
        except gexc.AlreadyExists:
            pass  # provisioned already: keep the first date
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"provisioning {name}") from exc
        return name

    async def drop_store(self, *, tenant_id: str) -> None:
        name = self.store_name(tenant_id)
        try:
            async for collection in self._client.collections():
                if collection.id.startswith(f"{name}-"):
                    await self._delete_tree(collection)
            await self._marker(name).delete()
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"deleting {name}") from exc

    async def _delete_tree(self, collection: AsyncCollectionReference) -> None:
        """Every document of ``collection`` and of the collections under them, in batches of
        ``_BATCH``. Documents are listed with ``list_documents``, which also yields the
        partition documents that hold only sub-collections (never written themselves)."""
        batch, pending = self._client.batch(), 0
        async for document in collection.list_documents(page_size=_BATCH):
            async for sub in document.collections():
                await self._delete_tree(sub)
            batch.delete(document)
            pending += 1
            if pending == _BATCH:
                await batch.commit()
                batch, pending = self._client.batch(), 0
        if pending:
            await batch.commit()

    def open_store(self, tenant_id: str) -> FirestoreStateStore:
        name = self.store_name(tenant_id)
        return FirestoreStateStore(
            client=self._client,
            prefix=f"{name}-",
            clock=self._clock,
            marker=self._marker(name),
            owns_client=False,
        )

    async def close(self) -> None:
        if self._owns_client:
            await close_client(self._client)
