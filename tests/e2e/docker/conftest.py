"""The embedded local stack with its engines in real Docker containers.

The control plane runs in this process on the local provider's ports (SQLite bus and state,
files); its runtime is ``DockerRuntime`` on the tests' own ``dockerd`` (see
``tests/integration/docker/dockerd.py``), starting the real engine image (``engine_image``).
The containers reach the same SQLite files through a bind mount of the data directory at
the same path, and the site under crawl on 127.0.0.1 through ``--network host``; they share
the host's pid namespace because the SQLite host limiter tells engines apart by pid.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from adapters.local.provider import build_ports, engine_env
from adapters.selfhosted.container_runtime import DEPLOYMENT_LABEL, DockerRuntime
from core.control_plane import build_control_plane
from core.settings import LocalSettings, SkycrawlSettings
from functions.local.bootstrap import LocalStack
from tests.e2e.support import OPERATOR_KEY, Harness
from tests.integration.docker import dockerd
from tests.integration.docker.engine_image import engine_image


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = dockerd.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def engine_tag(docker_client: docker.DockerClient) -> str:
    return engine_image(docker_client)


@dataclass
class DockerHarness(Harness):
    runtime: DockerRuntime
    client: docker.DockerClient

    def containers(self, *, all: bool = False) -> list[docker.models.containers.Container]:
        label = f"{DEPLOYMENT_LABEL}={self.runtime.deployment}"
        return self.client.containers.list(all=all, filters={"label": label})


@pytest.fixture
async def docker_harness(
    tmp_path: Path, docker_client: docker.DockerClient, engine_tag: str
) -> AsyncIterator[DockerHarness]:
    settings = SkycrawlSettings(
        allow_cidrs=["127.0.0.0/8"],
        idle_ttl_s=2.0,
        timer_period_s=0.5,
        heartbeat_interval_s=0.5,
        heartbeat_timeout_s=20.0,
        startup_timeout_s=60.0,
        checkpoint_interval_s=0.5,
        stop_grace_s=5.0,
        operator_key=OPERATOR_KEY,
        engine_image=engine_tag,
    )
    local = LocalSettings(data_dir=tmp_path / "data")
    ports = build_ports(settings, local)
    data_dir = str(local.data_dir.resolve())
    runtime = DockerRuntime(
        image=engine_tag,
        client=docker_client,
        deployment=f"e2e-{uuid.uuid4().hex[:8]}",
        mounts={data_dir: data_dir},
        user=f"{os.getuid()}:{os.getgid()}",
        pid_mode="host",
        cpus=1.0,
        memory="512m",
    )
    replaced = vars(ports)
    if "runtimes" in replaced:  # one runtime per egress: every egress of the pool on Docker
        for unused in set(replaced["runtimes"].values()):
            await unused.close()
        replaced["runtimes"] = dict.fromkeys(replaced["runtimes"], runtime)
    else:
        await replaced["runtime"].close()  # the subprocess runtime, never used
        replaced["runtime"] = runtime
    plane = build_control_plane(ports, settings, engine_env=engine_env(local))
    stack = LocalStack(
        settings=settings,
        local=local,
        ports=ports,
        records=plane.records,
        conductor=plane.conductor,
        housekeeper=plane.housekeeper,
        tenants=plane.tenants,
        api=plane.api,
    )
    stop = asyncio.Event()
    await stack.prepare()
    task = asyncio.create_task(stack.run(stop))
    try:
        yield DockerHarness(stack=stack, stop=stop, runtime=runtime, client=docker_client)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await runtime.remove_all()
        await stack.close()
