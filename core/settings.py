"""Typed settings, one place. Every field can be set as ``SKYCRAWL_<FIELD>`` in the
environment (nested models as JSON), or in a ``.env`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.models import Egress

#: The runtime kind of an egress that names none, per provider (``adapters.runtimes``).
HOME_RUNTIMES = {
    "local": "local",
    "aws": "ecs",
    "azure": "aci",
    "gcp": "cloud-run",
    "selfhosted": "selfhosted",  # the runtime SKYCRAWL_SELFHOSTED_RUNTIME names
}


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class SkycrawlSettings(BaseSettings):
    """Settings of the control plane (API, conductor, housekeeping)."""

    model_config = SettingsConfigDict(env_prefix="SKYCRAWL_", extra="ignore", frozen=True)

    provider: str = Field(
        "local", description="Adapter family: local, aws, azure, gcp or selfhosted."
    )
    inbox_queue: str = Field("skycrawl-inbox", description="The conductor's inbox queue.")
    dispatch_topic: str = Field(
        "skycrawl-dispatch",
        description="Base name of the tenants' dispatch topics: each tenant's work goes to its "
        "own topic <base>-<tenant id> (core.layout.tenant_topic; a base of at most 38 "
        "characters), "
        "created by the provisioner. In a container: its tenant's topic.",
    )
    tenant_data: Literal["pooled", "dedicated"] = Field(
        "pooled",
        description="Where a tenant's crawl and usage records live: pooled, in the control "
        "plane's one store partitioned by tenant id (one table; cheapest), or dedicated, in a "
        "store the provisioner creates per tenant (a DynamoDB or Azure table, a PostgreSQL "
        "schema, a SQLite file, Firestore collections) and teardown drops whole "
        "(core.tenant_data; README 'Tenants isolated').",
    )
    idle_ttl_s: float = Field(
        60.0, gt=0, description="Stop a container this long after its last work."
    )
    idle_policy: Literal["fixed", "break_even", "adaptive"] = Field(
        "adaptive",
        description="Keep-alive of idle containers: fixed (idle_ttl_s), break_even (cold-start "
        "cost / idle price) or adaptive (per-tenant idle-gap histogram, pre-warming).",
    )
    idle_wait_weight: float = Field(
        3.0,
        ge=0,
        description="A second a crawl waits for a cold start costs as much as this many "
        "seconds of an idle container (break_even, adaptive).",
    )
    idle_fallback: Literal["fixed", "break_even"] = Field(
        "fixed", description="What adaptive does until a tenant's histogram is trusted."
    )
    idle_max_keep_s: float = Field(
        14400.0, gt=0, description="Longest keep-alive the adaptive policy chooses."
    )
    startup_timeout_s: float = Field(120.0, gt=0, description="Reap a container not ready by then.")
    heartbeat_interval_s: float = Field(5.0, gt=0, description="How often containers heartbeat.")
    heartbeat_timeout_s: float = Field(60.0, gt=0, description="Reap a container silent this long.")
    stop_grace_s: float = Field(10.0, ge=0, description="SIGTERM → SIGKILL grace when stopping.")
    drain_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long a container told to drain has to say it exited before the "
        "runtime is asked to stop it.",
    )
    max_attempts: int = Field(3, ge=1, description="Dispatch attempts before dead-lettering.")
    max_deliveries: int = Field(
        5, ge=1, description="Inbox deliveries before a message is dead-lettered."
    )
    timer_period_s: float = Field(5.0, gt=0, description="Housekeeping period (reaper, backlog).")
    container_record_ttl_s: float = Field(
        86400.0,
        gt=0,
        description="Keep records of stopped containers this long (GET /v1/containers).",
    )
    checkpoint_interval_s: float = Field(5.0, gt=0, description="Engine checkpoint period.")
    operator_key: str | None = Field(
        None, description="Operator API key (plaintext) for /v1/tenants."
    )
    public_base_url: str = Field("", description="Base of status URLs returned by the API.")
    engine_image: str = Field(
        "skycrawl-engine:latest", description="Container image of the engine."
    )
    egresses: list[Egress] = Field(
        default_factory=lambda: [Egress(name="local")],
        min_length=1,
        description="Egress pool: JSON list of {name, runtime, region, proxy_url, proxies, "
        "cost_per_second, start_latency_s, min_billed_s, browser}; an entry without a runtime "
        "uses the provider's. browser: true, or {cost_per_second | cost_multiplier, "
        "start_latency_s, min_billed_s}: the figures of the containers started for crawls "
        "that render.",
    )
    allow_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CIDRs the crawler may fetch although not global (tests, demos).",
    )
    user_agent: str = Field(
        "skycrawl/0.1 (+https://github.com/skycrawl)", description="Crawler UA."
    )
    max_request_bytes: int = Field(1_000_000, gt=0, description="Largest API request body.")
    export_url_bytes: int = Field(
        4 * 1024 * 1024,
        gt=0,
        description="Exports larger than this are written once to the blob store and answered "
        "303 with a signed URL, where the blob store can sign (S3, Azure Blob, Cloud Storage): "
        "4 MiB stays under the smallest function response cap (Lambda's 6 MB, base64-encoded).",
    )
    export_url_ttl_s: int = Field(
        900, gt=0, le=7 * 24 * 3600, description="How long a signed export URL works."
    )
    proxy_cooldown_s: float = Field(
        300.0,
        gt=0,
        description="How long a scored-out proxy (errors, bans, slowness) stays out before it "
        "is tried again, measured by the scheduler.",
    )

    @field_validator("egresses")
    @classmethod
    def _home_runtime(cls, egresses: list[Egress], info: ValidationInfo) -> list[Egress]:
        """An entry without a runtime runs on the provider's own; names are unique."""
        home = HOME_RUNTIMES.get(str(info.data.get("provider", "local")), "local")
        names = [e.name for e in egresses]
        if len(set(names)) != len(names):
            raise ValueError(f"egress names must be unique: {names}")
        return [e if e.runtime else e.model_copy(update={"runtime": home}) for e in egresses]

    handlers: str = Field(
        "",
        description="Comma-separated PageHandler names crawls may name in `handler` (installed "
        "in the engine image under entry point group skycrawl.handlers); * allows any. "
        "Passed to containers as SKYCRAWL_HANDLERS.",
    )

    @field_validator("allow_cidrs", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)


class LocalSettings(BaseSettings):
    """Settings of the embedded local provider."""

    model_config = SettingsConfigDict(env_prefix="SKYCRAWL_LOCAL_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        Path(".skycrawl"), description="Where SQLite files, blobs and logs live."
    )
    python: str = Field("", description="Interpreter for engine subprocesses (default: this one).")
