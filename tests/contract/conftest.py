"""Contract fixtures: one fixture per port, parametrised over every implementation.

Each port has a dict of *factories*: async context managers that take a scratch directory and
yield a harness around a ready implementation (and clean it up on exit). A new backend is one
more entry, e.g. ``BUS_FACTORIES["moto"] = moto_bus``; every test of that port then runs
against it too. A harness says how time passes for its backend (``elapse``: advance a
``FakeClock``, or really sleep for brokers that run on wall time) and how to open a second
client on the same backing store (``reopen``: restarts and concurrent consumers).

Names of queues, topics, tables and keys come from the ``unique`` fixture, so suites can
share one real broker or emulator without seeing each other's data.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from adapters.local.blob_store import FileBlobStore
from adapters.local.container_runtime import SubprocessRuntime
from adapters.local.message_bus import SqliteMessageBus
from adapters.local.provisioner import DirectoryProvisioner
from adapters.local.scheduler import SqliteScheduler
from adapters.local.state_store import SqliteStateStore
from adapters.local.tenant_stores import SqliteTenantStores
from core.clock import FakeClock
from core.ports import (
    BlobStore,
    ContainerRuntime,
    StateStore,
)
from tests.contract.harness import (
    BusHarness,
    ProvisionerHarness,
    RuntimeHarness,
    SchedulerHarness,
    StateHarness,
    TenantStoresHarness,
)

# --------------------------------------------------------------------------- backends

CLOUD_BACKENDS = ("aws", "azure", "gcp", "selfhosted", "docker", "kubernetes")


def backend_factories(kind: str) -> dict[str, Any]:
    """Factories of ``kind`` (bus, scheduler, state, blob, runtime, provisioner) from the
    cloud backend modules ``tests/contract/backends_<cloud>.py`` that exist: each exposes a
    dict ``FACTORIES = {"bus": {"moto": moto_bus}, ...}``. Adding a backend is adding a file."""
    found: dict[str, Any] = {}
    for cloud in CLOUD_BACKENDS:
        name = f"tests.contract.backends_{cloud}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        found.update(module.FACTORIES.get(kind, {}))
    return found


# --------------------------------------------------------------------------- message bus


@contextlib.asynccontextmanager
async def sqlite_bus(tmp: Path) -> AsyncIterator[BusHarness]:
    clock = FakeClock()
    opened: list[SqliteMessageBus] = []

    def open_bus() -> SqliteMessageBus:
        opened.append(SqliteMessageBus(tmp / "bus.sqlite3", clock=clock))
        return opened[-1]

    try:
        yield BusHarness(bus=open_bus(), clock=clock, reopen=open_bus)
    finally:
        for bus in opened:
            await bus.close()


BUS_FACTORIES: dict[str, Callable[[Path], AbstractAsyncContextManager[BusHarness]]] = {
    "sqlite": sqlite_bus,
}
BUS_FACTORIES.update(backend_factories("bus"))


@pytest.fixture(params=sorted(BUS_FACTORIES))
async def bus_h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BusHarness]:
    async with BUS_FACTORIES[request.param](tmp_path) as harness:
        yield harness


@pytest.fixture
async def sqlite_bus_h(tmp_path: Path) -> AsyncIterator[BusHarness]:
    """The SQLite bus alone, for tests of what only the local adapter promises."""
    async with sqlite_bus(tmp_path) as harness:
        yield harness


# --------------------------------------------------------------------------- scheduler


@contextlib.asynccontextmanager
async def sqlite_scheduler(tmp: Path) -> AsyncIterator[SchedulerHarness]:
    clock = FakeClock()
    bus = SqliteMessageBus(tmp / "bus.sqlite3", clock=clock)
    try:
        yield SchedulerHarness(scheduler=SqliteScheduler(bus), bus=bus, clock=clock)
    finally:
        await bus.close()


SCHEDULER_FACTORIES: dict[str, Callable[[Path], AbstractAsyncContextManager[SchedulerHarness]]] = {
    "sqlite": sqlite_scheduler,
}
SCHEDULER_FACTORIES.update(backend_factories("scheduler"))


@pytest.fixture(params=sorted(SCHEDULER_FACTORIES))
async def scheduler_h(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SchedulerHarness]:
    async with SCHEDULER_FACTORIES[request.param](tmp_path) as harness:
        yield harness


@pytest.fixture
async def sqlite_scheduler_h(tmp_path: Path) -> AsyncIterator[SchedulerHarness]:
    async with sqlite_scheduler(tmp_path) as harness:
        yield harness


# --------------------------------------------------------------------------- state store


@contextlib.asynccontextmanager
async def sqlite_state(tmp: Path) -> AsyncIterator[StateHarness]:
    clock = FakeClock()
    opened: list[SqliteStateStore] = []

    def open_store() -> SqliteStateStore:
        opened.append(SqliteStateStore(tmp / "state.sqlite3", clock=clock))
        return opened[-1]

    try:
        yield StateHarness(store=open_store(), clock=clock, reopen=open_store)
    finally:
        for store in opened:
            await store.close()


@contextlib.asynccontextmanager
async def sqlite_tenant_state(tmp: Path) -> AsyncIterator[StateHarness]:
    """A tenant's own store (dedicated tenant data) must keep every promise of the port."""
    clock = FakeClock()
    stores = SqliteTenantStores(tmp, clock=clock)
    await stores.create_store(tenant_id="tenant-a")
    opened: list[StateStore] = []

    def open_store() -> StateStore:
        opened.append(stores.open_store("tenant-a"))
        return opened[-1]

    try:
        yield StateHarness(store=open_store(), clock=clock, reopen=open_store)
    finally:
        for store in opened:
            await store.close()


