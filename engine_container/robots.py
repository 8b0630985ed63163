"""robots.txt (RFC 9309) per origin, fetched through the same SSRF-guarded ``Fetcher``.

Rules
    * 2xx: parsed with Protego (the first ``MAX_ROBOTS_BYTES`` = 512 KiB, as RFC 9309 allows);
      redirects are followed by the fetcher (up to ``max_redirects``).
    * 4xx ("unavailable"): everything is allowed, except 429, which is treated like 5xx.
    * 5xx, 429, timeouts and network errors ("unreachable"): everything is disallowed, cached
      for only ``UNREACHABLE_TTL_S`` so that a site back up is crawled again soon. A transient
      failure (connection trouble, timeout, 429, 5xx) is first retried ``retries`` times with
      backoff, so one dropped connection does not disallow a whole site.
    * The SSRF guard refusing the robots URL disallows everything (the pages would be refused
      anyway).

    The verdict says why (``RobotsRules.reason``), and that is what a refused page's record
    says: ``disallowed by robots.txt`` only when a robots.txt was read and disallows it;
    ``robots.txt unreachable: connection refused`` (``: HTTP 503``, ``: DNS lookup failed:
    <host>``, ...) when none could be read; the guard's refusal when it refused the origin.

One ``RobotsCache`` per crawl is typical; results are cached per origin for ``ttl_s``
(``SKYCRAWL_ROBOTS_TTL_S``, at most 24 h) and at most ``max_origins`` origins are kept (least
recently used dropped). Concurrent lookups of one origin share one fetch. ``Crawl-delay`` of
the matching group is exposed as ``RobotsRules.crawl_delay`` for politeness, and the first
``MAX_SITEMAP_LINES`` (100) ``Sitemap:`` lines as ``RobotsRules.sitemaps``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protego import Protego
from yarl import URL

from engine_container.fetcher import FetchClient, FetchError, FetchResult

MAX_ROBOTS_BYTES = 512 * 1024
UNREACHABLE_TTL_S = 60.0
MAX_SITEMAP_LINES = 100


@dataclass(frozen=True, slots=True)
class RobotsRules:
    """The robots.txt verdict for one origin."""

    parser: Any = None  # Protego, or None for allow-all / disallow-all
    allow_all: bool = True
    crawl_delay: float | None = None
    status: str = "missing"  # parsed | missing | unreachable
    reason: str = "disallowed by robots.txt"  # why a URL is not fetched, for its page record
    sitemaps: tuple[str, ...] = ()  # the ``Sitemap:`` lines, for ``engine_container.sitemaps``

    def can_fetch(self, url: str, user_agent: str) -> bool:
        if self.parser is None:
            return self.allow_all
        return bool(self.parser.can_fetch(url, user_agent))


ALLOW_ALL = RobotsRules()


def origin_of(url: URL) -> str:
    """``scheme://host[:port]`` with default ports dropped."""
    return str(url.origin())


class RobotsCache:
    """Per-origin robots.txt rules for one user agent."""

    def __init__(
        self,
        fetcher: FetchClient,
        *,
        user_agent: str,
        ttl_s: float = 86400.0,
        max_origins: int = 10_000,
        session_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        retries: int = 2,
        retry_base_s: float = 0.5,
    ) -> None:
        self._fetcher = fetcher
        self._user_agent = user_agent
        self._ttl = ttl_s
        self._max = max_origins
        self._session_key = session_key
        self._clock = clock
        self._retries = retries
        self._retry_base_s = retry_base_s
        self._rules: OrderedDict[str, tuple[float, RobotsRules]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[RobotsRules]] = {}
        self.fetches = 0

    async def rules_for(self, url: URL) -> RobotsRules:
        """The rules of ``url``'s origin, fetched at most once per TTL."""
        origin = origin_of(url)
        cached = self._rules.get(origin)
        if cached is not None and cached[0] > self._clock():
            self._rules.move_to_end(origin)
            return cached[1]
        pending = self._pending.get(origin)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[RobotsRules] = asyncio.get_running_loop().create_future()
        self._pending[origin] = future
        try:
            rules = await self._fetch(origin)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody warns about it
            raise
        else:
            future.set_result(rules)
        finally:
            del self._pending[origin]
        self._store(origin, rules)
        return rules

    async def allowed(self, url: URL) -> bool:
        rules = await self.rules_for(url)
        return rules.can_fetch(str(url), self._user_agent)

    def _store(self, origin: str, rules: RobotsRules) -> None:
        ttl = UNREACHABLE_TTL_S if rules.status == "unreachable" else self._ttl
        self._rules[origin] = (self._clock() + min(ttl, self._ttl), rules)
        self._rules.move_to_end(origin)
        while len(self._rules) > self._max:
            self._rules.popitem(last=False)

    async def _fetch_with_retries(self, origin: str) -> FetchResult:
        attempt = 0
        while True:
            self.fetches += 1
            result = await self._fetcher.fetch(
                f"{origin}/robots.txt", session_key=self._session_key, any_type=True
            )
            if attempt >= self._retries or not _transient(result):
                return result
            await asyncio.sleep(random.uniform(0, self._retry_base_s * 2**attempt))
            attempt += 1

    async def _fetch(self, origin: str) -> RobotsRules:
        result = await self._fetch_with_retries(origin)
        status = result.status
        if result.error_kind is FetchError.redirects:
            return ALLOW_ALL  # RFC 9309 2.3.1.2: too many redirects is "unavailable"
        if result.error_kind is FetchError.unsafe:  # the page itself would be refused so
            return RobotsRules(allow_all=False, status="unreachable", reason=result.error or "")
        if status is None or status >= 500 or status == 429:
            why = result.error or f"HTTP {status}"
            return RobotsRules(
                allow_all=False, status="unreachable", reason=f"robots.txt unreachable: {why}"
            )
        if status >= 300:  # 4xx, or a redirect without Location
            return ALLOW_ALL
        text = result.body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
        parser = Protego.parse(text)
        delay = parser.crawl_delay(self._user_agent)
        return RobotsRules(
            parser=parser,
            crawl_delay=float(delay) if delay is not None else None,
            status="parsed",
            sitemaps=tuple(parser.sitemaps)[:MAX_SITEMAP_LINES],
        )


def _transient(result: FetchResult) -> bool:
    if result.error_kind is not None:
        return result.error_kind.transient
    return result.status in (429, 500, 502, 503, 504)
