"""AWS TenantStores: a DynamoDB table per tenant, for ``SKYCRAWL_TENANT_DATA=dedicated``.

Features
    The store of tenant ``T`` is the table ``<SKYCRAWL_AWS_TABLE>-t-<t>-<8 hex>``
    (``store_name``: the tenant id lowercased, ``-`` for other characters, shortened; 8 hex of
    its SHA-256), laid out as the shared table (``DynamoStateStore``: ``pk`` / ``sk``, TTL on
    ``ttl``), on-demand capacity, point-in-time recovery on, tagged ``skycrawl:tenant``.
    ``create_store`` creates it and waits until it is ``ACTIVE`` (idempotent: an existing
    table is waited for, not made again); ``drop_store`` deletes it with every item at once
    and waits until it is gone; ``open_store`` is a ``DynamoStateStore`` on it, on the one
    client every tenant store shares. A write to a dropped tenant's table fails
    (``ResourceNotFoundException``): nothing makes it again.

Why the SDK and not the tenant's CloudFormation stack
    ``create_table`` answers in a second and the table is ``ACTIVE`` a few seconds later, so a
    tenant's first crawl can be stored as soon as ``POST /v1/tenants`` answers; the stack
    completes in the background (its IAM role takes 20-60 s), which the data path must not
    wait for. The provisioner calls these next to the stack, and teardown deletes both.

Limits and cost
    An account has 2,500 tables per region by default (a quota that can be raised, up to
    10,000): dedicated mode is for deployments of at most a few thousand tenants per region.
    ``CreateTable`` / ``DeleteTable`` run at most 500 at once per account (``LimitExceeded``:
    ``core.errors.Retryable``). An on-demand table costs nothing while idle but storage
    ($0.25 per GB-month) and point-in-time recovery ($0.20 per GB-month); reads and writes cost
    as in the shared table. The control plane needs ``dynamodb:CreateTable``, ``DeleteTable``,
    ``DescribeTable``, ``UpdateTimeToLive``, ``UpdateContinuousBackups`` and ``TagResource``
    on ``table/<SKYCRAWL_AWS_TABLE>-t-*`` (``deploy/aws/template.yaml``).

Settings
    ``SKYCRAWL_AWS_TABLE`` (the name prefix), ``SKYCRAWL_TENANT_DATA=dedicated``,
    ``SKYCRAWL_AWS_STACK_POLL_S`` / ``_STACK_WAIT_S`` (how often and how long to wait).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from adapters.aws.errors import ClientError, call, error_code
from adapters.aws.settings import AwsSettings
from adapters.aws.state_store import DynamoStateStore
from core.clock import Clock
from core.errors import Retryable
from core.layout import tenant_store_name

log = logging.getLogger("skycrawl.aws.tenant_stores")

_KEYS = {
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
}


class DynamoTenantStores:
    """One DynamoDB table per tenant, named after the deployment's shared table."""

    def __init__(
        self,
        *,
        dynamodb: Any,  # a boto3 DynamoDB client (Any: boto3 ships no type stubs)
        table_prefix: str,
        clock: Clock | None = None,
        poll_s: float = 1.0,
        wait_s: float = 60.0,
    ) -> None:
        self._db = dynamodb
        self._prefix = f"{table_prefix}-t-"
        self._clock = clock
        self._poll_s = poll_s
        self._wait_s = wait_s

    @classmethod
    def from_settings(cls, aws: AwsSettings, *, clock: Clock | None = None) -> DynamoTenantStores:
        return cls(
            dynamodb=aws.client("dynamodb"),
            table_prefix=aws.table,
            clock=clock,
            poll_s=min(aws.stack_poll_s, 1.0),
            wait_s=max(aws.stack_wait_s, 60.0),
        )

    def store_name(self, tenant_id: str) -> str:
        return tenant_store_name(self._prefix, tenant_id, max_chars=255, separator="-")

    async def _status(self, name: str) -> str | None:
        """The table's status, None if there is no such table."""
        try:
            response = await call(self._db.describe_table, TableName=name)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        return str(response["Table"]["TableStatus"])

    async def _until(self, name: str, done: set[str | None]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while (status := await self._status(name)) not in done:
            if loop.time() >= deadline:
                raise Retryable(f"table {name} is still {status} after {self._wait_s:g} s")
            await asyncio.sleep(self._poll_s)

    async def create_store(self, *, tenant_id: str) -> str:
        name = self.store_name(tenant_id)
        if await self._status(name) is None:
            try:
                await call(
                    self._db.create_table,
                    TableName=name,
                    BillingMode="PAY_PER_REQUEST",
                    Tags=[{"Key": "skycrawl:tenant", "Value": tenant_id}],
                    **_KEYS,
                )
            except ClientError as exc:
                if error_code(exc) == "LimitExceededException":
                    raise Retryable(f"create table {name}: {exc}") from exc
                if error_code(exc) != "ResourceInUseException":  # being made by another call
                    raise
        await self._until(name, {"ACTIVE"})
        await self._configure(name)
        return name

    async def _configure(self, name: str) -> None:
        """Expiry on ``ttl`` and point-in-time recovery, as on the shared table (both
        idempotent: asking again for what is set is a no-op, or an error saying so)."""
        try:
            await call(
                self._db.update_time_to_live,
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
            )
        except ClientError as exc:
            if "already enabled" not in str(exc).lower():
                raise
        await call(
            self._db.update_continuous_backups,
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )

    async def drop_store(self, *, tenant_id: str) -> None:
        name = self.store_name(tenant_id)
        try:
            await call(self._db.delete_table, TableName=name)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return
            if error_code(exc) in ("ResourceInUseException", "LimitExceededException"):
                raise Retryable(f"delete table {name}: {exc}") from exc
            raise
        await self._until(name, {None})
        log.info("tenant %s: table %s deleted", tenant_id, name)

    def open_store(self, tenant_id: str) -> DynamoStateStore:
        return DynamoStateStore(
            dynamodb=self._db,
            table=self.store_name(tenant_id),
            clock=self._clock,
            owns_client=False,
        )

    async def close(self) -> None:
        self._db.close()
