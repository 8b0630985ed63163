"""Mutation testing of the conductor: ``make mutants`` (or ``python tests/mutants/run.py``).

Copies the repository once to a temporary directory, then applies each named mutation of
``mutations.py`` there, one at a time, runs the test files that mutation lists (``-x``: the
first failing test kills the mutant; ``--all``: the whole conductor suite instead), restores
the file, and goes on. At the end it prints a table -- mutation, killed by (test), time --
and exits 1 if any mutant survived. ``--only SUBSTRING`` runs the mutations whose name
contains it. Before the first mutant it checks that the copy, not the working tree, is what
the tests import (an editable install could otherwise hide every mutation).
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
from mutations import CONDUCTOR_TESTS, MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[2]
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
    "docs",
)


def _env(copy: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports_the_copy(copy: Path) -> None:
    probe = "import core.conductor.fleet as m; print(m.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=copy,
        env=_env(copy),
        capture_output=True,
        text=True,
        check=True,
    )
    if not Path(done.stdout.strip()).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"the tests would import {done.stdout.strip()}, not the mutated copy")


def run_one(copy: Path, mutation: Mutation, tests: list[str]) -> tuple[str | None, float]:
    """(the first test that failed, or None if the mutant survived; seconds)."""
    target = copy / mutation.path
    source = target.read_text()
    if source.count(mutation.old) != 1:
        raise SystemExit(f"mutation {mutation.name!r} no longer applies to {mutation.path}")
    target.write_text(source.replace(mutation.old, mutation.new))
    started = time.monotonic()
    try:
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
            env=_env(copy),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        target.write_text(source)
    elapsed = time.monotonic() - started
    if done.returncode == 0:
        return None, elapsed
    failed = re.findall(r"^FAILED (\S+)", done.stdout, re.MULTILINE)
    if not failed:  # not a test failure: an import error, a crash -- show it, count it killed
        print(done.stdout[-2000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
    return (failed[0] if failed else f"pytest exit {done.returncode}"), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="run mutations whose name contains this")
    parser.add_argument("--all", action="store_true", help=f"run all of {CONDUCTOR_TESTS}")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="skycrawl-mutants-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORE)
        check_imports_the_copy(copy)
        for mutation in MUTATIONS:
            if args.only not in mutation.name:
                continue
            tests = [CONDUCTOR_TESTS] if args.all else list(mutation.tests)
            killer, seconds = run_one(copy, mutation, tests)
            rows.append((mutation.name, killer or "SURVIVED", seconds))
            print(f"{mutation.name:<62} {killer or 'SURVIVED'}  ({seconds:.0f}s)", flush=True)
    print("\n| mutation | killed by | time |\n|---|---|---|")
    for name, killer, seconds in rows:
        print(f"| {name} | `{killer.split('/')[-1]}` | {seconds:.0f} s |")
    survived = sum(k == "SURVIVED" for _, k, _ in rows)
    print(f"\n{len(rows) - survived} of {len(rows)} mutants killed")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
