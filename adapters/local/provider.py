"""The embedded local provider: every port on one machine, nothing to install or pay for.

``build_ports`` lays out ``SKYCRAWL_LOCAL_DATA_DIR`` (default ``./.skycrawl``)::

    <data_dir>/bus.sqlite3     queues, dispatch topic, subscriptions, timers (SqliteMessageBus,
                               SqliteScheduler)
    <data_dir>/state.sqlite3   tenants, crawls, containers, sessions (SqliteStateStore)
    <data_dir>/blobs/          pages, manifests, checkpoints, exports (FileBlobStore)
    <data_dir>/logs/           one <GUID>.log and, while it runs, <GUID>.pid per engine
                               subprocess (SubprocessRuntime)
    <data_dir>/tenants/        one directory per tenant (DirectoryProvisioner), holding with
                               SKYCRAWL_TENANT_DATA=dedicated the tenant's tenant.sqlite3: its
                               crawl and usage records (SqliteTenantStores, core.tenant_data)
    <data_dir>/lock            flock of the one control-plane process on this directory, and
                               its pid, command and start (DataDirLock, taken by the local
                               stack: functions/local/bootstrap.py)
    <data_dir>/hosts.sqlite3   per-host politeness shared by every engine subprocess
                               (SqliteHostLimiter, opened by the engines)

Engine subprocesses find the same files through ``engine_env`` (``SKYCRAWL_PROVIDER=local``
and the absolute ``SKYCRAWL_LOCAL_DATA_DIR``). The files are safe for several processes on
one machine (engines and a control plane); nothing is shared across machines. Only one
control plane may run per data directory: its runtime knows only the containers it started,
so a second one would reap the first one's as lost — hence the lock. Settings: ``SKYCRAWL_LOCAL_DATA_DIR``,
``SKYCRAWL_LOCAL_PYTHON`` (interpreter of the engine, default this one) and
``SKYCRAWL_STOP_GRACE_S`` (how long ``close()`` lets engines exit before SIGKILL).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from adapters.local.blob_store import FileBlobStore
from adapters.local.container_runtime import SubprocessRuntime
from adapters.local.message_bus import SqliteMessageBus
from adapters.local.provisioner import DirectoryProvisioner
from adapters.local.scheduler import SqliteScheduler
from adapters.local.state_store import SqliteStateStore
from adapters.local.tenant_stores import SqliteTenantStores
from core.clock import Clock, SystemClock
from core.models import Egress
from core.ports import ContainerRuntime, Ports
from core.settings import LocalSettings, SkycrawlSettings
from core.tenant_data import routed_state


def build_ports(
    settings: SkycrawlSettings,
    local: LocalSettings,
    *,
    clock: Clock | None = None,
    runtime_command: Sequence[str] | None = None,
    runtimes: Mapping[str, ContainerRuntime] | None = None,
) -> Ports:
    """Create the data directory layout and every local adapter on it.

    Every egress of runtime ``local`` shares one ``SubprocessRuntime`` (it lists by egress);
    an egress of another runtime gets that family's (``adapters.runtimes``). ``runtimes``
    replaces the runtime of the egresses it names."""
    from adapters.runtimes import build_runtimes

    clock = clock or SystemClock()
    data_dir = local.data_dir.resolve()
    for sub in ("blobs", "logs", "tenants"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    bus = SqliteMessageBus(data_dir / "bus.sqlite3", clock=clock)
    subprocesses = _subprocess_runtime(settings, local, clock, runtime_command)
    dedicated = settings.tenant_data == "dedicated"
    stores = SqliteTenantStores(data_dir, clock=clock) if dedicated else None
    return Ports(
        bus=bus,
        scheduler=SqliteScheduler(bus),
        state=routed_state(SqliteStateStore(data_dir / "state.sqlite3", clock=clock), stores),
        blobs=FileBlobStore(data_dir / "blobs"),
        runtimes=build_runtimes(
            settings, home="local", build_home=lambda _egress: subprocesses, overrides=runtimes
        ),
        provisioner=DirectoryProvisioner(
            data_dir, bus=bus, dispatch_topic=settings.dispatch_topic, stores=stores
        ),
        clock=clock,
        pool=tuple(settings.egresses),
    )


def _subprocess_runtime(
    settings: SkycrawlSettings,
    local: LocalSettings,
    clock: Clock | None = None,
    command: Sequence[str] | None = None,
) -> SubprocessRuntime:
    return SubprocessRuntime(
        command=command or (local.python or sys.executable, "-m", "engine_container"),
        log_dir=local.data_dir.resolve() / "logs",
        clock=clock,
        close_grace_s=settings.stop_grace_s,
    )


def build_runtime(settings: SkycrawlSettings, egress: Egress) -> ContainerRuntime:
    """Engine subprocesses for a ``local`` egress of another family's deployment (their
    logs in ``SKYCRAWL_LOCAL_DATA_DIR``/logs; they reach the home bus through the home
    composition root's ``engine_env``)."""
    return _subprocess_runtime(settings, LocalSettings())


def engine_env(local: LocalSettings) -> dict[str, str]:
    """What an engine subprocess needs to reach the same bus, state and blobs."""
    data_dir = local.data_dir.resolve()
    return {
        "SKYCRAWL_PROVIDER": "local",
        "SKYCRAWL_LOCAL_DATA_DIR": str(data_dir),
        # one per-host politeness limiter for every engine (every tenant) on this machine
        "SKYCRAWL_HOST_LIMITER_PATH": str(data_dir / "hosts.sqlite3"),
    }


def build_container_ports(settings: SkycrawlSettings) -> tuple[SqliteMessageBus, FileBlobStore]:
    """The bus and blob store an engine container uses, from its environment
    (``SKYCRAWL_LOCAL_DATA_DIR`` as passed by ``engine_env``)."""
    data_dir = LocalSettings().data_dir.resolve()
    return SqliteMessageBus(data_dir / "bus.sqlite3"), FileBlobStore(data_dir / "blobs")
