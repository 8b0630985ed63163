"""A service account per tenant, and the IAM bindings that make it the tenant's and no more.

The GCP counterpart of the AWS task role and the Azure managed identity: the tenant's crawler
containers run as ``sct-<slug>-<hash>@<project>.iam.gserviceaccount.com`` (the tenant's copy
of the Cloud Run job, made by ``CloudRunRuntime``, has it as
``template.template.service_account``), which holds, each binding on the resource itself
(never on the project):

* ``roles/pubsub.publisher`` on the inbox topic ``<SKYCRAWL_INBOX_QUEUE>`` (ready, progress,
  heartbeats) and on the tenant's ``<dispatch topic>-dlq`` (the engine dead-letters an
  undecodable work message);
* ``roles/pubsub.subscriber`` (pull, ack, extend leases) and ``roles/pubsub.viewer`` (read its
  labels) on each of its containers' subscriptions ``container-<GUID>``, granted per
  container (``grant_subscription``);
* ``roles/storage.objectAdmin`` on the bucket under the condition
  ``resource.name.startsWith("projects/_/buckets/B/objects/tenants/T/")`` (its results);
* ``roles/storage.objectViewer`` on the bucket under ``resource.name == "projects/_/buckets/B"``:
  listing, which is checked on the bucket; object reads fail that condition.

Nothing on Firestore (the control plane's state), Cloud Tasks, Cloud Run, the functions'
source bucket, the tenant's dispatch topic itself or any other tenant's resources.

Why the subscription is made by the control plane
    Pub/Sub IAM has no conditions on resource names, and ``pubsub.subscriptions.create`` is a
    project permission: an engine allowed to create its subscription could create one on any
    topic it may attach to, and one allowed to consume by project could pull any
    ``container-*`` subscription it can guess. So ``ContainerSubscriptions.prepare`` (called
    by ``CloudRunRuntime`` before it runs the execution) creates ``container-<GUID>`` with its
    filter as the control plane and grants the tenant's account on that one subscription; the
    engine's own ``ensure_subscription`` then finds it (``pubsub_admin``). The conductor
    deletes it when the container stops; the grant goes with it.

Limits
    Listing is bucket-wide: ``storage.objects.list`` is checked on the bucket, where an
    object-prefix condition never holds, so a tenant's account may list the *names* of every
    object in the bucket (not read them). Managed folders would close that, at one more
    resource per tenant. A project holds 100 service accounts by default (raise the quota for
    more tenants); a new account takes a few seconds to be usable in policies, so a policy
    write refused with ``InvalidArgument`` is retried (``retries`` x ``backoff_s``). Policy
    writes are read-modify-write with the policy's etag, retried on a concurrent change.
    Every tenant's bucket bindings share the bucket's one policy, which holds at most 1,500
    principal entries (two per tenant here) and a capped number of conditional bindings (one
    per tenant here; see Google's IAM quotas): past a few hundred tenants, split them over
    buckets or use managed folders.

Needs (control plane)
    ``roles/iam.serviceAccountAdmin`` (create, delete accounts), ``pubsub.topics.setIamPolicy``
    and ``pubsub.subscriptions.setIamPolicy`` (``roles/pubsub.admin``),
    ``storage.buckets.setIamPolicy`` on the data bucket (``roles/storage.admin`` on it), and
    for the tenants' jobs ``roles/run.developer`` and ``roles/iam.serviceAccountUser`` (run as
    the tenants' accounts); ``deploy/gcp`` grants them while ``tenant_identities`` is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from google.api_core import iam as gcs_iam
from google.cloud import iam_admin_v1
from google.iam.v1 import iam_policy_pb2, policy_pb2  # type: ignore[import-untyped]
from google.type import expr_pb2  # type: ignore[import-untyped]

from adapters.gcp.errors import translate
from adapters.gcp.pubsub_admin import PubSubAdmin
from core.errors import InvalidRequest
from core.layout import subscription_name, tenant_prefix, tenant_topic
from core.ports.message_bus import dead_letter_queue

PUBLISHER = "roles/pubsub.publisher"
SUBSCRIBER = "roles/pubsub.subscriber"
PUBSUB_VIEWER = "roles/pubsub.viewer"
OBJECT_ADMIN = "roles/storage.objectAdmin"
OBJECT_VIEWER = "roles/storage.objectViewer"
POLICY_VERSION = 3  # conditions need it
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_RACES = (gexc.Aborted, gexc.Conflict, gexc.FailedPrecondition, gexc.PreconditionFailed)


def service_account_id(tenant_id: str) -> str:
    """``sct-<slug>-<8 hex of SHA-256>``: a valid account id (6-30 characters,
    ``[a-z][a-z0-9-]*[a-z0-9]``), distinct per tenant id."""
    if not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidRequest(f"invalid tenant id {tenant_id!r}: 1-64 letters, digits, '_' or '-'")
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:8]
    slug = _NOT_SLUG.sub("-", tenant_id.lower())[:17].strip("-")
    return f"sct-{slug}-{digest}" if slug else f"sct-{digest}"


def service_account_email(project: str, tenant_id: str) -> str:
    return f"{service_account_id(tenant_id)}@{project}.iam.gserviceaccount.com"


def member(project: str, tenant_id: str) -> str:
    return f"serviceAccount:{service_account_email(project, tenant_id)}"


@dataclass(frozen=True, slots=True)
class Condition:
    title: str
    expression: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Grant:
    """One binding: ``member`` holds ``role`` on ``resource`` (a full resource name:
    ``projects/P/topics/T``, ``projects/P/subscriptions/S``, ``projects/_/buckets/B``)."""

    resource: str
    role: str
    member: str
    condition: Condition | None = None


def bucket_resource(bucket: str) -> str:
    return f"projects/_/buckets/{bucket}"


def object_prefix_condition(bucket: str, tenant_id: str) -> Condition:
    prefix = f"{bucket_resource(bucket)}/objects/{tenant_prefix(tenant_id)}"
    return Condition(
        title="skycrawl-tenant-objects",
        expression=f'resource.name.startsWith("{prefix}")',
        description=f"objects under {tenant_prefix(tenant_id)} only",
    )


def listing_condition(bucket: str) -> Condition:
    return Condition(
        title="skycrawl-tenant-listing",
        expression=f'resource.name == "{bucket_resource(bucket)}"',
        description="list the bucket; object reads fail this condition",
    )


def tenant_grants(
    *, project: str, bucket: str, tenant_id: str, inbox_queue: str, dispatch_topic: str
) -> tuple[Grant, ...]:
    """The bindings made with the tenant (the subscription's come with each container)."""
    who = member(project, tenant_id)
    dead_letters = dead_letter_queue(tenant_topic(dispatch_topic, tenant_id))
    return (
        Grant(f"projects/{project}/topics/{inbox_queue}", PUBLISHER, who),
        Grant(f"projects/{project}/topics/{dead_letters}", PUBLISHER, who),
        Grant(
            bucket_resource(bucket), OBJECT_ADMIN, who, object_prefix_condition(bucket, tenant_id)
        ),
        Grant(bucket_resource(bucket), OBJECT_VIEWER, who, listing_condition(bucket)),
    )


def subscription_grants(*, project: str, tenant_id: str, container_id: str) -> tuple[Grant, ...]:
    """What the tenant's account holds on one container's subscription."""
    resource = f"projects/{project}/subscriptions/{subscription_name(container_id)}"
    who = member(project, tenant_id)
    return (Grant(resource, SUBSCRIBER, who), Grant(resource, PUBSUB_VIEWER, who))


# ------------------------------------------------------------------- editing policies


def _expr(condition: Condition | None) -> expr_pb2.Expr | None:
    if condition is None:
        return None
    return expr_pb2.Expr(
        title=condition.title, expression=condition.expression, description=condition.description
    )


def bind(policy: policy_pb2.Policy, grant: Grant) -> bool:
    """Add ``grant`` to a Pub/Sub policy; False if it holds already."""
    wanted = _expr(grant.condition)
    for binding in policy.bindings:
        same = (binding.condition if binding.HasField("condition") else None) == wanted
        if binding.role == grant.role and same:
            if grant.member in binding.members:
                return False
            binding.members.append(grant.member)
            return True
    policy.bindings.add(role=grant.role, members=[grant.member], condition=wanted)
    if wanted is not None:
        policy.version = POLICY_VERSION
    return True


def unbind(policy: policy_pb2.Policy, who: str) -> bool:
    """Remove ``who`` from every binding of a Pub/Sub policy; False if it had none."""
    if not any(who in binding.members for binding in policy.bindings):
        return False
    kept = []
    for binding in policy.bindings:
        rest = [m for m in binding.members if m != who]
        if rest:
            copy = policy_pb2.Binding()
            copy.CopyFrom(binding)
            del copy.members[:]
            copy.members.extend(rest)
            kept.append(copy)
    del policy.bindings[:]
    policy.bindings.extend(kept)
    return True


def _condition_dict(condition: Condition | None) -> dict[str, str] | None:
    if condition is None:
        return None
    return {
        "title": condition.title,
        "description": condition.description,
        "expression": condition.expression,
    }


def bind_bucket(policy: gcs_iam.Policy, grant: Grant) -> bool:
    """Add ``grant`` to a bucket policy (``google.api_core.iam.Policy``, version 3)."""
    wanted = _condition_dict(grant.condition)
    policy.version = POLICY_VERSION
    for binding in policy.bindings:
        if binding["role"] == grant.role and binding.get("condition") == wanted:
            if grant.member in binding["members"]:
                return False
            binding["members"] = {*binding["members"], grant.member}
            return True
    entry: dict[str, Any] = {"role": grant.role, "members": {grant.member}}
    if wanted is not None:
        entry["condition"] = wanted
    policy.bindings.append(entry)
    return True


def unbind_bucket(policy: gcs_iam.Policy, who: str) -> bool:
    before = len(policy.bindings), sum(len(b["members"]) for b in policy.bindings)
    for binding in policy.bindings:
        binding["members"] = {m for m in binding["members"] if m != who}
    policy.bindings[:] = [b for b in policy.bindings if b["members"]]
    return (len(policy.bindings), sum(len(b["members"]) for b in policy.bindings)) != before


# --------------------------------------------------------------------- the IAM calls


class IamPolicyClient(Protocol):
    """``PublisherAsyncClient`` / ``SubscriberAsyncClient``: the IAM mixin both carry."""

    async def get_iam_policy(
        self, request: iam_policy_pb2.GetIamPolicyRequest
    ) -> policy_pb2.Policy: ...

    async def set_iam_policy(
        self, request: iam_policy_pb2.SetIamPolicyRequest
    ) -> policy_pb2.Policy: ...


class TenantIam:
    """Creates and removes tenants' service accounts and their bindings (see above)."""

    def __init__(
        self,
        *,
        project: str,
        bucket: str,
        iam: iam_admin_v1.IAMAsyncClient,
        topics: IamPolicyClient,
        subscriptions: IamPolicyClient,
        storage_client: Any,
        inbox_queue: str = "skycrawl-inbox",
        dispatch_topic: str = "skycrawl-dispatch",
        retries: int = 6,
        backoff_s: float = 2.0,
    ) -> None:
        self.project = project
        self._bucket = bucket
        self._iam = iam
        self._topics = topics
        self._subscriptions = subscriptions
        self._storage = storage_client
        self._inbox = inbox_queue
        self._dispatch = dispatch_topic
        self._retries = retries
        self._backoff_s = backoff_s

    def grants(self, tenant_id: str) -> tuple[Grant, ...]:
        return tenant_grants(
            project=self.project,
            bucket=self._bucket,
            tenant_id=tenant_id,
            inbox_queue=self._inbox,
            dispatch_topic=self._dispatch,
        )

    def email(self, tenant_id: str) -> str:
        return service_account_email(self.project, tenant_id)

    async def ensure(self, *, tenant_id: str) -> str:
        """Create the tenant's account (if missing) and its bindings; the account's e-mail."""
        account_id = service_account_id(tenant_id)
        try:
            with contextlib.suppress(gexc.AlreadyExists):
                await self._iam.create_service_account(
                    request=iam_admin_v1.CreateServiceAccountRequest(
                        name=f"projects/{self.project}",
                        account_id=account_id,
                        service_account=iam_admin_v1.ServiceAccount(
                            display_name=f"skycrawl tenant {tenant_id}"[:100],
                            description="crawler containers of one skycrawl tenant",
                        ),
                    )
                )
            for grant in self.grants(tenant_id):
                await self._apply(grant, remove=False)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"IAM for tenant {tenant_id}") from exc
        return self.email(tenant_id)

    async def remove(self, *, tenant_id: str) -> None:
        """Remove the tenant's bindings, then its account; missing ones are fine."""
        who = member(self.project, tenant_id)
        try:
            for resource in dict.fromkeys(g.resource for g in self.grants(tenant_id)):
                await self._apply(Grant(resource, "", who), remove=True)
            with contextlib.suppress(gexc.NotFound):
                await self._iam.delete_service_account(
                    request=iam_admin_v1.DeleteServiceAccountRequest(
                        name=f"projects/{self.project}/serviceAccounts/{self.email(tenant_id)}"
                    )
                )
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"removing IAM of tenant {tenant_id}") from exc

    async def close(self) -> None:
        await self._iam.transport.close()  # type: ignore[no-untyped-call, unused-ignore]

    async def grant_subscription(self, *, tenant_id: str, container_id: str) -> None:
        grants = subscription_grants(
            project=self.project, tenant_id=tenant_id, container_id=container_id
        )
        try:
            for grant in grants:
                await self._apply(grant, remove=False)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"granting {grants[0].resource}") from exc

    async def _apply(self, grant: Grant, *, remove: bool) -> None:
        """Read, change and write one resource's policy; retried on a concurrent change and,
        while a new account propagates, on ``InvalidArgument``. A missing resource is fine
        when removing."""
        edit = self._edit_bucket if grant.resource.startswith("projects/_/buckets/") else self._edit
        for attempt in range(self._retries + 1):
            try:
                await edit(grant, remove)
                return
            except gexc.NotFound:
                if remove:
                    return
                raise
            except (*_RACES, gexc.InvalidArgument):
                if attempt == self._retries:
                    raise
                await asyncio.sleep(self._backoff_s * (attempt + 1))

    def _client(self, resource: str) -> IamPolicyClient:
        return self._subscriptions if "/subscriptions/" in resource else self._topics

    async def _edit(self, grant: Grant, remove: bool) -> None:
        client = self._client(grant.resource)
        policy = await client.get_iam_policy(
            request=iam_policy_pb2.GetIamPolicyRequest(resource=grant.resource)
        )
        changed = unbind(policy, grant.member) if remove else bind(policy, grant)
        if changed:
            await client.set_iam_policy(
                request=iam_policy_pb2.SetIamPolicyRequest(resource=grant.resource, policy=policy)
            )

    async def _edit_bucket(self, grant: Grant, remove: bool) -> None:
        bucket = self._storage.bucket(grant.resource.removeprefix("projects/_/buckets/"))

        def edit() -> None:
            policy = bucket.get_iam_policy(requested_policy_version=POLICY_VERSION)
            changed = unbind_bucket(policy, grant.member) if remove else bind_bucket(policy, grant)
            if changed:
                bucket.set_iam_policy(policy)  # carries the etag it was read with

        await asyncio.to_thread(edit)


class ContainerSubscriptions:
    """Makes a container's filtered subscription as the control plane and grants the tenant's
    account on it, before the container starts (see the module docstring)."""

    def __init__(self, *, admin: PubSubAdmin, iam: TenantIam) -> None:
        self._admin = admin
        self._iam = iam

    def account(self, tenant_id: str) -> str:
        """The e-mail of the tenant's account (derived from its id: nothing is called)."""
        return self._iam.email(tenant_id)

    async def prepare(self, *, tenant_id: str, container_id: str, topic: str) -> None:
        await self._admin.ensure_container_subscription(
            topic, subscription_name(container_id), {"container_id": container_id}
        )
        await self._iam.grant_subscription(tenant_id=tenant_id, container_id=container_id)
