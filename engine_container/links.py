"""Canonical URLs and link resolution (``normalize_url``, ``LinkResolver``).

Apart from ``engine_container.frontier`` so that the analysis workers, which resolve every
page's links, import neither the frontier nor the crawl models (``core.models``: ~4 MB of
each worker's memory).
"""

from __future__ import annotations

import re

from yarl import URL

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_SIMPLE = re.compile(r"[A-Za-z0-9\-._~/!$&'()*+,;=:@?]*")


def _canonical(url: URL) -> str | None:
    if url.scheme not in ("http", "https") or not url.raw_host:
        return None
    text = str(url.with_fragment(None))
    rest = text[text.index("//") + 2 :]
    slash, query = rest.find("/"), rest.find("?")
    if slash < 0 or 0 <= query < slash:  # yarl prints an empty path as nothing
        text = str(url.with_path("/", keep_query=True).with_fragment(None))
    return text


def normalize_url(url: str) -> str | None:
    """The canonical form of an absolute http(s) URL, or None if it is not one."""
    try:
        return _canonical(URL(url.strip()))
    except (ValueError, TypeError):
        return None


class LinkResolver:
    """Resolves the links of one page against its base URL into canonical URLs."""

    def __init__(self, base: str) -> None:
        self._base = URL(base)
        origin = str(self._base.origin())
        self._origin = origin
        self.host = self._base.raw_host or ""
        self.prefix = origin + "/"  # canonical URLs on the base's origin start with this
        path = self._base.raw_path or "/"
        self._dir = origin + path[: path.rfind("/") + 1]
        self._page = origin + path

    def resolve(self, href: str) -> str | None:
        href = href.strip()
        if not href or href[0] == "#":
            return None
        scheme = _SCHEME.match(href)
        if scheme is not None and scheme.group(1).lower() not in ("http", "https"):
            return None
        if scheme is None and _SIMPLE.fullmatch(href) and _plain_path(href):
            if href[0] == "/":
                if href[:2] == "//":
                    return self._slow(href)
                text = self._origin + href
            elif href[0] == "?":
                text = self._page + href
            else:
                text = self._dir + href
            return text[:-1] if text[-1] == "?" and text.count("?") == 1 else text
        return self._slow(href)

    def _slow(self, href: str) -> str | None:
        try:
            return _canonical(self._base.join(URL(href)))
        except (ValueError, TypeError):
            return None


def _plain_path(href: str) -> bool:
    """No dot segments, and no ':' in a first segment (which parsers read differently)."""
    path = href.split("?", 1)[0]
    return "/." not in "/" + path and ":" not in path.split("/", 1)[0]
