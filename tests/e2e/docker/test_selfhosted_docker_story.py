"""``skycrawl up --provider selfhosted`` with ``SKYCRAWL_SELFHOSTED_RUNTIME=docker``: the
control plane on a fresh PostgreSQL database starts the real engine image (with psycopg) on
the tests' Docker Engine; the engine container reaches PostgreSQL and the site under crawl
on 127.0.0.1 (host network) and writes blobs to the bind-mounted data directory; the idle
container is stopped by its kill timer (a PostgreSQL scheduler row) -- the single-VM
deployment of ``deploy/selfhosted/``, with the control plane on the host."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from adapters.selfhosted.container_runtime import DEPLOYMENT_LABEL
from tests.e2e.cli_support import SKYCRAWL, cli_env, free_port, serve_site
from tests.integration.docker import dockerd
from tests.integration.docker.engine_image import engine_image
from tests.integration.selfhosted.postgres import fresh_database

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

SELFHOSTED_ENGINE_PACKAGES = ("psycopg[binary,pool]>=3.2,<4",)


@pytest.fixture(scope="module")
def selfhosted_engine(docker_client: docker.DockerClient) -> str:
    return engine_image(docker_client, SELFHOSTED_ENGINE_PACKAGES)


@pytest.fixture
def stack(tmp_path: Path, selfhosted_engine: str) -> Iterator[tuple[str, dict[str, str], str]]:
    deployment = f"vm-{uuid.uuid4().hex[:8]}"
    with fresh_database() as database_url:
        env = {k: v for k, v in cli_env().items() if not k.startswith("SKYCRAWL_")}
        env.update(
            SKYCRAWL_SELFHOSTED_DATABASE_URL=database_url,
            SKYCRAWL_SELFHOSTED_RUNTIME="docker",
            SKYCRAWL_EGRESSES='[{"name": "vm", "runtime": "docker"}]',
            SKYCRAWL_SELFHOSTED_DATA_DIR=str(tmp_path / "data"),
            SKYCRAWL_ENGINE_IMAGE=selfhosted_engine,
            SKYCRAWL_DOCKER_HOST=dockerd.HOST,
            SKYCRAWL_DOCKER_DEPLOYMENT=deployment,
            SKYCRAWL_DOCKER_MEMORY="512m",
        )
        port = free_port()
        args = ["up", "--provider", "selfhosted", "--port", str(port)]
        args += ["--allow-cidr", "127.0.0.0/8", "--idle-ttl", "2"]
        proc = subprocess.Popen(
            [*SKYCRAWL, *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/healthz", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            proc.kill()
            raise AssertionError(f"skycrawl up did not come up: {proc.communicate()[1]}")
        try:
            yield url, env, deployment
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
            client = dockerd.client()
            for container in client.containers.list(
                all=True, filters={"label": f"{DEPLOYMENT_LABEL}={deployment}"}
            ):
                container.remove(force=True)
            client.close()


def test_up_selfhosted_with_docker_crawls_in_a_container_and_scales_to_zero(
    tmp_path: Path, stack: tuple[str, dict[str, str], str], docker_client: docker.DockerClient
) -> None:
    url, env, deployment = stack
    label = {"label": f"{DEPLOYMENT_LABEL}={deployment}"}
    seen: set[str] = set()
    with serve_site(pages=20) as site:
        crawl = subprocess.Popen(
            [*SKYCRAWL, "crawl", site.url, "--out", "out"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        while crawl.poll() is None:
            seen |= {
                c.labels["skycrawl.container-id"]
                for c in docker_client.containers.list(filters=label)
            }
            time.sleep(0.2)
        stderr = crawl.communicate()[1]
    assert crawl.returncode == 0, stderr
    assert f"using the running server on {url}" in stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "pages.jsonl").open()]
    assert len(rows) == 20
    assert all(row["status"] == 200 for row in rows)
    assert len(seen) == 1, "the crawl ran in one Docker container"
    assert list((tmp_path / "data" / "blobs").rglob("*")), "the engine wrote blobs to the mount"

    deadline = time.monotonic() + 40  # idle TTL 2 s, then the kill timer and the stop
    while time.monotonic() < deadline and docker_client.containers.list(filters=label):
        time.sleep(0.3)
    assert docker_client.containers.list(filters=label) == []
    [engine] = docker_client.containers.list(all=True, filters=label)
    assert engine.attrs["State"]["ExitCode"] == 0, "stopped with SIGTERM, exited cleanly"
