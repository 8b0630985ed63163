"""Kubernetes backend of the runtime contract suite: ``KubernetesJobRuntime``, through the
official client, on ``FakeApiServer`` (``tests/integration/kubernetes/fake_apiserver.py``):
no API server can run here, so the fake serves the REST calls at the HTTP boundary and runs
each Job's pod as a local process (its limits are listed in its docstring). Each harness
has its own server, namespace and deployment label.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from kubernetes import client as k8s

from adapters.selfhosted.kubernetes_runtime import KubernetesJobRuntime
from core.ports import ContainerRuntime
from tests.contract.harness import RuntimeHarness
from tests.integration.kubernetes.fake_apiserver import FakeApiServer


def api_client(url: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = url
    return k8s.ApiClient(configuration)


@contextlib.asynccontextmanager
async def kubernetes_runtime(tmp: Path) -> AsyncIterator[RuntimeHarness]:
    out = tmp / "out"
    out.mkdir()
    server = FakeApiServer(log_dir=tmp / "pods")
    url = server.start()
    namespace = f"ns-{uuid.uuid4().hex[:8]}"

    def make(script: str) -> ContainerRuntime:
        return KubernetesJobRuntime(
            api_client=api_client(url),
            namespace=namespace,
            image="skycrawl-engine:test",
            deployment="contract",
            command=[sys.executable, "-c", script],
        )

    harness = RuntimeHarness(make=make, out_dir=out)
    try:
        yield harness
    finally:
        for runtime in harness.opened:
            await runtime.close()
        server.stop()


FACTORIES = {"runtime": {"kubernetes-fake": kubernetes_runtime}}
