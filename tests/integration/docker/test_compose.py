"""deploy/selfhosted/compose.yaml: PostgreSQL, the control plane and the engine image, with
settings that exist and a command line the real CLI accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.local.cli import build_parser
from tests.integration.settings_names import setting_names

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "deploy" / "selfhosted" / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_services_and_what_they_are_built_from(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "control-plane", "engine"}
    for name in ("control-plane", "engine"):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()
    assert "psycopg[binary,pool]>=3.2,<4" in services["engine"]["build"]["args"]["EXTRA_PACKAGES"]
    assert services["postgres"]["ports"] == ["127.0.0.1:5432:5432"]  # loopback only


def test_control_plane_settings_are_real_and_consistent(compose: dict[str, Any]) -> None:
    services = compose["services"]
    plane = services["control-plane"]
    env: dict[str, str] = plane["environment"]
    assert [
        name for name in env if name.startswith("SKYCRAWL_") and name not in setting_names()
    ] == []
    assert env["SKYCRAWL_SELFHOSTED_RUNTIME"] == "docker"
    assert env["SKYCRAWL_ENGINE_IMAGE"] == services["engine"]["image"]
    pg = services["postgres"]["environment"]
    assert env["SKYCRAWL_SELFHOSTED_DATABASE_URL"] == (
        f"postgresql://{pg['POSTGRES_USER']}:${{POSTGRES_PASSWORD}}@127.0.0.1:5432/{pg['POSTGRES_DB']}"
    )
    data_dir = env["SKYCRAWL_SELFHOSTED_DATA_DIR"]
    assert f"{data_dir}:{data_dir}" in plane["volumes"]  # same path in and out, for engines
    assert "/var/run/docker.sock:/var/run/docker.sock" in plane["volumes"]
    assert plane["network_mode"] == "host"


def test_the_command_is_one_the_cli_accepts(compose: dict[str, Any]) -> None:
    command = compose["services"]["control-plane"]["command"]
    args = build_parser().parse_args(command)
    assert (args.command, args.provider, args.host, args.port) == (
        "up",
        "selfhosted",
        "0.0.0.0",
        8787,
    )
    dockerfile = (ROOT / "deploy" / "selfhosted" / "control-plane.Dockerfile").read_text()
    assert 'ENTRYPOINT ["skycrawl"]' in dockerfile
