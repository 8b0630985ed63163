"""``skycrawl crawl`` options that map one to one onto ``CrawlSpec`` fields (CLI parity with
the API): ``--include/--exclude`` patterns, ``--no-robots``, ``--header``, ``--user-agent``, and
the browser's ``--render``, ``--wait-for``, ``--scroll``, ``--scroll-delay``.

Values are checked while the arguments are parsed where the CLI can (a header must be
``Name: value``); the rest (an RE2 pattern, an allowed header name) is judged by the API, whose
422 names the field, so the CLI and the API never disagree.
"""

from __future__ import annotations

import argparse
from typing import Any


def header_line(text: str) -> tuple[str, str]:
    """``Name: value`` → (name, value)."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        raise argparse.ArgumentTypeError(f"must be 'Name: value', not {text!r}")
    return name.strip(), value.strip()


def add_request_options(p: argparse.ArgumentParser) -> None:
    """The crawl request's patterns, robots and header options."""
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="REGEX",
        help="follow only URLs matching this RE2 pattern (repeatable; default: every URL in scope)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="REGEX",
        help="never fetch URLs matching this RE2 pattern; wins over --include "
        "(repeatable; default: none)",
    )
    p.add_argument(
        "--no-robots",
        action="store_true",
        help="ignore robots.txt (default: obey it, RFC 9309)",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        type=header_line,
        metavar="'NAME: VALUE'",
        help="send this header with every request: Accept, Accept-Language, Authorization, "
        "Cache-Control, Cookie, Referer or User-Agent (repeatable; default: none)",
    )
    p.add_argument(
        "--user-agent",
        metavar="UA",
        help="the User-Agent to send (default: the crawler's, SKYCRAWL_USER_AGENT)",
    )


def request_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``CrawlSpec`` fields these options set (only those given)."""
    body: dict[str, Any] = {}
    if args.include:
        body["include"] = list(args.include)
    if args.exclude:
        body["exclude"] = list(args.exclude)
    if args.no_robots:
        body["respect_robots"] = False
    headers = dict(args.header)
    if args.user_agent:
        headers = {k: v for k, v in headers.items() if k.lower() != "user-agent"}
        headers["User-Agent"] = args.user_agent
    if headers:
        body["headers"] = headers
    return body


def add_render_options(p: argparse.ArgumentParser) -> None:
    """Rendering in Chromium (README "JavaScript sites")."""
    p.add_argument(
        "--render",
        choices=["never", "always", "auto"],
        help="render pages in Chromium: always, or auto for app shells (default: never)",
    )
    p.add_argument(
        "--wait-for",
        metavar="SELECTOR",
        help="when rendering, wait after load for this CSS selector, or networkidle "
        "(default: load only)",
    )
    p.add_argument(
        "--scroll",
        type=int,
        metavar="N",
        help="scroll rendered pages to their bottom until they stop growing, N times at most "
        "(1-50; default: no scrolling)",
    )
    p.add_argument(
        "--scroll-delay",
        type=int,
        metavar="MS",
        help="with --scroll: a page has stopped growing after this long without growth or "
        "requests (100-10000 ms; default: 1000)",
    )


def render_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``CrawlSpec`` fields the render options set (only those given)."""
    body: dict[str, Any] = {}
    if args.render:
        body["render"] = args.render
    if args.wait_for:
        body["wait_for"] = args.wait_for
    scroll: dict[str, int] = {}
    if args.scroll is not None:
        scroll["max_scrolls"] = args.scroll
    if args.scroll_delay is not None:
        scroll["delay_ms"] = args.scroll_delay
    if scroll:
        body["scroll"] = scroll
    return body
