"""A fake Kubernetes API server per test (see ``fake_apiserver``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kubernetes.fake_apiserver import FakeApiServer


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[FakeApiServer]:
    server = FakeApiServer(log_dir=tmp_path / "pods")
    server.start()
    yield server
    server.stop()
