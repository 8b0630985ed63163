"""Settings of the crawler engine (the container), read from ``SKYCRAWL_*`` environment variables.

The conductor passes ``SKYCRAWL_CONTAINER_ID``, ``SKYCRAWL_TENANT_ID``, ``SKYCRAWL_EGRESS_NAME``
and (for a proxied egress) ``SKYCRAWL_PROXY_URL`` when it starts a container; everything else
has a production default. Limits are per crawl unless said otherwise: a container runs up to
``capacity`` crawls at once, each with up to ``concurrency`` requests in flight, of which at
most ``per_host_concurrency`` go to the same host.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.netguard import AddressPolicy

DEFAULT_USER_AGENT = "skycrawl/0.1 (+https://github.com/skycrawl)"


class EngineSettings(BaseSettings):
    """Everything the engine reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="SKYCRAWL_", extra="ignore", frozen=True)

    container_id: str | None = Field(
        None, description="This container's GUID (required when taking work from the bus)."
    )
    tenant_id: str | None = Field(None, description="The tenant this container works for.")
    egress_name: str = Field("local", description="Name of the egress this container runs in.")
    proxy_url: str | None = Field(
        None,
        description="HTTP(S) proxy every request leaves through (http://user:pass@host:port), "
        "unless a crawl is bound to another proxy of SKYCRAWL_PROXY_URLS.",
    )
    proxy_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The egress's proxy pool (comma-separated or a JSON list): each crawl's "
        "RunCrawl names the one it leaves through, by id.",
    )
    capacity: int = Field(4, ge=1, le=256, description="Crawls run in parallel per container.")
    concurrency: int = Field(16, ge=1, le=1024, description="Requests in flight per crawl.")
    per_host_concurrency: int = Field(
        8,
        ge=1,
        le=1024,
        description="Requests in flight to one host, for all crawls of the container (and of "
        "every container sharing SKYCRAWL_HOST_LIMITER_PATH).",
    )
    per_host_delay_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Fleet-wide minimum gap between request starts to one host, whichever "
        "crawl or tenant sends them (robots Crawl-delay wins when larger).",
    )
    host_limiter_path: Path | None = Field(
        None,
        description="SQLite file of the per-host limiter shared by every engine process on "
        "the machine (the embedded stack sets <data_dir>/hosts.sqlite3). Unset: per process.",
    )
    host_limiter_url: str | None = Field(
        None,
        description="PostgreSQL URL of the per-host limiter shared by every engine reaching "
        "that database, on any machine (the selfhosted provider sets its database). Wins "
        "over host_limiter_path.",
    )
    sitemap_max_files: int = Field(
        20, ge=0, le=1000, description="Sitemap files (indexes included) read per crawl."
    )
    allow_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated non-global CIDRs the crawler may fetch (tests, demos, "
        "intranets). Cloud metadata endpoints stay refused.",
    )
    user_agent: str = Field(DEFAULT_USER_AGENT, description="User-Agent of requests and robots.")
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP + TLS connect timeout.")
    read_timeout_s: float = Field(30.0, gt=0, description="Longest wait for the next bytes.")
    total_timeout_s: float = Field(60.0, gt=0, description="Whole request, one redirect hop.")
    max_redirects: int = Field(10, ge=0, le=50, description="Redirect hops followed per URL.")
    max_body_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="Largest body on the wire; larger ones fail."
    )
    max_decoded_bytes: int = Field(
        20 * 1024 * 1024,
        gt=0,
        description="Largest body after gzip/deflate/br decoding; decompression stops there.",
    )
    retries: int = Field(
        3, ge=0, le=20, description="Retries of a transient failure (timeouts, 429, 5xx)."
    )
    retry_base_s: float = Field(
        0.5, ge=0, description="Backoff base: retry n waits uniform(0, base * 2**n)."
    )
    retry_max_s: float = Field(30.0, ge=0, description="Longest single backoff wait.")
    robots_ttl_s: float = Field(
        86400.0, gt=0, le=86400, description="How long a robots.txt is cached per origin."
    )
    checkpoint_interval_s: float = Field(5.0, gt=0, description="Checkpoint period of a crawl.")
    heartbeat_interval_s: float = Field(5.0, gt=0, description="Heartbeat period to the conductor.")
    ip_echo_url: str | None = Field(
        None,
        description="URL answering with the caller's public IP as text (e.g. an ipify-style "
        "service), fetched once at start through the egress so `ready` reports the address "
        "this container crawls from. Unset: the IP is not reported.",
    )

    # -- output (issue 12) -------------------------------------------------------------------
    analysis_processes: int | None = Field(
        None,
        ge=0,
        le=256,
        description="Worker processes that parse pages, render formats and run extraction "
        "and handlers, shared by the container's crawls. Unset: one per core but one, which "
        "the event loop keeps (none on one core); 0: worker threads in the engine process.",
    )
    handlers: str = Field(
        "",
        description="Comma-separated PageHandler names (entry point group skycrawl.handlers) "
        "crawls may use; * allows every installed one. Empty: none.",
    )

    # -- browser (issue 15) ------------------------------------------------------------------
    chromium_path: Path = Field(
        Path("/usr/bin/chromium"),
        description="Chromium that renders pages (Debian's chromium package; the browser "
        "image has it). Launched on the first render only.",
    )
    browser_pages: int = Field(
        2, ge=1, le=64, description="Pages rendered at once, for all crawls of the container."
    )
    browser_contexts: int = Field(
        8,
        ge=1,
        le=256,
        description="Browser contexts kept open (one per session key; least recently used "
        "idle ones are closed).",
    )
    browser_pages_per_context: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Pages after which a context is reopened, with its cookies and storage.",
    )
    browser_max_memory_mb: int = Field(
        1024,
        ge=0,
        le=1_000_000,
        description="Memory of the Chromium process tree (MiB, its processes' proportional "
        "set sizes summed) past which the browser is restarted, between pages; contexts come "
        "back with their cookies and local storage. 0: never.",
    )

    @field_validator("allow_cidrs", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allow_cidrs")
    @classmethod
    def _cidrs_parse(cls, value: list[str]) -> list[str]:
        AddressPolicy.from_cidrs(value)  # ValueError names the bad entry
        return value

    @field_validator("proxy_url")
    @classmethod
    def _proxy_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("proxy_url must be an http:// or https:// URL")
        return value or None

    @field_validator("proxy_urls", mode="before")
    @classmethod
    def _proxy_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("proxy_urls")
    @classmethod
    def _proxies_are_http(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError("every SKYCRAWL_PROXY_URLS entry must be an http(s):// URL")
        return value

    def proxy_pool(self) -> list[str]:
        """Every proxy this container may use: ``proxy_url`` first, then ``proxy_urls``."""
        pool = ([self.proxy_url] if self.proxy_url else []) + self.proxy_urls
        return list(dict.fromkeys(pool))

    def address_policy(self) -> AddressPolicy:
        """The SSRF policy these settings describe."""
        return AddressPolicy.from_cidrs(self.allow_cidrs)
