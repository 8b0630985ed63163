"""Self-hosted backends of the contract suites, on the machine's PostgreSQL.

One scratch database per test process (``tests/integration/selfhosted/postgres.py``: created
on first use, dropped at exit); every harness opens its own connection pool on it, and
``reopen`` opens another pool -- a second process, as far as PostgreSQL can tell.

Time: the bus, scheduler and state store read "now" from the database (``now()``), never
from a clock the test could drive, so their harnesses really sleep (``SystemClock``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from adapters.selfhosted.database import PostgresDatabase
from adapters.selfhosted.message_bus import PostgresMessageBus
from adapters.selfhosted.scheduler import PostgresScheduler
from adapters.selfhosted.state_store import PostgresStateStore
from core.clock import SystemClock
from tests.contract.harness import BusHarness, SchedulerHarness, StateHarness
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


FACTORIES: dict[str, dict[str, Any]] = {
    "bus": {"postgres": postgres_bus},
    "scheduler": {"postgres": postgres_scheduler},
    "state": {"postgres": postgres_state},
    # "blob": the S3-compatible store is the AWS adapter (its moto backend covers it, with
    # an endpoint URL and path-style addressing); files are the local FileBlobStore.
    # "runtime": DockerRuntime / KubernetesJobRuntime (adapters/selfhosted/container_runtime.py).
}
