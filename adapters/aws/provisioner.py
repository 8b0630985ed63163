"""AWS Provisioner: one CloudFormation stack per tenant, from ``deploy/aws/tenant.yaml``.

Features
    * ``provision(tenant_id=...)`` creates the stack ``<stack_prefix>-tenant-<tenant>-<hash>``
      (parameters ``TenantId``, ``DispatchTopicName``, ``SubscriptionQueuePrefix``,
      ``EngineRoleName``, ``DataPrefix`` and the deployment's
      ``SKYCRAWL_AWS_TENANT_PARAMETERS``, e.g. ``DataBucket`` and ``EngineBasePolicyArn``;
      ``CAPABILITY_NAMED_IAM``; ``OnFailure=DELETE`` so that a failed attempt leaves nothing
      behind) and returns ``{"stack_id", "dispatch_topic", "engine_role_arn"}``. Idempotent:
      an existing stack is reused.
    * What a tenant gets (see the template): its own SNS dispatch topic
      ``<SKYCRAWL_DISPATCH_TOPIC>-<tenant>`` (``core.layout.tenant_topic``) with its
      dead-letter queue ``<topic>-dlq``, which the conductor publishes the tenant's work to;
      and its own ECS task role that may subscribe only to that topic, use only the SQS
      queues of that topic's subscriptions (``<subscription prefix><8 hex of the topic>-*``),
      and read and write only ``tenants/<tenant>/`` in the data bucket (plus the shared
      container permissions of ``EngineBasePolicyArn``: the inbox, claim checks).
      ``EcsRuntime`` runs the tenant's containers with that role
      (``SKYCRAWL_AWS_TENANT_TASK_ROLE_ARN``), so one tenant's crawler can neither receive
      another tenant's work nor touch its results. Records stay in the shared DynamoDB table,
      partitioned by tenant (pooled), unless ``SKYCRAWL_TENANT_DATA=dedicated``: then
      ``provision`` also creates the tenant's own table for its crawl and usage records
      (``adapters.aws.tenant_stores``, outside the stack so that it is ready before the
      stack is) and adds ``"tenant_store"``; ``teardown`` deletes it first.
    * Bounded waits. API Gateway gives the API 30 seconds, and a stack with an IAM role takes
      20-60 s on AWS. So ``provision`` waits at most ``stack_wait_s`` for ``CREATE_COMPLETE``;
      every name is derived from the tenant id, so it can return the references before the
      stack is done, and the stack completes in the background. A container started for the
      tenant before its role exists fails to start and is retried by the conductor. A stack
      seen failing is ``core.errors.Retryable`` (the tenant is not created).
    * ``teardown`` deletes the stack and waits (at most ``stack_wait_s``) for
      ``DELETE_COMPLETE``; a stack that does not exist is fine, a ``DELETE_FAILED`` one is
      ``Retryable``. Only the stack named after ``tenant_id`` is ever deleted, whatever
      ``resources`` says.
    * Polling (``DescribeStacks`` every ``stack_poll_s``) sleeps on the event loop; boto3 calls
      run in worker threads.

Limits
    Tenant ids are 1-64 letters, digits, ``_`` or ``-``, starting with a letter or digit
    (``core.errors.InvalidRequest`` otherwise). Accounts have a default quota of 2,000 stacks
    and 100,000 SNS standard topics (one per tenant); each topic, 200 filter policies by
    default (``SqsMessageBus``: at most that many live containers per tenant).

Testing
    moto creates and deletes stacks synchronously (and ignores ``ManagedPolicyArns`` of a role
    and service roles); the tests check the resources it made and that they are gone after
    teardown.

Settings
    ``SKYCRAWL_AWS_STACK_PREFIX``, ``_TENANT_TEMPLATE``, ``_TENANT_PARAMETERS``,
    ``_CLOUDFORMATION_ROLE_ARN`` (service role the stacks are created with),
    ``_STACK_POLL_S``, ``_STACK_WAIT_S``.

Cost
    CloudFormation is free for AWS resource types; a tenant's topic, dead-letter queue and role
    cost nothing at idle.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.aws.errors import ClientError, call, error_code, error_message
from adapters.aws.settings import DEFAULT_TENANT_TEMPLATE, AwsSettings
from adapters.aws.sns_topics import topic_queue_prefix
from core.errors import InvalidRequest, Retryable
from core.layout import tenant_topic
from core.ports.tenant_stores import TenantStores

log = logging.getLogger("skycrawl.aws.provisioner")

_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_DONE = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"})
_FAILED = frozenset(
    {"CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED", "UPDATE_FAILED"}
)


def check_tenant_id(tenant_id: str) -> None:
    if not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidRequest(f"invalid tenant id {tenant_id!r}: 1-64 letters, digits, '_' or '-'")


def tenant_resource_name(prefix: str, kind: str, tenant_id: str, max_length: int) -> str:
    """A deterministic name for one of a tenant's resources: ``<prefix>-<kind>-<tenant>-<hash>``,
    the tenant part shortened to fit ``max_length`` (the hash keeps names distinct)."""
    check_tenant_id(tenant_id)
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:8]
    slug = tenant_id.replace("_", "-")
    room = max_length - len(prefix) - len(kind) - len(digest) - 3
    if room < 1:
        raise InvalidRequest(f"prefix {prefix!r} leaves no room for tenant names")
    return f"{prefix}-{kind}-{slug[:room].rstrip('-')}-{digest}"


def stack_name(prefix: str, tenant_id: str) -> str:
    return tenant_resource_name(prefix, "tenant", tenant_id, 128)


def engine_role_name(prefix: str, tenant_id: str) -> str:
    """Name of the tenant's ECS task role (IAM role names are at most 64 characters)."""
    return tenant_resource_name(prefix, "eng", tenant_id, 64)


