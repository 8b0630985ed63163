"""deploy/azure/main.bicep holds secrets by reference: the operator key is a Key Vault secret,
and the function app's settings carry only a Key Vault reference to it."""

from __future__ import annotations

import re
from pathlib import Path

MAIN = Path(__file__).resolve().parents[3] / "deploy" / "azure" / "main.bicep"


def _app_settings(bicep: str) -> dict[str, str]:
    block = re.search(r"^var appSettings = \[\n(.*?)^\]", bicep, re.MULTILINE | re.DOTALL)
    assert block is not None
    entries = re.findall(r"\{ name: '([^']+)', value: (.+?) \}\s*$", block.group(1), re.MULTILINE)
    return dict(entries)


def test_no_secret_value_is_an_app_setting() -> None:
    bicep = MAIN.read_text()
    settings = _app_settings(bicep)
    assert "SKYCRAWL_OPERATOR_KEY" in settings
    assert settings["SKYCRAWL_OPERATOR_KEY"].startswith("'@Microsoft.KeyVault(SecretUri=${")
    secure = re.findall(r"^@secure\(\)\nparam (\w+) ", bicep, re.MULTILINE)
    assert secure == ["operatorKey"]
    for name, value in settings.items():
        assert not any(re.search(rf"\b{p}\b", value) for p in secure), name
        assert "listKeys" not in value, name
        assert "AccountKey=" not in value, name


def test_the_secret_goes_only_into_key_vault_which_the_control_identity_may_read() -> None:
    bicep = MAIN.read_text()
    lines = [line.strip() for line in bicep.splitlines() if not line.lstrip().startswith("//")]
    uses = [line for line in lines if re.search(r"\boperatorKey\b", line)]
    assert uses == ["param operatorKey string", "properties: { value: operatorKey }"]
    secret = re.search(r"^resource operatorKeySecret .*?^\}", bicep, re.MULTILINE | re.DOTALL)
    assert secret is not None
    assert "properties: { value: operatorKey }" in secret.group()
    role = re.search(r"^resource controlSecretRole .*?^\}", bicep, re.MULTILINE | re.DOTALL)
    assert role is not None
    assert "scope: operatorKeySecret" in role.group()
    assert "roles.keyVaultSecretsUser" in role.group()
    assert "controlIdentity.properties.principalId" in role.group()
    assert "keyVaultReferenceIdentity: controlIdentity.id" in bicep


def _resource(bicep: str, name: str) -> str:
    found = re.search(rf"^resource {name} .*?^\}}", bicep, re.MULTILINE | re.DOTALL)
    assert found is not None, name
    return found.group()


def test_the_shared_engine_identity_only_pulls_the_image() -> None:
    """Data access is per tenant (tenant.bicep: the tenant's own identity); the identity every
    engine carries may pull the image, nothing more."""
    bicep = MAIN.read_text()
    grants = re.findall(
        r"^resource (\w+) 'Microsoft.Authorization/roleAssignments@[\d-]+' = (?:if \((.*?)\) )?\{",
        bicep,
        re.MULTILINE,
    )
    engine = {
        name: condition
        for name, condition in grants
        if "engineIdentity.properties.principalId" in _resource(bicep, name)
    }
    assert engine == {"enginePullRole": "!empty(registryName)"}
    assert "roles.acrPull" in _resource(bicep, "enginePullRole")
    assert "scope: registry" in _resource(bicep, "enginePullRole")


def test_the_tenants_blob_role_has_data_actions_only() -> None:
    bicep = MAIN.read_text()
    role = _resource(bicep, "engineBlobDataRole")
    assert "actions: []" in role
    assert "notActions: []" in role
    assert "{ name: 'SKYCRAWL_AZURE_TENANT_BLOB_ROLE_ID', value: engineBlobDataRole.name }" in bicep
    assert "parent: blobService\n  name: deploymentContainer" in _resource(bicep, "releases")
