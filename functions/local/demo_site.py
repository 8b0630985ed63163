"""The bundled demo site: a small, deterministic bookshop served on 127.0.0.1.

``skycrawl demo-site`` serves it in the foreground; ``skycrawl demo`` serves it in the
background and crawls it on the embedded stack. It has 58 pages, a robots.txt that
disallows ``/private/`` (so robots handling is visible in the results), one redirect and one
broken link.
"""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass

from aiohttp import web

CATEGORIES = ("fiction", "science", "history", "poetry", "travel")
BOOKS_PER_CATEGORY = 10


def _page(title: str, body: str, links: list[tuple[str, str]]) -> bytes:
    items = "".join(f'<li><a href="{href}">{html.escape(text)}</a></li>' for href, text in links)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1><p>{body}</p><ul>{items}</ul></body></html>"
    ).encode()


def build_pages() -> dict[str, bytes]:
    """Path → HTML body of every page on the site."""
    pages: dict[str, bytes] = {}
    home_links = [(f"/{c}/", c.title()) for c in CATEGORIES]
    home_links += [("/about", "About"), ("/old-about", "About (old link)"), ("/missing", "Gone")]
    home_links += [("/private/stock", "Stock (robots-disallowed)")]
    pages["/"] = _page("Skycrawl demo bookshop", "Books in five categories.", home_links)
    pages["/about"] = _page("About", "A demo site bundled with skycrawl.", [("/", "Home")])
    pages["/private/stock"] = _page("Stock", "Robots.txt asks crawlers not to come here.", [])
    for c_index, category in enumerate(CATEGORIES):
        books = [f"/{category}/book-{i}" for i in range(BOOKS_PER_CATEGORY)]
        pages[f"/{category}/"] = _page(
            category.title(),
            f"{BOOKS_PER_CATEGORY} books.",
            [(b, f"Book {i}") for i, b in enumerate(books)] + [("/", "Home")],
        )
        for i, book in enumerate(books):
            neighbour = CATEGORIES[(c_index + 1) % len(CATEGORIES)]
            text = f"Book {i} of {category}. " + "Lorem ipsum dolor sit amet. " * 40
            links = [(f"/{category}/", category.title()), (f"/{neighbour}/book-{i}", "Similar")]
            pages[book] = _page(f"{category.title()} book {i}", text, links)
    return pages


ROBOTS = b"User-agent: *\nDisallow: /private/\n"


def make_app() -> web.Application:
    pages = build_pages()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/robots.txt":
            return web.Response(body=ROBOTS, content_type="text/plain")
        if path == "/old-about":
            raise web.HTTPMovedPermanently("/about")
        body = pages.get(path)
        if body is None:
            raise web.HTTPNotFound(text="not found")
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    return app


@dataclass
class RunningSite:
    url: str
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_demo_site(host: str = "127.0.0.1", port: int = 0) -> RunningSite:
    """Serve the demo site; ``port=0`` picks a free port. Returns its base URL."""
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp exposes no public accessor for the bound port
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return RunningSite(url=f"http://{host}:{bound}/", runner=runner)


async def serve_forever(host: str, port: int) -> None:
    site = await start_demo_site(host, port)
    print(f"demo site on {site.url} (Ctrl-C to stop)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await site.close()


#: pages a polite crawl of the demo site fetches successfully (all but robots-disallowed)
REACHABLE_PAGES = len(build_pages()) - 1
