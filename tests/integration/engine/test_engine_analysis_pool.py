"""The analysis pool's worker processes: children of the engine and nothing else (no
forkserver, no resource tracker), none left behind when the engine is SIGKILLed; a worker
that dies costs the pages it held, not the crawl; a page's error comes back as that error."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine_container.analysis import Job, OutputPlan, analyse
from engine_container.analysis_pool import AnalysisDied, AnalysisPool

REPO = Path(__file__).resolve().parents[3]
SCRIPT = """
import asyncio
from engine_container.analysis_pool import AnalysisPool

async def main():
    pool = AnalysisPool(2)
    await pool.start()
    print("ready", flush=True)
    await asyncio.sleep(60)

if __name__ == "__main__":
    asyncio.run(main())
"""


def descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(stat[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier}
        frontier = children - found
        found |= children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_exit_when_the_engine_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "engine.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        helpers: set[int] = descendants(proc.pid)
        assert len(helpers) == 2  # the two workers, and no forkserver or resource tracker
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in helpers):
            time.sleep(0.1)
        assert not [pid for pid in helpers if alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in descendants(proc.pid) | locals().get("helpers", set()):
            if alive(pid):  # the failure this test is about: do not leave them running
                os.kill(pid, signal.SIGKILL)


URL = "http://127.0.0.1/"
PAGE = b"<html><head><title>T</title></head><body><h1>H</h1><a href='/x'>x</a></body></html>"


def job(plan: OutputPlan | None = None) -> Job:
    return Job(
        url="http://127.0.0.1/",
        status=200,
        body=PAGE,
        content_type="text/html",
        media_type="text/html",
        plan=plan or OutputPlan(formats=("markdown", "links")),
    )


async def test_a_dead_worker_costs_its_pages_then_threads_then_a_new_worker() -> None:
    pool = AnalysisPool(1, warmup_jobs=2)
    await pool.start()
    try:
        assert await pool.run(job()) == analyse(job())
        assert pool._workers is not None
        first = pool._workers[0].proc
        first.kill()
        await first.wait()
        with pytest.raises(AnalysisDied):
            await pool.run(job())
        assert pool.remote_jobs == 1
        for _ in range(3):  # in threads meanwhile; the third is past the warm-up
            assert await pool.run(job()) == analyse(job())
        assert pool.remote_jobs == 1
        await pool.start()
        assert await pool.run(job()) == analyse(job())
        assert pool.remote_jobs == 2
        assert pool._workers is not None
        assert pool._workers[0].proc.pid != first.pid
        second = pool._workers[0].proc
    finally:
        await pool.close()
    assert first.returncode is not None
    assert second.returncode is not None  # no worker outlives the pool


async def test_a_pages_error_comes_back_as_that_error_and_the_worker_goes_on() -> None:
    pool = AnalysisPool(2, warmup_jobs=0)
    await pool.start()
    try:
        bad = job(OutputPlan(extract="not json"))
        answers = await asyncio.gather(
            *(pool.run(bad if i % 3 == 0 else job()) for i in range(12)),
            return_exceptions=True,
        )
        for i, answer in enumerate(answers):
            if i % 3 == 0:
                assert isinstance(answer, ValidationError), answer
            else:
                assert answer == analyse(job())
        assert pool.remote_jobs == 8
    finally:
        await pool.close()


async def test_a_handler_printing_cannot_corrupt_the_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """User code in a worker that writes to stdout (print, or bytes on fd 1) writes to the
    log: the answers, on the worker's stdout, come back whole."""
    (tmp_path / "noisy_probe.py").write_text(
        "import os\n"
        "def handle(page):\n"
        "    print('hello from a handler ' * 100)\n"
        "    os.write(1, b'raw bytes on fd 1')\n"
        "    yield {'title': page.url}\n"
    )
    info = tmp_path / "noisy_probe-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: noisy-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[skycrawl.handlers]\nnoisy = noisy_probe:handle\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the worker finds the handler there
    pool = AnalysisPool(1, warmup_jobs=0)
    await pool.start()
    try:
        plan = OutputPlan(formats=("links",), handler="noisy")
        for _ in range(3):
            analysis = await pool.run(job(plan))
            assert json.loads(analysis.items) == {"_url": URL, "title": URL}, analysis
            assert analysis.errors == ()
        assert pool.remote_jobs == 3
    finally:
        await pool.close()


async def test_a_cancelled_page_whose_analysis_fails_leaves_the_worker_answering() -> None:
    """A crawl cancelled while its page is in a worker: the page's answer (here an error)
    comes back to nobody, and the next pages are answered as before."""
    pool = AnalysisPool(1, warmup_jobs=0)
    await pool.start()
    try:
        bad = asyncio.ensure_future(pool.run(job(OutputPlan(extract="not json"))))
        good = asyncio.ensure_future(pool.run(job()))
        await asyncio.sleep(0)  # both sent
        bad.cancel()
        good.cancel()
        for _ in range(3):
            assert await asyncio.wait_for(pool.run(job()), timeout=10) == analyse(job())
    finally:
        await pool.close()


async def test_closing_the_pool_right_after_a_death_stops_the_dead_pools_other_workers() -> None:
    pool = AnalysisPool(2, warmup_jobs=0)
    await pool.start()
    assert pool._workers is not None
    dead, sibling = (w.proc for w in pool._workers)
    dead.kill()
    await dead.wait()
    for _ in range(4):  # one of them lands on the dead worker and ends the pool
        try:
            await pool.run(job())
        except AnalysisDied:
            break
    assert pool._workers is None
    await pool.close()  # at once: the sibling's stop was only started by the death
    assert sibling.returncode is not None
