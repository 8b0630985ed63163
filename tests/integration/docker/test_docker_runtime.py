"""What DockerRuntime promises beyond the contract suite, checked on the real daemon: the
container's labels, limits, restart policy and network; one container per GUID across
instances; listing by deployment label; exited containers removed after ``keep_exited_s``."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace

import docker
import pytest

from adapters.selfhosted.container_runtime import DockerRuntime, DockerSettings
from core.errors import ConfigurationError, InvalidRequest
from core.models import Egress
from core.ports import ContainerSpec, RunState
from core.settings import SkycrawlSettings
from tests.integration.docker import dockerd

SLEEP = [
    "python",
    "-c",
    "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\ntime.sleep(60)",
]

EGRESS = Egress(name="fra-1")


@pytest.fixture
async def runtimes(
    docker_client: docker.DockerClient, engine_tag: str
) -> AsyncIterator[list[DockerRuntime]]:
    made: list[DockerRuntime] = []
    yield made
    for runtime in made:
        await runtime.remove_all()
        await runtime.close()


def make(
    made: list[DockerRuntime], client: docker.DockerClient, image: str, **kw: object
) -> DockerRuntime:
    options: dict[str, object] = {"deployment": f"t-{uuid.uuid4().hex[:8]}", "entrypoint": SLEEP}
    options.update(kw)
    runtime = DockerRuntime(image=image, client=client, **options)  # type: ignore[arg-type]
    made.append(runtime)
    return runtime


def spec(cid: str, **env: str) -> ContainerSpec:
    return ContainerSpec(cid, "tenant-7", EGRESS, env={"SKYCRAWL_BUS_DSN": "x", **env})


async def test_labels_limits_restart_policy_and_host_network(
    runtimes: list[DockerRuntime], docker_client: docker.DockerClient, engine_tag: str
) -> None:
    runtime = make(runtimes, docker_client, engine_tag, cpus=0.5, memory="128m")
    await runtime.start_container(spec=spec("c-labels"))
    attrs = docker_client.containers.get(runtime.name_of("c-labels")).attrs
    assert attrs["Config"]["Labels"] == {
        "skycrawl.container-id": "c-labels",
        "skycrawl.tenant": "tenant-7",
        "skycrawl.egress": "fra-1",
        "skycrawl.deployment": runtime.deployment,
    }
    host = attrs["HostConfig"]
    assert (host["NanoCpus"], host["Memory"]) == (500_000_000, 128 * 1024 * 1024)
    assert host["RestartPolicy"]["Name"] == "no"
    assert host["NetworkMode"] == "host"
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["SKYCRAWL_CONTAINER_ID"] == "c-labels"
    assert env["SKYCRAWL_BUS_DSN"] == "x"
    assert "SKYCRAWL_PROXY_URL" not in env


async def test_one_container_per_guid_seen_by_every_instance(
    runtimes: list[DockerRuntime], docker_client: docker.DockerClient, engine_tag: str
) -> None:
    first = make(runtimes, docker_client, engine_tag)
    second = make(runtimes, docker_client, engine_tag, deployment=first.deployment)
    other = make(runtimes, docker_client, engine_tag)
    await asyncio.gather(
        first.start_container(spec=spec("c-twice")), second.start_container(spec=spec("c-twice"))
    )
    await other.start_container(spec=spec("c-other"))
    found = docker_client.containers.list(
        filters={"label": f"skycrawl.deployment={first.deployment}"}
    )
    assert len(found) == 1
    assert [s.container_id for s in await second.list_running(egress=EGRESS)] == ["c-twice"]
    assert [s.container_id for s in await other.list_running(egress=EGRESS)] == ["c-other"]
    assert (await second.describe(container_id="c-twice", egress=EGRESS)).state is RunState.running


async def test_exited_containers_are_removed_after_keep_exited(
    runtimes: list[DockerRuntime], docker_client: docker.DockerClient, engine_tag: str
) -> None:
    runtime = make(runtimes, docker_client, engine_tag, keep_exited_s=0.0)
    await runtime.start_container(spec=spec("c-old"))
    await runtime.stop_container(container_id="c-old", egress=EGRESS, grace_s=1)
    assert (await runtime.describe(container_id="c-old", egress=EGRESS)).state is RunState.exited
    assert await runtime.list_running(egress=EGRESS) == []
    assert (await runtime.describe(container_id="c-old", egress=EGRESS)).state is RunState.unknown


async def test_bad_guid_and_missing_image(
    runtimes: list[DockerRuntime], docker_client: docker.DockerClient, engine_tag: str
) -> None:
    runtime = make(runtimes, docker_client, "skycrawl-engine:no-such-tag")
    with pytest.raises(InvalidRequest):
        await runtime.start_container(spec=spec("../etc"))
    with pytest.raises(ConfigurationError, match="image not found"):
        await runtime.start_container(spec=spec("c-noimage"))


async def test_from_settings_mounts_the_data_dir_as_its_owner(
    runtimes: list[DockerRuntime], docker_client: docker.DockerClient, engine_tag: str, tmp_path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.chown(data_dir, 1234, 2345)
    selfhosted = SimpleNamespace(blobs="files", data_dir=data_dir)
    runtime = DockerRuntime.from_settings(
        selfhosted,
        SkycrawlSettings(engine_image=engine_tag),
        DockerSettings(host=dockerd.HOST, deployment=f"t-{uuid.uuid4().hex[:8]}", memory="200m"),
    )
    runtimes.append(runtime)
    assert (runtime.image, runtime.deployment) == (engine_tag, runtime.deployment)
    await runtime.start_container(spec=spec("c-settings"))
    attrs = docker_client.containers.get(runtime.name_of("c-settings")).attrs
    assert attrs["Config"]["User"] == "1234:2345"
    assert attrs["HostConfig"]["Binds"] == [f"{data_dir}:{data_dir}:rw"]
    assert attrs["HostConfig"]["Memory"] == 200 * 1024 * 1024


async def test_the_selfhosted_provider_builds_it_from_settings(
    runtimes: list[DockerRuntime],
    docker_client: docker.DockerClient,
    engine_tag: str,
    tmp_path,
    monkeypatch,
) -> None:
    from adapters.selfhosted.provider import build_runtime
    from adapters.selfhosted.settings import SelfhostedSettings
    from core.clock import SystemClock

    deployment = f"t-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SKYCRAWL_DOCKER_HOST", dockerd.HOST)
    monkeypatch.setenv("SKYCRAWL_DOCKER_DEPLOYMENT", deployment)
    runtime = build_runtime(
        SkycrawlSettings(engine_image=engine_tag),
        SelfhostedSettings(runtime="docker", data_dir=tmp_path / "data"),
        clock=SystemClock(),
    )
    assert isinstance(runtime, DockerRuntime)
    runtimes.append(runtime)
    await runtime.start_container(spec=spec("c-provider"))
    [found] = docker_client.containers.list(filters={"label": f"skycrawl.deployment={deployment}"})
    assert found.attrs["Config"]["Image"] == engine_tag


async def test_only_the_named_variables_of_the_control_plane_are_passed(
    runtimes: list[DockerRuntime],
    docker_client: docker.DockerClient,
    engine_tag: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "spaces-key")
    monkeypatch.setenv("SKYCRAWL_CONTROL_PLANE_ONLY", "secret")
    runtime = make(
        runtimes, docker_client, engine_tag, pass_env=["AWS_ACCESS_KEY_ID", "NOT_SET_ANYWHERE"]
    )
    await runtime.start_container(spec=spec("c-pass"))
    attrs = docker_client.containers.get(runtime.name_of("c-pass")).attrs
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["AWS_ACCESS_KEY_ID"] == "spaces-key"
    assert "NOT_SET_ANYWHERE" not in env
    assert "SKYCRAWL_CONTROL_PLANE_ONLY" not in env


async def test_listing_one_egress_shows_only_its_containers(
    runtimes: list[DockerRuntime], docker_client: docker.DockerClient, engine_tag: str
) -> None:
    runtime = make(runtimes, docker_client, engine_tag)
    west = Egress(name="west-1")
    await runtime.start_container(spec=spec("c-fra"))
    await runtime.start_container(spec=ContainerSpec("c-west", "tenant-7", west))
    fra = [s.container_id for s in await runtime.list_running(egress=Egress(name="fra-1"))]
    assert (fra, [s.container_id for s in await runtime.list_running(egress=west)]) == (
        ["c-fra"],
        ["c-west"],
    )
    assert sorted(s.container_id for s in await runtime.list_running()) == ["c-fra", "c-west"]
