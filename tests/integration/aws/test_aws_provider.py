"""The AWS provider's composition: settings from the environment, ports, what containers get."""

from __future__ import annotations

from typing import Any

import pytest

from adapters import load_provider
from adapters.aws import provider
from adapters.aws.blob_store import S3BlobStore
from adapters.aws.container_runtime import EcsRuntime
from adapters.aws.message_bus import SqsMessageBus
from adapters.aws.provisioner import CloudFormationProvisioner
from adapters.aws.scheduler import SqsScheduler
from adapters.aws.settings import AwsSettings
from adapters.aws.state_store import DynamoStateStore
from core.layout import tenant_topic
from core.ports import Queue
from core.settings import SkycrawlSettings
from tests.integration.aws.moto_deployment import Deployment


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYCRAWL_AWS_SUBNETS", "subnet-a, subnet-b")
    monkeypatch.setenv("SKYCRAWL_AWS_SECURITY_GROUPS", "sg-1")
    monkeypatch.setenv("SKYCRAWL_AWS_PUBLIC_IP_EGRESSES", '{"via-nat": false}')
    monkeypatch.setenv("SKYCRAWL_AWS_TENANT_PARAMETERS", '{"EngineBasePolicyArn": "arn:x"}')
    aws = AwsSettings()
    assert aws.subnets == ["subnet-a", "subnet-b"]
    assert aws.security_groups == ["sg-1"]
    assert aws.public_ip_egresses == {"via-nat": False}
    assert aws.tenant_parameters == {"EngineBasePolicyArn": "arn:x"}
    assert aws.tenant_template.name == "tenant.yaml"
    assert aws.tenant_template.is_file()


async def test_build_ports_wires_every_aws_adapter(deployment: Deployment) -> None:
    ports = provider.build_ports(deployment.settings, deployment.aws)
    try:
        assert isinstance(ports.bus, SqsMessageBus)
        assert isinstance(ports.scheduler, SqsScheduler)
        assert ports.scheduler.capabilities.max_delay_s == 900  # no scheduler role: SQS only
        assert isinstance(ports.state, DynamoStateStore)
        assert isinstance(ports.blobs, S3BlobStore)
        assert [type(r) for r in ports.runtimes.values()] == [EcsRuntime]
        assert isinstance(ports.provisioner, CloudFormationProvisioner)
        await ports.state.create(table="t", partition="p", key="k", data={})
        await ports.blobs.put(key="a", data=b"1")
        assert await ports.bus.receive(source=Queue(deployment.settings.inbox_queue)) == []
    finally:
        await ports.close()


async def test_dedicated_tenant_data_goes_to_the_tenants_own_table(
    deployment: Deployment,
) -> None:
    """SKYCRAWL_TENANT_DATA=dedicated: provisioning makes the tenant's table beside its stack,
    the state the core is given puts the tenant's crawls there (and nothing of the control
    plane), teardown deletes the table with the stack."""
    settings = deployment.settings.model_copy(update={"tenant_data": "dedicated"})
    ports = provider.build_ports(settings, deployment.aws)
    dynamodb, tenant = deployment.client("dynamodb"), "tn_dedicated1"
    try:
        resources = await ports.provisioner.provision(tenant_id=tenant)
        table = resources["tenant_store"]
        assert table.startswith(f"{deployment.aws.table}-t-tn-dedicated1-")
        await ports.state.create(table="crawls", partition=tenant, key="c1", data={"n": 1})
        await ports.state.create(table="containers", partition=tenant, key="g1", data={})
        own = dynamodb.scan(TableName=table)["Items"]
        assert [(i["tbl"]["S"], i["sk"]["S"]) for i in own] == [("crawls", "c1")]
        shared = dynamodb.scan(TableName=deployment.aws.table)["Items"]
        mine = [(i["tbl"]["S"], i["sk"]["S"]) for i in shared if i["part"]["S"] == tenant]
        assert mine == [("containers", "g1")]
        await ports.provisioner.teardown(tenant_id=tenant, resources=resources)
        with pytest.raises(dynamodb.exceptions.ResourceNotFoundException):
            dynamodb.describe_table(TableName=table)
    finally:
        await ports.close()


def test_engine_env_carries_the_connection_but_no_credentials(deployment: Deployment) -> None:
    env = provider.engine_env(deployment.aws)
    assert env["SKYCRAWL_PROVIDER"] == "aws"
    assert env["SKYCRAWL_AWS_BUCKET"] == deployment.aws.bucket
    assert env["SKYCRAWL_AWS_TOPIC_ARN_PREFIX"] == deployment.aws.topic_arn_prefix
    assert env["SKYCRAWL_AWS_ENDPOINT_URL"] == deployment.aws.endpoint_url
    assert not any("SECRET" in name or "KEY_ID" in name for name in env)
    assert "SKYCRAWL_AWS_CLUSTER" not in env  # control-plane only


async def test_a_container_builds_its_bus_and_blobs_from_that_env(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in provider.engine_env(deployment.aws).items():
        monkeypatch.setenv(name, value)
    module = load_provider("aws")  # the lazy registry, as engine_container/bus_crawl.py does
    bus, blobs = module.build_container_ports(SkycrawlSettings())
    topic = tenant_topic(deployment.settings.dispatch_topic, "t")
    deployment.client("sns").create_topic(Name=topic)  # what the tenant's stack creates
    try:
        await blobs.put(key="tenants/t/x", data=b"ok")
        assert await S3BlobStore.from_settings(deployment.aws).get(key="tenants/t/x") == b"ok"
        await bus.ensure_subscription(
            topic=topic, name="container-g1", filter={"container_id": "g1"}
        )
        await bus.delete_subscription(topic=topic, name="container-g1")
    finally:
        await bus.close()
        await blobs.close()


async def test_closing_the_ports_closes_every_client_they_opened(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scheduler (EventBridge) and provisioner (CloudFormation) clients included."""
    made: list[tuple[str, Any]] = []
    real = AwsSettings.client

    def spying(self: AwsSettings, service: str) -> Any:
        client = real(self, service)
        made.append((service, client))
        return client

    monkeypatch.setattr(AwsSettings, "client", spying)
    aws = deployment.aws.model_copy(
        update={"scheduler_role_arn": "arn:aws:iam::123456789012:role/scheduler"}
    )
    ports = provider.build_ports(deployment.settings, aws)
    services = sorted(service for service, _ in made)
    assert {"scheduler", "cloudformation", "ecs", "dynamodb", "s3", "sqs", "sns"} <= set(services)
    closed: list[str] = []
    for service, client in made:
        monkeypatch.setattr(client, "close", lambda s=service: closed.append(s))
    await ports.close()
    assert sorted(closed) == services
