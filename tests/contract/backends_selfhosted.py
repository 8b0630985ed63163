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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

from adapters.selfhosted.blob_store import build_blob_store
from adapters.selfhosted.database import PostgresDatabase
from adapters.selfhosted.message_bus import PostgresMessageBus
from adapters.selfhosted.scheduler import PostgresScheduler
from adapters.selfhosted.settings import SelfhostedSettings
from adapters.selfhosted.state_store import PostgresStateStore
from core.clock import SystemClock
from core.ports import BlobStore
from tests.contract.backends_aws import _empty_bucket, _new_bucket
from tests.contract.harness import BusHarness, SchedulerHarness, StateHarness
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


FACTORIES: dict[str, dict[str, Any]] = {
    "bus": {"postgres": postgres_bus},
    "scheduler": {"postgres": postgres_scheduler},
    "state": {"postgres": postgres_state},
    "blob": {"s3-compatible": s3_compatible_blobs},  # files: the local FileBlobStore
    # "runtime": DockerRuntime / KubernetesJobRuntime (adapters/selfhosted/container_runtime.py).
}