class CloudFormationProvisioner:
    """Provisioner creating one CloudFormation stack per tenant."""

    def __init__(
        self,
        *,
        cloudformation: Any,  # a boto3 CloudFormation client (Any: boto3 ships no stubs)
        template: Path = DEFAULT_TENANT_TEMPLATE,
        stack_prefix: str = "skycrawl",
        parameters: Mapping[str, str] | None = None,
        role_arn: str | None = None,
        data_prefix: str = "",
        dispatch_topic: str = "skycrawl-dispatch",
        subscription_queue_prefix: str = "skycrawl-sub-",
        poll_s: float = 2.0,
        wait_s: float = 20.0,
        stores: TenantStores | None = None,
    ) -> None:
        self._cfn = cloudformation
        self._stores = stores
        self._template = template
        self._body: str | None = None
        self._prefix = stack_prefix
        self._parameters = dict(parameters or {})
        self._role_arn = role_arn
        self._data_prefix = data_prefix
        self._dispatch_topic = dispatch_topic
        self._subscription_prefix = subscription_queue_prefix
        self._poll_s = poll_s
        self._wait_s = wait_s

    async def close(self) -> None:
        self._cfn.close()

    @classmethod
    def from_settings(
        cls,
        aws: AwsSettings,
        *,
        dispatch_topic: str = "skycrawl-dispatch",
        stores: TenantStores | None = None,
    ) -> CloudFormationProvisioner:
        """From ``aws``; ``dispatch_topic`` is ``SKYCRAWL_DISPATCH_TOPIC`` (the base name),
        ``stores`` the tenants' own tables in dedicated tenant data (None: pooled)."""
        return cls(
            stores=stores,
            cloudformation=aws.client("cloudformation"),
            template=aws.tenant_template,
            stack_prefix=aws.stack_prefix,
            parameters={"DataBucket": aws.bucket, **aws.tenant_parameters},
            role_arn=aws.cloudformation_role_arn,
            data_prefix=aws.blob_prefix,
            dispatch_topic=dispatch_topic,
            subscription_queue_prefix=aws.subscription_queue_prefix,
            poll_s=aws.stack_poll_s,
            wait_s=aws.stack_wait_s,
        )

    def topic(self, tenant_id: str) -> str:
        """The tenant's dispatch topic."""
        check_tenant_id(tenant_id)
        return tenant_topic(self._dispatch_topic, tenant_id)

    def parameters(self, tenant_id: str) -> dict[str, str]:
        """The parameters of the tenant's stack (what its IAM policy is made of)."""
        return {
            **self._parameters,
            "TenantId": tenant_id,
            "DispatchTopicName": self.topic(tenant_id),
            "SubscriptionQueuePrefix": topic_queue_prefix(
                self._subscription_prefix, self.topic(tenant_id)
            ),
            "EngineRoleName": engine_role_name(self._prefix, tenant_id),
            "DataPrefix": f"{self._data_prefix}tenants/{tenant_id}/",
        }

    async def _describe(self, name: str) -> dict[str, Any] | None:
        try:
            response = await call(self._cfn.describe_stacks, StackName=name)
        except ClientError as exc:
            if error_code(exc) == "ValidationError" and "does not exist" in error_message(exc):
                return None
            raise
        stacks = response.get("Stacks", [])
        return dict(stacks[0]) if stacks else None

    async def _wait(self, name: str, *, deleting: bool) -> dict[str, Any] | None:
        """The stack once settled, or as it is after ``wait_s`` (None: deleted)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while True:
            stack = await self._describe(name)
            status = "DELETE_COMPLETE" if stack is None else str(stack["StackStatus"])
            if status == "DELETE_COMPLETE" and deleting:
                return None
            if status in _FAILED or status == "DELETE_COMPLETE":
                reason = "" if stack is None else stack.get("StackStatusReason", "")
                raise Retryable(f"stack {name} is {status}: {reason}".rstrip(": "))
            if (not deleting and status in _DONE) or loop.time() >= deadline:
                if status not in _DONE:
                    log.warning(
                        "stack %s still %s after %g s; it goes on", name, status, self._wait_s
                    )
                return stack
            await asyncio.sleep(self._poll_s)

    async def provision(self, *, tenant_id: str) -> Mapping[str, str]:
        name = stack_name(self._prefix, tenant_id)
        stack = await self._describe(name)
        stack_id = str(stack["StackId"]) if stack else await self._create(name, tenant_id)
        await self._wait(name, deleting=False)
        # arn:<partition>:cloudformation:<region>:<account>:stack/<name>/<id>
        _, partition, _, _, account, _ = stack_id.split(":", 5)
        role = engine_role_name(self._prefix, tenant_id)
        return {
            "stack_id": stack_id,
            "dispatch_topic": self.topic(tenant_id),
            "engine_role_arn": f"arn:{partition}:iam::{account}:role/{role}",
            **await self._provision_store(tenant_id),
        }

    async def _provision_store(self, tenant_id: str) -> dict[str, str]:
        """Dedicated tenant data: the tenant's own table, ready when this returns."""
        if self._stores is None:
            return {}
        return {"tenant_store": await self._stores.create_store(tenant_id=tenant_id)}

    async def _teardown_store(self, tenant_id: str) -> None:
        if self._stores is not None:
            await self._stores.drop_store(tenant_id=tenant_id)

    async def _create(self, name: str, tenant_id: str) -> str:
        """Create the stack; returns its id (also when another caller created it meanwhile)."""
        if self._body is None:
            self._body = await asyncio.to_thread(self._template.read_text)
        parameters = self.parameters(tenant_id)
        request: dict[str, Any] = {
            "StackName": name,
            "TemplateBody": self._body,
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            "Capabilities": ["CAPABILITY_NAMED_IAM"],
            "OnFailure": "DELETE",
            "Tags": [{"Key": "skycrawl:tenant", "Value": tenant_id}],
        }
        if self._role_arn:
            request["RoleARN"] = self._role_arn
        try:
            response = await call(self._cfn.create_stack, **request)
        except ClientError as exc:
            if error_code(exc) != "AlreadyExistsException":
                raise
            stack = await self._describe(name)
            if stack is None:
                raise Retryable(f"stack {name} vanished while being created") from exc
            return str(stack["StackId"])
        return str(response["StackId"])

    async def teardown(self, *, tenant_id: str, resources: Mapping[str, str]) -> None:
        name = stack_name(self._prefix, tenant_id)
        await self._teardown_store(tenant_id)
        if await self._describe(name) is None:
            return
        request: dict[str, Any] = {"StackName": name}
        if self._role_arn:
            request["RoleARN"] = self._role_arn
        await call(self._cfn.delete_stack, **request)
        await self._wait(name, deleting=True)
