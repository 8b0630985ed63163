"""Where ``analysis.analyse`` runs: worker processes on a multi-core container, else threads.

``AnalysisPool(processes=N)`` with N ≥ 1 keeps N worker processes (forked by a
``forkserver`` that, for N ≥ 2, has imported the parsing libraries once, so the workers share
those pages): the event loop keeps the network, the frontier and the WARC writer, and the
CPU-bound work of every crawl of the container — parsing, markdown, metadata, extraction,
handlers — is spread over the cores. Bodies go to a worker and JSON lines come back by
pickle (~15 KB and ~10 KB a page: tens of microseconds).

The processes start only once the container has analysed ``warmup_jobs`` pages (100 by
default), in a thread, while pages go on being analysed in threads: a small crawl (a test,
a demo, a re-crawl of a few pages) never pays ~0.5 s of CPU and ~40 MB per worker for
them, and the event loop never waits for a worker to start. Unset, N is one per core but
the one the event loop keeps (``default_processes``). With N = 0 (one core, or
``SKYCRAWL_ANALYSIS_PROCESSES=0``) pages are analysed in a worker thread (Lexbor releases the
GIL), or in the event loop when they are small and the crawl asks for no formats, extraction
or handler — rendering formats there would hold the loop for milliseconds, and a request
whose politeness slot was granted would then leave late, closer to the next one than the
host's delay allows. Rendering in a thread still costs the loop some GIL waits: under CPU
contention a request can reach the server a few tens of milliseconds closer to the previous
one than the delay (the limiter spaces the starts it grants; README "What a crawl returns").

Workers exit by themselves when the engine process is gone (SIGKILL included: they watch
its pidfd). A worker that dies (killed for memory on a pathological page) breaks the pool: that page is
recorded with ``internal error: AnalysisDied: analysis worker died``, the next pages go to
threads, and a new pool is started after the next ``warmup_jobs`` pages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from engine_container.analysis import Analysis, Job, analyse
from engine_container.tuning import tune_process

log = logging.getLogger(__name__)

INLINE_BYTES = 4096  # thread mode: small bodies of crawls without formats stay in the loop
WARMUP_JOBS = 100


class AnalysisDied(RuntimeError):
    """The worker process analysing a page died."""


def default_processes() -> int:
    """One worker per core this process may run on but one, none on a single core.

    The event loop keeps a core of its own (network, frontier, WARC writing: ~0.6 of a core
    at 500 pages/s). On 2 cores one worker crawled as fast as two (5,000 pages, default
    formats, interleaved rounds, medians 489 and 466 pages/s at load 1.6-2.1, 2026-12-04)
    with 40 MB less summed RSS (211 against 250 MB): the second worker only competed with
    the loop for the same two cores.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, cores - 1)


def _ready() -> int:
    return os.getpid()


def _worker_init(engine_pid: int) -> None:
    """In each worker: the engine's process settings, and exit when the engine is gone.

    Workers are children of the forkserver, not of the engine, and block reading their
    queue: without this, an engine killed with SIGKILL (a reaped local container, an OOM
    kill) would leave them — and through them the forkserver — running forever.
    """
    tune_process()
    threading.Thread(target=_exit_with, args=(engine_pid,), daemon=True).start()


def _exit_with(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)  # Linux ≥ 5.3: readable once the process has exited
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                continue
    os._exit(0)


class AnalysisPool:
    def __init__(self, processes: int = 0, *, warmup_jobs: int = WARMUP_JOBS) -> None:
        self.processes = processes
        self.remote_jobs = 0  # pages analysed in worker processes (for tests and logs)
        self._warmup = warmup_jobs
        self._jobs = 0
        self._pool: ProcessPoolExecutor | None = None
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the worker processes now (and wait until each one answers)."""
        if self.processes <= 0 or self._pool is not None:
            return
        if self._starting is None:
            self._starting = asyncio.create_task(self._warm())
        await asyncio.shield(self._starting)

    async def _warm(self) -> None:
        self._pool = await asyncio.to_thread(self._build)
        log.info("analysis: %d worker processes", self.processes)

    def _build(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        # Preloaded, the forkserver holds the parsing libraries once and N workers share its
        # pages (~13 MB of each worker's PSS). One worker shares them with nobody: there the
        # forkserver's copy is only a second one (40 MB more summed RSS, measured), and the
        # worker imports them itself (importing this module) on its first call.
        context.set_forkserver_preload(["engine_container.analysis"] if self.processes > 1 else [])
        pool = ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=context,
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )
        concurrent.futures.wait([pool.submit(_ready) for _ in range(self.processes)])
        return pool

    async def run(self, job: Job) -> Analysis:
        self._jobs += 1
        pool = self._pool
        if pool is None:
            if self.processes > 0 and self._starting is None and self._jobs > self._warmup:
                self._starting = asyncio.create_task(self._warm())
            if len(job.body) < INLINE_BYTES and job.plan.cheap:
                return analyse(job)  # hash and links of a small page: cheaper than a thread hop
            return await asyncio.to_thread(analyse, job)
        try:
            analysis = await asyncio.get_running_loop().run_in_executor(pool, analyse, job)
        except BrokenProcessPool:
            log.error("an analysis worker died on %s; threads until a new pool", job.url)
            if self._pool is pool:
                self._pool, self._starting, self._jobs = None, None, 0
                pool.shutdown(wait=False, cancel_futures=True)
            raise AnalysisDied("analysis worker died") from None
        self.remote_jobs += 1
        return analysis

    async def close(self) -> None:
        """Stop the workers (waiting for a pool still starting, so no process is left)."""
        if self._starting is not None:
            try:
                await asyncio.shield(self._starting)
            except Exception:
                log.exception("analysis: the worker processes did not start")
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
