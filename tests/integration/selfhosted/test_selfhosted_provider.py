"""The self-hosted composition: which runtime the settings choose, what an engine is given to
reach the same database, blobs and host limiter, and that engines on one database keep one
per-host gap between them."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest
from psycopg import sql

from adapters import load_provider
from adapters.local.container_runtime import SubprocessRuntime
from adapters.selfhosted.database import PostgresDatabase
from adapters.selfhosted.message_bus import PostgresMessageBus
from adapters.selfhosted.provider import build_ports, build_runtime, engine_env
from adapters.selfhosted.settings import SelfhostedSettings
from core.clock import SystemClock
from core.errors import ConfigurationError
from core.ports import OutboundMessage, Queue
from core.settings import SkycrawlSettings
from engine_container.bus_crawl import build_politeness
from engine_container.settings import EngineSettings
from tests.integration.selfhosted.postgres import shared_url


async def test_build_ports_runs_on_postgres_and_files(tmp_path: Path) -> None:
    selfhosted = SelfhostedSettings(database_url=shared_url(), data_dir=tmp_path / "data")
    ports = build_ports(SkycrawlSettings(), selfhosted)
    try:
        assert isinstance(ports.bus, PostgresMessageBus)
        assert all(isinstance(r, SubprocessRuntime) for r in ports.runtimes.values())
        assert set(ports.runtimes) == {"local"}  # the default egress pool
        await ports.bus.ensure_queue(name="provider-inbox")
        await ports.bus.send(queue="provider-inbox", message=OutboundMessage(body=b"x"))
        assert len(await ports.bus.receive(source=Queue("provider-inbox"))) == 1
        await ports.blobs.put(key="a/b", data=b"1")
        await ports.state.create(table="provider", partition="p", key="k", data={})
    finally:
        await ports.close()
    assert (tmp_path / "data" / "blobs" / "a" / "b").read_bytes() == b"1"


async def test_dedicated_tenant_data_goes_to_the_tenants_own_schema(tmp_path: Path) -> None:
    """SKYCRAWL_TENANT_DATA=dedicated: the provisioner makes the tenant's schema, the state
    the core is given puts the tenant's crawls in it, teardown drops it."""
    selfhosted = SelfhostedSettings(database_url=shared_url(), data_dir=tmp_path / "data")
    ports = build_ports(SkycrawlSettings(tenant_data="dedicated"), selfhosted)
    tenant = f"tn_{uuid.uuid4().hex}"
    database = PostgresDatabase(shared_url(), max_size=1)
    try:
        resources = await ports.provisioner.provision(tenant_id=tenant)
        schema = resources["tenant_store"]
        await ports.state.create(table="crawls", partition=tenant, key="c1", data={})
        await ports.state.create(table="containers", partition=tenant, key="g1", data={})
        async with database.connection("read") as conn:
            own = await conn.execute(
                sql.SQL("SELECT tbl, key FROM {}").format(sql.Identifier(schema, "state_items"))
            )
            assert await own.fetchall() == [("crawls", "c1")]
            shared = await conn.execute(
                "SELECT tbl, key FROM state_items WHERE partition = %s", (tenant,)
            )
            assert await shared.fetchall() == [("containers", "g1")]
        await ports.provisioner.teardown(tenant_id=tenant, resources=resources)
        async with database.connection("read") as conn:
            found = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            assert await found.fetchall() == []
    finally:
        await ports.close()
        await database.close()


@pytest.mark.parametrize("runtime", ["docker", "kubernetes"])
def test_a_container_runtime_not_installed_is_one_clear_error(
    runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "adapters.selfhosted.container_runtime", None)
    with pytest.raises(ConfigurationError, match=f"RUNTIME={runtime}: .* not available") as info:
        build_runtime(SkycrawlSettings(), SelfhostedSettings(runtime=runtime), clock=SystemClock())
    assert "\n" not in str(info.value)


def test_engine_env_reaches_the_same_database_blobs_and_limiter(tmp_path: Path) -> None:
    selfhosted = SelfhostedSettings(
        database_url="postgresql://crawler@db.internal/skycrawl",
        blobs="s3",
        s3_endpoint_url="http://127.0.0.1:9000",
        s3_bucket="pages",
        s3_path_style=False,
        data_dir=tmp_path,
    )
    env = engine_env(selfhosted)
    assert env["SKYCRAWL_PROVIDER"] == "selfhosted"
    assert env["SKYCRAWL_SELFHOSTED_DATABASE_URL"] == "postgresql://crawler@db.internal/skycrawl"
    assert env["SKYCRAWL_HOST_LIMITER_URL"] == env["SKYCRAWL_SELFHOSTED_DATABASE_URL"]
    assert env["SKYCRAWL_SELFHOSTED_BLOBS"] == "s3"
    assert env["SKYCRAWL_SELFHOSTED_S3_BUCKET"] == "pages"
    assert env["SKYCRAWL_SELFHOSTED_S3_PATH_STYLE"] == "false"
    assert env["SKYCRAWL_SELFHOSTED_DATA_DIR"] == str(tmp_path.resolve())
    assert "SKYCRAWL_SELFHOSTED_RUNTIME" not in env  # the control plane's business only


async def test_the_engine_reads_back_what_engine_env_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = SelfhostedSettings(
        database_url=shared_url(), s3_path_style=False, data_dir=tmp_path, notify=False
    )
    for name, value in engine_env(written).items():
        monkeypatch.setenv(name, value)
    read = SelfhostedSettings()
    assert (read.database_url, read.s3_path_style, read.data_dir) == (
        written.database_url,
        False,
        tmp_path.resolve(),
    )
    bus, blobs = load_provider("selfhosted").build_container_ports(SkycrawlSettings())
    try:
        assert isinstance(bus, PostgresMessageBus)
        await blobs.put(key="from/engine", data=b"1")
        assert (tmp_path / "blobs" / "from" / "engine").read_bytes() == b"1"
    finally:
        await bus.close()
        await blobs.close()


async def _second_start_after(first: EngineSettings, second: EngineSettings) -> float:
    a, b = build_politeness(first), build_politeness(second)
    host = f"h-{uuid.uuid4().hex[:8]}.test"  # a limiter key only: nothing is fetched
    try:
        started = time.monotonic()
        async with a.slot(host):
            pass
        async with b.slot(host):
            return time.monotonic() - started
    finally:
        await a.close()
        await b.close()


async def test_engines_on_one_database_keep_one_gap_per_host() -> None:
    shared = EngineSettings(host_limiter_url=shared_url(), per_host_delay_s=0.6)
    assert await _second_start_after(shared, shared) >= 0.55
    alone = EngineSettings(per_host_delay_s=0.6)  # each engine only knows its own requests
    assert await _second_start_after(alone, alone) < 0.5
