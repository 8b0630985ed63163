"""A skycrawl deployment on the moto server, made the way ``deploy/aws/template.yaml`` makes it
(state table with TTL, data bucket, inbox queue + DLQ with a redrive policy (each tenant's
dispatch topic + DLQ come with its stack), VPC, subnet, security group, ECS cluster, Fargate task definition), with every name
starting with a unique prefix so that tests sharing the server never meet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from adapters.aws.settings import AwsSettings
from core.settings import SkycrawlSettings
from tests.contract.backends_aws import create_state_table
from tests.integration.aws.moto_server import ACCOUNT, REGION, client, endpoint, unique

OPERATOR_KEY = "op_aws_operator_key_for_tests_only_0123456789"


@dataclass
class Deployment:
    prefix: str
    settings: SkycrawlSettings
    aws: AwsSettings

    def client(self, service: str) -> Any:
        return client(service)


def _network() -> tuple[str, str]:
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # moto's Fargate RunTask fails (500) unless the VPC gives its interfaces DNS names
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(
        GroupName=unique("engine"), Description="skycrawl engine", VpcId=vpc
    )["GroupId"]
    return subnet, group


def register_task_definition(family: str) -> str:
    response = client("ecs").register_task_definition(
        family=family,
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="512",
        memory="1024",
        containerDefinitions=[
            {
                "name": "engine",
                "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/skycrawl-engine:test",
                "essential": True,
                "memory": 1024,  # moto's Fargate RunTask needs container-level memory
                "stopTimeout": 30,
            }
        ],
    )
    return str(response["taskDefinition"]["taskDefinitionArn"])


def deploy(*, ecs: bool = True, task_definition: bool = True, **overrides: Any) -> Deployment:
    """Create the resources of one deployment; ``overrides`` go to ``SkycrawlSettings``.
    ``ecs=False`` skips the network and the cluster (for tests whose containers are local
    processes; moto's EC2 takes seconds to load)."""
    prefix = unique("sc")
    create_state_table(f"{prefix}-state")
    s3, sqs = client("s3"), client("sqs")
    s3.create_bucket(Bucket=f"{prefix}-data")
    dlq = sqs.create_queue(QueueName=f"{prefix}-inbox-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    redrive = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 5}
    sqs.create_queue(
        QueueName=f"{prefix}-inbox",
        Attributes={"RedrivePolicy": json.dumps(redrive), "VisibilityTimeout": "30"},
    )
    # each tenant's dispatch topic comes with the tenant (its CloudFormation stack)
    subnet, group = _network() if ecs else ("subnet-none", "sg-none")
    family = f"{prefix}-engine"
    if ecs:
        client("ecs").create_cluster(clusterName=prefix)
    if ecs and task_definition:
        register_task_definition(family)
    settings = SkycrawlSettings(
        provider="aws",
        inbox_queue=f"{prefix}-inbox",
        dispatch_topic=f"{prefix}-dispatch",
        operator_key=OPERATOR_KEY,
        **overrides,
    )
    aws = AwsSettings(
        region=REGION,
        endpoint_url=endpoint(),
        table=f"{prefix}-state",
        bucket=f"{prefix}-data",
        topic_arn_prefix=f"arn:aws:sns:{REGION}:{ACCOUNT}:",
        subscription_queue_prefix=f"{prefix}-sub-",
        inbox_visibility_timeout_s=30,
        cluster=prefix,
        task_definition=family,
        subnets=[subnet],
        security_groups=[group],
        stack_prefix=prefix,
        stack_poll_s=0.05,
        stack_wait_s=5,
    )
    return Deployment(prefix=prefix, settings=settings, aws=aws)
