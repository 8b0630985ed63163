"""AWS backends of the contract suites, on one moto server per test process.

The server starts lazily, inside the first factory that needs it (this module is imported
when the contract conftest is collected, which must not start anything). Resources are named
uniquely per harness, so suites share the server without seeing each other's data.

Time: SQS keeps visibility timeouts and delays on the wall clock, so the bus and scheduler
harnesses really sleep (``SystemClock``), with a visibility timeout of 1 s (SQS's
granularity). The DynamoDB state store filters expired items by the clock it is given, so its
harness drives a ``FakeClock``.

The runtime contract does not apply to ECS on moto: moto records ``RunTask`` but runs no
container, so the suite's workload scripts (which write files) cannot run. ECS is tested by
``tests/integration/aws/test_aws_container_runtime.py`` instead (what RunTask is asked to do,
describe/stop/list through moto's task states).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from adapters.aws.blob_store import S3BlobStore
from adapters.aws.message_bus import SqsMessageBus
from adapters.aws.provisioner import CloudFormationProvisioner
from adapters.aws.scheduler import SqsScheduler
from adapters.aws.state_store import DynamoStateStore
from adapters.aws.tenant_stores import DynamoTenantStores
from core.clock import FakeClock, SystemClock
from core.ports import StateStore
from tests.contract.harness import (
    BusHarness,
    ProvisionerHarness,
    SchedulerHarness,
    StateHarness,
    TenantStoresHarness,
)
from tests.integration.aws import moto_server
from tests.integration.aws.moto_server import ACCOUNT, REGION, client, unique


def _new_bucket() -> str:
    name = unique("bucket")
    client("s3").create_bucket(Bucket=name)
    return name


def _empty_bucket(name: str) -> None:
    s3 = client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=name)


def _bus(bucket: str) -> SqsMessageBus:
    return SqsMessageBus(
        sqs=client("sqs"),
        sns=client("sns"),
        s3=client("s3"),
        bucket=bucket,
        subscription_queue_prefix="contract-sub-",
    )


@contextlib.asynccontextmanager
async def moto_bus(tmp: Path) -> AsyncIterator[BusHarness]:
    bucket = _new_bucket()
    opened = [_bus(bucket)]

    def reopen() -> SqsMessageBus:
        opened.append(_bus(bucket))
        return opened[-1]

    try:
        yield BusHarness(bus=opened[0], clock=SystemClock(), reopen=reopen, visibility_s=1.0)
    finally:
        for bus in opened:
            await bus.close()
        _empty_bucket(bucket)


@contextlib.asynccontextmanager
async def moto_scheduler(tmp: Path) -> AsyncIterator[SchedulerHarness]:
    bus = _bus(_new_bucket())
    try:
        yield SchedulerHarness(scheduler=SqsScheduler(bus), bus=bus, clock=SystemClock())
    finally:
        await bus.close()


def create_state_table(name: str) -> None:
    dynamodb = client("dynamodb")
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )


@contextlib.asynccontextmanager
async def moto_state(tmp: Path) -> AsyncIterator[StateHarness]:
    table = unique("state")
    create_state_table(table)
    clock = FakeClock()
    opened: list[DynamoStateStore] = []

    def reopen() -> DynamoStateStore:
        opened.append(DynamoStateStore(dynamodb=client("dynamodb"), table=table, clock=clock))
        return opened[-1]

    try:
        yield StateHarness(store=reopen(), clock=clock, reopen=reopen)
    finally:
        for store in opened:
            await store.close()
        client("dynamodb").delete_table(TableName=table)


@contextlib.asynccontextmanager
async def moto_blobs(tmp: Path) -> AsyncIterator[S3BlobStore]:
    bucket = _new_bucket()
    store = S3BlobStore(s3=client("s3"), bucket=bucket)
    try:
        yield store
    finally:
        await store.close()
        _empty_bucket(bucket)


def list_tables(prefix: str) -> set[str]:
    """The DynamoDB tables named ``<prefix>…``, from DynamoDB's own listing."""
    pages = client("dynamodb").get_paginator("list_tables").paginate()
    return {t for page in pages for t in page["TableNames"] if t.startswith(prefix)}


@contextlib.asynccontextmanager
async def moto_tenant_stores(tmp: Path) -> AsyncIterator[TenantStoresHarness]:
    shared = unique("state")
    create_state_table(shared)
    clock = FakeClock()
    control = DynamoStateStore(dynamodb=client("dynamodb"), table=shared, clock=clock)
    stores = DynamoTenantStores(
        dynamodb=client("dynamodb"), table_prefix=shared, clock=clock, poll_s=0.05
    )
    try:
        yield TenantStoresHarness(stores, control, lambda: _listed(f"{shared}-t-"))
    finally:
        await stores.close()
        await control.close()
        client("dynamodb").delete_table(TableName=shared)


async def _listed(prefix: str) -> set[str]:
    return list_tables(prefix)


