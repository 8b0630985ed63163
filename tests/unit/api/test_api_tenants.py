"""Operator routes: create (key shown once, hash stored), list, get, delete (full teardown)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from api_harness import OPERATOR_KEY, Harness, assert_problem

from adapters.local.provisioner import DirectoryProvisioner
from core.egress_scoring import (
    HEALTH_PARTITION,
    HEALTH_TABLE,
    EgressHealthRecord,
    ProxyHealth,
    proxy_id,
)
from core.errors import NotFound
from core.layout import manifest_key, subscription_name, tenant_prefix, tenant_topic
from core.models import Container, Egress, SessionBinding, TenantCreate
from core.ports.container_runtime import ContainerSpec, RunState
from core.ports.message_bus import Subscription
from core.records import Table
from core.tenancy import TenantService
from functions.local.fleet_status import fleet_cells

TENANT_TABLES = ("crawls", "active", "containers", "fleets", "sessions", "idempotency", "rate")


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_create_shows_the_key_once_and_stores_only_its_hash(harness: Harness) -> None:
    response = await harness.call(
        "POST",
        "/v1/tenants",
        key=OPERATOR_KEY,
        json_body={"name": "Acme Inc.", "quotas": {"max_pending": 5}},
    )
    assert response.status == 201
    created = response.parsed()
    api_key = created["api_key"]
    assert api_key.startswith("sk_")
    assert created["name"] == "Acme Inc."
    assert created["quotas"]["max_pending"] == 5
    assert created["state"] == "active"
    assert "key_sha256" not in created
    assert response.headers["location"].endswith(f"/v1/tenants/{created['id']}")
    assert response.headers["cache-control"] == "no-store"
    # the plaintext key is nowhere on disk (state DB and its WAL, bus, blobs, tenant dirs)
    assert files_containing(harness.root, api_key.encode()) == []
    assert files_containing(harness.root, api_key.split("_", 2)[2].encode()) == []
    digest = hashlib.sha256(api_key.encode()).hexdigest().encode()
    assert files_containing(harness.root, digest)
    # and it is not shown again
    for path in ("/v1/tenants", f"/v1/tenants/{created['id']}"):
        shown = await harness.call("GET", path, key=OPERATOR_KEY)
        assert shown.status == 200
        assert api_key.encode() not in shown.body
        assert b"key_sha256" not in shown.body
    # the key works
    assert (await harness.call("GET", "/v1/crawls", key=api_key)).status == 200


async def test_create_provisions_resources(harness: Harness) -> None:
    tenant_id, _ = await harness.create_tenant("acme")
    tenant = await harness.tenants.get(tenant_id)
    assert Path(tenant.resources["blob_root"]).is_dir()
    # pooled tenant data (the default): no store of its own, its records are in the shared one
    assert "tenant_store" not in tenant.resources
    assert list(Path(tenant.resources["blob_root"]).parent.iterdir()) == [
        Path(tenant.resources["blob_root"])
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "bad/name"},
        {"name": "x", "extra": 1},
        {"name": "x", "quotas": {"max_pending": 0}},
    ],
)
async def test_invalid_tenant_body_is_422_and_creates_nothing(
    harness: Harness, body: object
) -> None:
    assert_problem(await harness.call("POST", "/v1/tenants", key=OPERATOR_KEY, json_body=body), 422)
    assert await harness.tenants.list() == []
    assert await harness.count("api_keys") == 0
    assert not (harness.root / "provisioned").exists()


async def test_failed_provisioning_leaves_nothing(harness: Harness, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the provisioner wants a directory")
    service = TenantService(
        harness.records,
        DirectoryProvisioner(blocker),
        harness.bus,
        harness.blobs,
        harness.runtime_for,
        harness.clock,
        harness.settings,
    )
    with pytest.raises(OSError):  # noqa: PT011
        await service.create(TenantCreate(name="doomed"))
    assert await harness.tenants.list() == []
    assert await harness.count("api_keys") == 0


async def test_failed_store_undoes_the_provisioning(harness: Harness) -> None:
    """The state store fails after provisioning: the tenant's directory is removed again."""
    await harness.state.close()
    with pytest.raises(Exception):  # noqa: PT011 - whatever a closed store raises
        await harness.tenants.create(TenantCreate(name="doomed"))
    tenants_dir = harness.root / "provisioned" / "tenants"
    assert not tenants_dir.exists() or list(tenants_dir.iterdir()) == []


