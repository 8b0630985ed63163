"""The operator key by reference: the functions hold a Secrets Manager ARN and read the key
at cold start, on moto's Secrets Manager."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.aws.secrets import resolve_secrets
from adapters.aws.settings import AwsSettings
from core.errors import ConfigurationError, Unauthorized
from core.settings import SkycrawlSettings
from functions.aws import bootstrap
from tests.integration.aws.moto_deployment import Deployment, deploy
from tests.integration.aws.moto_server import client, unique


@pytest.fixture
def deployment(moto_endpoint: str) -> Deployment:
    return deploy(ecs=False)


def _secret(value: str) -> str:
    return str(client("secretsmanager").create_secret(Name=unique("op"), SecretString=value)["ARN"])


def test_a_referenced_operator_key_is_read_at_cold_start(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = _secret("op_from_secrets_manager_0123456789abcdef\n")
    environment = {
        "SKYCRAWL_AWS_REGION": deployment.aws.region,
        "SKYCRAWL_AWS_ENDPOINT_URL": deployment.aws.endpoint_url or "",
        "SKYCRAWL_AWS_TABLE": deployment.aws.table,
        "SKYCRAWL_AWS_BUCKET": deployment.aws.bucket,
        "SKYCRAWL_AWS_OPERATOR_KEY_SECRET": arn,
        "SKYCRAWL_INBOX_QUEUE": deployment.settings.inbox_queue,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SKYCRAWL_OPERATOR_KEY", raising=False)
    bootstrap.install(None)
    stack = bootstrap.stack()  # a cold start (a Lambda handler's thread), from the env only
    try:
        stack.tenants.authenticate_operator("Bearer op_from_secrets_manager_0123456789abcdef")
        with pytest.raises(Unauthorized):
            stack.tenants.authenticate_operator(f"Bearer {arn}")
    finally:
        bootstrap.install(None)
        bootstrap.run(stack.ports.close())


async def test_without_a_reference_nothing_is_read(deployment: Deployment) -> None:
    class NoCalls:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"Secrets Manager called: {name}")

    settings = SkycrawlSettings(operator_key=None)
    resolved = await resolve_secrets(settings, deployment.aws, secretsmanager=NoCalls())
    assert resolved.operator_key is None


@pytest.mark.parametrize("value", [None, "  \n"])
async def test_a_missing_or_empty_secret_is_a_configuration_error(
    deployment: Deployment, value: str | None
) -> None:
    ref = unique("missing") if value is None else _secret(value)
    aws = deployment.aws.model_copy(update={"operator_key_secret": ref})
    with pytest.raises(ConfigurationError, match="secret"):
        await resolve_secrets(SkycrawlSettings(), aws, secretsmanager=client("secretsmanager"))
    assert isinstance(aws, AwsSettings)
