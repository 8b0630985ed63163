"""Which request paths the web app answers, known without importing it (``core.api`` asks on
every request; the web app itself, with Jinja and its views, loads on the first one)."""

from __future__ import annotations

from core.webapp.assets import PREFIX as ASSET_PREFIX

PREFIXES = ("/t/", "/console", ASSET_PREFIX)


def owns(path: str) -> bool:
    """Whether ``path`` is the web app's (tenant app, operator console, assets)."""
    return path.startswith(PREFIXES)
