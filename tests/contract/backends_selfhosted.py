"""Self-hosted backends of the contract suites, on the machine's PostgreSQL.

One scratch database per test process (``tests/integration/selfhosted/postgres.py``: created
on first use, dropped at exit); every harness opens its own connection pool on it, and
``reopen`` opens another pool -- a second process, as far as PostgreSQL can tell.

Time: the bus, scheduler and state store read "now" from the database (``now()``), never
from a clock the test could drive, so their harnesses really sleep (``SystemClock``).

Blobs: ``s3-compatible`` is the store ``SKYCRAWL_SELFHOSTED_BLOBS=s3`` builds (the AWS
``S3BlobStore`` on a client with an endpoint URL and path-style addressing), on the moto
server of the AWS backends, as a MinIO or Spaces endpoint would be used.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

from adapters.local.provisioner import DirectoryProvisioner
from adapters.selfhosted.blob_store import build_blob_store
from adapters.selfhosted.database import PostgresDatabase
from adapters.selfhosted.message_bus import PostgresMessageBus
from adapters.selfhosted.scheduler import PostgresScheduler
from adapters.selfhosted.settings import SelfhostedSettings
from adapters.selfhosted.state_store import PostgresStateStore
from adapters.selfhosted.tenant_stores import PostgresTenantStores
from core.clock import SystemClock
from core.ports import BlobStore, StateStore
from tests.contract.backends_aws import _empty_bucket, _new_bucket
from tests.contract.harness import (
    BusHarness,
    ProvisionerHarness,
    SchedulerHarness,
    StateHarness,
    TenantStoresHarness,
)
from tests.integration.aws import moto_server
from tests.integration.selfhosted.postgres import shared_url


def database() -> PostgresDatabase:
    return PostgresDatabase(shared_url(), max_size=4)


@contextlib.asynccontextmanager
async def postgres_bus(tmp: Path) -> AsyncIterator[BusHarness]:
    opened: list[PostgresMessageBus] = []

    def reopen() -> PostgresMessageBus:
        opened.append(PostgresMessageBus(database()))
        return opened[-1]

    try:
        yield BusHarness(bus=reopen(), clock=SystemClock(), reopen=reopen, visibility_s=0.5)
    finally:
        for bus in opened:
            await bus.close()


@contextlib.asynccontextmanager
async def postgres_scheduler(tmp: Path) -> AsyncIterator[SchedulerHarness]:
    bus = PostgresMessageBus(database())
    try:
        yield SchedulerHarness(scheduler=PostgresScheduler(bus), bus=bus, clock=SystemClock())
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def postgres_state(tmp: Path) -> AsyncIterator[StateHarness]:
    opened: list[PostgresStateStore] = []

    def reopen() -> PostgresStateStore:
        opened.append(PostgresStateStore(database()))
        return opened[-1]

    try:
        yield StateHarness(store=reopen(), clock=SystemClock(), reopen=reopen)
    finally:
        for store in opened:
            await store.close()


@contextlib.asynccontextmanager
async def s3_compatible_blobs(tmp: Path) -> AsyncIterator[BlobStore]:
    bucket = _new_bucket()
    settings = SelfhostedSettings(
        blobs="s3", s3_endpoint_url=moto_server.endpoint(), s3_bucket=bucket, s3_path_style=True
    )
    with mock.patch.dict(os.environ, moto_server.CREDENTIALS):  # boto3's chain reads them now
        store = build_blob_store(settings)
    try:
        yield store
    finally:
        await store.close()
        _empty_bucket(bucket)


# --------------------------------------------------------------------------- tenant stores


def scratch_prefix() -> str:
    """A schema prefix of one harness, so that suites sharing the database never see each
    other's tenant schemas."""
    return f"skycrawl_t{uuid.uuid4().hex[:8]}_"


