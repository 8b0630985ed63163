"""Provisioner contract: per-tenant resources, created idempotently and torn down."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from adapters.local.provisioner import DirectoryProvisioner
from adapters.local.tenant_stores import SqliteTenantStores
from core.errors import InvalidRequest

if TYPE_CHECKING:
    from tests.contract.harness import ProvisionerHarness


async def test_provision_is_idempotent_and_teardown_removes(
    provisioner_h: ProvisionerHarness,
) -> None:
    provisioner = provisioner_h.provisioner
    resources = dict(await provisioner.provision(tenant_id="tenant-a"))
    assert resources
    assert await provisioner_h.exists(resources)
    assert dict(await provisioner.provision(tenant_id="tenant-a")) == resources

    await provisioner.teardown(tenant_id="tenant-a", resources=resources)
    assert not any([await provisioner_h.exists({k: v}) for k, v in resources.items()])
    await provisioner.teardown(tenant_id="tenant-a", resources=resources)  # gone is fine


async def test_tenants_are_isolated(provisioner_h: ProvisionerHarness) -> None:
    provisioner = provisioner_h.provisioner
    a = dict(await provisioner.provision(tenant_id="tenant-a"))
    b = dict(await provisioner.provision(tenant_id="tenant-b"))
    assert set(a.values()).isdisjoint(b.values())
    await provisioner.teardown(tenant_id="tenant-a", resources=a)
    assert await provisioner_h.exists(b)


@pytest.mark.parametrize("tenant_id", ["", "../etc", "a/b", "a b", "-x", "x" * 65])
async def test_bad_tenant_ids_are_refused(
    provisioner_h: ProvisionerHarness, tenant_id: str
) -> None:
    with pytest.raises(InvalidRequest):
        await provisioner_h.provisioner.provision(tenant_id=tenant_id)
    with pytest.raises(InvalidRequest):
        await provisioner_h.provisioner.teardown(tenant_id=tenant_id, resources={})


# --------------------------------------------------------------------------- directory only


async def test_directory_layout_pooled(tmp_path: Path) -> None:
    """Pooled tenant data: a directory and its blob folder, no database of the tenant's own."""
    provisioner = DirectoryProvisioner(tmp_path)
    resources = await provisioner.provision(tenant_id="t1")
    tenant_dir = tmp_path.resolve() / "tenants" / "t1"
    assert resources == {"blob_root": str(tenant_dir / "blobs")}
    assert sorted(tenant_dir.iterdir()) == [tenant_dir / "blobs"]
    await provisioner.teardown(tenant_id="t1", resources=resources)
    assert not tenant_dir.exists()


async def test_directory_layout_and_database(tmp_path: Path) -> None:
    """Dedicated tenant data: the tenant's own SQLite store beside its blob folder."""
    provisioner = DirectoryProvisioner(tmp_path, stores=SqliteTenantStores(tmp_path))
    resources = await provisioner.provision(tenant_id="t1")
    tenant_dir = tmp_path.resolve() / "tenants" / "t1"
    assert resources == {
        "tenant_store": str(tenant_dir / "tenant.sqlite3"),
        "blob_root": str(tenant_dir / "blobs"),
    }
    assert (tenant_dir / "blobs").is_dir()
    (tenant_dir / "blobs" / "kept").write_text("data")

    await provisioner.provision(tenant_id="t1")
    assert (tenant_dir / "blobs" / "kept").read_text() == "data"
    with closing(sqlite3.connect(resources["tenant_store"])) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert meta["tenant_id"] == "t1"
    assert "items" in tables  # the StateStore schema, ready for the tenant's records

    await provisioner.teardown(tenant_id="t1", resources=resources)
    assert not tenant_dir.exists()
    assert (tmp_path / "tenants").is_dir()


async def test_provisioning_creates_what_it_returns_and_teardown_leaves_nothing(
    provisioner_h: ProvisionerHarness,
) -> None:
    """Listed from the cloud itself, before and after: provisioning adds the tenant's
    resources (its dispatch topic among them), doing it again adds nothing, and teardown
    takes the cloud back to exactly what it held before."""
    provisioner = provisioner_h.provisioner
    before = await provisioner_h.inventory()
    resources = dict(await provisioner.provision(tenant_id="tenant-c"))
    made = await provisioner_h.inventory() - before
    assert made
    assert resources["dispatch_topic"] in " ".join(made)
    assert dict(await provisioner.provision(tenant_id="tenant-c")) == resources
    assert await provisioner_h.inventory() - before == made  # idempotent: nothing more

    await provisioner.teardown(tenant_id="tenant-c", resources=resources)
    assert await provisioner_h.inventory() == before
