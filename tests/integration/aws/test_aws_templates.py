"""deploy/aws: both templates are cfn-lint clean, and they agree with the code that reads them
(every SKYCRAWL_* variable the SAM template sets is a setting; the tenant template takes the
parameters the provisioner passes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import decode

from adapters.aws.settings import AwsSettings
from adapters.aws.tenant_stores import DynamoTenantStores
from core.settings import SkycrawlSettings
from engine_container.settings import EngineSettings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "aws"


def load(name: str) -> Any:
    template, problems = decode(str(DEPLOY / name))
    assert not problems, problems
    return template


@pytest.mark.parametrize("name", ["template.yaml", "tenant.yaml"])
def test_cfn_lint_finds_no_errors_or_warnings(name: str) -> None:
    matches = lint_file(DEPLOY / name, config=ManualArgs())
    problems = [f"{m.rule.id} {m.filename}:{m.linenumber} {m.message}" for m in matches]
    assert not [p for p in problems if p[0] in "EW"], "\n".join(problems)


def test_every_variable_the_functions_get_is_a_setting() -> None:
    variables = load("template.yaml")["Globals"]["Function"]["Environment"]["Variables"]
    aws_fields = set(AwsSettings.model_fields)
    core_fields = set(SkycrawlSettings.model_fields)
    for name in variables:
        if name.startswith("SKYCRAWL_AWS_"):
            assert name.removeprefix("SKYCRAWL_AWS_").lower() in aws_fields, name
        elif name.startswith("SKYCRAWL_"):
            assert name.removeprefix("SKYCRAWL_").lower() in core_fields, name
    for required in ("SKYCRAWL_AWS_TABLE", "SKYCRAWL_AWS_BUCKET", "SKYCRAWL_AWS_CLUSTER"):
        assert required in variables


def test_the_template_sets_what_containers_need_through_engine_env() -> None:
    engine_fields = set(EngineSettings.model_fields)
    variables = load("template.yaml")["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["SKYCRAWL_HEARTBEAT_INTERVAL_S"]  # passed on by the conductor
    assert "heartbeat_interval_s" in engine_fields


def test_the_tenant_template_takes_what_the_provisioner_passes() -> None:
    tenant = load("tenant.yaml")
    passed = {"TenantId", "DispatchTopicName", "SubscriptionQueuePrefix", "EngineRoleName"}
    passed |= {"DataPrefix", "DataBucket"}
    passed |= {"EngineBasePolicyArn"}  # from SKYCRAWL_AWS_TENANT_PARAMETERS in template.yaml
    assert set(tenant["Parameters"]) == passed
    assert {"DispatchTopicArn", "EngineRoleArn"} <= set(tenant["Outputs"])
    variables = load("template.yaml")["Globals"]["Function"]["Environment"]["Variables"]
    assert "EngineBasePolicyArn" in str(variables["SKYCRAWL_AWS_TENANT_PARAMETERS"])


def test_queue_and_visibility_settings_match_the_code() -> None:
    resources = load("template.yaml")["Resources"]
    inbox = resources["InboxQueue"]["Properties"]
    variables = load("template.yaml")["Globals"]["Function"]["Environment"]["Variables"]
    assert str(inbox["VisibilityTimeout"]) == variables["SKYCRAWL_AWS_INBOX_VISIBILITY_TIMEOUT_S"]
    assert str(inbox["RedrivePolicy"]["maxReceiveCount"]) == variables["SKYCRAWL_MAX_DELIVERIES"]
    conductor = resources["ConductorFunction"]["Properties"]
    timeout = int(conductor.get("Timeout", 60))
    assert int(inbox["VisibilityTimeout"]) >= 6 * timeout  # AWS's advice for SQS triggers
    events = conductor["Events"]["Inbox"]["Properties"]
    assert events["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_operator_key_is_a_secret_the_functions_hold_only_by_reference() -> None:
    template = load("template.yaml")
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert "SKYCRAWL_OPERATOR_KEY" not in variables
    assert variables["SKYCRAWL_AWS_OPERATOR_KEY_SECRET"] == {"Ref": "OperatorKeySecret"}
    secret = template["Resources"]["OperatorKeySecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert "GenerateSecretString" in secret["Properties"]  # no value in the template at all
    assert not [p for p, spec in template["Parameters"].items() if spec.get("NoEcho")]
    for function in ("ApiFunction", "ConductorFunction", "HousekeepingFunction"):
        env = template["Resources"][function]["Properties"].get("Environment", {})
        assert not [v for v in env.get("Variables", {}) if "KEY" in v or "SECRET" in v]


def test_the_tenant_tables_are_the_ones_the_functions_may_use() -> None:
    """TenantData=dedicated: the API may create and delete exactly the tables named like
    DynamoTenantStores names them, and every function that reads records may use them."""
    template = load("template.yaml")
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["SKYCRAWL_TENANT_DATA"] == {"Ref": "TenantData"}
    assert template["Parameters"]["TenantData"]["AllowedValues"] == ["pooled", "dedicated"]
    tables = DynamoTenantStores(dynamodb=None, table_prefix="STATE").store_name("tn_0a1b")
    assert tables.startswith("STATE-t-")
    pattern = {"Fn::Sub": "${StateTable.Arn}-t-*"}
    text = json.dumps(template)
    assert text.count(json.dumps(pattern)) == 3  # two Records statements and TenantTables
    api = template["Resources"]["ApiFunction"]["Properties"]["Policies"][0]["Statement"]
    (create,) = [s for s in api if s.get("Sid") == "TenantTables"]
    assert {"dynamodb:CreateTable", "dynamodb:DeleteTable"} <= set(create["Action"])
    assert create["Resource"] == pattern
