"""Fixtures for the conductor tests (the harness itself is in ``conductor_harness``).

``harness``: the conductor over the real local ports (SQLite bus, scheduler and state store,
file blobs, directory provisioner) on ``tmp_path``, all reading one ``FakeClock``, with a
``RecordingRuntime`` at the container boundary and the small settings of
``conductor_harness.DEFAULTS`` (idle_ttl 30 s, startup timeout 60 s, heartbeat timeout 40 s,
timer period 5 s, 3 attempts). ``make_harness(**settings)`` builds one with other settings,
e.g. ``make_harness(max_delay_s=7)`` for a scheduler whose native delay is short.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conductor_harness import Harness, MakeHarness


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[MakeHarness]:
    opened: list[Harness] = []

    async def make(**overrides: Any) -> Harness:
        root = tmp_path / f"h{len(opened)}"
        root.mkdir()
        harness = await Harness.create(root, **overrides)
        opened.append(harness)
        return harness

    yield make
    for harness in opened:
        await harness.close()


@pytest.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return await make_harness()
