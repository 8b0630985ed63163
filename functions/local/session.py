"""A CLI session with the local stack: find a running ``skycrawl up`` or embed one.

Files in the data directory (``SKYCRAWL_LOCAL_DATA_DIR``, default ``.skycrawl``):

* ``server.json``  — URL and PID of a running ``skycrawl up``;
* ``operator.key`` — the local operator key (mode 0600), made on first use unless
  ``SKYCRAWL_OPERATOR_KEY`` is set;
* ``cli-tenant.json`` — the tenant the CLI crawls as, and its API key (mode 0600);
* ``lock`` — held (``flock``) by the one process that runs the control plane on this data
  directory, and naming it: ``skycrawl up`` or a command's embedded stack.

A command that needs the control plane uses a running ``skycrawl up`` when there is one,
else embeds a stack and holds the lock while it runs; when another command's embedded stack
holds it, the command fails with ``DataDirBusy`` (the CLI prints one line and exits 2), except
a ``read_only`` session (``status``, ``tenants list``), which reads the state without running
housekeeping or starting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from adapters.local.data_dir_lock import DataDirBusy
from core.settings import LocalSettings, SkycrawlSettings
from functions.local.bootstrap import LocalStack, build_local_stack
from functions.local.client import ApiError, CliClient
from skycrawl_client import AsyncSkycrawl

CLI_TENANT_NAME = "local"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def operator_key(data_dir: Path) -> str:
    """The operator key: from the environment, or the local key file (made on first use)."""
    configured = os.environ.get("SKYCRAWL_OPERATOR_KEY")
    if configured:
        return configured
    path = data_dir / "operator.key"
    if path.exists():
        return path.read_text().strip()
    key = "op_" + secrets.token_urlsafe(32)
    _write_private(path, key)
    return key


def running_server(data_dir: Path) -> str | None:
    """URL of a live ``skycrawl up`` on this data directory, if any."""
    path = data_dir / "server.json"
    try:
        info = json.loads(path.read_text())
        url = str(info["url"])
        os.kill(int(info["pid"]), 0)
        response = httpx.get(url + "/healthz", timeout=2.0, trust_env=False)
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        return None
    return url if response.status_code == 200 else None


@dataclass
class Session:
    client: CliClient
    data_dir: Path
    operator_key: str
    stack: LocalStack | None = None
    server_url: str | None = None
    busy: DataDirBusy | None = None  # a read-only session: another process holds the dir
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def embedded(self) -> bool:
        return self.stack is not None

    async def tenant_key(self) -> tuple[str, str]:
        """The CLI tenant's id and API key, creating the tenant on first use."""
        path = self.data_dir / "cli-tenant.json"
        if path.exists():
            saved = json.loads(path.read_text())
            key = str(saved["api_key"])
            try:
                await self.api(key).list_crawls(limit=1)
                return str(saved["tenant_id"]), key
            except ApiError as exc:
                if exc.status != 401:
                    return str(saved["tenant_id"]), key
        created = await self.api(self.operator_key).create_tenant({"name": CLI_TENANT_NAME})
        record = {"tenant_id": created.id, "api_key": created.api_key}
        _write_private(path, json.dumps(record))
        return record["tenant_id"], record["api_key"]

    def api(self, key: str) -> AsyncSkycrawl:
        """The typed client acting with ``key`` (the operator's or the CLI tenant's)."""
        return self.client.as_(key)


@contextlib.asynccontextmanager
async def open_session(
    local: LocalSettings,
    overrides: dict[str, Any],
    *,
    command: str = "skycrawl",
    embed: bool | None = None,
    read_only: bool = False,
) -> AsyncIterator[Session]:
    """Talk to a running server when one is up (and ``embed`` is not True), else embed one
    that lives as long as the session and holds the data directory's lock as ``command``.

    ``DataDirBusy`` when another process holds the lock, unless ``read_only``: then the
    session reads the state without running the control plane (``Session.busy`` says who
    holds it)."""
    data_dir = local.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    op_key = operator_key(data_dir)
    url = None if embed else running_server(data_dir)
    settings = SkycrawlSettings(**{**overrides, "operator_key": op_key})
    stack, busy = None, None
    if url is None:
        try:
            stack = build_local_stack(settings, local, lock_as=command)
        except DataDirBusy as exc:
            url = None if embed else await _server_coming_up(data_dir, exc)
            if url is None and not read_only:
                raise
            busy = exc
    if url is not None:
        client = CliClient(url)
        try:
            yield Session(client=client, data_dir=data_dir, operator_key=op_key, server_url=url)
        finally:
            await client.close()
        return
    if stack is None:  # read-only: another process runs the control plane
        stack = build_local_stack(settings, local, lock_as=None)
        try:
            client = CliClient.in_process(stack.api)
            yield Session(client=client, data_dir=data_dir, operator_key=op_key, busy=busy)
        finally:
            await client.close()
            await stack.close()
        return
    async with _running(stack) as running:
        client = CliClient.in_process(running.api)
        try:
            yield Session(client=client, data_dir=data_dir, operator_key=op_key, stack=stack)
        finally:
            await client.close()


async def _server_coming_up(data_dir: Path, busy: DataDirBusy) -> str | None:
    """The URL of the server that holds the lock, when it is a ``skycrawl up`` that is still
    starting (it locks before it listens)."""
    if busy.holder.command != "skycrawl up":
        return None
    for _ in range(20):
        url = await asyncio.to_thread(running_server, data_dir)
        if url is not None:
            return url
        await asyncio.sleep(0.25)
    return None


@contextlib.asynccontextmanager
async def _running(stack: LocalStack) -> AsyncIterator[LocalStack]:
    """Run the stack's loops while the block runs; then stop them and close the stack."""
    stop = asyncio.Event()
    try:
        await stack.prepare()
        task = asyncio.create_task(stack.run(stop))
    except BaseException:
        await stack.close()
        raise
    try:
        yield stack
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await stack.close()


__all__ = ["ApiError", "DataDirBusy", "Session", "open_session", "operator_key", "running_server"]
