"""Rendering pages in Chromium (issue 15): Playwright for Python driving Debian's ``chromium``.

What a render is
    The engine fetches a page as always (``Fetcher``: SSRF guard, caps, retries, politeness,
    the WARC ``response`` record). When the crawl asks for it (``CrawlSpec.render``: ``always``,
    or ``auto`` for an app shell, see ``looks_like_app_shell``) the *fetched* response is
    handed to a Chromium page as its document (the server is not asked twice), the page's
    scripts run, and its DOM (``page.content()``) becomes the page's formats, links, items and
    a WARC ``conversion`` record. ``wait_for`` waits after ``load`` for a CSS selector or
    ``networkidle``; everything (fetch included) stays within the page's ``page_timeout_s``:
    past it the page is recorded with a ``render: ... within N s`` error. ``scroll``
    (``CrawlSpec.scroll``) then scrolls infinite-scroll pages to their bottom until they stop
    growing (no taller, and no request in flight for ``delay_ms``), ``max_scrolls`` times at
    most, leaving the last second of the budget (a quarter at most) to the DOM and screenshot.

The SSRF guard inside the browser
    Every request any page of a context makes (subresources, XHR, ``fetch()``, redirect hops,
    navigations, popups) meets ``context.route("**/*")``: its URL passes
    ``core.netguard.check_url`` and every address its host resolves to passes the crawl's
    ``AddressPolicy`` (``GuardedResolver``, the fetcher's own) before ``route.continue_()``;
    a refused one is aborted (``blockedbyclient``) and logged. WebSockets meet
    ``context.route_web_socket`` the same way (closed with 1008 when refused). Routing does
    not see redirect hops, and Chromium would resolve names again itself, so every
    connection Chromium opens also goes through ``FilteringProxy`` (``browser_proxy``), which
    checks each request and hop again and connects only to the addresses it checked. Service
    workers are blocked (their requests would bypass routing), downloads refused, dialogs
    dismissed, popups closed. Images, fonts and media are aborted by default
    (``CrawlSpec.block_resources``).

The egress's proxy
    What passes the guard leaves through the session's proxy, the one its fetches use
    (``ProxyBinding``: ``SKYCRAWL_PROXY_URL``, or the proxy of ``SKYCRAWL_PROXY_URLS`` the
    crawl's route names, or none): one ``FilteringProxy`` per upstream proxy, forwarding
    through it, and each context is opened with the filtering proxy of its session's
    upstream (Playwright's per-context ``proxy``; Chromium still sends loopback through it).

Contexts
    One browser per container (launched on the first render), one context per session key,
    so a sticky session keeps its cookies and storage across its crawls; at most
    ``browser_contexts`` contexts (least recently used idle ones closed), at most
    ``browser_pages`` renders at once. A context is recycled after
    ``browser_pages_per_context`` pages: closed and reopened with its cookies and local
    storage (``storage_state``), which bounds the memory a long crawl's pages leave behind.

Memory
    After a page, at most every ``MEMORY_CHECK_INTERVAL_S``, the pool measures Chromium's
    process tree (the process launched with its own marker switch and its descendants; psutil,
    the sum of their proportional set sizes). Past ``browser_max_memory_mb`` it restarts the
    browser between pages: new pages wait, the pages in flight finish, every context's cookies
    and local storage are saved, the browser is closed, and the next page launches a new
    one in which each session's context comes back with them (what ``storage_state`` does not
    hold is lost: session storage, IndexedDB, in-memory state of the page's scripts).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver

from core.errors import UnsafeUrl
from core.models import CrawlSpec, ScreenshotSpec, ScrollSpec
from core.netguard import AddressPolicy, check_url, parse_host
from engine_container.browser_proxy import FilteringProxy
from engine_container.fetcher import FetchResult, GuardedResolver, ProxyBook
from engine_container.proxy_binding import ProxyBinding
from engine_container.settings import EngineSettings

if TYPE_CHECKING:
    import psutil
    from playwright.async_api import (
        Browser,
        BrowserContext,
        Page,
        Playwright,
        Request,
        Route,
        WebSocketRoute,
    )

log = logging.getLogger("skycrawl.engine.browser")

CHROMIUM_ARGS = (
    "--no-sandbox",  # containers run without the user namespaces the sandbox needs
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
NETWORK_IDLE = "networkidle"
#: Below this many characters of visible text, a page with scripts is an app shell (``auto``).
AUTO_TEXT_CHARS = 200
AUTO_SCAN_BYTES = 512 * 1024  # a shell is small: only this much is looked at
_NO_NETWORK_SCHEMES = frozenset({"data", "blob", "about"})
_SOCKET_SCHEMES = {"ws": "http", "wss": "https"}
_INVISIBLE = re.compile(rb"<(script|style|noscript|template)\b.*?</\1\s*>", re.S | re.I)
_TAG = re.compile(rb"<[^>]*>|&nbsp;|\s+", re.S)
_SCRIPT = re.compile(rb"<script\b", re.I)


def looks_like_app_shell(body: bytes) -> bool:
    """True for HTML with scripts and almost no visible text: what ``render: auto`` renders
    (a page over ``AUTO_SCAN_BYTES`` is never taken for one)."""
    if len(body) > AUTO_SCAN_BYTES:
        return False
    if not _SCRIPT.search(body):
        return False
    text = _TAG.sub(b"", _INVISIBLE.sub(b"", body))
    return len(text) < AUTO_TEXT_CHARS


class RequestGuard:
    """The SSRF decision for one browser request: ``await refusal(url)`` is None to let it
    go, else why not. ``decisions`` keeps the last 1,000 (URL, refusal) pairs."""

    def __init__(self, policy: AddressPolicy, resolver: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._resolver = GuardedResolver(policy, resolver)
        self.decisions: deque[tuple[str, str | None]] = deque(maxlen=1000)

    async def refusal(self, url: str) -> str | None:
        reason, _ = await self.admit(url)
        return reason

    async def admit(self, url: str) -> tuple[str | None, tuple[str, ...]]:
        """(None, the checked addresses to connect to) for a request that may go; (why not,
        ()) for one that may not. ``data:``/``blob:``/``about:`` need no network: (None, ())."""
        reason, addresses = await self._decide(url)
        self.decisions.append((url, reason))
        return reason, addresses

    async def _decide(self, url: str) -> tuple[str | None, tuple[str, ...]]:
        scheme, _, rest = url.partition(":")
        scheme = scheme.lower()
        if scheme in _NO_NETWORK_SCHEMES:
            return None, ()
        if scheme in _SOCKET_SCHEMES:
            url = f"{_SOCKET_SCHEMES[scheme]}:{rest}"
        try:
            check_url(url, self._policy)
            parts = urlsplit(url)
            host = parse_host(parts.hostname or "")
            if not isinstance(host, str):  # an IP literal, checked by check_url
                return None, (str(host),)
            # a name: every address it resolves to must pass (GuardedResolver raises)
            results = await self._resolver.resolve(host, parts.port or 0)
        except UnsafeUrl as exc:
            return str(exc), ()
        except (OSError, ValueError) as exc:
            return f"DNS lookup failed: {exc}", ()
        return None, tuple(result["host"] for result in results)

    async def close(self) -> None:
        await self._resolver.close()


def can_render(settings: EngineSettings) -> bool:
    """Whether this engine can render: Playwright installed and Chromium at its path (what
    the container advertises in ``ready``)."""
    return importlib.util.find_spec("playwright") is not None and settings.chromium_path.is_file()


class BrowserUnavailable(Exception):
    """This engine cannot render: no Playwright, or no Chromium at ``chromium_path``."""


#: Crawl headers the page's own requests carry too; never ``authorization`` or ``cookie``,
#: which would go to every third-party host the page loads from.
BROWSER_HEADERS = ("user-agent", "accept-language")


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """How one crawl's pages are rendered (``CrawlSpec`` fields)."""

    wait_for: str | None = None
    block: frozenset[str] = frozenset({"image", "font", "media"})
    headers: tuple[tuple[str, str], ...] = ()  # BROWSER_HEADERS of the crawl's ``headers``
    screenshot: ScreenshotSpec | None = None
    scroll: ScrollSpec | None = None

    @classmethod
    def of(cls, spec: CrawlSpec) -> RenderOptions:
        headers = tuple((k, v) for k, v in spec.headers.items() if k in BROWSER_HEADERS)
        return cls(
            spec.wait_for, frozenset(spec.block_resources), headers, spec.screenshot, spec.scroll
        )


