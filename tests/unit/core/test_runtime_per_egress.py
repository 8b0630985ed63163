"""One runtime per egress entry, built by the composition root from settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.local.container_runtime import SubprocessRuntime
from adapters.local.provider import build_ports
from adapters.runtimes import build_runtimes
from core.errors import ConfigurationError
from core.models import Egress
from core.ports import ContainerRuntime
from core.settings import LocalSettings, SkycrawlSettings


def test_an_entry_without_a_runtime_runs_on_the_provider_s_own() -> None:
    pool = [{"name": "home"}, {"name": "far", "runtime": "cloud-run", "region": "europe-west1"}]
    aws = SkycrawlSettings(provider="aws", egresses=pool)
    assert [(e.name, e.runtime) for e in aws.egresses] == [("home", "ecs"), ("far", "cloud-run")]
    assert SkycrawlSettings(egresses=[{"name": "x"}]).egresses[0].runtime == "local"


def test_egress_names_are_unique_and_proxies_are_urls() -> None:
    with pytest.raises(ValueError, match="unique"):
        SkycrawlSettings(egresses=[{"name": "a"}, {"name": "a", "region": "b"}])
    with pytest.raises(ValueError, match="proxy"):
        Egress(name="p", proxies=["socks9://nowhere"])


def test_home_egresses_use_the_home_builder_and_overrides_win() -> None:
    settings = SkycrawlSettings(
        provider="aws",
        egresses=[
            {"name": "east", "region": "us-east-1"},
            {"name": "west", "region": "us-west-2"},
            {"name": "test", "runtime": "ecs"},
        ],
    )
    built: list[str] = []

    def home(egress: Egress) -> ContainerRuntime:
        built.append(egress.name)
        return SubprocessRuntime(log_dir=Path("/nonexistent"))

    override = SubprocessRuntime(log_dir=Path("/nonexistent"))
    runtimes = build_runtimes(settings, home="aws", build_home=home, overrides={"test": override})
    assert built == ["east", "west"]
    assert runtimes["test"] is override


def test_an_unknown_runtime_is_a_configuration_error() -> None:
    settings = SkycrawlSettings(egresses=[{"name": "moon", "runtime": "lunar-batch"}])

    def home(egress: Egress) -> ContainerRuntime:
        raise AssertionError("not a home egress")

    with pytest.raises(ConfigurationError, match="unknown runtime 'lunar-batch'"):
        build_runtimes(settings, home="local", build_home=home)


async def test_the_local_stack_builds_one_runtime_per_entry(tmp_path: Path) -> None:
    settings = SkycrawlSettings(egresses=[{"name": "a"}, {"name": "b", "region": "lab"}])
    ports = build_ports(settings, LocalSettings(data_dir=tmp_path))
    try:
        assert set(ports.runtimes) == {"a", "b"}
        assert isinstance(ports.runtime_for(settings.egresses[1]), SubprocessRuntime)
        with pytest.raises(ConfigurationError, match="no container runtime for egress 'gone'"):
            ports.runtime_for(Egress(name="gone"))
    finally:
        await ports.close()
