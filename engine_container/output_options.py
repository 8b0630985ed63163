"""``--format``, ``--extract FILE`` and ``--handler`` of ``python -m engine_container --standalone``
(the same meaning as ``formats``, ``extract`` and ``handler`` of a crawl request)."""

from __future__ import annotations

import argparse
from typing import Any

from core.output import DEFAULT_FORMATS, parse_format_args, read_extract_file


def add_output_options(p: argparse.ArgumentParser) -> None:
    defaults = ",".join(f.value for f in DEFAULT_FORMATS)
    p.add_argument(
        "--format",
        action="append",
        default=[],
        metavar="F[,F...]",
        help=f"per-page formats: markdown, text, html, raw_html, links, metadata, headers, or "
        f"none (default {defaults})",
    )
    p.add_argument(
        "--extract", metavar="FILE", help="JSON file of declarative extraction rules (items.jsonl)"
    )
    p.add_argument("--handler", metavar="NAME", help="installed PageHandler to run on each page")


def output_fields(args: argparse.Namespace) -> dict[str, Any]:
    """``CrawlSpec`` fields from the options given (ValueError for a bad one)."""
    fields: dict[str, Any] = {}
    if args.format:
        fields["formats"] = parse_format_args(args.format)
    if args.extract:
        fields["extract"] = read_extract_file(args.extract)
    if args.handler:
        fields["handler"] = args.handler
    return fields