@dataclass(frozen=True, slots=True)
class Rendered:
    """The DOM after the scripts ran (UTF-8 HTML), or why there is none."""

    html: bytes | None
    error: str | None = None
    elapsed_ms: float = 0.0
    screenshot: bytes | None = None
    scrolls: int = 0  # times the page was scrolled to its bottom (``RenderOptions.scroll``)


@dataclass
class _Context:
    context: BrowserContext
    upstream: str | None  # the egress proxy its filtering proxy forwards through
    pages: int = 0  # pages opened in it since it was (re)created
    open: int = 0  # pages rendering in it now


class BrowserPool:
    """Chromium for the container's crawls. Create in the event loop; ``await close()``.

    ``resolver`` replaces getaddrinfo for the guard (tests); ``launch_args`` are extra
    Chromium switches (tests map test names with ``--host-resolver-rules``); ``proxy_stats``
    (the fetcher's) counts the browser's requests per proxy for the heartbeats.
    """

    def __init__(
        self,
        settings: EngineSettings,
        *,
        policy: AddressPolicy | None = None,
        resolver: AbstractResolver | None = None,
        launch_args: Sequence[str] = (),
        proxy_stats: ProxyBook | None = None,
    ) -> None:
        self._settings = settings
        self._proxy_stats = proxy_stats
        self.guard = RequestGuard(
            policy if policy is not None else settings.address_policy(), resolver
        )
        self._args = (*CHROMIUM_ARGS, *launch_args)
        self._bindings = ProxyBinding(settings)
        # one filtering proxy per upstream (None: direct), started when a context needs it
        self._proxies: dict[str | None, FilteringProxy] = {}
        self._proxy_urls: dict[str | None, str] = {}
        self._proxy_lock = asyncio.Lock()  # two contexts at once start one proxy, not two
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._launching = asyncio.Lock()
        self._contexts: OrderedDict[str, _Context] = OrderedDict()
        self._states: dict[str, Any] = {}  # storage_state of a recycled session's context
        self._slots = asyncio.Semaphore(settings.browser_pages)
        self._marker = f"--skycrawl-browser={uuid.uuid4().hex}"  # finds its process tree
        self._process: psutil.Process | None = None  # the running browser's main process
        self._memory_checked = 0.0  # monotonic time of the last measurement
        self._accepting = asyncio.Event()  # cleared while a restart waits for pages in flight
        self._accepting.set()
        self._open = 0  # pages in flight, in every context
        self.recycled = 0  # contexts reopened after browser_pages_per_context pages
        self.restarts = 0  # browsers restarted for browser_max_memory_mb

    async def render(
        self,
        fetch: FetchResult,
        *,
        session_key: str,
        options: RenderOptions,
        budget_s: float,
    ) -> Rendered:
        """Render the fetched response ``fetch`` within ``budget_s``; never raises for what
        a page does (errors come back in ``Rendered.error``)."""
        started = time.monotonic()
        async with self._slots:
            if not self._accepting.is_set():  # a restart waits for the pages in flight
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._accepting.wait(), budget_s)
            left = budget_s - (time.monotonic() - started)
            if left <= 0.05 or not self._accepting.is_set():
                return Rendered(None, f"render: no time left within {budget_s:.1f} s")
            self._open += 1  # no await since the gate: a restart cannot start under it
            try:
                done = await self._render_in_context(fetch, session_key, options, left, budget_s)
            finally:
                self._open -= 1
            await self._maybe_recycle(session_key)
        return replace(done, elapsed_ms=(time.monotonic() - started) * 1000)

    async def _render_in_context(
        self,
        fetch: FetchResult,
        session_key: str,
        options: RenderOptions,
        left: float,
        budget_s: float,
    ) -> Rendered:
        try:
            entry = await self._context(session_key)
        except BrowserUnavailable as exc:
            return Rendered(None, f"render: this engine has no browser ({exc})")
        entry.pages += 1
        entry.open += 1
        try:
            page = await entry.context.new_page()
            routes = _PageRoutes()
            try:
                return await asyncio.wait_for(
                    _render_page(page, fetch, options, left, routes), left + 1.0
                )
            except TimeoutError:
                return Rendered(None, _budget_error(options.wait_for, budget_s))
            finally:
                await _close_page(page, routes)
        except Exception as exc:  # Playwright's Error: the page, or a crashed browser
            return Rendered(None, _render_error(exc, options.wait_for, budget_s))
        finally:
            entry.open -= 1

    async def memory_bytes(self) -> int:
        """Memory of the running Chromium's process tree (0 when none runs): the sum of its
        processes' proportional set sizes (a page shared by n processes counts 1/n in each,
        so the sum is what the tree holds; resident sizes would count Chromium's shared
        libraries and memory once per process, about three times as much)."""
        root = self._process
        if root is None or self._browser is None:
            return 0
        return await asyncio.to_thread(_tree_memory, root)

    def bind_proxy(self, session_key: str, proxy: str | None) -> None:
        """The pages of ``session_key`` leave through the pool's proxy ``proxy`` (an id of
        ``core.egress_scoring.proxy_id``, ``direct``, or None for the default): the one its
        fetches use (``Fetcher.bind_proxy``)."""
        self._bindings.bind(session_key, proxy)

    async def drop_session(self, session_key: str) -> None:
        """Forget a session's context and cookies (a crawl without a sticky session ended)."""
        self._bindings.forget(session_key)
        self._states.pop(session_key, None)
        entry = self._contexts.pop(session_key, None)
        if entry is not None:
            await _close_quietly(entry.context)

    async def close(self) -> None:
        for entry in self._contexts.values():
            await _close_quietly(entry.context)
        self._contexts.clear()
        self._states.clear()
        if self._browser is not None:
            await _close_quietly(self._browser)
        if self._playwright is not None:
            await self._playwright.stop()
        self._browser = self._playwright = None
        for proxy in self._proxies.values():
            await proxy.close()
        self._proxies.clear()
        self._proxy_urls.clear()
        await self.guard.close()

    async def __aenter__(self) -> BrowserPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- contexts

    async def _launch(self) -> Browser:
        async with self._launching:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            try:
                from playwright.async_api import async_playwright
            except ImportError as exc:  # the engine image without the browser target
                raise BrowserUnavailable("playwright is not installed") from exc
            chromium = self._settings.chromium_path
            if not chromium.is_file():
                raise BrowserUnavailable(f"{chromium} is missing")
            default = await self._filtering_proxy(self._bindings.default)
            if self._playwright is None:
                self._playwright = await async_playwright().start()
            self._contexts.clear()  # a crashed browser took its contexts with it
            self._browser = await self._playwright.chromium.launch(
                executable_path=str(chromium),
                headless=True,
                args=[
                    *self._args,
                    f"--proxy-server={default}",
                    "--proxy-bypass-list=<-loopback>",  # loopback goes through it too
                    self._marker,  # a switch Chromium ignores
                ],
            )
            self._process = await asyncio.to_thread(_find_browser, self._marker)
            if self._process is None and self._settings.browser_max_memory_mb:
                log.warning("chromium's process (or psutil) not found: its memory is not bounded")
            log.info("chromium launched (%s)", self._browser.version)
            return self._browser

    async def _filtering_proxy(self, upstream: str | None) -> str:
        """The URL of the filtering proxy that forwards through ``upstream`` (started once)."""
        async with self._proxy_lock:
            url = self._proxy_urls.get(upstream)
            if url is None:
                proxy = self._proxies[upstream] = FilteringProxy(
                    self.guard,
                    connect_timeout_s=self._settings.connect_timeout_s,
                    upstream=upstream,
                    stats=self._proxy_stats,
                )
                url = self._proxy_urls[upstream] = await proxy.start()
            return url

    async def _context(self, session_key: str) -> _Context:
        upstream = self._bindings.proxy_for(session_key)
        entry = self._contexts.get(session_key)
        if entry is not None and self._browser is not None and self._browser.is_connected():
            if entry.upstream == upstream or entry.open:  # in use: the next crawl moves it
                self._contexts.move_to_end(session_key)
                return entry
            # the session was bound to another proxy: reopen it there, cookies kept
            del self._contexts[session_key]
            with contextlib.suppress(Exception):
                self._states[session_key] = await entry.context.storage_state()
            await _close_quietly(entry.context)
        browser = await self._launch()
        context = await browser.new_context(
            accept_downloads=False,
            service_workers="block",
            user_agent=self._settings.user_agent,
            storage_state=self._states.pop(session_key, None),
            proxy={"server": await self._filtering_proxy(upstream)},
        )
        await context.route("**/*", self._guarded)
        await context.route_web_socket(re.compile(".*"), self._guarded_socket)
        context.on("page", _watch_page)
        entry = self._contexts[session_key] = _Context(context, upstream)
        await self._evict(keep=session_key)
        return entry

    async def _evict(self, keep: str) -> None:
        excess = len(self._contexts) - self._settings.browser_contexts
        idle = [k for k, e in self._contexts.items() if k != keep and not e.open][: max(0, excess)]
        for key in idle:
            entry = self._contexts.pop(key)
            await _close_quietly(entry.context)

    async def _maybe_recycle(self, session_key: str) -> None:
        """After a page: past ``browser_pages_per_context`` pages, reopen the session's
        context with its cookies; past ``browser_max_memory_mb``, restart the browser once no
        page is in flight (new pages wait for it)."""
        entry = self._contexts.get(session_key)
        if entry and not entry.open and entry.pages >= self._settings.browser_pages_per_context:
            del self._contexts[session_key]
            await self._save_state(session_key, entry)
            await _close_quietly(entry.context)
            self.recycled += 1
        if self._accepting.is_set() and self._memory_due():
            used_mb = await self.memory_bytes() / 2**20
            if used_mb > self._settings.browser_max_memory_mb:
                log.info(
                    "chromium uses %.0f MiB (over %d): restarting it after the pages in flight",
                    used_mb,
                    self._settings.browser_max_memory_mb,
                )
                self._accepting.clear()
        if not self._accepting.is_set() and not self._open:
            await self._restart()

    def _memory_due(self) -> bool:
        if not self._settings.browser_max_memory_mb or self._process is None:
            return False
        now = time.monotonic()
        if now - self._memory_checked < MEMORY_CHECK_INTERVAL_S:
            return False
        self._memory_checked = now  # before the measurement: one at a time
        return True

    async def _restart(self) -> None:
        """Close the browser with every context, keeping their cookies and local storage
        for the next launch (which the next page does); then let pages in again."""
        try:
            for key, entry in list(self._contexts.items()):
                await self._save_state(key, entry)
            self._contexts.clear()
            browser, self._browser, self._process = self._browser, None, None
            if browser is not None:
                await _close_quietly(browser)
            self.restarts += 1
        finally:
            self._accepting.set()

    async def _save_state(self, session_key: str, entry: _Context) -> None:
        with contextlib.suppress(Exception):
            self._states[session_key] = await entry.context.storage_state()

    # ----------------------------------------------------------------- the guard

    async def _guarded(self, route: Route) -> None:
        url = route.request.url
        reason = await self.guard.refusal(url)
        if reason is None:
            await route.continue_()
            return
        log.info("browser refused %s: %s", url[:200], reason)
        await route.abort("blockedbyclient")

    async def _guarded_socket(self, socket: WebSocketRoute) -> None:
        reason = await self.guard.refusal(socket.url)
        if reason is None:
            socket.connect_to_server()
            return
        log.info("browser refused WebSocket %s: %s", socket.url[:200], reason)
        await socket.close(code=1008, reason="refused by the crawler's address policy")


