"""The engine image installs ``engine_container/requirements.txt``: each of its lines must be
one of the project's own dependencies, with the same version range, so the image and
``pip install skycrawl`` run the engine on the same libraries; and every library the engine
imports (its own modules and the ``core``/``adapters`` modules they reach, lazy imports
included) must be installed by that file (or, for rendering, by the ``browser`` target's
``[browser]`` extra; for telemetry, by ``EXTRA_PACKAGES`` with the ``[otel]`` extra), or the
image fails at its first page."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LOCAL = {"core", "adapters", "engine_container", "functions", "skycrawl_client"}
# Installed by the image's EXTRA_PACKAGES build argument for the provider that needs them
# (engine_container/Dockerfile): the self-hosted PostgreSQL host limiter.
PROVIDER_EXTRAS = {"psycopg", "psycopg-pool"}


def _extra(name: str) -> set[str]:
    """The project's extra ``name``: ``[browser]`` is what the engine's ``browser`` image
    target adds, ``[otel]`` what ``EXTRA_PACKAGES`` adds for telemetry (imported only when
    the ``OTEL_*`` variables ask for it)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_name(r) for r in project["optional-dependencies"][name]}


def _required() -> list[str]:
    lines = (ROOT / "engine_container" / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return None


def _third_party_imports() -> set[str]:
    todo = [f"engine_container.{p.stem}" for p in (ROOT / "engine_container").glob("*.py")]
    seen: set[str] = set()
    found: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        source = _module_file(module)
        if source is None:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in LOCAL:
                    parts = name.split(".")
                    todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
                elif top not in sys.stdlib_module_names:
                    found.add(top)
    return found


def _closure(names: set[str]) -> set[str]:
    """The distributions ``names`` install, their own dependencies included."""
    todo, closed = list(names), set()
    while todo:
        name = todo.pop()
        if name in closed:
            continue
        closed.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        todo.extend(_name(r) for r in reqs if "extra ==" not in r)
    return closed


def test_engine_requirements_are_project_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = {d.replace(" ", "") for d in project["dependencies"]}
    required = _required()
    assert required, "the engine needs its libraries"
    assert [r for r in required if r.replace(" ", "") not in dependencies] == []


def test_every_library_the_engine_imports_is_in_its_requirements() -> None:
    installed = _closure({_name(r) for r in _required()})
    by_module = packages_distributions()
    known = installed | PROVIDER_EXTRAS | _closure(_extra("browser")) | _closure(_extra("otel"))
    missing: dict[str, list[str]] = {}
    for module in sorted(_third_party_imports()):
        dists = by_module.get(module, [module])
        if not {d.lower().replace("_", "-") for d in dists} & known:
            missing[module] = dists
    assert missing == {}
