"""Which of the egress's proxies a session's requests leave through (issue 15, 14).

One rule for the fetcher and the browser, so a sticky session's page fetches and the
requests its rendered pages make leave from the same proxy (the same IP). The pool is
``SKYCRAWL_PROXY_URL`` then ``SKYCRAWL_PROXY_URLS`` (``EngineSettings.proxy_pool``), each
known by its secret-free id (``core.egress_scoring.proxy_id``); a crawl's route names one
(or ``direct``), and a session without a binding uses the default (``SKYCRAWL_PROXY_URL``, or
the pool's first).
"""

from __future__ import annotations

import logging

from core.egress_scoring import DIRECT, proxy_id
from engine_container.settings import EngineSettings

log = logging.getLogger("skycrawl.engine")


class ProxyBinding:
    """Session key → proxy URL (``None``: direct), from the container's pool."""

    def __init__(self, settings: EngineSettings) -> None:
        self.pool = {proxy_id(url): url for url in settings.proxy_pool()}
        self.default = settings.proxy_url or next(iter(self.pool.values()), None)
        self._bound: dict[str, str | None] = {}

    def bind(self, session_key: str, proxy: str | None) -> None:
        """Requests of ``session_key`` leave through the pool's proxy ``proxy`` (an id of
        ``core.egress_scoring.proxy_id``; ``direct``: no proxy; ``None``: the default). An id
        this container's pool does not have keeps the default (and says so in the log)."""
        if proxy is None:
            return
        if proxy == DIRECT:
            self._bound[session_key] = None
        elif proxy in self.pool:
            self._bound[session_key] = self.pool[proxy]
        else:
            log.warning("proxy %s is not in this container's pool; using the default", proxy)

    def proxy_for(self, session_key: str | None) -> str | None:
        if session_key is not None and session_key in self._bound:
            return self._bound[session_key]
        return self.default

    def forget(self, session_key: str) -> None:
        self._bound.pop(session_key, None)