@dataclass
class _PageRoutes:
    """The route events of one page: how many are being handled, when the last one came, and
    whether the page is done (its DOM taken, or its time up): then every request is aborted."""

    handling: int = 0
    last: float = field(default_factory=time.monotonic)
    done: bool = False

    async def quiet(self, *, for_s: float = 0.1, at_most_s: float = 1.5) -> None:
        """Until no route event has been handled or come in for ``for_s`` (bounded)."""
        deadline = time.monotonic() + at_most_s
        while time.monotonic() < deadline:
            if not self.handling and time.monotonic() - self.last >= for_s:
                return
            await asyncio.sleep(0.05)


async def _render_page(
    page: Page,
    fetch: FetchResult,
    options: RenderOptions,
    budget_s: float,
    routes: _PageRoutes | None = None,
) -> Rendered:
    """Serve ``fetch`` as the page's document, run it, wait, scroll, and return its DOM (and
    its screenshot when the crawl asks for one)."""
    deadline = time.monotonic() + budget_s
    served = False
    wait_for, block, overrides = options.wait_for, options.block, dict(options.headers)
    routes = routes or _PageRoutes()

    async def per_page(route: Route) -> None:
        routes.handling += 1
        routes.last = time.monotonic()
        try:
            await _route_one(route)
        finally:
            routes.handling -= 1
            routes.last = time.monotonic()

    async def _route_one(route: Route) -> None:
        nonlocal served
        request = route.request
        if routes.done:  # once the DOM is taken, nothing the page asks for goes out any more
            await route.abort("blockedbyclient")
        elif not served and request.is_navigation_request() and request.frame == page.main_frame:
            served = True
            content_type = fetch.headers.get("content-type") or "text/html"
            await route.fulfill(
                status=fetch.status or 200, headers={"content-type": content_type}, body=fetch.body
            )
        elif request.resource_type in block:
            await route.abort("blockedbyclient")
        elif overrides:
            await route.fallback(headers={**request.headers, **overrides})  # to the guard
        else:
            await route.fallback()  # to the context's SSRF guard

    def ms_left() -> float:
        return max(1.0, (deadline - time.monotonic()) * 1000)

    await page.route("**/*", per_page)
    await page.goto(fetch.final_url, wait_until="load", timeout=ms_left())
    if wait_for == NETWORK_IDLE:
        await page.wait_for_load_state("networkidle", timeout=ms_left())
    elif wait_for:
        await page.wait_for_selector(f"css={wait_for}", state="attached", timeout=ms_left())
    scrolls = 0
    if options.scroll is not None:
        # the DOM and the screenshot keep the last of the budget
        reserve = min(SCROLL_RESERVE_S, budget_s / 4)
        scrolls = await _scroll(page, options.scroll, deadline - reserve)
    try:
        html = (await page.content()).encode("utf-8")
        shot = options.screenshot
        if shot is None:
            return Rendered(html, scrolls=scrolls)
        image = await page.screenshot(full_page=shot.full_page, type=shot.format, timeout=ms_left())
        return Rendered(html, screenshot=image, scrolls=scrolls)
    finally:
        routes.done = True


