"""The data directory's lock: one holder at a time, named in the refusal, gone with its
process however it ends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.local.data_dir_lock import DataDirBusy, DataDirLock

ROOT = Path(__file__).parents[3]


def test_a_second_holder_is_refused_with_the_first_ones_pid_command_and_time(
    tmp_path: Path,
) -> None:
    lock = DataDirLock.acquire(tmp_path, "skycrawl up", shown_as=Path(".skycrawl"))
    try:
        with pytest.raises(DataDirBusy) as refused:
            DataDirLock.acquire(tmp_path, "skycrawl crawl", shown_as=Path(".skycrawl"))
        message = str(refused.value)
        expected = rf"data dir \.skycrawl is in use by pid {os.getpid()} \(skycrawl up, since "
        assert re.fullmatch(expected + r"\d\d:\d\d:\d\d\)", message), message
        assert refused.value.holder.pid == os.getpid()
    finally:
        lock.release()


def test_released_means_free_again(tmp_path: Path) -> None:
    DataDirLock.acquire(tmp_path, "first").release()
    second = DataDirLock.acquire(tmp_path, "second")
    assert json.loads((tmp_path / "lock").read_text())["command"] == "second"
    second.release()
    second.release()  # idempotent


def test_a_stale_lock_file_of_a_dead_process_does_not_block(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text(json.dumps({"pid": 999999, "command": "skycrawl up"}))
    lock = DataDirLock.acquire(tmp_path, "skycrawl crawl")
    try:
        assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_holder_killed_with_sigkill_frees_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from adapters.local.data_dir_lock import DataDirLock;"
            f"DataDirLock.acquire(Path({str(tmp_path)!r}), 'skycrawl up');"
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirBusy, match=f"pid {holder.pid} "):
            DataDirLock.acquire(tmp_path, "skycrawl crawl")
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        time.sleep(0.05)
        DataDirLock.acquire(tmp_path, "skycrawl crawl").release()
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
