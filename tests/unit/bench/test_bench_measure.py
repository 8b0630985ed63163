"""The benches' launcher (``bench/_measure.py``) counts the CPU of every process a crawl
started, also those it never waited for (a forkserver's workers): a crawl's CPU per page
must not look smaller than it was."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

MEASURE = Path(__file__).resolve().parents[3] / "bench" / "_measure.py"

#: The command forks a child that forks a grandchild and exits at once: the grandchild,
#: orphaned, burns ~0.6 s of CPU after the command itself has exited (as multiprocessing's
#: workers outlive the engine by a moment, and nobody waits for them).
ORPHAN_BURNS = textwrap.dedent(
    """
    import os, time
    if os.fork() == 0:
        if os.fork() == 0:
            end = time.process_time() + 0.6
            while time.process_time() < end:
                pass
        os._exit(0)
    os.wait()
    """
)


def test_the_cpu_of_an_orphaned_grandchild_is_the_command_s() -> None:
    done = subprocess.run(
        [sys.executable, str(MEASURE), "--", sys.executable, "-c", ORPHAN_BURNS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["rc"] == 0
    assert result["user_s"] + result["sys_s"] >= 0.5, result
    assert result["wall_s"] < 0.5, result  # the time is the command's own, not the orphan's
