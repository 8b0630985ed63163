"""A Docker Engine and the engine image for the tests of this folder (see ``dockerd``)."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

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
