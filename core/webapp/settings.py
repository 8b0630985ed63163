"""Settings of the web app and the operator console (``SKYCRAWL_WEB_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebAppSettings(BaseSettings):
    """How long sign-ins last and how the browser polls."""

    model_config = SettingsConfigDict(env_prefix="SKYCRAWL_WEB_", extra="ignore", frozen=True)

    session_ttl_s: float = Field(
        4 * 3600.0, gt=0, le=7 * 86400, description="A sign-in lasts this long (absolute)."
    )
    invite_ttl_s: float = Field(
        7 * 86400.0, gt=0, description="An invite link works this long after it is issued."
    )
    poll_interval_s: float = Field(
        2.0, gt=0, description="How often open pages refresh live progress."
    )
    page_size: int = Field(50, ge=1, le=1000, description="Rows per page in the page browser.")
