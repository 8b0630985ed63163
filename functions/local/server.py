"""``skycrawl up``: the API on 127.0.0.1 (ASGI, uvicorn), the conductor loop and the timer
loop in one process — the whole control plane of one machine. Containers it starts are
stopped when it exits, also on Ctrl-C.

It holds the data directory's lock for as long as it runs (``DataDirBusy`` before anything
else when another process holds it) and writes ``server.json`` so that other commands on the
same data directory use it instead of embedding a second control plane."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import uvicorn

from core.settings import LocalSettings, SkycrawlSettings
from functions.local.asgi import create_asgi_app
from functions.local.bootstrap import build_local_stack
from functions.local.session import operator_key


async def serve(
    local: LocalSettings,
    overrides: dict[str, object],
    host: str,
    port: int,
    *,
    provider: str = "local",
) -> None:
    data_dir = local.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    op_key = operator_key(data_dir)
    base = f"http://{host}:{port}"
    settings = SkycrawlSettings(
        **{"public_base_url": base, **overrides, "operator_key": op_key}  # type: ignore[arg-type]
    )
    if provider == "selfhosted":  # PostgreSQL control plane (functions/selfhosted/bootstrap.py)
        from functions.selfhosted.bootstrap import build_selfhosted_stack

        stack = build_selfhosted_stack(settings, local)
    else:
        stack = build_local_stack(settings, local, lock_as="skycrawl up")
    try:
        await stack.prepare()
    except BaseException:
        await stack.close()
        raise
    config = uvicorn.Config(
        create_asgi_app(stack.api), host=host, port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    stop = asyncio.Event()
    loops = asyncio.create_task(stack.run(stop))
    info = data_dir / "server.json"
    info.write_text(json.dumps({"url": base, "pid": os.getpid()}))
    print(f"skycrawl is up on {base}  (operator key in {Path(data_dir, 'operator.key')})")
    if provider != "local":
        print(f"provider: {provider}")
    print(f"web app: {base}/t/<tenant id>/   operator console: {base}/console/")
    print("Ctrl-C stops the server and every container it started.", flush=True)
    try:
        await server.serve()
    finally:
        stop.set()
        await asyncio.gather(loops, return_exceptions=True)
        info.unlink(missing_ok=True)
        await stack.close()  # stops the containers, then releases the lock
