"""Secrets by reference on AWS: the operator key comes from Secrets Manager, not from the
environment.

The SAM template keeps the key in an ``AWS::SecretsManager::Secret`` (generated, never a
template parameter) and gives the functions only its ARN, ``SKYCRAWL_AWS_OPERATOR_KEY_SECRET``.
``resolve_secrets`` reads it once per cold start (``GetSecretValue``, the ``SecretString``
stripped) into ``SkycrawlSettings.operator_key``; the value is never an environment variable,
so it appears neither in the template, nor in the function's configuration, nor in
``lambda:GetFunctionConfiguration``. Rotating the secret takes effect at the next cold start.

Errors: a missing secret, an empty one or one the role may not read is
``core.errors.ConfigurationError`` (the function cannot authenticate operators without it);
throttling is ``Retryable``. Settings: ``SKYCRAWL_AWS_OPERATOR_KEY_SECRET``. Cost: $0.40 a
month per secret plus $0.05 per 10,000 reads (one per cold start).
"""

from __future__ import annotations

from typing import Any

from adapters.aws.errors import ClientError, call, error_code
from adapters.aws.settings import AwsSettings
from core.errors import ConfigurationError
from core.settings import SkycrawlSettings

_MISSING = frozenset(
    {"ResourceNotFoundException", "AccessDeniedException", "InvalidRequestException"}
)


async def read_secret(secretsmanager: Any, secret_id: str) -> str:
    """The ``SecretString`` of ``secret_id`` (an ARN or a name), stripped."""
    try:
        response = await call(secretsmanager.get_secret_value, SecretId=secret_id)
    except ClientError as exc:
        if error_code(exc) in _MISSING:
            raise ConfigurationError(f"secret {secret_id}: {error_code(exc)}") from exc
        raise
    value = str(response.get("SecretString") or "").strip()
    if not value:
        raise ConfigurationError(f"secret {secret_id} holds no text")
    return value


async def resolve_secrets(
    settings: SkycrawlSettings, aws: AwsSettings, *, secretsmanager: Any | None = None
) -> SkycrawlSettings:
    """``settings`` with the operator key read from the secret ``aws`` refers to (unchanged
    when it refers to none)."""
    if not aws.operator_key_secret:
        return settings
    client = secretsmanager or aws.client("secretsmanager")
    try:
        key = await read_secret(client, aws.operator_key_secret)
    finally:
        if secretsmanager is None:
            client.close()
    return settings.model_copy(update={"operator_key": key})
