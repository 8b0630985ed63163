"""Settings of the Google Cloud provider: every field is ``SKYCRAWL_GCP_<FIELD>`` in the
environment (the emulator hosts also read Google's own variable names).

The control plane (functions) needs all of them; an engine container needs only ``project``,
``bucket`` and, in tests, the emulator hosts -- ``adapters.gcp.provider.engine_env`` passes
exactly those. Resource names must match what ``deploy/gcp`` (Terraform) created.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import ConfigurationError


class GcpSettings(BaseSettings):
    """Where the GCP adapters find their resources, and who may call the internal endpoints."""

    model_config = SettingsConfigDict(
        env_prefix="SKYCRAWL_GCP_", extra="ignore", frozen=True, populate_by_name=True
    )

    project: str = Field("", description="Project id holding every resource (required).")
    region: str = Field(
        "us-central1", description="Region of the Cloud Run job, Cloud Tasks queue, functions."
    )
    pubsub_emulator_host: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "SKYCRAWL_GCP_PUBSUB_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "pubsub_emulator_host"
        ),
        description="host:port of a Pub/Sub emulator (tests); unset in production.",
    )
    storage_emulator_host: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "SKYCRAWL_GCP_STORAGE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "storage_emulator_host"
        ),
        description="http://host:port of a Cloud Storage emulator (tests); unset in production.",
    )
    firestore_database: str = Field(
        "(default)", description="Firestore database id (Native mode) holding the state."
    )
    firestore_prefix: str = Field(
        "skycrawl-",
        description="Prefix of the Firestore collections: one per table, e.g. skycrawl-crawls.",
    )
    bucket: str = Field("", description="Cloud Storage bucket of pages, manifests, exports.")
    tasks_queue: str = Field(
        "skycrawl-timers", description="Cloud Tasks queue id holding the kill timers."
    )
    tasks_location: str = Field(
        "", description="Region of the Cloud Tasks queue (default: ``region``)."
    )
    timer_url: str = Field(
        "",
        description="HTTPS URL of the timer endpoint Cloud Tasks calls, i.e. the API "
        "function's URL + /internal/timers.",
    )
    timer_service_account: str = Field(
        "", description="Service account email whose OIDC token Cloud Tasks sends."
    )
    oidc_audience: str = Field(
        "",
        description="Audience of the OIDC tokens on /internal/* (default: ``timer_url``). "
        "Cloud Scheduler's housekeeping job must use the same audience.",
    )
    internal_callers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated service account emails allowed on /internal/* "
        "(default: ``timer_service_account``).",
    )
    run_job: str = Field(
        "skycrawl-engine", description="Cloud Run job whose executions are the containers."
    )
    run_browser_job: str | None = Field(
        None,
        description="Cloud Run job (in the same region) whose executions are the containers "
        "started for crawls that render: deployed from the engine's browser image (a job has "
        "one image). Unset: run_job.",
    )
    run_container: str = Field(
        "", description="Container of the job that gets the overrides (default: its only one)."
    )
    tenant_identities: bool = Field(
        True,
        description="Give each tenant its own service account (``adapters.gcp.tenant_iam``) "
        "and run its containers as it, on a Cloud Run job of its own. Ignored, and off, on "
        "the Pub/Sub emulator (no IAM there).",
    )
    run_lookup_limit: int = Field(
        500,
        ge=1,
        description="Executions scanned, newest first, to find a GUID's execution when this "
        "instance did not start it.",
    )

    @field_validator("internal_callers", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def require(self, *fields: str) -> None:
        """``ConfigurationError`` naming the first of ``fields`` that is empty."""
        for name in fields:
            if not getattr(self, name):
                raise ConfigurationError(f"SKYCRAWL_GCP_{name.upper()} is not set")

    @property
    def audience(self) -> str:
        return self.oidc_audience or self.timer_url

    @property
    def callers(self) -> list[str]:
        if self.internal_callers:
            return list(self.internal_callers)
        return [self.timer_service_account] if self.timer_service_account else []

    @property
    def queue_path(self) -> str:
        location = self.tasks_location or self.region
        return f"projects/{self.project}/locations/{location}/queues/{self.tasks_queue}"

    @property
    def job_path(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.run_job}"

    @property
    def browser_job_path(self) -> str | None:
        if not self.run_browser_job:
            return None
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.run_browser_job}"
