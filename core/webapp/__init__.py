"""The tenant web app (``/t/{tenant}/``) and the operator console (``/console/``), served by
the API's framework-free handler on every cloud and by ``skycrawl up`` (see ``app.py``)."""

from core.webapp.app import WebApp
from core.webapp.settings import WebAppSettings

__all__ = ["WebApp", "WebAppSettings"]
