"""``skycrawl usage``: metered usage and cost per tenant and period (``GET /v1/usage``).

::

    skycrawl usage                                   # this UTC month, per day, every tenant
    skycrawl usage --tenant t_… --granularity hour --from 2030-01-01 --to 2030-01-02
    skycrawl usage --json                            # the API's answer as is

A bad date or granularity is one line and exit code 2; ``--from`` at or after ``--to`` too.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Column, Table

from core.errors import SkycrawlError
from functions.local.cli_values import iso_moment
from functions.local.session import Session

#: How much of a period's ISO start names it: 2030-01-01T05 (hour), 2030-01-01, 2030-01.
_PERIOD_LABEL = {"hour": 13, "day": 10, "month": 7}
COLUMNS = ("tenant", "period", "cost", "seconds", "billed", "cold", "crawls", "pages")


class UsageInputError(SkycrawlError):
    """A combination of options that cannot be a range (exit 2)."""


def add_usage_command(sub: Any) -> None:
    usage = sub.add_parser("usage", help="metered usage and cost per tenant and period")
    usage.add_argument("--from", dest="start", type=iso_moment, help="ISO 8601 (default: month)")
    usage.add_argument(
        "--to", dest="end", type=iso_moment, help="ISO 8601, exclusive (default: now)"
    )
    usage.add_argument("--granularity", choices=["hour", "day", "month"], default="day")
    usage.add_argument("--tenant", help="only this tenant (default: every tenant)")
    usage.add_argument("--json", action="store_true", help="print the API's JSON answer")


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text.upper())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def usage_query(args: argparse.Namespace) -> dict[str, str]:
    """The query of ``GET /v1/usage``; ``UsageInputError`` for an empty or backwards range."""
    if args.start and args.end and _utc(args.start) >= _utc(args.end):
        raise UsageInputError(f"--from {args.start} is not before --to {args.end}")
    values = {
        "from": args.start,
        "to": args.end,
        "granularity": args.granularity,
        "tenant": args.tenant,
    }
    return {k: v for k, v in values.items() if v}


def _row(tenant_id: str, period: str, usage: dict[str, Any]) -> list[str]:
    return [
        tenant_id,
        period,
        f"{usage['cost']:.4f}",
        f"{usage['container_seconds']:.0f}",
        f"{usage['billed_seconds']:.0f}",
        str(usage["cold_starts"]),
        str(usage["crawls"]),
        str(usage["pages"]),
    ]


async def show_usage(session: Session, args: argparse.Namespace, out: Console) -> int:
    query = usage_query(args)
    answer = await session.api(session.operator_key).get_usage(
        start=query.get("from"),
        end=query.get("to"),
        granularity=query.get("granularity"),
        tenant=query.get("tenant"),
    )
    report = answer.model_dump(mode="json")
    if args.json:
        out.print_json(json.dumps(report))
        return 0
    width = max((len(t["tenant_id"]) for t in report["tenants"]), default=6)
    shown = _PERIOD_LABEL[report["granularity"]]
    table = Table(
        Column(COLUMNS[0], no_wrap=True, min_width=width),
        Column(COLUMNS[1], no_wrap=True, min_width=max(shown, len("running now"))),
        *COLUMNS[2:],
    )
    for tenant in report["tenants"]:
        for period in tenant["periods"]:
            table.add_row(*_row(tenant["tenant_id"], period["start"][:shown], period["usage"]))
        table.add_row(*_row(tenant["tenant_id"], "total", tenant["total"]), style="bold")
        if tenant["live"]["container_seconds"]:
            table.add_row(*_row(tenant["tenant_id"], "running now", tenant["live"]))
    out.print(table)
    return 0
