"""Docker backend of the runtime contract suite: ``DockerRuntime`` on a real Docker Engine.

The daemon is Debian's ``dockerd``, started on first use by ``tests.integration.docker.dockerd``
(``--bridge=none``; containers run ``--network host``), and the image is the real engine image
(``engine_container/Dockerfile`` on a debootstrap'ed Debian, see ``engine_image``) with its
entry point replaced by ``python -c <workload>``. The workload writes into the harness's
``out_dir``, bind-mounted at the same path and written as this process's user. Each harness
has its own deployment label, and removes its containers on exit.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from adapters.selfhosted.container_runtime import DockerRuntime
from core.ports import ContainerRuntime
from tests.contract.harness import RuntimeHarness
from tests.integration.docker import dockerd
from tests.integration.docker.engine_image import engine_image


@contextlib.asynccontextmanager
async def docker_runtime(tmp: Path) -> AsyncIterator[RuntimeHarness]:
    out = tmp / "out"
    out.mkdir()
    client = dockerd.client()
    image = engine_image(client)
    deployment = f"contract-{uuid.uuid4().hex[:8]}"
    opened: list[DockerRuntime] = []

    def make(script: str) -> ContainerRuntime:
        runtime = DockerRuntime(
            image=image,
            client=client,
            deployment=deployment,
            entrypoint=["python", "-c", script],
            mounts={str(out): str(out)},
            user=f"{os.getuid()}:{os.getgid()}",
            cpus=0.5,
            memory="256m",
        )
        opened.append(runtime)
        return runtime

    harness = RuntimeHarness(make=make, out_dir=out)
    try:
        yield harness
    finally:
        for runtime in opened:
            await runtime.remove_all()
            await runtime.close()
        client.close()


FACTORIES = {"runtime": {"docker": docker_runtime}}
