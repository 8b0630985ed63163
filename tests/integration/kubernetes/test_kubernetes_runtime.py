"""What KubernetesJobRuntime sends to the API and how it reads the answers, beyond the
contract suite: the Job and Secret it creates, one Job per GUID, the graceful delete, the
label selectors, and the fake's own API semantics (Status bodies, resourceVersion)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from adapters.selfhosted.kubernetes_runtime import (
    KubernetesJobRuntime,
    KubernetesSettings,
    secret_name,
)
from core.errors import ConfigurationError, InvalidRequest
from core.models import Egress
from core.ports import ContainerSpec, RunState
from core.settings import SkycrawlSettings
from tests.contract.backends_kubernetes import api_client
from tests.integration.kubernetes.fake_apiserver import FakeApiServer, selector_matches

SLEEP = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "open(os.environ['READY'], 'w').close()\n"
    "time.sleep(30)"
)
DSN = "postgresql://skycrawl:s3cret@127.0.0.1:5432/skycrawl"

EGRESS = Egress(name="ams3")


def runtime(server: FakeApiServer, **kw: object) -> KubernetesJobRuntime:
    options: dict[str, object] = {
        "namespace": "crawl",
        "image": "registry.example.test/skycrawl-engine:1",
        "command": [sys.executable, "-c", SLEEP],
    }
    options.update(kw)
    return KubernetesJobRuntime(api_client=api_client(server.url), **options)  # type: ignore[arg-type]


def spec(cid: str, tenant: str = "tenant-1", **env: str) -> ContainerSpec:
    ready = str(READY_DIR / cid)
    return ContainerSpec(
        cid,
        tenant,
        EGRESS,
        env={"SKYCRAWL_SELFHOSTED_DSN": DSN, "READY": ready, **env},
    )


READY_DIR = Path(tempfile.mkdtemp(prefix="skycrawl-k8s-ready-"))


async def ready(cid: str) -> bool:
    return (READY_DIR / cid).exists()


async def until(predicate, timeout_s: float = 5) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_the_job_carries_labels_limits_deadlines_and_env_from_the_tenant_secret(
    apiserver: FakeApiServer,
) -> None:
    rt = runtime(apiserver, active_deadline_s=3600, ttl_after_finished_s=120, max_grace_s=45)
    await rt.start_container(spec=spec("c-1"))
    [job] = apiserver.objects("jobs", "crawl")
    labels = {
        "skycrawl.io/container-id": "c-1",
        "skycrawl.io/tenant": "tenant-1",
        "skycrawl.io/egress": "ams3",
        "skycrawl.io/deployment": "skycrawl",
    }
    assert job["metadata"]["name"] == "skycrawl-c-1"
    assert job["metadata"]["labels"] == labels
    assert labels.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (0, 3600)
    assert job["spec"]["ttlSecondsAfterFinished"] == 120
    pod = job["spec"]["template"]["spec"]
    assert (pod["restartPolicy"], pod["terminationGracePeriodSeconds"]) == ("Never", 45)
    [container] = pod["containers"]
    assert container["image"] == "registry.example.test/skycrawl-engine:1"
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    plain = {e["name"]: e["value"] for e in container["env"]}
    assert plain == {
        "SKYCRAWL_CONTAINER_ID": "c-1",
        "SKYCRAWL_TENANT_ID": "tenant-1",
        "SKYCRAWL_EGRESS_NAME": "ams3",
    }
    assert DSN not in str(job)  # the connection string is in the Secret only
    assert container["envFrom"] == [{"secretRef": {"name": secret_name("tenant-1")}}]
    assert pod["securityContext"]["runAsNonRoot"] is True  # pod security "restricted"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    kubernetes_validate.validate(job, "1.31", strict=True)  # a Job a real API server takes
    [secret] = apiserver.objects("secrets", "crawl")
    kubernetes_validate.validate(secret, "1.31", strict=True)
    assert base64.b64decode(secret["data"]["SKYCRAWL_SELFHOSTED_DSN"]).decode() == DSN
    await until(lambda: _running(rt, "c-1"))
    await rt.stop_container(container_id="c-1", egress=EGRESS, grace_s=2)
    await rt.close()


async def _running(rt: KubernetesJobRuntime, cid: str) -> bool:
    return (await rt.describe(container_id=cid, egress=EGRESS)).state is RunState.running


async def test_one_job_per_guid_and_the_secret_follows_the_env(apiserver: FakeApiServer) -> None:
    first, second = runtime(apiserver), runtime(apiserver)
    await asyncio.gather(
        first.start_container(spec=spec("c-2")), second.start_container(spec=spec("c-2"))
    )
    assert [j["metadata"]["name"] for j in apiserver.objects("jobs", "crawl")] == ["skycrawl-c-2"]
    posts = [p for m, p in apiserver.requests if m == "POST" and p.endswith("/jobs")]
    assert len(posts) == 2  # the second was a 409 AlreadyExists, taken as "started already"
    version = apiserver.objects("secrets", "crawl")[0]["metadata"]["resourceVersion"]
    await first.start_container(spec=spec("c-3", SKYCRAWL_SELFHOSTED_DSN="postgresql://new"))
    [secret] = apiserver.objects("secrets", "crawl")
    assert base64.b64decode(secret["data"]["SKYCRAWL_SELFHOSTED_DSN"]) == b"postgresql://new"
    assert int(secret["metadata"]["resourceVersion"]) > int(version)
    for rt in (first, second):
        await rt.close()


async def test_stop_is_a_graceful_foreground_delete(apiserver: FakeApiServer) -> None:
    rt = runtime(apiserver)
    await rt.start_container(spec=spec("c-4"))
    await until(lambda: ready("c-4"))
    await rt.stop_container(container_id="c-4", egress=EGRESS, grace_s=2.5)
    deletes = [p for m, p in apiserver.requests if m == "DELETE"]
    assert deletes == ["/apis/batch/v1/namespaces/crawl/jobs/skycrawl-c-4"]
    assert apiserver.objects("jobs", "crawl") == []
    assert apiserver.objects("pods", "crawl") == []
    status = await rt.describe(container_id="c-4", egress=EGRESS)
    assert (status.state, status.exit_code) == (RunState.exited, 0)
    assert (
        await runtime(apiserver).describe(container_id="c-4", egress=EGRESS)
    ).state is RunState.unknown
    await rt.close()


async def test_list_running_selects_by_deployment_and_skips_finished(
    apiserver: FakeApiServer,
) -> None:
    ours, theirs = runtime(apiserver, deployment="a"), runtime(apiserver, deployment="b")
    await ours.start_container(spec=spec("c-5"))
    await theirs.start_container(spec=spec("c-6"))
    done = runtime(apiserver, deployment="a", command=[sys.executable, "-c", "pass"])
    await done.start_container(spec=spec("c-7"))
    await until(lambda: _exited(done, "c-7"))
    assert [s.container_id for s in await ours.list_running(egress=EGRESS)] == ["c-5"]
    assert [s.container_id for s in await theirs.list_running(egress=EGRESS)] == ["c-6"]
    for rt in (ours, theirs, done):
        await rt.close()


async def _exited(rt: KubernetesJobRuntime, cid: str) -> bool:
    return (await rt.describe(container_id=cid, egress=EGRESS)).state is RunState.exited


async def test_active_deadline_ends_the_job(apiserver: FakeApiServer) -> None:
    rt = runtime(apiserver, active_deadline_s=1)
    await rt.start_container(spec=spec("c-8"))
    await until(lambda: _exited(rt, "c-8"), timeout_s=8)
    [job] = apiserver.objects("jobs", "crawl")
    assert job["status"]["conditions"][0]["reason"] == "DeadlineExceeded"
    await rt.close()


async def test_bad_guid_is_refused_before_any_call(apiserver: FakeApiServer) -> None:
    rt = runtime(apiserver)
    with pytest.raises(InvalidRequest):
        await rt.start_container(spec=spec("Upper_Case"))
    assert apiserver.requests == []
    await rt.close()


def test_fake_answers_status_bodies_and_checks_resource_versions(
    apiserver: FakeApiServer,
) -> None:
    core = k8s.CoreV1Api(api_client(apiserver.url))
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_secret(name="nope", namespace="crawl")
    assert missing.value.status == 404
    assert '"reason":"NotFound"' in missing.value.body.replace(" ", "")
    body = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="s"), string_data={"k": "v"})
    created = core.create_namespaced_secret(namespace="crawl", body=body)
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_secret(namespace="crawl", body=body)
    assert exists.value.status == 409
    assert '"reason":"AlreadyExists"' in exists.value.body.replace(" ", "")
    body.metadata.resource_version = created.metadata.resource_version
    core.replace_namespaced_secret(name="s", namespace="crawl", body=body)
    with pytest.raises(ApiException) as stale:  # same, now stale, resourceVersion
        core.replace_namespaced_secret(name="s", namespace="crawl", body=body)
    assert stale.value.status == 409
    bad = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="Not_A_Name"))
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_secret(namespace="crawl", body=bad)
    assert invalid.value.status == 422


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=x", True),
        ("app==x,tier", True),
        ("app!=x", False),
        ("!tier", False),
        ("!gone", True),
        ("app in (y, x)", True),
        ("app notin (x)", False),
        ("gone", False),
        ("", True),
    ],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    assert selector_matches(selector, {"app": "x", "tier": "web"}) is expected


async def test_from_settings_reads_a_kubeconfig(apiserver: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: '{apiserver.url}'}}}}]\n"
        "users: [{name: op, user: {token: not-checked}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: op}}]\n"
    )
    settings = KubernetesSettings(
        kubeconfig=str(kubeconfig), namespace="tenants", memory_limit="2Gi"
    )
    rt = KubernetesJobRuntime.from_settings(
        None, SkycrawlSettings(engine_image="skycrawl-engine:7"), settings
    )
    await rt.start_container(spec=spec("c-9"))
    [job] = apiserver.objects("jobs", "tenants")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert (container["image"], container["resources"]["limits"]["memory"]) == (
        "skycrawl-engine:7",
        "2Gi",
    )
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "skycrawl-engine"
    await rt.close()


def test_a_missing_kubeconfig_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="kubernetes"):
        KubernetesJobRuntime.from_settings(
            None, SkycrawlSettings(), KubernetesSettings(kubeconfig=str(tmp_path / "none"))
        )


async def test_the_selfhosted_provider_builds_it_from_settings(
    apiserver: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.selfhosted.provider import build_runtime
    from adapters.selfhosted.settings import SelfhostedSettings
    from core.clock import SystemClock

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: '{apiserver.url}'}}}}]\n"
        "users: [{name: op, user: {token: not-checked}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: op}}]\n"
    )
    monkeypatch.setenv("SKYCRAWL_KUBERNETES_KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("SKYCRAWL_KUBERNETES_NAMESPACE", "from-env")
    rt = build_runtime(
        SkycrawlSettings(engine_image="skycrawl-engine:9"),
        SelfhostedSettings(runtime="kubernetes", data_dir=tmp_path / "data"),
        clock=SystemClock(),
    )
    assert isinstance(rt, KubernetesJobRuntime)
    await rt.start_container(spec=spec("c-10"))
    [job] = apiserver.objects("jobs", "from-env")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "skycrawl-engine:9"
    await rt.close()


async def test_engine_secret_is_shared_and_optional_and_the_tenants_values_win(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    dump = (
        "import json, os\n"
        "keys = ('AWS_ACCESS_KEY_ID', 'SKYCRAWL_SELFHOSTED_DSN')\n"
        # written aside, then renamed: the test reads the file as soon as it exists
        "json.dump({k: os.environ.get(k) for k in keys}, open(os.environ['READY'] + '~', 'w'))\n"
        "os.replace(os.environ['READY'] + '~', os.environ['READY'])\n"
    )
    rt = runtime(apiserver, engine_secret="skycrawl-engine", command=[sys.executable, "-c", dump])
    await rt.start_container(spec=spec("c-11"))  # the shared Secret does not exist: optional
    await until(lambda: ready("c-11"))
    assert json.loads((READY_DIR / "c-11").read_text()) == {
        "AWS_ACCESS_KEY_ID": None,
        "SKYCRAWL_SELFHOSTED_DSN": DSN,
    }
    core = k8s.CoreV1Api(api_client(apiserver.url))
    shared = {"AWS_ACCESS_KEY_ID": "spaces-key", "SKYCRAWL_SELFHOSTED_DSN": "postgresql://shared"}
    core.create_namespaced_secret(
        namespace="crawl",
        body=k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="skycrawl-engine"), string_data=shared),
    )
    await rt.start_container(spec=spec("c-12"))
    await until(lambda: ready("c-12"))
    assert json.loads((READY_DIR / "c-12").read_text()) == {
        "AWS_ACCESS_KEY_ID": "spaces-key",
        "SKYCRAWL_SELFHOSTED_DSN": DSN,
    }
    await rt.close()


async def test_listing_one_egress_shows_only_its_jobs(apiserver: FakeApiServer) -> None:
    rt = runtime(apiserver)
    await rt.start_container(spec=spec("c-ams"))
    await rt.start_container(spec=ContainerSpec("c-west", "tenant-1", Egress(name="west-1")))
    ams = [s.container_id for s in await rt.list_running(egress=Egress(name="ams3"))]
    west = [s.container_id for s in await rt.list_running(egress=Egress(name="west-1"))]
    assert (ams, west) == (["c-ams"], ["c-west"])
    await rt.close()
