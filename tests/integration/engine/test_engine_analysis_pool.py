"""The analysis pool's worker processes: none is left behind when the engine is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_workers_and_forkserver_exit_when_the_engine_is_killed(tmp_path: Path) -> None:
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
        assert len(helpers) >= 3  # the forkserver and two workers (and a resource tracker)
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
