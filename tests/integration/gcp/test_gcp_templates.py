"""deploy/gcp holds secrets by reference: the operator key is a Secret Manager secret, which
the functions get as a secret environment variable (resolved by the platform at instance
start), never as a plain one."""

from __future__ import annotations

import re
from pathlib import Path

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