@contextlib.asynccontextmanager
async def moto_tenant_state(tmp: Path) -> AsyncIterator[StateHarness]:
    """A tenant's own table must keep every promise of the StateStore port."""
    clock = FakeClock()
    stores = DynamoTenantStores(
        dynamodb=client("dynamodb"), table_prefix=unique("state"), clock=clock, poll_s=0.05
    )
    await stores.create_store(tenant_id="tenant-a")
    opened: list[StateStore] = []

    def reopen() -> StateStore:
        opened.append(stores.open_store("tenant-a"))
        return opened[-1]

    try:
        yield StateHarness(store=reopen(), clock=clock, reopen=reopen)
    finally:
        for store in opened:
            await store.close()
        await stores.drop_store(tenant_id="tenant-a")
        await stores.close()


@contextlib.asynccontextmanager
async def moto_dedicated_provisioner(tmp: Path) -> AsyncIterator[ProvisionerHarness]:
    """The stack per tenant and, with dedicated tenant data, the tenant's own table."""
    async with moto_provisioner(tmp, dedicated=True) as harness:
        yield harness


@contextlib.asynccontextmanager
async def moto_provisioner(
    tmp: Path, *, dedicated: bool = False
) -> AsyncIterator[ProvisionerHarness]:
    bucket = _new_bucket()
    prefix = unique("ct")
    stores = (
        DynamoTenantStores(dynamodb=client("dynamodb"), table_prefix=prefix, poll_s=0.05)
        if dedicated
        else None
    )
    provisioner = CloudFormationProvisioner(
        stores=stores,
        cloudformation=client("cloudformation"),
        stack_prefix=prefix,
        parameters={"DataBucket": bucket},
        dispatch_topic=f"{prefix}-dispatch",
        subscription_queue_prefix=f"{prefix}-sub-",
        poll_s=0.05,
    )
    sns, iam, cloudformation = client("sns"), client("iam"), client("cloudformation")
    sqs = client("sqs")

    async def exists(resources: Mapping[str, str]) -> bool:
        return all(
            _resource_exists(kind, value, sns, iam, cloudformation)
            for kind, value in resources.items()
        )

    async def inventory() -> set[str]:
        """This harness's topics, queues, roles and live stacks (all named ``<prefix>-…``)."""
        topics = [
            t["TopicArn"] for p in sns.get_paginator("list_topics").paginate() for t in p["Topics"]
        ]
        queues = sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
        roles = [
            r["RoleName"] for p in iam.get_paginator("list_roles").paginate() for r in p["Roles"]
        ]
        stacks = [
            s["StackName"]
            for p in cloudformation.get_paginator("list_stacks").paginate()
            for s in p["StackSummaries"]
            if s["StackStatus"] != "DELETE_COMPLETE"
        ]
        found = {f"topic:{t.rsplit(':', 1)[-1]}" for t in topics}
        found |= {f"queue:{q.rsplit('/', 1)[-1]}" for q in queues}
        found |= {f"role:{r}" for r in roles} | {f"stack:{s}" for s in stacks}
        found |= {f"table:{t}" for t in list_tables(prefix)}
        return {f for f in found if f.split(":", 1)[1].startswith(prefix)}

    try:
        yield ProvisionerHarness(provisioner=provisioner, exists=exists, inventory=inventory)
    finally:
        if stores is not None:
            await stores.close()
        _empty_bucket(bucket)


def _resource_exists(kind: str, value: str, sns: Any, iam: Any, cloudformation: Any) -> bool:
    errors = (sns.exceptions.NotFoundException, iam.exceptions.NoSuchEntityException)
    try:
        if kind == "dispatch_topic":
            sns.get_topic_attributes(TopicArn=f"arn:aws:sns:{REGION}:{ACCOUNT}:{value}")
        elif kind == "engine_role_arn":
            iam.get_role(RoleName=value.rsplit("/", 1)[-1])
        elif kind == "tenant_store":
            return value in list_tables(value)
        elif kind == "stack_id":
            stacks = cloudformation.describe_stacks(StackName=value)["Stacks"]
            return stacks[0]["StackStatus"] != "DELETE_COMPLETE"
        else:
            raise AssertionError(f"unexpected resource {kind}")
    except errors:
        return False
    return True


FACTORIES: dict[str, dict[str, Any]] = {
    "bus": {"moto": moto_bus},
    "scheduler": {"moto": moto_scheduler},
    "state": {"moto": moto_state, "moto-tenant": moto_tenant_state},
    "blob": {"moto": moto_blobs},
    "provisioner": {"moto": moto_provisioner, "moto-dedicated": moto_dedicated_provisioner},
    "tenant_stores": {"moto": moto_tenant_stores},
    # "runtime": none -- see the module docstring (ECS on moto runs no container).
}

__all__ = ["FACTORIES", "create_state_table", "moto_server"]
