"""The engine image installs ``engine_container/requirements.txt``: each of its lines must be
one of the project's own dependencies, with the same version range, so the image and
``pip install skycrawl`` run the engine on the same libraries."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_engine_requirements_are_project_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = {d.replace(" ", "") for d in project["dependencies"]}
    lines = (ROOT / "engine_container" / "requirements.txt").read_text().splitlines()
    required = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert required, "the engine needs its libraries"
    assert [r for r in required if r.replace(" ", "") not in dependencies] == []