async def _close_page(page: Page, routes: _PageRoutes) -> None:
    """Close a rendered page so that none of its requests leaves afterwards. A request the
    page made just before is paused, its route event on its way to the handler; closing the
    page (or its context) releases paused requests to the network, blocked ones included
    (seen by ``bench/browser_bench.py``: a page's images reaching the server as its context
    closed). So from now on the handler aborts everything, the page leaves its document for
    ``about:blank`` (which ends that document's loads), and it closes only once the route
    events still on their way have come and been aborted (a short quiet, bounded)."""
    routes.done = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(page.goto("about:blank"), 2.0)
    await routes.quiet()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(page.close(), 5.0)


#: The height of the document, and a scroll to its bottom (which answers the height).
_HEIGHT_JS = "() => (document.scrollingElement || document.body).scrollHeight"
_TO_BOTTOM_JS = """() => {
  const root = document.scrollingElement || document.body;
  window.scrollTo(0, root.scrollHeight);
  return root.scrollHeight;
}"""
SCROLL_POLL_S = 0.05
#: Of a page's budget, what scrolling leaves for its DOM and screenshot (at most a quarter).
SCROLL_RESERVE_S = 1.0


async def _scroll(page: Page, spec: ScrollSpec, stop_at: float) -> int:
    """Scroll ``page`` to its bottom until it stops growing, ``spec.max_scrolls`` times at
    most, never past ``stop_at`` (monotonic); return how many times it scrolled."""
    in_flight: set[Request] = set()
    activity = [time.monotonic()]  # when a request last started or ended

    def started(request: Request) -> None:
        in_flight.add(request)
        activity[0] = time.monotonic()

    def ended(request: Request) -> None:
        in_flight.discard(request)
        activity[0] = time.monotonic()

    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    quiet_s = spec.delay_ms / 1000
    scrolls = 0
    try:
        height = int(await page.evaluate(_HEIGHT_JS))
        while scrolls < spec.max_scrolls and time.monotonic() < stop_at:
            await page.evaluate(_TO_BOTTOM_JS)
            scrolls += 1
            activity[0] = time.monotonic()
            while True:  # until it grew, or was quiet for ``quiet_s`` without growing
                await asyncio.sleep(SCROLL_POLL_S)
                grown = int(await page.evaluate(_HEIGHT_JS))
                now = time.monotonic()
                if grown > height or now >= stop_at:
                    break
                if not in_flight and now - activity[0] >= quiet_s:
                    break
            if grown <= height:
                break
            height = grown
    finally:
        page.remove_listener("request", started)
        page.remove_listener("requestfinished", ended)
        page.remove_listener("requestfailed", ended)
    return scrolls


