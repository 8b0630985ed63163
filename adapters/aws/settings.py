"""Settings of the AWS provider: ``SKYCRAWL_AWS_*`` environment variables, one place.

Every field is documented below; the SAM template (``deploy/aws/template.yaml``) sets them on
the three Lambda functions, and ``adapters.aws.provider.engine_env`` passes the ones a crawler
container needs to every ECS task it starts. Credentials are never settings: boto3 finds them
the usual way (the Lambda execution role, the ECS task role, or ``AWS_*`` variables locally).

``AwsSettings.client(service)`` builds one boto3 client from these settings (region, optional
``endpoint_url`` for moto or LocalStack, standard retry mode, a connection pool sized for the
worker threads). boto3 clients are thread-safe, so one client per service and process is
shared by every ``asyncio.to_thread`` call an adapter makes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: ``deploy/aws/tenant.yaml`` of this checkout (the SAM build copies it next to the code).
DEFAULT_TENANT_TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "tenant.yaml"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class AwsSettings(BaseSettings):
    """Where the AWS resources of one deployment are, and how to reach them."""

    model_config = SettingsConfigDict(env_prefix="SKYCRAWL_AWS_", extra="ignore", frozen=True)

    # ------------------------------------------------------------------ connection
    region: str = Field("us-east-1", description="AWS region of every resource.")
    endpoint_url: str | None = Field(
        None,
        description="Send every API call to this endpoint instead of AWS (moto server, "
        "LocalStack). Unset in production.",
    )
    max_pool_connections: int = Field(
        32, ge=1, le=512, description="HTTP connections per boto3 client (one per thread)."
    )

    # ------------------------------------------------------------------ state and blobs
    table: str = Field(
        "skycrawl-state", description="DynamoDB table of every record (pk, sk; TTL on ttl)."
    )
    bucket: str = Field(
        "skycrawl-data", description="S3 bucket of pages, manifests, checkpoints, claim checks."
    )
    blob_prefix: str = Field(
        "", description="Key prefix of the blob store inside the bucket (e.g. 'prod/')."
    )

    # ------------------------------------------------------------------ message bus
    topic_arn_prefix: str | None = Field(
        None,
        description="ARN of the tenants' SNS dispatch topics up to their name "
        "(arn:<partition>:sns:<region>:<account>:); a topic's ARN is this and its name. "
        "Unset: each topic is looked up once with sns:ListTopics.",
    )
    max_filter_policies_per_topic: int = Field(
        200,
        ge=1,
        description="SNS filter policies one topic may hold (AWS's default quota is 200; raise "
        "it here after AWS raised it): each tenant's live containers at most.",
    )
    subscription_queue_prefix: str = Field(
        "skycrawl-sub-",
        description="Name prefix of the per-container SQS queues; IAM grants containers "
        "access to queues with this prefix only.",
    )
    claim_check_prefix: str = Field(
        "bus-claims/",
        description="Key prefix of message bodies too large for SQS (claim checks); the "
        "bucket's lifecycle rule expires them.",
    )
    max_message_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest message body accepted; bodies over 256 KiB travel through S3.",
    )
    inbox_visibility_timeout_s: float = Field(
        360.0,
        gt=0,
        le=43200,
        description="Visibility timeout of the inbox queue (as in the template), for leases "
        "built from Lambda SQS records.",
    )

    # ------------------------------------------------------------------ scheduler
    scheduler_role_arn: str | None = Field(
        None,
        description="Role EventBridge Scheduler assumes to send to SQS. Set: delays over "
        "15 minutes are one-time schedules; unset: the core chains 15-minute SQS delays.",
    )
    schedule_group: str = Field("default", description="EventBridge Scheduler group.")

    # ------------------------------------------------------------------ containers (ECS)
    cluster: str = Field("skycrawl", description="ECS cluster the engine tasks run in.")
    task_definition: str = Field(
        "skycrawl-engine", description="Task definition (family[:revision] or ARN) of the engine."
    )
    browser_task_definition: str | None = Field(
        None,
        description="Task definition of the containers started for crawls that render (the "
        "engine's browser image; same container name); unset: task_definition. ECS runs a task "
        "definition's image, so this is how the browser image is chosen on AWS.",
    )
    container_name: str = Field("engine", description="Container name in the task definition.")
    subnets: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated subnet ids of the engine tasks."
    )
    security_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated security group ids of the tasks."
    )
    assign_public_ip: bool = Field(
        True,
        description="Give tasks a public IP (public subnets without NAT need one to reach "
        "the web and ECR).",
    )
    public_ip_egresses: dict[str, bool] = Field(
        default_factory=dict,
        description='Per egress name, override assign_public_ip (JSON, e.g. {"via-nat": false}).',
    )
    capacity_provider: str | None = Field(
        None,
        description="Run tasks on this capacity provider (FARGATE_SPOT is ~70% cheaper and "
        "may be interrupted) instead of the FARGATE launch type.",
    )
    tenant_task_role_arn: str | None = Field(
        None,
        description="ARN pattern of the per-tenant task role, with {role_name} where the "
        "tenant's role name goes; unset: the task definition's role.",
    )

    # ------------------------------------------------------------------ secrets
    operator_key_secret: str | None = Field(
        None,
        description="Secrets Manager secret (ARN or name) holding the operator key, read once "
        "per cold start (adapters.aws.secrets); the key itself is never an environment variable.",
    )

    # ------------------------------------------------------------------ provisioner
    stack_prefix: str = Field(
        "skycrawl", description="Prefix of per-tenant stack and role names (the SAM stack name)."
    )
    tenant_template: Path = Field(
        DEFAULT_TENANT_TEMPLATE, description="CloudFormation template of one tenant."
    )
    tenant_parameters: dict[str, str] = Field(
        default_factory=dict,
        description="Extra parameters of the tenant template (JSON), e.g. EngineBasePolicyArn.",
    )
    cloudformation_role_arn: str | None = Field(
        None, description="Service role CloudFormation uses for tenant stacks."
    )
    stack_poll_s: float = Field(2.0, gt=0, description="How often a stack's status is polled.")
    stack_wait_s: float = Field(
        20.0,
        ge=0,
        description="Longest wait for a tenant stack to settle before the API answers (API "
        "Gateway allows 30 s); the stack completes in the background.",
    )

    @field_validator("subnets", "security_groups", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` (``Any``: boto3 ships no type stubs), built on its
        first use (``LazyClient``): a function's cold start pays only for the services its
        first request calls (each client costs tens of ms to build)."""
        return LazyClient(lambda: self.eager_client(service))

    def eager_client(self, service: str) -> Any:
        """The boto3 client for ``service``, built now."""
        from botocore.config import Config  # type: ignore[import-untyped]  # no stubs

        config = Config(
            region_name=self.region,
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=self.max_pool_connections,
            # presigned S3 URLs in SigV4 (what every region takes; SigV2 is deprecated)
            signature_version="s3v4" if service == "s3" else None,
        )
        with _building:  # a boto3 session is not thread-safe; its clients are
            return _session(self.region).client(
                service, endpoint_url=self.endpoint_url, config=config
            )


_building = threading.Lock()


class LazyClient:
    """A boto3 client built on first attribute access (once, under a lock, from whichever
    thread gets there first); then every attribute is the real client's."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build: Callable[[], Any] | None = build
        self._client: Any = None
        self._lock = threading.Lock()

    def _real(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    assert self._build is not None
                    self._client = self._build()
                    self._build = None
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)


@functools.lru_cache(maxsize=8)
def _session(region: str) -> Any:
    """One boto3 session per region and process: it loads each service model once."""
    import boto3  # type: ignore[import-untyped]  # boto3 and botocore ship no stubs

    return boto3.session.Session(region_name=region)
