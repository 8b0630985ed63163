"""The live view of a crawl in the terminal: a progress bar of fetched / queued / failed
pages and the tenant's containers, refreshed from the API."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column

from functions.local.client import plain
from functions.local.session import Session

TERMINAL = {"completed", "failed", "cancelled", "dead-lettered"}


def _live_containers(containers: list[dict[str, Any]], tenant_id: str) -> list[dict[str, Any]]:
    return [
        c
        for c in containers
        if c.get("tenant_id") == tenant_id and c.get("state") in ("starting", "ready", "draining")
    ]


def _short(crawl_id: str) -> str:
    """``cr_1a2b3c4d``: enough of the id to tell a command's crawls apart on one line (the
    whole id is in the summary)."""
    return crawl_id[:11]


async def containers_of(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    listing = await session.api(session.operator_key).list_containers()
    return _live_containers(plain(listing)["items"], tenant_id)


async def watch_crawls(
    session: Session, key: str, tenant_id: str, crawl_ids: list[str], console: Console
) -> list[dict[str, Any]]:
    """Show progress until every crawl is terminal; returns their final status documents."""
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=12),
        TextColumn("{task.fields[detail]}", table_column=Column(overflow="fold")),
        TimeElapsedColumn(),
    )
    seen_containers: set[str] = set()
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {
            cid: progress.add_task(_short(cid), total=None, detail="pending") for cid in crawl_ids
        }
        while True:
            statuses = [plain(await session.api(key).get_crawl(cid)) for cid in crawl_ids]
            live = await containers_of(session, tenant_id)
            seen_containers.update(c["id"] for c in live)
            for status in statuses:
                counts = status.get("counts", {})
                fetched, queued = counts.get("fetched", 0), counts.get("queued", 0)
                detail = (
                    f"{status['status']}: {fetched} fetched, {queued} queued, "
                    f"{counts.get('failed', 0)} failed, {len(live)} containers "
                    f"({len(seen_containers)} started)"
                )
                total = None if status["status"] == "pending" else max(fetched + queued, 1)
                done = status["status"] in TERMINAL
                progress.update(
                    tasks[status["id"]],
                    completed=fetched if not done else (total or fetched),
                    total=total if not done else (total or fetched or 1),
                    detail=detail,
                )
            if all(s["status"] in TERMINAL for s in statuses):
                return statuses
            await asyncio.sleep(0.3)


async def wait_for_zero(
    session: Session, tenant_id: str, timeout_s: float, console: Console
) -> bool:
    """Wait until the tenant has no live container (scale to zero). True if it got there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    with console.status("waiting for idle containers to stop (scale to zero)…"):
        while loop.time() < deadline:
            if not await containers_of(session, tenant_id):
                return True
            await asyncio.sleep(0.3)
    return False