STATE_FACTORIES: dict[str, Callable[[Path], AbstractAsyncContextManager[StateHarness]]] = {
    "sqlite": sqlite_state,
    "sqlite-tenant": sqlite_tenant_state,
}
STATE_FACTORIES.update(backend_factories("state"))


@pytest.fixture(params=sorted(STATE_FACTORIES))
async def state_h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateHarness]:
    async with STATE_FACTORIES[request.param](tmp_path) as harness:
        yield harness


# --------------------------------------------------------------------------- blob store


@contextlib.asynccontextmanager
async def file_blobs(tmp: Path) -> AsyncIterator[BlobStore]:
    store = FileBlobStore(tmp / "blobs")
    try:
        yield store
    finally:
        await store.close()


BLOB_FACTORIES: dict[str, Callable[[Path], AbstractAsyncContextManager[BlobStore]]] = {
    "files": file_blobs,
}
BLOB_FACTORIES.update(backend_factories("blob"))


@pytest.fixture(params=sorted(BLOB_FACTORIES))
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    async with BLOB_FACTORIES[request.param](tmp_path) as store:
        yield store


# --------------------------------------------------------------------------- container runtime


@contextlib.asynccontextmanager
async def subprocess_runtime(tmp: Path) -> AsyncIterator[RuntimeHarness]:
    out = tmp / "out"
    out.mkdir()

    def make(script: str) -> ContainerRuntime:
        return SubprocessRuntime(command=(sys.executable, "-c", script), log_dir=tmp / "logs")

    harness = RuntimeHarness(make=make, out_dir=out)
    try:
        yield harness
    finally:
        for runtime in harness.opened:
            await runtime.close()


RUNTIME_FACTORIES: dict[str, Callable[[Path], AbstractAsyncContextManager[RuntimeHarness]]] = {
    "subprocess": subprocess_runtime,
}
RUNTIME_FACTORIES.update(backend_factories("runtime"))


@pytest.fixture(params=sorted(RUNTIME_FACTORIES))
async def runtime_h(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RuntimeHarness]:
    async with RUNTIME_FACTORIES[request.param](tmp_path) as harness:
        yield harness


# --------------------------------------------------------------------------- provisioner


@contextlib.asynccontextmanager
async def directory_provisioner(
    tmp: Path, stores: SqliteTenantStores | None = None
) -> AsyncIterator[ProvisionerHarness]:
    bus = SqliteMessageBus(tmp / "bus.sqlite3", clock=FakeClock())
    provisioner = DirectoryProvisioner(tmp, bus=bus, dispatch_topic="dispatch", stores=stores)

    async def exists(resources: Mapping[str, str]) -> bool:
        topics = await bus.topics()
        return all(
            value in topics if key == "dispatch_topic" else Path(value).exists()
            for key, value in resources.items()
        )

    async def inventory() -> set[str]:
        files = (
            {str(p) for p in (tmp / "tenants").rglob("*")} if (tmp / "tenants").exists() else set()
        )
        return files | {f"topic:{t}" for t in await bus.topics()}

    try:
        yield ProvisionerHarness(provisioner=provisioner, exists=exists, inventory=inventory)
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def directory_dedicated_provisioner(tmp: Path) -> AsyncIterator[ProvisionerHarness]:
    """The directory provisioner with dedicated tenant data: a SQLite store per tenant."""
    async with directory_provisioner(tmp, stores=SqliteTenantStores(tmp)) as harness:
        yield harness


PROVISIONER_FACTORIES: dict[
    str, Callable[[Path], AbstractAsyncContextManager[ProvisionerHarness]]
] = {"directory": directory_provisioner, "directory-dedicated": directory_dedicated_provisioner}
PROVISIONER_FACTORIES.update(backend_factories("provisioner"))


@pytest.fixture(params=sorted(PROVISIONER_FACTORIES))
async def provisioner_h(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ProvisionerHarness]:
    async with PROVISIONER_FACTORIES[request.param](tmp_path) as harness:
        yield harness


# --------------------------------------------------------------------------- tenant stores


@contextlib.asynccontextmanager
async def sqlite_tenant_stores(tmp: Path) -> AsyncIterator[TenantStoresHarness]:
    clock = FakeClock()
    control = SqliteStateStore(tmp / "state.sqlite3", clock=clock)

    async def listing() -> set[str]:
        return {str(p) for p in (tmp / "tenants").rglob("*.sqlite3")}

    try:
        yield TenantStoresHarness(SqliteTenantStores(tmp, clock=clock), control, listing)
    finally:
        await control.close()


TENANT_STORES_FACTORIES: dict[
    str, Callable[[Path], AbstractAsyncContextManager[TenantStoresHarness]]
] = {"sqlite": sqlite_tenant_stores}
TENANT_STORES_FACTORIES.update(backend_factories("tenant_stores"))


@pytest.fixture(params=sorted(TENANT_STORES_FACTORIES))
async def tenant_stores_h(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[TenantStoresHarness]:
    async with TENANT_STORES_FACTORIES[request.param](tmp_path) as harness:
        yield harness


# --------------------------------------------------------------------------- names


@pytest.fixture
def unique() -> Callable[[str], str]:
    """``unique("inbox")`` → ``inbox-1a2b3c4d``: a name no other test uses."""
    return lambda stem: f"{stem}-{uuid.uuid4().hex[:8]}"
