"""GCP Provisioner: per-tenant resources created from code with the client libraries.

For tenant ``T`` it creates (idempotently):

* the Pub/Sub topic ``<prefix>T`` and its pull subscription ``<prefix>T`` (7 days retention,
  labelled ``skycrawl-tenant=T``) -- the tenant's own queue, for integrations that feed or
  drain a tenant without touching the shared inbox;
* the marker object ``gs://<bucket>/tenants/T/.tenant.json`` recording the tenant and when it
  was provisioned: the tenant's prefix in the shared bucket (pages, manifests and exports live
  under ``tenants/T/``; an IAM condition on that prefix gives a tenant direct read access).

``provision`` returns ``{"topic", "subscription", "marker"}`` (full resource names and a
``gs://`` URL); ``teardown`` deletes the three (missing ones are fine). It does not delete the
tenant's other blobs: ``core.tenancy`` does that through the BlobStore before teardown.
State stays in the shared Firestore database, partitioned by tenant (pooled mode); a
database per tenant would be ``firestore_admin_v1`` ``create_database`` at ~minutes per
tenant, which the core does not need.

Limits and cost
    Tenant ids are 1-64 letters, digits, ``_`` or ``-`` starting with a letter or digit, else
    ``core.errors.InvalidRequest``. Topics and subscriptions cost nothing while idle; the
    marker is one tiny object. Needs ``roles/pubsub.editor`` and object create/delete on the
    bucket.

Settings
    ``SKYCRAWL_GCP_PROJECT``, ``SKYCRAWL_GCP_BUCKET``, ``SKYCRAWL_GCP_TENANT_PREFIX``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[attr-defined, unused-ignore]
from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient, types

from adapters.gcp.errors import translate
from core.errors import InvalidRequest

_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
RETENTION_S = 7 * 86400


def marker_key(tenant_id: str) -> str:
    return f"tenants/{tenant_id}/.tenant.json"


class GcpProvisioner:
    """Provisioner creating a Pub/Sub topic + subscription and a bucket prefix per tenant."""

    def __init__(
        self,
        *,
        project: str,
        publisher: PublisherAsyncClient,
        subscriber: SubscriberAsyncClient,
        storage_client: storage.Client,
        bucket: str,
        prefix: str = "skycrawl-tenant-",
    ) -> None:
        self._project = project
        self._pub = publisher
        self._sub = subscriber
        self._storage = storage_client
        self._bucket = bucket
        self._prefix = prefix

    def resources(self, tenant_id: str) -> dict[str, str]:
        """What ``provision`` creates for ``tenant_id`` (names only; nothing is called)."""
        if not _TENANT_ID.fullmatch(tenant_id):
            raise InvalidRequest(
                f"invalid tenant id {tenant_id!r}: 1-64 letters, digits, '_' or '-'"
            )
        name = f"{self._prefix}{tenant_id}"
        return {
            "topic": f"projects/{self._project}/topics/{name}",
            "subscription": f"projects/{self._project}/subscriptions/{name}",
            "marker": f"gs://{self._bucket}/{marker_key(tenant_id)}",
        }

    async def provision(self, *, tenant_id: str) -> Mapping[str, str]:
        refs = self.resources(tenant_id)
        labels = {"skycrawl-tenant": tenant_id.lower()}
        subscription = types.Subscription(
            name=refs["subscription"],
            topic=refs["topic"],
            labels=labels,
            ack_deadline_seconds=60,
            message_retention_duration=timedelta(seconds=RETENTION_S),
            expiration_policy=types.ExpirationPolicy(),  # never
        )
        try:
            with contextlib.suppress(gexc.AlreadyExists):
                await self._pub.create_topic(request=types.Topic(name=refs["topic"], labels=labels))
            with contextlib.suppress(gexc.AlreadyExists):
                await self._sub.create_subscription(request=subscription)
            await asyncio.to_thread(self._write_marker, tenant_id)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"provisioning tenant {tenant_id}") from exc
        return refs

    def _write_marker(self, tenant_id: str) -> None:
        blob = self._storage.bucket(self._bucket).blob(marker_key(tenant_id))
        if blob.exists():
            return
        record = {"tenant_id": tenant_id, "provisioned_at": datetime.now(UTC).isoformat()}
        blob.upload_from_string(json.dumps(record), content_type="application/json")

    async def teardown(self, *, tenant_id: str, resources: Mapping[str, str]) -> None:
        refs = self.resources(tenant_id)  # only ever this tenant's names, whatever resources says
        blob = self._storage.bucket(self._bucket).blob(marker_key(tenant_id))
        try:
            with contextlib.suppress(gexc.NotFound):
                await self._sub.delete_subscription(subscription=refs["subscription"])
            with contextlib.suppress(gexc.NotFound):
                await self._pub.delete_topic(topic=refs["topic"])
            with contextlib.suppress(gexc.NotFound):
                await asyncio.to_thread(blob.delete)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"tearing down tenant {tenant_id}") from exc

    async def close(self) -> None:
        """Nothing of its own: the Pub/Sub and Storage clients are the bus's and the blob
        store's, closed by them."""
