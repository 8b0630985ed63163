"""What an AWS function's cold start does not pay for: the X-Ray SDK while tracing is off
(about 200 ms), and boto3 clients of services its first request does not call (each is
built on first use)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from adapters.aws.provider import build_ports
from adapters.aws.settings import AwsSettings, LazyClient
from core.settings import SkycrawlSettings
from functions.aws import tracing

ENTRY_POINTS = ["functions.aws.api", "functions.aws.conductor", "functions.aws.housekeeping"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_an_entry_point_with_tracing_off_never_imports_the_xray_sdk(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "LAMBDA_"))}
    env.update(POWERTOOLS_TRACE_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    code = f"import sys, json, {module}; print(json.dumps('aws_xray_sdk' in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) is False


def test_the_decision_follows_powertools_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POWERTOOLS_TRACE_DISABLED", "LAMBDA_TASK_ROOT", "AWS_SAM_LOCAL"):
        monkeypatch.delenv(name, raising=False)
    assert not tracing.tracing_enabled()  # outside Lambda: no daemon to send to
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    assert tracing.tracing_enabled()
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    assert not tracing.tracing_enabled()
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")
    assert not tracing.tracing_enabled()


def test_tracing_on_uses_powertools_tracer_and_off_leaves_the_handler_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def handler(event: dict[str, str], context: object) -> str:
        return event["x"]

    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    off = tracing.tracer("svc")
    assert off.capture_lambda_handler(capture_response=False)(handler) is handler

    # the real Tracer patches botocore for the whole process when built inside "Lambda":
    # stand in for the class and check that it is the one built, with the service
    import aws_lambda_powertools

    class Recorder:
        def __init__(self, service: str) -> None:
            self.service = service

    monkeypatch.setattr(aws_lambda_powertools, "Tracer", Recorder)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED")
    monkeypatch.delenv("AWS_SAM_LOCAL", raising=False)
    on = tracing.tracer("svc")
    assert isinstance(on, Recorder)
    assert on.service == "svc"


def test_building_the_ports_builds_no_client_until_a_service_is_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    eager = AwsSettings.eager_client

    def counted(self: AwsSettings, service: str) -> object:
        built.append(service)
        return eager(self, service)

    monkeypatch.setattr(AwsSettings, "eager_client", counted)
    aws = AwsSettings(endpoint_url="http://127.0.0.1:9", bucket="b", table="t")
    ports = build_ports(SkycrawlSettings(provider="aws"), aws)
    assert built == []
    client = aws.client("dynamodb")
    assert isinstance(client, LazyClient)
    assert client.meta.service_model.service_name == "dynamodb"  # built on first use
    assert client.meta is client.meta  # and once
    assert built == ["dynamodb"]
    del ports