def _watch_page(page: Page) -> None:
    """Every page of a context: dialogs dismissed, popups closed."""
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.dismiss()))
    page.on("popup", lambda popup: asyncio.ensure_future(popup.close()))


def _budget_error(wait_for: str | None, budget_s: float) -> str:
    what = wait_for or "load"
    return f"render: {what} not reached within {budget_s:.1f} s"


def _render_error(exc: Exception, wait_for: str | None, budget_s: float) -> str:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    if isinstance(exc, PlaywrightTimeout):
        return _budget_error(wait_for, budget_s)
    message = str(exc).strip().splitlines()
    return f"render failed: {message[0][:200] if message else type(exc).__name__}"


#: The browser's memory is measured after a page at most this often (a measurement reads
#: each process's ``/proc/PID/smaps_rollup``: a few milliseconds each).
MEMORY_CHECK_INTERVAL_S = 2.0


def _find_browser(marker: str) -> psutil.Process | None:
    """Among this process's descendants, the Chromium launched with ``marker`` (its main
    process: its helpers are started with ``--type=...``); None without psutil."""
    try:
        import psutil
    except ImportError:  # the [browser] extra brings it; Playwright alone does not
        return None
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmdline = process.cmdline()
            if marker in cmdline and not any(a.startswith("--type=") for a in cmdline):
                return process
    return None


def _tree_memory(root: psutil.Process) -> int:
    import psutil

    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:  # the browser is gone
        return 0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # a helper that just exited
            info = process.memory_full_info()
            total += getattr(info, "pss", info.rss)  # PSS is Linux's; RSS elsewhere
    return total


async def _close_quietly(closable: BrowserContext | Browser) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closable.close(), 10.0)
