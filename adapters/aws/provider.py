"""The AWS provider: every port on AWS services, from ``AwsSettings`` (``SKYCRAWL_AWS_*``).

==================  ===============================  ==========================================
port                class                            service
==================  ===============================  ==========================================
MessageBus          ``SqsMessageBus``                SQS (inbox, DLQs), SNS (dispatch), S3
Scheduler           ``SqsScheduler``                 SQS DelaySeconds, EventBridge Scheduler
StateStore          ``DynamoStateStore``             DynamoDB (one table, conditional writes)
BlobStore           ``S3BlobStore``                  S3
ContainerRuntime    ``EcsRuntime``                   ECS RunTask on Fargate
Provisioner         ``CloudFormationProvisioner``    CloudFormation (one stack per tenant)
==================  ===============================  ==========================================

``build_ports`` makes one boto3 client per service (thread-safe; shared by every worker
thread). ``engine_env`` is what a crawler container needs to reach the same bus and bucket;
it carries no credentials -- a container uses its task role. ``build_container_ports`` is the
container's side: the bus and blob store from its environment.

Which of these bill at idle: DynamoDB and S3 storage only (see each adapter's docstring).
"""

from __future__ import annotations

from adapters.aws.blob_store import S3BlobStore
from adapters.aws.container_runtime import EcsRuntime
from adapters.aws.message_bus import SqsMessageBus
from adapters.aws.provisioner import CloudFormationProvisioner
from adapters.aws.scheduler import SqsScheduler
from adapters.aws.settings import AwsSettings
from adapters.aws.state_store import DynamoStateStore
from core.clock import Clock, SystemClock
from core.ports import ContainerRuntime, Ports
from core.settings import SkycrawlSettings

#: Settings a container reads (the rest only matter to the control plane).
_CONTAINER_SETTINGS = (
    "region",
    "endpoint_url",
    "bucket",
    "blob_prefix",
    "dispatch_topic_arn",
    "subscription_queue_prefix",
    "claim_check_prefix",
    "max_message_bytes",
)


def build_ports(
    settings: SkycrawlSettings,
    aws: AwsSettings | None = None,
    *,
    clock: Clock | None = None,
    runtime: ContainerRuntime | None = None,
) -> Ports:
    """Every AWS adapter, from ``aws`` (default: read ``SKYCRAWL_AWS_*`` now).

    ``runtime`` replaces ECS (the end-to-end test runs engines as local subprocesses)."""
    aws = aws or AwsSettings()
    clock = clock or SystemClock()
    bus = SqsMessageBus.from_settings(aws)
    scheduler = SqsScheduler(
        bus,
        scheduler=aws.client("scheduler") if aws.scheduler_role_arn else None,
        role_arn=aws.scheduler_role_arn,
        group=aws.schedule_group,
        clock=clock,
    )
    return Ports(
        bus=bus,
        scheduler=scheduler,
        state=DynamoStateStore.from_settings(aws, clock=clock),
        blobs=S3BlobStore.from_settings(aws),
        runtime=runtime or EcsRuntime.from_settings(aws),
        provisioner=CloudFormationProvisioner.from_settings(aws),
        clock=clock,
    )


def engine_env(aws: AwsSettings | None = None) -> dict[str, str]:
    """The environment a crawler container needs to reach the same bus and bucket."""
    aws = aws or AwsSettings()
    env = {"SKYCRAWL_PROVIDER": "aws"}
    for name in _CONTAINER_SETTINGS:
        value = getattr(aws, name)
        if value is not None and value != "":
            env[f"SKYCRAWL_AWS_{name.upper()}"] = str(value)
    return env


def build_container_ports(settings: SkycrawlSettings) -> tuple[SqsMessageBus, S3BlobStore]:
    """The bus and blob store an engine container uses, from its environment."""
    aws = AwsSettings()
    return SqsMessageBus.from_settings(aws), S3BlobStore.from_settings(aws)