async def test_list_and_get(harness: Harness) -> None:
    a, _ = await harness.create_tenant("a")
    b, _ = await harness.create_tenant("b")
    listed = (await harness.call("GET", "/v1/tenants", key=OPERATOR_KEY)).parsed()
    assert sorted(t["id"] for t in listed["items"]) == sorted([a, b])
    got = (await harness.call("GET", f"/v1/tenants/{a}", key=OPERATOR_KEY)).parsed()
    assert got["name"] == "a"
    for missing in ("tn_" + "0" * 32, "nope"):
        assert_problem(await harness.call("GET", f"/v1/tenants/{missing}", key=OPERATOR_KEY), 404)
        assert_problem(
            await harness.call("DELETE", f"/v1/tenants/{missing}", key=OPERATOR_KEY), 404
        )


async def seed_tenant_state(harness: Harness, tenant_id: str, key: str) -> str:
    """Crawls, blobs, a live container (a real subprocess) and its subscription; returns its id."""
    crawl_id = (await harness.submit(key, headers={"Idempotency-Key": "k"})).parsed()["id"]
    await harness.submit(key)
    await harness.blobs.put(key=manifest_key(tenant_id, crawl_id, 0), data=b"{}\n")
    container_id = f"c-{tenant_id[-8:]}"
    now = harness.clock.now()
    container = Container(
        id=container_id, tenant_id=tenant_id, egress=Egress(name="local"), started_at=now
    )
    await harness.records.containers.create(tenant_id, container_id, container)
    binding = SessionBinding(
        tenant_id=tenant_id, session="s", container_id=container_id, egress="local", bound_at=now
    )
    await harness.records.sessions.create(tenant_id, "s", binding)
    await harness.runtime.start_container(
        spec=ContainerSpec(
            container_id=container_id, tenant_id=tenant_id, egress=Egress(name="local")
        )
    )
    await harness.bus.ensure_subscription(
        topic=tenant_topic(harness.settings.dispatch_topic, tenant_id),
        name=subscription_name(container_id),
        filter={"container_id": container_id},
    )
    return container_id


async def partition_counts(harness: Harness, tenant_id: str) -> dict[str, int]:
    return {
        table: len([i for i in await harness.state.scan(table=table) if i.partition == tenant_id])
        for table in TENANT_TABLES
    }


async def test_delete_tears_everything_down(harness: Harness) -> None:
    tenant_id, key = await harness.create_tenant("doomed")
    other_id, other_key = await harness.create_tenant("survivor")
    container_id = await seed_tenant_state(harness, tenant_id, key)
    other_container = await seed_tenant_state(harness, other_id, other_key)
    tenant_dir = Path((await harness.tenants.get(tenant_id)).resources["blob_root"]).parent
    assert tenant_dir.is_dir()
    assert (
        await harness.runtime.describe(container_id=container_id, egress=Egress(name="local"))
    ).state is RunState.running
    others_before = await partition_counts(harness, other_id)
    assert others_before["crawls"] == others_before["active"] == 2

    response = await harness.call("DELETE", f"/v1/tenants/{tenant_id}", key=OPERATOR_KEY)
    assert response.status == 204
    assert response.body == b""

    assert not tenant_dir.exists()
    assert await harness.blobs.list(prefix=tenant_prefix(tenant_id)) == []
    for table in TENANT_TABLES:
        items = await harness.state.scan(table=table)
        assert [i for i in items if i.partition == tenant_id] == [], table
    assert await partition_counts(harness, other_id) == others_before
    assert [t.id for t in await harness.tenants.list()] == [other_id]
    assert await harness.count("api_keys") == 1
    assert (
        await harness.runtime.describe(container_id=container_id, egress=Egress(name="local"))
    ).state is RunState.exited
    topic = tenant_topic(harness.settings.dispatch_topic, tenant_id)
    with pytest.raises(NotFound):
        await harness.bus.receive(source=Subscription(topic, subscription_name(container_id)))
    topics = await harness.bus.topics()  # its topic is gone; the survivor's keeps its own
    assert topic not in topics
    other_topic = tenant_topic(harness.settings.dispatch_topic, other_id)
    assert topics[other_topic] == [subscription_name(other_container)]
    assert_problem(await harness.call("GET", "/v1/crawls", key=key), 401)
    assert_problem(await harness.call("GET", f"/v1/tenants/{tenant_id}", key=OPERATOR_KEY), 404)
    # the other tenant is untouched
    assert (
        await harness.runtime.describe(container_id=other_container, egress=Egress(name="local"))
    ).state is RunState.running
    assert await harness.blobs.list(prefix=tenant_prefix(other_id))
    assert len((await harness.call("GET", "/v1/crawls", key=other_key)).parsed()["items"]) == 2


