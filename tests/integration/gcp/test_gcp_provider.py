"""The GCP provider's composition: settings, the engine's environment, the registry, and the
Cloud Storage adapter's large-object path through the fake server."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from adapters import load_provider
from adapters.gcp import provider
from adapters.gcp.blob_store import GcsBlobStore
from adapters.gcp.provider import GcpClients
from adapters.gcp.settings import GcpSettings
from core.errors import ConfigurationError
from core.settings import SkycrawlSettings
from tests.integration.gcp.fakes import FakeGcsServer


def test_settings_read_googles_emulator_variables_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023")
    monkeypatch.setenv("SKYCRAWL_GCP_INTERNAL_CALLERS", "a@x.test, b@x.test")
    monkeypatch.setenv("SKYCRAWL_GCP_TIMER_URL", "https://api.test/internal/timers")
    gcp = GcpSettings(project="p")
    assert (gcp.pubsub_emulator_host, gcp.storage_emulator_host) == (
        "127.0.0.1:8085",
        "http://127.0.0.1:9023",
    )
    assert gcp.callers == ["a@x.test", "b@x.test"]
    assert gcp.audience == "https://api.test/internal/timers"
    assert gcp.queue_path == "projects/p/locations/us-central1/queues/skycrawl-timers"
    assert gcp.job_path == "projects/p/locations/us-central1/jobs/skycrawl-engine"


def test_engine_env_carries_what_a_container_needs() -> None:
    gcp = GcpSettings(
        project="p", bucket="b", pubsub_emulator_host="h:1", storage_emulator_host="http://h:2"
    )
    assert provider.engine_env(gcp) == {
        "SKYCRAWL_PROVIDER": "gcp",
        "SKYCRAWL_GCP_PROJECT": "p",
        "SKYCRAWL_GCP_BUCKET": "b",
        "SKYCRAWL_GCP_PUBSUB_EMULATOR_HOST": "h:1",
        "SKYCRAWL_GCP_STORAGE_EMULATOR_HOST": "http://h:2",
    }
    assert provider.engine_env(GcpSettings(project="p", bucket="b")) == {
        "SKYCRAWL_PROVIDER": "gcp",
        "SKYCRAWL_GCP_PROJECT": "p",
        "SKYCRAWL_GCP_BUCKET": "b",
    }


def test_missing_settings_are_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKYCRAWL_GCP_BUCKET", raising=False)
    monkeypatch.setenv("SKYCRAWL_GCP_PROJECT", "p")
    with pytest.raises(ConfigurationError, match="SKYCRAWL_GCP_BUCKET"):
        provider.build_container_ports(SkycrawlSettings())
    with pytest.raises(ConfigurationError, match="SKYCRAWL_GCP_TIMER_URL"):
        provider.build_ports(SkycrawlSettings(), GcpSettings(project="p", bucket="b"))


def test_the_registry_loads_the_gcp_provider() -> None:
    module = load_provider("gcp")
    assert module.build_ports is provider.build_ports
    assert module.build_container_ports is provider.build_container_ports


async def test_large_objects_take_the_resumable_upload() -> None:
    data = bytes(range(256)) * (36 * 1024 + 7)  # just over 9 MiB: above the multipart limit
    with FakeGcsServer(buckets=["big"]) as server:
        store = GcsBlobStore(client=server.client(), bucket="big", prefix="pooled/")
        try:
            await store.put(key="tenants/t/crawls/c/warc/00000000.warc.gz", data=data)
            assert await store.get(key="tenants/t/crawls/c/warc/00000000.warc.gz") == data
            assert list(server.state.buckets["big"]) == [
                "pooled/tenants/t/crawls/c/warc/00000000.warc.gz"
            ]
            assert await store.list(prefix="tenants/") == [
                "tenants/t/crawls/c/warc/00000000.warc.gz"
            ]
        finally:
            await store.close()


@pytest.mark.parametrize("tenant_data", ["pooled", "dedicated"])
async def test_closing_the_ports_closes_every_client_they_opened(tenant_data: str) -> None:
    """Cloud Tasks (scheduler), Firestore, Storage, Pub/Sub, Cloud Run and IAM (the tenants'
    identities): each closed once (the tenants' own stores of dedicated tenant data share the
    one Firestore client)."""

    def grpc_client() -> Any:
        client = mock.MagicMock()
        client.transport.close = mock.AsyncMock()
        return client

    clients = GcpClients(
        publisher=grpc_client(),
        subscriber=grpc_client(),
        firestore=mock.MagicMock(_firestore_api_internal=grpc_client()),
        storage=mock.MagicMock(),
        tasks=grpc_client(),
        run_jobs=grpc_client(),
        run_executions=grpc_client(),
        run_tasks=grpc_client(),
        iam=grpc_client(),
    )
    gcp = GcpSettings(
        project="p",
        bucket="b",
        timer_url="https://api.test/internal/timers",
        timer_service_account="timers@p.iam.gserviceaccount.com",
    )
    settings = SkycrawlSettings(provider="gcp", tenant_data=tenant_data)
    ports = provider.build_ports(settings, gcp, clients=clients)
    await ports.close()
    for name in (
        "publisher",
        "subscriber",
        "tasks",
        "run_jobs",
        "run_executions",
        "run_tasks",
        "iam",
    ):
        getattr(clients, name).transport.close.assert_awaited_once()
    assert clients.firestore is not None
    clients.firestore._firestore_api_internal.transport.close.assert_awaited_once()
    clients.firestore.close.assert_called_once()
    assert clients.storage is not None
    clients.storage.close.assert_called_once()
