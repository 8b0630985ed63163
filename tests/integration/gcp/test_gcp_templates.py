"""deploy/gcp holds secrets by reference: the operator key is a Secret Manager secret, which
the functions get as a secret environment variable (resolved by the platform at instance
start), never as a plain one. Its tenant module makes the same account and grants as the
provisioner."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "gcp"


def test_the_operator_key_reaches_the_functions_only_through_secret_manager() -> None:
    terraform = "\n".join(p.read_text() for p in sorted(DEPLOY.glob("*.tf")))
    plain = re.search(r"function_env = \{(.*?)\n  \}", terraform, re.DOTALL)
    assert plain is not None
    assert "OPERATOR_KEY" not in plain.group(1)
    assert "var.operator_key" not in plain.group(1)
    secret_vars = re.findall(r'secret_environment_variables \{\s*key\s*= "(\w+)"', terraform)
    assert secret_vars == ["SKYCRAWL_OPERATOR_KEY", "SKYCRAWL_OPERATOR_KEY"]  # api, conductor
    uses = re.findall(r"^.*var\.operator_key.*$", terraform, re.MULTILINE)
    assert [u.strip() for u in uses] == ["secret_data = var.operator_key"]
    assert re.search(r'variable "operator_key" \{[^}]*sensitive\s*=\s*true', terraform)


TENANT_MODULE = DEPLOY / "modules" / "tenant" / "main.tf"
IDS = ["acme", "tn_" + "A" * 32, "9-lives", "a_b-C", "x" * 64]


def test_the_tenant_module_names_the_account_as_the_provisioner_does(tmp_path: Path) -> None:
    """modules/tenant's account id, evaluated by ``terraform console`` (no provider needed for
    locals), equals ``tenant_iam.service_account_id``: a tenant made in Terraform and one made
    by the API get the same account."""
    from adapters.gcp.tenant_iam import service_account_id

    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    found = re.findall(r"^\s*(account_(?:slug|digest|id)\s*=.*)$", TENANT_MODULE.read_text(), re.M)
    lines = [line for line in found if not line.endswith("= local.account_id")]  # the resource's
    assert len(lines) == 3
    body = "\n".join(lines)
    (tmp_path / "main.tf").write_text(
        f'variable "tenant_id" {{\n  type = string\n}}\n\nlocals {{\n{body}\n}}\n'
    )
    for tenant in IDS:
        found = subprocess.run(
            [terraform, "console", "-var", f"tenant_id={tenant}"],
            input="local.account_id\n",
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            check=True,
        )
        assert found.stdout.strip().strip('"') == service_account_id(tenant), tenant


def test_the_tenant_module_grants_what_the_provisioner_grants() -> None:
    from adapters.gcp.tenant_iam import listing_condition, object_prefix_condition

    text = TENANT_MODULE.read_text()
    expressions = [
        e.replace('\\"', '"')
        .replace("${local.bucket_name}", "projects/_/buckets/b")
        .replace("${var.tenant_id}", "acme")
        for e in re.findall(r'expression\s*=\s*"((?:[^"\\]|\\.)*)"', text)
    ]
    assert expressions == [
        object_prefix_condition("b", "acme").expression,
        listing_condition("b").expression,
    ]
    roles = re.findall(r'role\s*=\s*"(roles/[^"]+)"', text)
    assert {"roles/storage.objectAdmin", "roles/storage.objectViewer"} <= set(roles)
    assert "roles/pubsub.subscriber" in roles  # only the shared engines' (count 0 with identities)
