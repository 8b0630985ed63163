"""The tenant web app (``/t/{tenant}/``) and the operator console (``/console/``), served by
the API's framework-free handler on every cloud and by ``skycrawl up`` (see ``app.py``).

``WebApp`` is loaded on first use (Jinja and the views are not part of a function's cold
start unless a browser asks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.webapp.settings import WebAppSettings

if TYPE_CHECKING:
    from core.webapp.app import WebApp

__all__ = ["WebApp", "WebAppSettings"]


def __getattr__(name: str) -> Any:
    if name == "WebApp":
        from core.webapp.app import WebApp

        return WebApp
    raise AttributeError(f"module 'core.webapp' has no attribute {name!r}")
