"""deploy/kubernetes renders with ``kubectl kustomize`` and every object validates offline
against the Kubernetes JSON schemas (``kubernetes-validate``, strict: unknown fields are
errors); RBAC stays inside the namespace; engines are kept off private ranges; every
setting the manifests pass is a real settings field."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.integration.settings_names import setting_names

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = ["digitalocean", "linode"]
KUBERNETES_VERSION = "1.31"


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render deploy/kubernetes"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "kubernetes" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_every_object_validates_against_the_schemas(objects: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in objects)
    assert {"Deployment", "NetworkPolicy", "Role", "RoleBinding", "Service"} <= set(kinds)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "skycrawl"


def test_a_broken_object_is_refused_by_the_validator() -> None:
    # the check above can fail: a misspelt field is an error in strict mode
    deployment = of_kind(render("linode"), "Deployment")[0]
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_rbac_is_namespaced_and_limited_to_jobs_pods_secrets(
    objects: list[dict[str, Any]],
) -> None:
    assert of_kind(objects, "ClusterRole") == of_kind(objects, "ClusterRoleBinding") == []
    [role] = of_kind(objects, "Role")
    resources = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert resources == {("batch", "jobs"), ("", "pods"), ("", "secrets")}
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert "*" not in verbs
    assert "escalate" not in verbs
    [binding] = of_kind(objects, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "skycrawl-control-plane", "namespace": "skycrawl"}
    ]
    engine = [
        s for s in of_kind(objects, "ServiceAccount") if s["metadata"]["name"] == "skycrawl-engine"
    ]
    assert engine[0]["automountServiceAccountToken"] is False


def test_engines_are_kept_off_private_ranges(objects: list[dict[str, Any]]) -> None:
    [policy] = of_kind(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchExpressions"][0]["key"] == "skycrawl.io/container-id"
    assert policy["spec"]["ingress"] == []
    open_rules = [rule for rule in policy["spec"]["egress"] if "ports" not in rule]
    blocks = [p["ipBlock"] for rule in open_rules for p in rule["to"] if "ipBlock" in p]
    reachable = [
        (ipaddress.ip_network(b["cidr"]), [ipaddress.ip_network(e) for e in b.get("except", [])])
        for b in blocks
    ]

    def allowed(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(
            ip.version == net.version and ip in net and not any(ip in e for e in excepts)
            for net, excepts in reachable
        )

    private = ["10.0.0.1", "172.16.5.5", "192.168.1.1", "169.254.169.254", "100.64.0.1"]
    assert [a for a in [*private, "127.0.0.1", "fd00::1", "fe80::1"] if allowed(a)] == []
    assert allowed("93.184.216.34")
    assert allowed("2606:4700::1")
    # the one private address allowed is the database, on PostgreSQL's port only
    narrow = [rule for rule in policy["spec"]["egress"] if "ports" in rule]
    database = [r for r in narrow if any("ipBlock" in p for p in r["to"])]
    assert len(database) == 1
    assert database[0]["ports"] == [{"protocol": "TCP", "port": 5432}]
    [block] = [p["ipBlock"] for p in database[0]["to"]]
    assert ipaddress.ip_network(block["cidr"]).num_addresses == 1
    assert ipaddress.ip_network(block["cidr"]).is_private


def test_settings_are_real_settings_names(objects: list[dict[str, Any]]) -> None:
    [config] = of_kind(objects, "ConfigMap")
    known = setting_names()
    assert [name for name in config["data"] if name not in known] == []
    assert config["data"]["SKYCRAWL_SELFHOSTED_RUNTIME"] == "kubernetes"
    [deployment] = of_kind(objects, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["up", "--provider", "selfhosted"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "skycrawl-control-plane"
