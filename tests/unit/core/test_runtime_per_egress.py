"""One runtime per egress entry, built by the composition root from settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.local.container_runtime import SubprocessRuntime
from adapters.local.provider import build_ports
from adapters.runtimes import build_runtimes, family_of
from core.errors import ConfigurationError
from core.models import Egress
from core.ports import ContainerRuntime
from core.settings import LocalSettings, SkycrawlSettings


def test_an_entry_without_a_runtime_runs_on_the_provider_s_own() -> None:
    pool = [{"name": "home"}, {"name": "far", "runtime": "cloud-run", "region": "europe-west1"}]
    aws = SkycrawlSettings(provider="aws", egresses=pool)
    assert [(e.name, e.runtime) for e in aws.egresses] == [("home", "ecs"), ("far", "cloud-run")]
    assert SkycrawlSettings(egresses=[{"name": "x"}]).egresses[0].runtime == "local"
    own = SkycrawlSettings(provider="selfhosted", egresses=[{"name": "vm"}]).egresses[0]
    assert (own.runtime, family_of(own)) == ("selfhosted", "selfhosted")


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
            ports.runtime_for(Egress(name="gone", runtime="cloud-run"))
    finally:
        await ports.close()


async def test_a_record_of_a_former_egress_is_served_by_a_runtime_of_its_kind(
    tmp_path: Path,
) -> None:
    """A renamed or removed entry's containers can still be described and stopped."""
    settings = SkycrawlSettings(egresses=[{"name": "now", "region": "lab"}])
    ports = build_ports(settings, LocalSettings(data_dir=tmp_path))
    try:
        runtime = ports.runtime_for(settings.egresses[0])
        assert ports.runtime_for(Egress(name="renamed", runtime="local")) is runtime
        assert ports.runtime_for(Egress(name="older-record")) is runtime  # no kind recorded
        with pytest.raises(ConfigurationError, match="no container runtime for egress 'far'"):
            ports.runtime_for(Egress(name="far", runtime="ecs"))
    finally:
        await ports.close()


def test_an_egress_region_picks_the_cloud_s_region() -> None:
    from adapters.aws.provider import regional as aws_regional
    from adapters.aws.settings import AwsSettings
    from adapters.gcp.provider import regional as gcp_regional
    from adapters.gcp.settings import GcpSettings

    aws = AwsSettings(region="us-east-1")
    assert aws_regional(aws, Egress(name="w", region="eu-west-1")).region == "eu-west-1"
    assert aws_regional(aws, Egress(name="l")) is aws  # "local": the settings' own region
    gcp = GcpSettings(project="p", region="us-central1", run_job="engine")
    eu = gcp_regional(gcp, Egress(name="eu", runtime="cloud-run", region="europe-west1"))
    assert eu.job_path == "projects/p/locations/europe-west1/jobs/engine"
    assert gcp_regional(gcp, Egress(name="home", region="us-central1")) is gcp
