"""Settings of the self-hosted provider: ``SKYCRAWL_SELFHOSTED_*`` environment variables.

The control plane reads them all; ``adapters.selfhosted.provider.engine_env`` passes the
ones an engine container needs (database URL, blob store) to every container it starts.
Credentials of an S3-compatible store are never settings: boto3 finds them the usual way
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the environment, or
``~/.aws/credentials``) -- a DigitalOcean Spaces or Linode access key goes there. The database
URL may carry a password (``postgresql://user:secret@host/db``); prefer a ``~/.pgpass`` or
``PGPASSWORD``, which libpq reads itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Settings an engine container reads (the rest only matter to the control plane).
CONTAINER_SETTINGS = (
    "database_url",
    "synchronous_commit",
    "blobs",
    "data_dir",
    "s3_endpoint_url",
    "s3_region",
    "s3_bucket",
    "s3_prefix",
    "s3_path_style",
)


class SelfhostedSettings(BaseSettings):
    """Where the self-hosted deployment's PostgreSQL, blobs and containers are."""

    model_config = SettingsConfigDict(
        env_prefix="SKYCRAWL_SELFHOSTED_", extra="ignore", frozen=True
    )

    # ------------------------------------------------------------------ PostgreSQL
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/skycrawl",
        description="libpq URL (or key=value string) of the database holding the bus, "
        "timers and state; its schema is created and migrated on first use.",
    )
    pool_size: int = Field(
        10, ge=1, le=200, description="Largest connection pool of one control-plane process."
    )
    synchronous_commit: bool = Field(
        True,
        description="Wait for every commit to reach the disk (PostgreSQL's default); false: "
        "several times the bus throughput, and a database crash may lose the last "
        "fraction of a second of commits (a consistent prefix survives).",
    )
    notify: bool = Field(
        True,
        description="Wake waiting receivers with LISTEN/NOTIFY (one extra connection per "
        "process); false: poll every 20-100 ms.",
    )

    # ------------------------------------------------------------------ blobs
    blobs: Literal["files", "s3"] = Field(
        "files",
        description="files: a directory (on one VM, or a volume every container mounts); "
        "s3: an S3-compatible bucket (DigitalOcean Spaces, Linode Object Storage, MinIO).",
    )
    data_dir: Path = Field(
        Path(".skycrawl-selfhosted"),
        description="Blobs (blobs/), engine logs (logs/) and tenant directories (tenants/).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="Endpoint of the S3-compatible store, e.g. https://nyc3.digitaloceanspaces.com "
        "or http://minio:9000.",
    )
    s3_region: str = Field("us-east-1", description="Region name the store expects in signatures.")
    s3_bucket: str = Field("skycrawl-data", description="Bucket of pages, manifests, checkpoints.")
    s3_prefix: str = Field("", description="Key prefix inside the bucket (e.g. 'prod/').")
    s3_path_style: bool = Field(
        True,
        description="Address objects as <endpoint>/<bucket>/<key> (MinIO and most stores); "
        "false: <bucket>.<endpoint>/<key> (virtual-hosted, as Spaces also accepts).",
    )

    # ------------------------------------------------------------------ containers
    runtime: Literal["subprocess", "docker", "kubernetes"] = Field(
        "subprocess",
        description="Where engines run: local subprocesses of the control plane, Docker "
        "containers, or Kubernetes Jobs (adapters/selfhosted/container_runtime.py).",
    )
    python: str = Field(
        "", description="Interpreter of subprocess engines (default: the control plane's)."
    )
