"""``skycrawl crawl`` / ``skycrawl demo``: submit, watch, export — and Ctrl-C.

Flow
    The crawl is submitted through the API (of a running ``skycrawl up``, or of the stack the
    command embeds), its progress is shown until it ends, then ``pages.jsonl`` (each page's
    formats as its ``content``), ``crawl.warc.gz``, when the crawl extracted items,
    ``items.jsonl``, and, when pages were rendered with ``screenshot``, their images under
    ``screenshots/`` (the names the records carry) are written to ``--out``. Exit status: 0 when every crawl completed and
    at least one page was fetched; 1 otherwise, with one line naming the most common error
    when not a single page could be fetched (``skycrawl: no page fetched: connection refused
    (1 of 1 pages)``); 130 on Ctrl-C.

Ctrl-C (SIGINT, and SIGTERM alike)
    Cancels every crawl this command submitted (``DELETE /v1/crawls/{id}``), waits until the
    engine has let go of it, writes what was fetched so far to ``--out`` and exits 130. With
    an embedded stack it also waits (bounded) until its containers have stopped, so nothing
    is left running or pending for the next command on that data directory; with a server
    the server's idle timer stops them as usual. A second Ctrl-C stops waiting: the command
    writes what is there and leaves (an embedded stack still stops its containers on exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import signal
import time
import zipfile
from collections import Counter
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from core.layout import checkpoint_key
from functions.local.client import ApiError, plain
from functions.local.progress import TERMINAL, containers_of, wait_for_zero, watch_crawls
from functions.local.session import Session

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
RELEASE_WAIT_S = 10.0  # for the conductor to take a cancelled crawl off its container
FLUSH_WAIT_S = 5.0  # for the engine to store the pages of a cancelled crawl


class Interrupts:
    """SIGINT/SIGTERM while a crawl runs: the first sets ``first``, the second ``second``."""

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()

    def _signalled(self) -> None:
        (self.second if self.first.is_set() else self.first).set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        loop = asyncio.get_running_loop()
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        for signum in previous:
            loop.add_signal_handler(signum, self._signalled)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                loop.remove_signal_handler(signum)
                if handler is not None:  # asyncio.run's own Ctrl-C handling, again
                    signal.signal(signum, handler)


async def run_crawl(
    s: Session, body: dict[str, Any], copies: int, out_dir: Path, console: Console
) -> tuple[int, list[dict[str, Any]], list[str]]:
    """Submit ``body`` ``copies`` times, watch, export; returns (exit code, final statuses,
    names of the files written)."""
    tenant_id, key = await s.tenant_key()
    ids: list[str] = []
    with Interrupts().installed() as interrupts:
        # a signal only sets an event: a submission is never cut off with its id unknown
        for _ in range(max(1, copies)):
            if interrupts.first.is_set():
                break
            created = await s.api(key).submit_crawl(body)
            ids.append(created.id)
        finals = await _watch_until_interrupted(s, key, tenant_id, ids, interrupts, console)
        if finals is None:
            console.print(f"interrupted: cancelling {', '.join(ids) or 'nothing submitted yet'}")
            await _first_of(_cancel_and_settle(s, key, tenant_id, ids, console), interrupts.second)
            finals = [await _status(s, key, crawl_id) for crawl_id in ids]
        written = await export_all(s, key, ids, out_dir)
    if interrupts.first.is_set():  # a cancelled crawl's counts stop at its last progress
        counted = [_counted(f, out_dir, len(ids), i) for i, f in enumerate(finals)]
        return EXIT_INTERRUPTED, counted, written
    if s.embedded:
        await _scale_to_zero(s, tenant_id, console)
    completed = all(f["status"] == "completed" for f in finals)
    return (EXIT_OK if completed and _fetched(finals) else EXIT_ERROR), finals, written


async def _watch_until_interrupted(
    s: Session,
    key: str,
    tenant_id: str,
    ids: list[str],
    interrupts: Interrupts,
    console: Console,
) -> list[dict[str, Any]] | None:
    """The crawls' final statuses, or None when interrupted first."""
    if interrupts.first.is_set():
        return None
    watch = asyncio.create_task(watch_crawls(s, key, tenant_id, ids, console))
    finished = await _first_of(watch, interrupts.first)
    return watch.result() if finished else None