async def test_delete_cancels_active_crawls_before_removing_them(harness: Harness) -> None:
    tenant_id, key = await harness.create_tenant("doomed")
    await harness.submit(key)
    cancelled: list[str] = []
    real_stop = harness.runtime.stop_container

    async def spy(*, container_id: str, egress: Egress, grace_s: float = 10) -> None:
        crawls = await harness.records.crawls.query(tenant_id)
        cancelled.extend(c.value.state.value for c in crawls)
        await real_stop(container_id=container_id, egress=egress, grace_s=grace_s)

    harness.runtime.stop_container = spy  # type: ignore[method-assign]
    container = Container(
        id="c-1", tenant_id=tenant_id, egress=Egress(name="local"), started_at=harness.clock.now()
    )
    await harness.records.containers.create(tenant_id, "c-1", container)
    await harness.tenants.delete(tenant_id)
    assert cancelled == ["cancelled"]


async def test_containers_route_lists_every_container(harness: Harness) -> None:
    a, _ = await harness.create_tenant("a")
    b, _ = await harness.create_tenant("b")
    for tenant_id in (a, b):
        container = Container(
            id=f"c-{tenant_id[-4:]}",
            tenant_id=tenant_id,
            egress=Egress(name="local"),
            started_at=harness.clock.now(),
        )
        await harness.records.containers.create(tenant_id, container.id, container)
    listed = (await harness.call("GET", "/v1/containers", key=OPERATOR_KEY)).parsed()
    assert sorted(c["tenant_id"] for c in listed["items"]) == sorted([a, b])


async def test_containers_show_runtime_region_and_proxies_without_passwords(
    harness: Harness,
) -> None:
    tenant_id, _ = await harness.create_tenant("fleet")
    secret = "http://bob:hunter2@proxy.test:3128"
    egress = Egress(
        name="eu", runtime="ecs", region="eu-west-1", proxies=[secret, "http://p2.test:8080"]
    )
    container = Container(
        id="c-eu", tenant_id=tenant_id, egress=egress, started_at=harness.clock.now()
    )
    await harness.records.containers.create(tenant_id, container.id, container)
    out = ProxyHealth(requests=30, errors=30, out=True, reason="network errors on 100%", epoch=1)
    record = EgressHealthRecord(egress="eu", proxies={proxy_id(secret): out})
    await Table(harness.state, HEALTH_TABLE, EgressHealthRecord).create(
        HEALTH_PARTITION, "eu", record
    )

    response = await harness.call("GET", "/v1/containers", key=OPERATOR_KEY)
    assert "hunter2" not in response.body.decode()
    (item,) = response.parsed()["items"]
    assert (item["runtime"], item["region"]) == ("ecs", "eu-west-1")
    assert item["proxies"] == [
        {
            "id": proxy_id(secret),
            "url": "http://bob:***@proxy.test:3128",
            "state": "out",
            "reason": "network errors on 100%",
        },
        {
            "id": proxy_id("http://p2.test:8080"),
            "url": "http://p2.test:8080",
            "state": "ok",
            "reason": None,
        },
    ]
    assert fleet_cells(item) == (
        "ecs",
        "eu-west-1",
        "http://bob:***@proxy.test:3128 (out: network errors on 100%), http://p2.test:8080",
    )