async def rows_of(db: PostgresDatabase, query: str, *params: str) -> set[str]:
    async with db.connection("list") as conn:
        cur = await conn.execute(query, params)
        return {str(row[0]) for row in await cur.fetchall()}


async def tenant_schemas(db: PostgresDatabase, prefix: str) -> set[str]:
    """The tenant schemas the database holds, from PostgreSQL's own catalog."""
    query = "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)"
    return await rows_of(db, query, prefix)


@contextlib.asynccontextmanager
async def postgres_tenant_stores(tmp: Path) -> AsyncIterator[TenantStoresHarness]:
    db, prefix = database(), scratch_prefix()
    control, stores = PostgresStateStore(db), PostgresTenantStores(db, prefix=prefix)
    try:
        yield TenantStoresHarness(stores, control, lambda: tenant_schemas(db, prefix))
    finally:
        await stores.close()
        await control.close()


@contextlib.asynccontextmanager
async def postgres_tenant_state(tmp: Path) -> AsyncIterator[StateHarness]:
    """A tenant's own schema must keep every promise of the StateStore port."""
    stores = PostgresTenantStores(database(), prefix=scratch_prefix())
    await stores.create_store(tenant_id="tenant-a")
    opened: list[StateStore] = []

    def reopen() -> StateStore:
        opened.append(stores.open_store("tenant-a"))
        return opened[-1]

    try:
        yield StateHarness(store=reopen(), clock=SystemClock(), reopen=reopen)
    finally:
        for store in opened:
            await store.close()
        await stores.drop_store(tenant_id="tenant-a")
        await stores.close()


@contextlib.asynccontextmanager
async def postgres_dedicated_provisioner(tmp: Path) -> AsyncIterator[ProvisionerHarness]:
    """The self-hosted provisioner with dedicated tenant data: a directory, a topic on the
    PostgreSQL bus and a schema per tenant, each listed from where it lives."""
    db, prefix = database(), scratch_prefix()
    topic_base = f"dispatch{uuid.uuid4().hex[:8]}"
    bus, stores = PostgresMessageBus(db), PostgresTenantStores(db, prefix=prefix)
    provisioner = DirectoryProvisioner(tmp, bus=bus, dispatch_topic=topic_base, stores=stores)

    async def topics() -> set[str]:
        query = "SELECT name FROM bus_topics WHERE starts_with(name, %s)"
        return await rows_of(db, query, topic_base)

    async def exists(resources: Mapping[str, str]) -> bool:
        found = {"tenant_store": await tenant_schemas(db, prefix), "dispatch_topic": await topics()}
        return all(
            value in found[key] if key in found else Path(value).exists()
            for key, value in resources.items()
        )

    async def inventory() -> set[str]:
        tenants = tmp / "tenants"
        files = {str(p) for p in tenants.rglob("*")} if tenants.exists() else set()
        sources = await rows_of(
            db, "SELECT source FROM bus_sources WHERE strpos(source, %s) > 0", topic_base
        )
        return (
            files
            | {f"topic:{t}" for t in await topics()}
            | {f"source:{s}" for s in sources}
            | {f"schema:{s}" for s in await tenant_schemas(db, prefix)}
        )

    try:
        yield ProvisionerHarness(provisioner=provisioner, exists=exists, inventory=inventory)
    finally:
        await stores.close()
        await bus.close()


FACTORIES: dict[str, dict[str, Any]] = {
    "bus": {"postgres": postgres_bus},
    "scheduler": {"postgres": postgres_scheduler},
    "state": {"postgres": postgres_state, "postgres-tenant": postgres_tenant_state},
    "tenant_stores": {"postgres": postgres_tenant_stores},
    "provisioner": {"postgres-dedicated": postgres_dedicated_provisioner},
    "blob": {"s3-compatible": s3_compatible_blobs},  # files: the local FileBlobStore
    # "runtime": DockerRuntime / KubernetesJobRuntime (adapters/selfhosted/container_runtime.py).
}
