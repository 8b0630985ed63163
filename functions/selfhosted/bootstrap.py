"""Composition root of ``skycrawl up --provider selfhosted``: the same control plane and the
same two loops as the embedded stack (``functions.local.bootstrap.LocalStack``), on the
self-hosted ports -- PostgreSQL bus, timers and state, files or S3-compatible blobs, and the
runtime ``SKYCRAWL_SELFHOSTED_RUNTIME`` names (local subprocesses by default).

The CLI's data directory (``--data-dir``, default ``.skycrawl``) still holds what is about
this one process: its lock (one control plane per data directory: a subprocess runtime only
knows the engines it started), ``server.json``, the operator key, engine logs and -- unless
``SKYCRAWL_SELFHOSTED_DATA_DIR`` says otherwise -- the file blobs. Everything that must
survive the process, or be shared by several, is in the database.
"""

from __future__ import annotations

import os

from adapters.local.data_dir_lock import DataDirLock
from adapters.selfhosted.provider import build_ports, engine_env
from adapters.selfhosted.settings import SelfhostedSettings
from core.control_plane import build_control_plane
from core.settings import LocalSettings, SkycrawlSettings
from functions.local.bootstrap import LocalStack


def selfhosted_settings(local: LocalSettings) -> SelfhostedSettings:
    """``SKYCRAWL_SELFHOSTED_*``, with the CLI's data directory unless one is set."""
    selfhosted = SelfhostedSettings()
    if "SKYCRAWL_SELFHOSTED_DATA_DIR" not in os.environ:
        selfhosted = selfhosted.model_copy(update={"data_dir": local.data_dir})
    return selfhosted


def build_selfhosted_stack(
    settings: SkycrawlSettings,
    local: LocalSettings,
    selfhosted: SelfhostedSettings | None = None,
    *,
    lock_as: str = "skycrawl up --provider selfhosted",
) -> LocalStack:
    """The control plane on PostgreSQL, holding ``local.data_dir``'s lock as ``lock_as``."""
    selfhosted = selfhosted or selfhosted_settings(local)
    lock = DataDirLock.acquire(local.data_dir, lock_as, shown_as=local.data_dir)
    try:
        ports = build_ports(settings, selfhosted)
        plane = build_control_plane(ports, settings, engine_env=engine_env(selfhosted))
    except BaseException:
        lock.release()
        raise
    return LocalStack(
        settings=settings,
        local=local,
        ports=ports,
        records=plane.records,
        conductor=plane.conductor,
        housekeeper=plane.housekeeper,
        tenants=plane.tenants,
        api=plane.api,
        lock=lock,
    )
