"""GCP Provisioner: per-tenant resources created from code with the client libraries.

For tenant ``T`` it creates (idempotently):

* the tenant's dispatch topic ``<SKYCRAWL_DISPATCH_TOPIC>-T`` (``core.layout.tenant_topic``)
  with its dead-letter topic and that topic's subscription, laid out as
  ``PubSubMessageBus.ensure_topic`` lays them out: the conductor publishes T's work there and
  T's containers create their filtered subscriptions on it, on no other topic;
* the marker object ``gs://<bucket>/tenants/T/.tenant.json`` recording the tenant and when it
  was provisioned: the tenant's prefix in the shared bucket (pages, manifests and exports live
  under ``tenants/T/``; an IAM condition on that prefix gives a tenant direct read access).

Given a ``TenantIam`` (``adapters.gcp.tenant_iam``; the provider passes one unless the bus is
an emulator), it also creates the tenant's **service account** ``sct-<slug>-<hash>`` with its
bindings -- publish on the inbox and on the tenant's dead-letter topic, ``objectAdmin`` on
``tenants/T/`` under an IAM condition -- which the tenant's containers run as, and grants it
nothing else (each container's subscription is granted when it is made, see there).

``provision`` returns ``{"dispatch_topic", "marker"}`` (the topic's name and a ``gs://``
URL) plus ``"engine_service_account"`` (the account's e-mail) with identities; ``teardown``
deletes the tenant's Cloud Run job in each region (``CloudRunRuntime`` makes it on the
tenant's first start there), removes the account's bindings and the account, then deletes
the topic with every subscription still on it (their grants go with them), its dead-letter
topic and subscription, and the marker (missing ones are fine). It does not delete the
tenant's other blobs: ``core.tenancy`` does that through the BlobStore before teardown.
State stays in the shared Firestore database, partitioned by tenant (pooled mode), unless
``SKYCRAWL_TENANT_DATA=dedicated``: then ``provision`` also makes the tenant's own Firestore
collections (``adapters.gcp.tenant_stores``: their marker document) and adds
``"tenant_store"``, and ``teardown`` deletes them with every document in them.

Limits and cost
    Tenant ids are 1-64 letters, digits, ``_`` or ``-`` starting with a letter or digit, else
    ``core.errors.InvalidRequest``. A project holds 10,000 topics (one per tenant, plus two);
    a topic, 10,000 subscriptions (each tenant's live containers at most). Topics and
    subscriptions cost nothing while idle; the marker is one tiny object; service accounts
    are free (100 per project by default: raise the quota for more tenants). Needs
    ``roles/pubsub.editor`` and object create/delete on the bucket, and with identities what
    ``tenant_iam`` lists (service account admin, policy writes on topics, subscriptions and
    the bucket).

Settings
    ``SKYCRAWL_GCP_PROJECT``, ``SKYCRAWL_GCP_BUCKET``, ``SKYCRAWL_DISPATCH_TOPIC``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[attr-defined, unused-ignore]

from adapters.gcp.errors import translate
from adapters.gcp.pubsub_admin import PubSubAdmin
from adapters.gcp.tenant_iam import TenantIam
from core.errors import InvalidRequest
from core.layout import tenant_topic
from core.ports.tenant_stores import TenantStores


class TenantJobs(Protocol):
    """A Cloud Run runtime that made tenants' jobs in its region (``CloudRunRuntime``)."""

    async def delete_tenant_job(self, tenant_id: str) -> None: ...


_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def marker_key(tenant_id: str) -> str:
    return f"tenants/{tenant_id}/.tenant.json"


class GcpProvisioner:
    """Provisioner creating a dispatch topic, a bucket prefix and an identity per tenant."""

    def __init__(
        self,
        *,
        admin: PubSubAdmin,
        storage_client: storage.Client,
        bucket: str,
        dispatch_topic: str = "skycrawl-dispatch",
        iam: TenantIam | None = None,
        tenant_jobs: Sequence[TenantJobs] = (),
        stores: TenantStores | None = None,
    ) -> None:
        self._stores = stores
        self._admin = admin
        self._iam = iam
        self._tenant_jobs = tuple(tenant_jobs)
        self._storage = storage_client
        self._bucket = bucket
        self._dispatch_topic = dispatch_topic

    def resources(self, tenant_id: str) -> dict[str, str]:
        """What ``provision`` creates for ``tenant_id`` (names only; nothing is called)."""
        if not _TENANT_ID.fullmatch(tenant_id):
            raise InvalidRequest(
                f"invalid tenant id {tenant_id!r}: 1-64 letters, digits, '_' or '-'"
            )
        refs = {
            "dispatch_topic": tenant_topic(self._dispatch_topic, tenant_id),
            "marker": f"gs://{self._bucket}/{marker_key(tenant_id)}",
        }
        if self._iam is not None:
            refs["engine_service_account"] = self._iam.email(tenant_id)
        return refs

    async def provision(self, *, tenant_id: str) -> Mapping[str, str]:
        refs = self.resources(tenant_id)
        await self._admin.ensure_topic(refs["dispatch_topic"])  # its dead-letter topic first
        if self._iam is not None:
            await self._iam.ensure(tenant_id=tenant_id)
        try:
            await asyncio.to_thread(self._write_marker, tenant_id)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"provisioning tenant {tenant_id}") from exc
        return {**refs, **await self._provision_store(tenant_id)}

    async def _provision_store(self, tenant_id: str) -> dict[str, str]:
        """Dedicated tenant data: the tenant's own Firestore collections (their marker)."""
        if self._stores is None:
            return {}
        return {"tenant_store": await self._stores.create_store(tenant_id=tenant_id)}

    async def _teardown_store(self, tenant_id: str) -> None:
        if self._stores is not None:
            await self._stores.drop_store(tenant_id=tenant_id)

    def _write_marker(self, tenant_id: str) -> None:
        blob = self._storage.bucket(self._bucket).blob(marker_key(tenant_id))
        if blob.exists():
            return
        record = {"tenant_id": tenant_id, "provisioned_at": datetime.now(UTC).isoformat()}
        blob.upload_from_string(json.dumps(record), content_type="application/json")

    async def teardown(self, *, tenant_id: str, resources: Mapping[str, str]) -> None:
        refs = self.resources(tenant_id)  # only ever this tenant's names, whatever resources says
        blob = self._storage.bucket(self._bucket).blob(marker_key(tenant_id))
        for runtime in self._tenant_jobs:  # its Cloud Run job in each region (containers
            await runtime.delete_tenant_job(tenant_id)  # are stopped before teardown)
        if self._iam is not None:  # bindings and account first: nothing is left granted
            await self._iam.remove(tenant_id=tenant_id)
        await self._admin.delete_topic(refs["dispatch_topic"])
        await self._teardown_store(tenant_id)
        try:
            with contextlib.suppress(gexc.NotFound):
                await asyncio.to_thread(blob.delete)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"tearing down tenant {tenant_id}") from exc

    async def close(self) -> None:
        """The IAM client; the Pub/Sub and Storage clients are the bus's and the blob store's,
        closed by them."""
        if self._iam is not None:
            await self._iam.close()
