"""The self-hosted provider: a PostgreSQL control plane for one VM, a droplet or a cluster.

==================  ===============================  ==========================================
port                class                            where
==================  ===============================  ==========================================
MessageBus          ``PostgresMessageBus``           PostgreSQL (leases, LISTEN/NOTIFY)
Scheduler           ``PostgresScheduler``            PostgreSQL (invisible rows, database clock)
StateStore          ``PostgresStateStore``           PostgreSQL (compare-and-set)
BlobStore           ``FileBlobStore`` / ``S3BlobStore``  a shared volume / an S3-compatible store
ContainerRuntime    ``SubprocessRuntime``            ``runtime``: subprocess (default), docker
                    / ``DockerRuntime`` /            or kubernetes
                    ``KubernetesJobRuntime``
Provisioner         ``DirectoryProvisioner``         ``<data_dir>/tenants/`` (per-tenant dirs)
TenantStores        ``PostgresTenantStores``         a schema per tenant, with
                                                     ``SKYCRAWL_TENANT_DATA=dedicated`` only
==================  ===============================  ==========================================

``build_ports`` opens one ``PostgresDatabase`` (one pool, migrated on first use) shared by the
bus, the scheduler and the state store; the pool closes when the last of them closes, so
``Ports.close`` closes it once. ``engine_env`` is what an engine needs to reach the same
database and blobs (``SKYCRAWL_PROVIDER=selfhosted`` and the ``SKYCRAWL_SELFHOSTED_*``
settings of ``settings.CONTAINER_SETTINGS``); ``build_container_ports`` is the engine's side.

Runtimes ``docker`` and ``kubernetes`` live in ``adapters/selfhosted/container_runtime.py``
(``DockerRuntime`` / ``KubernetesJobRuntime``, each built by ``from_settings(selfhosted,
settings)``), imported only when chosen.

Limits: the provisioner makes a directory per tenant (and, with dedicated tenant data, a
schema holding its crawl and usage records: ``core.tenant_data``), not a PostgreSQL role per
tenant, so every engine reaches the whole database with the one URL it is given: run only
engines you trust with the deployment's database, or put a per-tenant role in front.
"""

from __future__ import annotations

import importlib
import sys

from adapters.local.container_runtime import SubprocessRuntime
from adapters.local.provisioner import DirectoryProvisioner
from adapters.selfhosted.blob_store import build_blob_store
from adapters.selfhosted.database import PostgresDatabase
from adapters.selfhosted.message_bus import PostgresMessageBus
from adapters.selfhosted.scheduler import PostgresScheduler
from adapters.selfhosted.settings import CONTAINER_SETTINGS, SelfhostedSettings
from adapters.selfhosted.state_store import PostgresStateStore
from adapters.selfhosted.tenant_stores import PostgresTenantStores
from core.clock import Clock, SystemClock
from core.errors import ConfigurationError
from core.ports import BlobStore, ContainerRuntime, Ports
from core.settings import SkycrawlSettings
from core.tenant_data import routed_state

_RUNTIME_CLASSES = {"docker": "DockerRuntime", "kubernetes": "KubernetesJobRuntime"}


def build_runtime(
    settings: SkycrawlSettings, selfhosted: SelfhostedSettings, *, clock: Clock
) -> ContainerRuntime:
    """The container runtime ``selfhosted.runtime`` names."""
    data_dir = selfhosted.data_dir.resolve()
    if selfhosted.runtime == "subprocess":
        return SubprocessRuntime(
            command=(selfhosted.python or sys.executable, "-m", "engine_container"),
            log_dir=data_dir / "logs",
            clock=clock,
            close_grace_s=settings.stop_grace_s,
        )
    name = _RUNTIME_CLASSES[selfhosted.runtime]
    try:
        module = importlib.import_module("adapters.selfhosted.container_runtime")
        runtime_class = getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"SKYCRAWL_SELFHOSTED_RUNTIME={selfhosted.runtime}: {name} is not available in "
            f"this installation ({exc}); use runtime=subprocess"
        ) from exc
    runtime: ContainerRuntime = runtime_class.from_settings(selfhosted, settings)
    return runtime


def build_ports(
    settings: SkycrawlSettings,
    selfhosted: SelfhostedSettings | None = None,
    *,
    clock: Clock | None = None,
    runtime: ContainerRuntime | None = None,
) -> Ports:
    """Every self-hosted adapter, from ``selfhosted`` (default: read
    ``SKYCRAWL_SELFHOSTED_*`` now). ``runtime`` replaces the one the settings name. The
    egresses of the pool without a ``runtime`` of their own share that one runtime (it lists
    by egress); an egress naming another kind gets that family's (``adapters.runtimes``)."""
    from adapters.runtimes import build_runtimes

    selfhosted = selfhosted or SelfhostedSettings()
    clock = clock or SystemClock()
    data_dir = selfhosted.data_dir.resolve()
    for sub in ("logs", "tenants"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    database = PostgresDatabase(
        selfhosted.database_url,
        max_size=selfhosted.pool_size,
        synchronous_commit=selfhosted.synchronous_commit,
    )
    bus = PostgresMessageBus(database, notify=selfhosted.notify)
    home = runtime or build_runtime(settings, selfhosted, clock=clock)
    stores = PostgresTenantStores(database) if settings.tenant_data == "dedicated" else None
    return Ports(
        bus=bus,
        scheduler=PostgresScheduler(bus),
        state=routed_state(PostgresStateStore(database), stores),
        blobs=build_blob_store(selfhosted),
        runtimes=build_runtimes(settings, home="selfhosted", build_home=lambda _egress: home),
        provisioner=DirectoryProvisioner(
            data_dir, bus=bus, dispatch_topic=settings.dispatch_topic, stores=stores
        ),
        clock=clock,
    )


def engine_env(selfhosted: SelfhostedSettings | None = None) -> dict[str, str]:
    """The environment an engine needs to reach the same database and blobs."""
    selfhosted = selfhosted or SelfhostedSettings()
    # one per-host politeness limiter for every engine (every tenant) on this database
    env = {"SKYCRAWL_PROVIDER": "selfhosted", "SKYCRAWL_HOST_LIMITER_URL": selfhosted.database_url}
    for name in CONTAINER_SETTINGS:
        value = getattr(selfhosted, name)
        if name == "data_dir":
            value = selfhosted.data_dir.resolve()
        if value is not None and value != "":
            env[f"SKYCRAWL_SELFHOSTED_{name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return env


def build_container_ports(settings: SkycrawlSettings) -> tuple[PostgresMessageBus, BlobStore]:
    """The bus and blob store an engine container uses, from its environment (a pool of
    two connections, plus the LISTEN one: an engine receives from one subscription)."""
    selfhosted = SelfhostedSettings()
    database = PostgresDatabase(
        selfhosted.database_url, max_size=2, synchronous_commit=selfhosted.synchronous_commit
    )
    return PostgresMessageBus(database, notify=selfhosted.notify), build_blob_store(selfhosted)
