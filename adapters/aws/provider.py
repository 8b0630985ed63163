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
TenantStores        ``DynamoTenantStores``           DynamoDB (a table per tenant), with
                                                     ``SKYCRAWL_TENANT_DATA=dedicated`` only
==================  ===============================  ==========================================

``build_ports`` makes one boto3 client per service (thread-safe; shared by every worker
thread). ``engine_env`` is what a crawler container needs to reach the same bus and bucket;
it carries no credentials -- a container uses its task role. ``build_container_ports`` is the
container's side: the bus and blob store from its environment.

Which of these bill at idle: DynamoDB and S3 storage only (see each adapter's docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from adapters.aws.blob_store import S3BlobStore
from adapters.aws.container_runtime import EcsRuntime
from adapters.aws.message_bus import SqsMessageBus
from adapters.aws.provisioner import CloudFormationProvisioner
from adapters.aws.scheduler import SqsScheduler
from adapters.aws.settings import AwsSettings
from adapters.aws.state_store import DynamoStateStore
from adapters.aws.tenant_stores import DynamoTenantStores
from core.clock import Clock, SystemClock
from core.models import Egress
from core.ports import ContainerRuntime, Ports
from core.settings import SkycrawlSettings
from core.tenant_data import routed_state

#: Settings a container reads (the rest only matter to the control plane).
_CONTAINER_SETTINGS = (
    "region",
    "endpoint_url",
    "bucket",
    "blob_prefix",
    "topic_arn_prefix",
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
    runtimes: Mapping[str, ContainerRuntime] | None = None,
) -> Ports:
    """Every AWS adapter, from ``aws`` (default: read ``SKYCRAWL_AWS_*`` now).

    One runtime per egress (``adapters.runtimes``): ``ecs`` egresses share one ``EcsRuntime``
    per region, others get their family's. ``runtime`` replaces every egress's runtime and
    ``runtimes`` those it names (the end-to-end tests run engines as local subprocesses)."""
    from adapters.runtimes import build_runtimes, same_runtime

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
    stores = (
        DynamoTenantStores.from_settings(aws, clock=clock)
        if settings.tenant_data == "dedicated"
        else None
    )
    return Ports(
        bus=bus,
        scheduler=scheduler,
        state=routed_state(DynamoStateStore.from_settings(aws, clock=clock), stores),
        blobs=S3BlobStore.from_settings(aws),
        runtimes=same_runtime(runtime, settings)
        if runtime is not None
        else build_runtimes(
            settings, home="aws", build_home=_ecs_per_region(aws), overrides=runtimes
        ),
        provisioner=CloudFormationProvisioner.from_settings(
            aws, dispatch_topic=settings.dispatch_topic, stores=stores
        ),
        clock=clock,
        pool=tuple(settings.egresses),
    )


def regional(aws: AwsSettings, egress: Egress) -> AwsSettings:
    """``aws`` in the egress's region when it names one (not ``local`` or empty)."""
    if egress.region in ("", "local", aws.region):
        return aws
    return aws.model_copy(update={"region": egress.region})


def _ecs_per_region(aws: AwsSettings) -> Callable[[Egress], ContainerRuntime]:
    made: dict[str, EcsRuntime] = {}

    def build(egress: Egress) -> ContainerRuntime:
        where = regional(aws, egress)
        if where.region not in made:
            made[where.region] = EcsRuntime.from_settings(where)
        return made[where.region]

    return build


def build_runtime(settings: SkycrawlSettings, egress: Egress) -> ContainerRuntime:
    """ECS for an ``ecs`` egress of another family's deployment (``SKYCRAWL_AWS_*``)."""
    return EcsRuntime.from_settings(regional(AwsSettings(), egress))


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
