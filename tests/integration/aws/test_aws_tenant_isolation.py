"""Tenant A's crawler containers, with the task role deploy/aws/tenant.yaml gives them (plus
the engine base policy of template.yaml), may use A's topic, A's subscription queues and A's
prefix of the bucket, send to the inbox -- and nothing of tenant B or of the control plane.

moto does not enforce IAM, so the documents are resolved with the names the provisioner and
the SAM stack really use and evaluated (``iam_policy``): A on B's resources is denied, A on
its own allowed.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from adapters.aws.provisioner import CloudFormationProvisioner
from adapters.aws.sns_topics import SnsTopics
from core.layout import subscription_name
from tests.integration.aws.iam_policy import allowed, resolve

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "aws"
STACK, REGION, ACCOUNT = "sc", "us-east-1", "123456789012"
A, B = "tn_" + "a" * 32, "tn_" + "b" * 32
PSEUDO = {
    "AWS::StackName": STACK,
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
}
MAIN = {
    **PSEUDO,
    "DataBucket": f"{STACK}-data",
    "DataBucket.Arn": f"arn:aws:s3:::{STACK}-data",
    "InboxQueue.Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-inbox",
    "InboxQueue.QueueName": f"{STACK}-inbox",
    "StateTable.Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-state",
    "OperatorKeySecret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:op-AbCdEf",
    "EngineBasePolicy": f"arn:aws:iam::{ACCOUNT}:policy/{STACK}-base",
    "TenantStackRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/{STACK}-tenant-stacks",
    "EngineCluster": f"{STACK}-cluster",
    "EngineTaskDefinition": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{STACK}-engine:1",
}


@functools.cache
def _template(name: str) -> Any:
    template, problems = decode(str(DEPLOY / name))
    assert not problems
    return template


def _env(name: str) -> str:
    variables = _template("template.yaml")["Globals"]["Function"]["Environment"]["Variables"]
    return str(resolve(variables[name], MAIN))


@functools.cache
def _provisioner() -> CloudFormationProvisioner:
    assert MAIN["EngineBasePolicy"] in _env("SKYCRAWL_AWS_TENANT_PARAMETERS")
    return CloudFormationProvisioner(
        cloudformation=None,
        stack_prefix=_env("SKYCRAWL_AWS_STACK_PREFIX"),
        parameters={
            "DataBucket": MAIN["DataBucket"],
            "EngineBasePolicyArn": MAIN["EngineBasePolicy"],
        },
        dispatch_topic=_env("SKYCRAWL_DISPATCH_TOPIC"),
        subscription_queue_prefix=_env("SKYCRAWL_AWS_SUBSCRIPTION_QUEUE_PREFIX"),
    )


def topic_arn(tenant: str) -> str:
    return f"arn:aws:sns:{REGION}:{ACCOUNT}:{_provisioner().topic(tenant)}"


def queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


def subscription_queue(tenant: str, guid: str) -> str:
    topics = SnsTopics(
        None, None, subscription_queue_prefix=_env("SKYCRAWL_AWS_SUBSCRIPTION_QUEUE_PREFIX")
    )  # type: ignore[arg-type]
    return topics.subscription_queue(_provisioner().topic(tenant), subscription_name(guid))


@functools.cache
def engine_documents(tenant: str) -> list[dict[str, Any]]:
    """Every policy the tenant's task role holds: its inline ones and the base policy."""
    tenant_template = _template("tenant.yaml")
    parameters = _provisioner().parameters(tenant)
    assert set(parameters) | {"EngineBasePolicyArn"} >= set(tenant_template["Parameters"])
    names = {
        **PSEUDO,
        **parameters,
        "HasBasePolicy": "true",
        "DispatchTopic": topic_arn(tenant),
        "DispatchDeadLetterQueue.Arn": queue_arn(f"{parameters['DispatchTopicName']}-dlq"),
    }
    role = resolve(tenant_template["Resources"]["EngineRole"]["Properties"], names)
    assert role["ManagedPolicyArns"] == [MAIN["EngineBasePolicy"]]  # nothing else attached
    documents = [p["PolicyDocument"] for p in role["Policies"]]
    base = _template("template.yaml")["Resources"]["EngineBasePolicy"]["Properties"]
    return [*documents, resolve(base["PolicyDocument"], MAIN)]


