"""Run one command and report its own resource usage as JSON.

    python bench/_measure.py [--timeout S] [--stdout F] [--stderr F] -- CMD [ARG...]

The command runs in a new session; it is reaped with ``os.wait4`` so the figures are those of
that process and of every process it started, not of the harness or other crawls. This
launcher is a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): descendants the command
never waited for -- multiprocessing's forkserver and the analysis workers it forked, the
resource tracker -- are reparented to it when their parent exits, and reaped here, so their
CPU time counts as the crawl's (without this, a crawl's worker processes were counted as
"other" CPU and its CPU per page looked less than half what it was):
``{"rc", "wall_s", "user_s", "sys_s", "maxrss_kb", "timed_out", "tree_rss_kb",
"tree_pss_kb"}`` on stdout: ``maxrss_kb`` is the largest single process's peak (``wait4``),
``tree_rss_kb`` / ``tree_pss_kb`` the peak of the RSS / PSS summed over every process of the
crawl's session, sampled 5 times a second from /proc (worker processes included), and of the
processes descended from it that started sessions of their own (Playwright starts Chromium with
``setsid``: its browser, GPU, network and renderer processes are counted too). On timeout the
whole process group gets SIGTERM, then SIGKILL 10 s later; SIGINT, SIGTERM and SIGHUP sent to
this launcher are passed on to the group as SIGTERM. When the command has exited, what is left
of its process group and of the descendants' own groups is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def measure(
    cmd: list[str],
    *,
    timeout: float | None = None,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
) -> dict[str, object]:
    timed_out = threading.Event()
    _become_subreaper()
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True
    )

    done = threading.Event()

    def watchdog() -> None:
        if done.wait(timeout):
            return
        timed_out.set()
        _kill_group(proc.pid, signal.SIGTERM)
        if not done.wait(10):
            _kill_group(proc.pid, signal.SIGKILL)

    if timeout:
        threading.Thread(target=watchdog, daemon=True).start()
    peaks = {"rss": 0, "pss": 0}
    groups: set[int] = set()  # process groups of descendants outside the session (Chromium)
    sampler = threading.Thread(
        target=_sample_tree, args=(proc.pid, done, peaks, groups), daemon=True
    )
    sampler.start()

    def forward(signum: int, frame: object) -> None:
        # The crawl is in its own session: a Ctrl-C or SIGTERM meant for us must reach it.
        _kill_group(proc.pid, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    # What the crawl started and did not wait for exits once it is gone (the analysis workers
    # watch the engine's pid): reap it, with its CPU; leftovers must not outlive the crawl
    # and skew the next one.
    user, system = usage.ru_utime, usage.ru_stime
    deadline = time.monotonic() + 10.0
    killed = False
    while True:
        try:
            pid, _, orphan = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            user, system = user + orphan.ru_utime, system + orphan.ru_stime
            continue
        if not killed and time.monotonic() > deadline:
            killed = True
            _kill_leftovers(proc.pid, groups)
        time.sleep(0.02)
    done.set()
    sampler.join(timeout=5)
    _kill_leftovers(proc.pid, groups)
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 4),
        "user_s": round(user, 4),
        "sys_s": round(system, 4),
        "maxrss_kb": usage.ru_maxrss,
        "timed_out": timed_out.is_set(),
        "tree_rss_kb": peaks["rss"],
        "tree_pss_kb": peaks["pss"],
    }


def _kill_leftovers(pgid: int, groups: set[int]) -> None:
    """SIGKILL the crawl's process group and the groups of its descendants outside it."""
    for group in {pgid, *groups}:
        _kill_group(group, signal.SIGKILL)


def _become_subreaper() -> None:
    """Orphaned descendants come to this process (Linux >= 3.4), not to init."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36  # <linux/prctl.h>
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def _process_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, pgid, session id) of every process (Linux /proc)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # after the command: state, ppid (field 4), pgrp (5), session (6)
        table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def tree_pids(sid: int, table: dict[int, tuple[int, int, int]]) -> set[int]:
    """The processes of session ``sid`` and every descendant of them, wherever its session."""
    pids = {pid for pid, (_, _, s) in table.items() if s == sid}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in pids:
                pids.add(child)
                todo.append(child)
    return pids


def _kb(path: str, key: bytes) -> int:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _sample_tree(sid: int, done: threading.Event, peaks: dict[str, int], groups: set[int]) -> None:
    """Peak summed RSS and PSS of the processes of session ``sid`` and their descendants
    (Linux only); ``groups`` collects the process groups of those outside the session."""
    if not os.path.isdir("/proc"):
        return
    while not done.wait(0.2):
        table = _process_table()
        pids = tree_pids(sid, table)
        groups.update(table[pid][1] for pid in pids if table[pid][2] != sid)
        rss = sum(_kb(f"/proc/{pid}/status", b"VmRSS:") for pid in pids)
        pss = sum(_kb(f"/proc/{pid}/smaps_rollup", b"Pss:") for pid in pids)
        peaks["rss"] = max(peaks["rss"], rss)
        peaks["pss"] = max(peaks["pss"], pss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=None, help="seconds before killing")
    parser.add_argument("--stdout", help="file for the command's stdout (default: discard)")
    parser.add_argument("--stderr", help="file for the command's stderr (default: discard)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.stdout, "wb")) if args.stdout else None
        err = stack.enter_context(open(args.stderr, "wb")) if args.stderr else None
        try:
            result = measure(
                cmd,
                timeout=args.timeout,
                stdout=out or subprocess.DEVNULL,
                stderr=err or subprocess.DEVNULL,
            )
        except OSError as exc:  # e.g. the executable does not exist
            if err:
                err.write(f"{type(exc).__name__}: {exc}\n".encode())
            result = {"rc": 127, "wall_s": 0.0, "user_s": 0.0, "sys_s": 0.0, "maxrss_kb": 0}
            result["timed_out"] = False
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
