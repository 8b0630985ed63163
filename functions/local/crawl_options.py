"""``skycrawl crawl`` options that map one to one onto ``CrawlSpec`` fields (CLI parity with
the API): ``--include/--exclude`` patterns, ``--no-robots``, ``--header``, ``--user-agent``.

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
