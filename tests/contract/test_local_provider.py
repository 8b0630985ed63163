"""The local provider's composition root and the lazy provider registry."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from adapters import PROVIDERS, load_provider
from adapters.local.provider import build_ports, engine_env
from core.clock import FakeClock
from core.errors import ConfigurationError
from core.ports import OutboundMessage, Queue
from core.settings import LocalSettings, SkycrawlSettings


async def test_build_ports_lays_out_the_data_dir(tmp_path: Path) -> None:
    local = LocalSettings(data_dir=tmp_path / "data")
    clock = FakeClock()
    ports = build_ports(SkycrawlSettings(), local, clock=clock, runtime_command=[sys.executable])
    try:
        await ports.bus.ensure_queue(name="inbox")
        await ports.bus.send(queue="inbox", message=OutboundMessage(body=b"x"))
        assert len(await ports.bus.receive(source=Queue("inbox"))) == 1
        await ports.blobs.put(key="a/b", data=b"1")
        await ports.state.create(table="t", partition="p", key="k", data={})
        assert ports.clock is clock
    finally:
        await ports.close()
    data = tmp_path / "data"
    for name in ("bus.sqlite3", "state.sqlite3", "blobs/a/b"):
        assert (data / name).is_file(), name
    for name in ("logs", "tenants"):
        assert (data / name).is_dir(), name


async def test_dedicated_tenant_data_goes_to_the_tenants_own_file(tmp_path: Path) -> None:
    """SKYCRAWL_TENANT_DATA=dedicated: the provisioner makes the tenant's tenant.sqlite3,
    the state the core is given puts the tenant's crawls there, teardown removes it."""
    local = LocalSettings(data_dir=tmp_path / "data")
    settings = SkycrawlSettings(tenant_data="dedicated")
    ports = build_ports(settings, local, clock=FakeClock(), runtime_command=[sys.executable])
    try:
        resources = await ports.provisioner.provision(tenant_id="t1")
        store = Path(resources["tenant_store"])
        assert store == (tmp_path / "data" / "tenants" / "t1" / "tenant.sqlite3").resolve()
        await ports.state.create(table="crawls", partition="t1", key="c1", data={"n": 1})
        await ports.state.create(table="containers", partition="t1", key="g1", data={})
        with closing(sqlite3.connect(store)) as conn:
            assert conn.execute("SELECT tbl, key FROM items").fetchall() == [("crawls", "c1")]
        await ports.provisioner.teardown(tenant_id="t1", resources=resources)
        assert not store.exists()
    finally:
        await ports.close()
    with closing(sqlite3.connect(tmp_path / "data" / "state.sqlite3")) as conn:
        assert conn.execute("SELECT tbl, key FROM items").fetchall() == [("containers", "g1")]


def test_engine_env_points_at_the_same_absolute_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    env = engine_env(LocalSettings(data_dir=Path("rel")))
    assert env == {
        "SKYCRAWL_PROVIDER": "local",
        "SKYCRAWL_LOCAL_DATA_DIR": str(tmp_path.resolve() / "rel"),
        "SKYCRAWL_HOST_LIMITER_PATH": str(tmp_path.resolve() / "rel" / "hosts.sqlite3"),
    }


def test_load_provider_imports_lazily_by_name() -> None:
    assert set(PROVIDERS) == {"local", "aws", "azure", "gcp", "selfhosted"}
    module = load_provider("local")
    assert module.build_ports is build_ports


def test_unknown_provider_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown provider 'ibm'"):
        load_provider("ibm")


def test_missing_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "fake_aws_provider.py").write_text("import boto3_not_installed_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(PROVIDERS, "aws", "fake_aws_provider")
    with pytest.raises(
        ConfigurationError, match=r"provider 'aws' needs: pip install 'skycrawl\[aws\]'"
    ):
        load_provider("aws")


def test_missing_provider_module_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROVIDERS, "gcp", "adapters.gcp.no_such_provider_module")
    with pytest.raises(ConfigurationError, match="not part of this installation"):
        load_provider("gcp")
