"""Mutation testing of the conductor: ``make mutants`` (or ``python tests/mutants/run.py``).

Applies each named mutation of ``mutations.py`` to a temporary copy of the repository, one
at a time, runs the conductor's unit tests there (``-x``: the first failing test kills the
mutant) and prints a table: mutation, killed by (test), time. Exits 1 if any survives.
``--only SUBSTRING`` runs the mutations whose name contains it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutations import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[2]
TESTS = ["tests/unit/conductor"]
IGNORE = shutil.ignore_patterns(
    ".venv",
    ".git",
    ".skycrawl",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "node_modules",
    ".venvs",
    ".work",
)


def run_one(mutation: Mutation, tests: list[str]) -> tuple[str | None, float]:
    """(the first test that failed, or None if the mutant survived; seconds)."""
    with tempfile.TemporaryDirectory(prefix="skycrawl-mutant-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORE)
        target = copy / mutation.path
        source = target.read_text()
        if source.count(mutation.old) != 1:
            raise SystemExit(f"mutation {mutation.name!r} no longer applies to {mutation.path}")
        target.write_text(source.replace(mutation.old, mutation.new))
        env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                *tests,
                "-x",
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "addopts=",
                "-rf",
            ],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - started
    if done.returncode == 0:
        return None, elapsed
    failed = re.findall(r"^FAILED (\S+)", done.stdout, re.MULTILINE)
    return (failed[0] if failed else f"pytest exit {done.returncode}"), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="")
    parser.add_argument("tests", nargs="*", default=TESTS)
    args = parser.parse_args()
    rows = []
    for mutation in MUTATIONS:
        if args.only not in mutation.name:
            continue
        killer, seconds = run_one(mutation, args.tests)
        rows.append((mutation.name, killer or "SURVIVED", seconds))
        print(f"{mutation.name:<62} {killer or 'SURVIVED'}  ({seconds:.0f}s)", flush=True)
    print("\n| mutation | killed by | time |\n|---|---|---|")
    for name, killer, seconds in rows:
        print(f"| {name} | `{killer.split('/')[-1]}` | {seconds:.0f} s |")
    return 1 if any(k == "SURVIVED" for _, k, _ in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