async def _first_of(work: Awaitable[Any], event: asyncio.Event) -> bool:
    """Run ``work`` until it ends (True) or ``event`` is set (False, ``work`` cancelled)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.create_task(event.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, waiter):
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
    if task.cancelled():
        return False
    task.result()  # re-raise what the work raised
    return True


async def _status(s: Session, key: str, crawl_id: str) -> dict[str, Any]:
    return plain(await s.api(key).get_crawl(crawl_id))


async def _cancel_and_settle(
    s: Session, key: str, tenant_id: str, ids: list[str], console: Console
) -> None:
    """Cancel each crawl, then wait until its pages are stored and its containers let go."""
    asked = time.time()
    running = []  # dispatched to an engine, which stores its pages when it stops the crawl
    for crawl_id in ids:
        if (await _status(s, key, crawl_id))["status"] == "dispatched":
            running.append(crawl_id)
        try:
            await s.api(key).cancel_crawl(crawl_id)
        except ApiError as exc:
            if exc.status != 409:  # 409: it had finished already
                raise
    if s.embedded:  # stopping its containers flushes their pages; wait for scale to zero
        await _scale_to_zero(s, tenant_id, console)
        return
    await _released(s, tenant_id, ids)
    await _flushed(s, tenant_id, running, asked)


async def _released(s: Session, tenant_id: str, ids: list[str]) -> None:
    """Until no container of the tenant holds one of ``ids`` (the cancel reached it)."""
    deadline = time.monotonic() + RELEASE_WAIT_S
    while time.monotonic() < deadline:
        held = {c for item in await containers_of(s, tenant_id) for c in item["in_flight"]}
        if not held & set(ids):
            return
        await asyncio.sleep(0.2)


async def _flushed(s: Session, tenant_id: str, ids: list[str], since: float) -> None:
    """Until each crawl's checkpoint was saved after ``since`` (bounded): the engine saves
    it right after it stored the pages of a crawl it stopped. The server shares this data
    directory, so its blob files are read here directly. A periodic checkpoint that lands
    between the cancel and the engine seeing it ends the wait early: pages of that last
    instant are then missing from ``--out`` (they are in the crawl's own export)."""
    blobs = s.data_dir.resolve() / "blobs"
    paths = [blobs / checkpoint_key(tenant_id, crawl_id) for crawl_id in ids]
    for _ in range(int(FLUSH_WAIT_S / 0.1)):
        if not await asyncio.to_thread(_any_older, paths, since):
            return
        await asyncio.sleep(0.1)


def _any_older(paths: list[Path], since: float) -> bool:
    """Some checkpoint is missing or older than ``since``."""
    return any(not p.exists() or p.stat().st_mtime < since for p in paths)


async def _scale_to_zero(s: Session, tenant_id: str, console: Console) -> None:
    assert s.stack is not None
    settings = s.stack.settings
    budget = settings.idle_ttl_s + 2 * settings.timer_period_s + settings.stop_grace_s + 5
    stopped = await wait_for_zero(s, tenant_id, budget, console)
    console.print(
        "containers: all stopped (scaled to zero)" if stopped else "containers: some still running"
    )


def _pages_file(out_dir: Path, copies: int, index: int) -> tuple[Path, Path]:
    suffix = "" if copies == 1 else f"-{index + 1}"
    return out_dir / f"pages{suffix}.jsonl", out_dir / f"crawl{suffix}.warc.gz"


def _counted(final: dict[str, Any], out_dir: Path, copies: int, index: int) -> dict[str, Any]:
    """``final`` with its page counts taken from the exported ``pages.jsonl``."""
    rows = [json.loads(line) for line in _pages_file(out_dir, copies, index)[0].open()]
    failed = sum(1 for r in rows if r.get("error") or (r.get("status") or 1000) >= 400)
    size = sum(int(r.get("bytes") or 0) for r in rows)
    counts = {**final.get("counts", {}), "fetched": len(rows) - failed, "failed": failed}
    counts["bytes"] = max(size, int(counts.get("bytes") or 0))
    return {**final, "counts": counts}


async def export_all(s: Session, key: str, ids: list[str], out_dir: Path) -> list[str]:
    """Export each crawl of ``ids`` into ``out_dir``; the names of what was written, in
    order (``items.jsonl`` only for a crawl that extracted items, ``screenshots/`` once)."""
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    written: list[str] = []
    for index, crawl_id in enumerate(ids):
        pages, warc = _pages_file(out_dir, len(ids), index)
        await _export(s, key, crawl_id, pages, "jsonl")
        await _export(s, key, crawl_id, warc, "warc")
        written += [pages.name, warc.name]
        items = pages.with_name(pages.name.replace("pages", "items", 1))
        if await _export(s, key, crawl_id, items, "items", keep_empty=False):
            written.append(items.name)
        if await asyncio.to_thread(_names_screenshots, pages):
            await _export_screenshots(s, key, crawl_id, out_dir)
            if "screenshots/" not in written:
                written.append("screenshots/")
    return written


_SCREENSHOT_ENTRY = re.compile(r"screenshots/[0-9a-f]{32}\.(png|jpeg)")


def _names_screenshots(pages: Path) -> bool:
    with pages.open("rb") as f:
        return any(b'"screenshot":"screenshots/' in line.replace(b" ", b"") for line in f)


async def _export_screenshots(s: Session, key: str, crawl_id: str, out_dir: Path) -> None:
    """The ``screenshots`` export unpacked into ``out_dir/screenshots/`` (only the entries
    named as the engine names screenshots: nothing else lands on disk)."""
    body = b"".join([c async for c in s.api(key).export_crawl(crawl_id, format="screenshots")])

    def unpack() -> None:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            for name in archive.namelist():
                if _SCREENSHOT_ENTRY.fullmatch(name):
                    target = out_dir / name
                    target.parent.mkdir(exist_ok=True)
                    target.write_bytes(archive.read(name))

    await asyncio.to_thread(unpack)


async def _export(
    s: Session, key: str, crawl_id: str, path: Path, fmt: str, *, keep_empty: bool = True
) -> bool:
    """Write the ``fmt`` export to ``path``; False when it was empty and ``keep_empty`` is
    not set -- then no file is left there (not even one from an earlier crawl)."""
    body = b"".join([c async for c in s.api(key).export_crawl(crawl_id, format=fmt)])
    if body or keep_empty:  # items.jsonl only for crawls that extracted something
        await asyncio.to_thread(path.write_bytes, body)
        return True
    await asyncio.to_thread(path.unlink, missing_ok=True)
    return False


def _fetched(finals: list[dict[str, Any]]) -> int:
    return sum(int(f.get("counts", {}).get("fetched", 0)) for f in finals)


def nothing_fetched_line(finals: list[dict[str, Any]], out_dir: Path) -> str | None:
    """``no page fetched: connection refused (1 of 1 pages)`` when no crawl fetched a page."""
    if not finals or _fetched(finals) or any(f["status"] not in TERMINAL for f in finals):
        return None
    errors: Counter[str] = Counter()
    for path in sorted(out_dir.glob("pages*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            status = row.get("status")
            errors[row.get("error") or (f"HTTP {status}" if status else "no response")] += 1
    if not errors:
        reason = next((f["reason"] for f in finals if f.get("reason")), None)
        return f"no page fetched: {reason or 'the crawl found no page to fetch'}"
    error, count = errors.most_common(1)[0]
    return f"no page fetched: {error} ({count} of {errors.total()} pages)"
