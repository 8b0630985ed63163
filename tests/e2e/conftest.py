"""The embedded stack with real engine subprocesses, running for one test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import LocalSettings, SkycrawlSettings
from functions.local.bootstrap import build_local_stack
from tests.e2e.browser import ensure_chromium
from tests.e2e.support import OPERATOR_KEY, Harness


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium for the browser tests, installed with apt-get if it is missing."""
    return ensure_chromium()


@contextlib.asynccontextmanager
async def local_stack(tmp_path: Path, **overrides: Any) -> AsyncIterator[Harness]:
    settings = SkycrawlSettings(
        allow_cidrs=["127.0.0.0/8"],
        idle_ttl_s=2.0,
        timer_period_s=0.5,
        heartbeat_interval_s=0.5,
        heartbeat_timeout_s=20.0,
        startup_timeout_s=30.0,
        checkpoint_interval_s=0.5,
        stop_grace_s=3.0,
        operator_key=OPERATOR_KEY,
        **overrides,
    )
    stack = build_local_stack(settings, LocalSettings(data_dir=tmp_path / "data"))
    stop = asyncio.Event()
    await stack.prepare()
    task = asyncio.create_task(stack.run(stop))
    try:
        yield Harness(stack=stack, stop=stop)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await stack.close()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with local_stack(tmp_path) as harness:
        yield harness


@pytest.fixture
async def dedicated_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """The same stack with SKYCRAWL_TENANT_DATA=dedicated: a SQLite store per tenant."""
    async with local_stack(tmp_path, tenant_data="dedicated") as harness:
        yield harness