def own_and_other(tenant: str) -> list[tuple[str, str, dict[str, str]]]:
    """(action, resource, context) a container of ``tenant`` needs on its own resources."""
    guid = "0123456789abcdef0123456789abcdef"
    queue = queue_arn(subscription_queue(tenant, guid))
    bucket = MAIN["DataBucket.Arn"]
    return [
        ("sns:Subscribe", topic_arn(tenant), {}),
        ("sns:Unsubscribe", f"{topic_arn(tenant)}:5f0e-sub", {}),
        ("sqs:CreateQueue", queue, {}),
        ("sqs:ReceiveMessage", queue, {}),
        ("sqs:DeleteMessage", queue, {}),
        ("sqs:DeleteQueue", queue, {}),
        ("sqs:SendMessage", queue_arn(f"{_provisioner().topic(tenant)}-dlq"), {}),
        ("s3:PutObject", f"{bucket}/tenants/{tenant}/crawls/c1/manifest/00000000.jsonl", {}),
        ("s3:GetObject", f"{bucket}/tenants/{tenant}/crawls/c1/checkpoint.json", {}),
        ("s3:ListBucket", bucket, {"s3:prefix": f"tenants/{tenant}/crawls/"}),
    ]


@pytest.mark.parametrize(("action", "resource", "context"), own_and_other(A))
def test_a_container_may_use_its_own_tenants_resources(
    action: str, resource: str, context: dict[str, str]
) -> None:
    assert allowed(engine_documents(A), action, resource, context)


@pytest.mark.parametrize(("action", "resource", "context"), own_and_other(B))
def test_a_container_of_a_may_not_touch_bs_topic_queues_or_prefix(
    action: str, resource: str, context: dict[str, str]
) -> None:
    """Forged filters and guessed names do not help: B's topic refuses A's subscription, B's
    subscription queues refuse A's receive, B's prefix refuses A's reads and listing."""
    assert not allowed(engine_documents(A), action, resource, context)


@pytest.mark.parametrize(
    ("action", "resource", "context"),
    [
        ("sqs:SendMessage", MAIN["InboxQueue.Arn"], {}),  # its reports
        ("s3:GetObject", f"{MAIN['DataBucket.Arn']}/bus-claims/4b1e", {}),  # claim checks
    ],
)
def test_a_container_may_report_to_the_inbox(
    action: str, resource: str, context: dict[str, str]
) -> None:
    assert allowed(engine_documents(A), action, resource, context)


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("sqs:ReceiveMessage", MAIN["InboxQueue.Arn"]),  # the conductor's work
        ("dynamodb:GetItem", MAIN["StateTable.Arn"]),  # the control plane's state
        ("dynamodb:PutItem", MAIN["StateTable.Arn"]),
        ("secretsmanager:GetSecretValue", MAIN["OperatorKeySecret"]),
        ("sns:Publish", topic_arn(A)),  # only the conductor dispatches
        ("s3:GetObject", f"{MAIN['DataBucket.Arn']}/functions/code.zip"),  # outside tenants/
        ("s3:PutObject", f"{MAIN['DataBucket.Arn']}/tenants/{B}/crawls/c1/checkpoint.json"),
        ("lambda:GetFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-api"),
        ("ecs:RunTask", MAIN["EngineTaskDefinition"]),
        ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/{STACK}-eng-other"),
        ("cloudformation:DeleteStack", f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/x/y"),
    ],
)
def test_nothing_of_the_control_plane_is_in_reach(action: str, resource: str) -> None:
    assert not allowed(engine_documents(A), action, resource)


def test_listing_the_bucket_outside_the_tenants_prefix_is_denied() -> None:
    bucket = MAIN["DataBucket.Arn"]
    for prefix in ("", "tenants/", f"tenants/{B}/", "bus-claims/"):
        assert not allowed(engine_documents(A), "s3:ListBucket", bucket, {"s3:prefix": prefix})
    assert not allowed(engine_documents(A), "s3:ListBucket", bucket)  # no prefix at all
