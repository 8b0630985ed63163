"""Fixtures of the AWS integration tests: the moto server (one per test process, started by
``moto_server.endpoint()`` on first use), dummy credentials in the environment for clients
that ``AwsSettings`` builds, and a fresh deployment (``moto_deployment.deploy``) per test.

Nothing here talks to AWS: every client has the moto server's ``endpoint_url``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.aws import moto_server
from tests.integration.aws.moto_deployment import Deployment, deploy


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The moto server's URL, with dummy credentials and tracing off in the environment."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in moto_server.CREDENTIALS.items():
            env.setenv(name, value)
        env.setenv("POWERTOOLS_TRACE_DISABLED", "true")
        env.setenv("POWERTOOLS_METRICS_NAMESPACE", "skycrawl")
        yield moto_server.endpoint()


@pytest.fixture
def deployment(moto_endpoint: str) -> Deployment:
    return deploy(allow_cidrs=["127.0.0.0/8"])


@dataclass
class LambdaContext:
    """What the Lambda runtime passes as ``context`` (the runtime is the boundary here)."""

    function_name: str = "skycrawl-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:skycrawl-test"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name: str = "/aws/lambda/skycrawl-test"
    log_stream_name: str = "2026/01/01/[$LATEST]abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def lambda_context() -> Any:
    return LambdaContext()
