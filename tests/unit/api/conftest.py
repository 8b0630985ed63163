"""Fixtures for the API tests (see ``api_harness``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from api_harness import START, Harness, make_settings

from adapters.local.blob_store import FileBlobStore
from adapters.local.container_runtime import SubprocessRuntime
from adapters.local.message_bus import SqliteMessageBus
from adapters.local.provisioner import DirectoryProvisioner
from adapters.local.state_store import SqliteStateStore
from adapters.local.tenant_stores import SqliteTenantStores
from core.api import Api
from core.clock import FakeClock
from core.records import Records
from core.tenancy import TenantService
from core.tenant_data import routed_state


@contextlib.asynccontextmanager
async def local_harness(tmp_path: Path, *, dedicated: bool = False) -> AsyncIterator[Harness]:
    """The API over the local adapters; ``dedicated``: each tenant's crawl and usage records
    in its own SQLite store (``SKYCRAWL_TENANT_DATA=dedicated``)."""
    clock = FakeClock(START)
    settings = make_settings(tenant_data="dedicated" if dedicated else "pooled")
    stores = SqliteTenantStores(tmp_path / "provisioned", clock=clock) if dedicated else None
    state = routed_state(SqliteStateStore(tmp_path / "state.sqlite3", clock=clock), stores)
    bus = SqliteMessageBus(tmp_path / "bus.sqlite3", clock=clock)
    await bus.ensure_queue(name=settings.inbox_queue)
    blobs = FileBlobStore(tmp_path / "blobs")
    provisioner = DirectoryProvisioner(
        tmp_path / "provisioned", bus=bus, dispatch_topic=settings.dispatch_topic, stores=stores
    )
    runtime = SubprocessRuntime(
        command=(sys.executable, "-c", "import time; time.sleep(60)"),
        log_dir=tmp_path / "logs",
        close_grace_s=2.0,
    )
    records = Records(state)
    tenants = TenantService(
        records, provisioner, bus, blobs, lambda _egress: runtime, clock, settings
    )
    api = Api(
        records=records, tenants=tenants, bus=bus, blobs=blobs, clock=clock, settings=settings
    )
    yield Harness(
        tmp_path, clock, settings, records, state, bus, blobs, provisioner, runtime, tenants, api
    )
    await runtime.close()
    await bus.close()
    await state.close()
    await blobs.close()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with local_harness(tmp_path) as harness:
        yield harness


@pytest.fixture
async def dedicated_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with local_harness(tmp_path, dedicated=True) as harness:
        yield harness


@pytest.fixture
async def tenant(harness: Harness) -> tuple[str, str]:
    return await harness.create_tenant("acme")
