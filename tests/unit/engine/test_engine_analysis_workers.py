"""How many analysis worker processes a container gets when ``SKYCRAWL_ANALYSIS_PROCESSES``
is unset: one per core but one, which the engine's event loop keeps busy."""

from __future__ import annotations

import os

import pytest

from engine_container import analysis_pool
from engine_container.analysis_pool import default_processes


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 1), (4, 3), (16, 15)])
def test_unset_gives_a_worker_per_core_but_the_event_loops(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert default_processes() == workers


def test_without_affinity_the_cpu_count_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(pid: int) -> set[int]:
        raise AttributeError("sched_getaffinity")

    monkeypatch.setattr(os, "sched_getaffinity", unsupported)
    monkeypatch.setattr(analysis_pool.os, "cpu_count", lambda: 3)
    assert default_processes() == 2
