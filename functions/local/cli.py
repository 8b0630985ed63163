"""``skycrawl``: the command line of the embedded local stack.

Every command prints one line and exits non-zero on a user error — never a traceback. One
control plane per data directory: a command uses a running ``skycrawl up``, else embeds a
stack and holds the data directory's lock; when another command holds it, it prints
``skycrawl: data dir .skycrawl is in use by pid 1234 (skycrawl crawl, since 07:30:12)`` and
exits 2 (``status`` and ``tenants list`` show a read-only view instead).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from rich.console import Console
from rich.table import Column, Table

from core.errors import SkycrawlError
from core.output import parse_format_args, read_extract_file
from core.redaction import install_log_redaction
from core.settings import LocalSettings
from functions.local.cli_values import (
    cidr_range,
    port_number,
    positive_number,
    settings_error_line,
    whole_number,
)
from functions.local.client import ApiError, plain
from functions.local.crawl_command import (
    EXIT_INTERRUPTED,
    nothing_fetched_line,
    run_crawl,
)
from functions.local.crawl_options import (
    add_render_options,
    add_request_options,
    render_options,
    request_options,
)
from functions.local.export_command import add_export_command, export_crawl
from functions.local.fleet_status import FLEET_COLUMNS, fleet_cells
from functions.local.progress import containers_of
from functions.local.session import DataDirBusy, open_session
from functions.local.usage_command import (
    UsageInputError,
    add_usage_command,
    show_usage,
    usage_query,
)

EXIT_ERROR, EXIT_USAGE = 1, 2
UP_PROVIDERS = ("local", "selfhosted")  # what `skycrawl up` can run on this machine
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"skycrawl: {message} (see 'skycrawl --help')\n")


class UsageError(SkycrawlError):
    """Bad input found by the CLI itself: one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="skycrawl", description="Multi-tenant, scale-to-zero crawling.")
    parser.add_argument("--data-dir", type=Path, help="local state (default .skycrawl)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("up", help="run API, conductor and timers on 127.0.0.1")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=port_number, default=8787)
    up.add_argument(
        "--provider",
        choices=UP_PROVIDERS,
        help="local (SQLite, the default) or selfhosted (PostgreSQL: SKYCRAWL_SELFHOSTED_*); "
        "default: SKYCRAWL_PROVIDER",
    )
    _add_stack_options(up)

    crawl = sub.add_parser("crawl", help="crawl URLs and write pages.jsonl + a WARC")
    crawl.add_argument("urls", nargs="+", metavar="URL", help="start URLs (http or https)")
    _add_crawl_options(crawl)

    demo = sub.add_parser("demo", help="serve the bundled demo site and crawl it")
    _add_crawl_options(demo)

    site = sub.add_parser("demo-site", help="serve the bundled demo site")
    site.add_argument("--host", default="127.0.0.1")
    site.add_argument("--port", type=int, default=8788)

    tenants = sub.add_parser("tenants", help="create, list or delete tenants")
    tsub = tenants.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = tsub.add_parser("create")
    create.add_argument("name")
    create.add_argument("--max-containers", type=int)
    create.add_argument("--parallel", type=int, help="parallel crawls per container")
    tsub.add_parser("list")
    delete = tsub.add_parser("delete")
    delete.add_argument("tenant_id")

    sub.add_parser("status", help="show the stack, its tenants and containers")
    add_export_command(sub)
    add_usage_command(sub)
    from simulator.command import add_parser as add_simulate

    add_simulate(sub)
    return parser


def _add_stack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        type=cidr_range,
        metavar="CIDR",
        help="let crawlers fetch this non-public range (repeatable; default: none)",
    )
    p.add_argument(
        "--idle-ttl",
        type=positive_number,
        metavar="S",
        help="seconds before an idle container stops (default: 3 for a command's own "
        "stack, 60 for 'up')",
    )


def _add_crawl_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-pages", type=int, default=100, help="stop after this many pages (default: 100)"
    )
    p.add_argument(
        "--max-depth",
        type=int,
        default=3,
        help="follow links this many hops from a seed (default: 3)",
    )
    p.add_argument(
        "--scope",
        choices=["same-host", "same-domain", "any"],
        default="same-host",
        help="which links to follow: the seed's host, its registrable domain, or any "
        "(default: same-host)",
    )
    p.add_argument(
        "--session", help="sticky session key: same container, same egress (default: none)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("skycrawl-out"),
        help="output directory (default: skycrawl-out)",
    )
    p.add_argument(
        "--parallel",
        type=whole_number,
        default=1,
        help="submit the crawl N times at once (default: 1)",
    )
    add_request_options(p)
    add_render_options(p)
    p.add_argument(
        "--no-sitemaps",
        action="store_true",
        help="do not queue the URLs of the seeds' sitemaps (default: use them)",
    )
    p.add_argument(
        "--page-timeout",
        type=float,
        metavar="S",
        help="time budget of one page, retries included (1-300 s; default 30)",
    )
    _add_output_options(p)
    _add_stack_options(p)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """``--format``, ``--extract FILE``, ``--handler`` (README "What a crawl returns")."""
    p.add_argument(
        "--format",
        action="append",
        default=[],
        metavar="F[,F...]",
        help="per-page formats: markdown, text, html, raw_html, links, metadata, headers, or "
        "none (default metadata,links,markdown)",
    )
    p.add_argument(
        "--extract",
        metavar="FILE",
        help="JSON file of declarative extraction rules; items go to items.jsonl "
        "(default: no extraction)",
    )
    p.add_argument(
        "--handler",
        metavar="NAME",
        help="installed PageHandler to run on each page, allowed on an embedded stack "
        "(default: none)",
    )


def _output_body(args: argparse.Namespace) -> dict[str, Any]:
    try:
        body: dict[str, Any] = {}
        if args.format:
            body["formats"] = parse_format_args(args.format)
        if args.extract:
            body["extract"] = read_extract_file(args.extract)
    except ValueError as exc:
        _usage(str(exc))
    if args.handler:
        body["handler"] = args.handler
    return body


def _usage(message: str) -> NoReturn:
    err.print(f"skycrawl: {message}", markup=False, highlight=False)
    raise SystemExit(EXIT_USAGE)


def _overrides(args: argparse.Namespace, *, embedded_defaults: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if embedded_defaults:  # an ephemeral stack should scale to zero while you watch
        values.update(
            idle_ttl_s=3.0, timer_period_s=1.0, heartbeat_interval_s=1.0, checkpoint_interval_s=2.0
        )
        values["idle_policy"] = "fixed"
    if getattr(args, "allow_cidr", None):
        values["allow_cidrs"] = args.allow_cidr
    if getattr(args, "idle_ttl", None):
        values["idle_ttl_s"] = args.idle_ttl
        values["idle_policy"] = "fixed"  # the keep-alive asked for, not a learned one
    if getattr(args, "handler", None):  # the one running an embedded stack is its operator
        values["handlers"] = args.handler
    return values


def _check_out_dir(out_dir: Path) -> None:
    """``UsageError`` unless files can be written in ``out_dir`` (made if missing)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"--out {out_dir}: cannot write there ({reason})") from None


def _local(args: argparse.Namespace) -> LocalSettings:
    return LocalSettings(data_dir=args.data_dir) if args.data_dir else LocalSettings()


async def _crawl(
    args: argparse.Namespace, urls: list[str], *, command: str = "skycrawl crawl"
) -> int:
    _check_out_dir(args.out)
    output = _output_body(args)  # a bad --format or --extract file: before anything starts
    async with open_session(
        _local(args), _overrides(args, embedded_defaults=True), command=command
    ) as s:
        if s.server_url:
            err.print(f"using the running server on {s.server_url}")
            if command == "skycrawl demo":
                err.print("note: the demo site is on 127.0.0.1: the server needs that allowed")
            elif args.allow_cidr:
                err.print("note: --allow-cidr applies to embedded stacks; the server's own applies")
        body: dict[str, Any] = {
            "seeds": urls,
            "max_pages": args.max_pages,
            "max_depth": args.max_depth,
            "scope": args.scope,
        }
        if args.session:
            body["session"] = args.session
        if args.no_sitemaps:
            body["use_sitemaps"] = False
        if args.page_timeout is not None:
            body["page_timeout_s"] = args.page_timeout
        body.update(output)
        body.update(request_options(args))
        body.update(render_options(args))
        code, finals, written = await run_crawl(s, body, args.parallel, args.out, err)
    _summary(finals, args.out, written)
    if code == EXIT_INTERRUPTED:
        err.print(f"skycrawl: interrupted; cancelled, what was fetched is in {args.out}/")
        return code
    line = nothing_fetched_line(finals, args.out)
    if line is not None:
        err.print(f"skycrawl: {line}", markup=False, highlight=False)
    return code


def _summary(finals: list[dict[str, Any]], out_dir: Path, files: list[str]) -> None:
    for final in finals:
        counts = final.get("counts", {})
        out.print(
            f"crawl {final['id']} {final['status']}: {counts.get('fetched', 0)} pages fetched, "
            f"{counts.get('failed', 0)} failed, {counts.get('bytes', 0)} bytes"
            + (f" ({final['reason']})" if final.get("reason") else "")
        )
    if finals:
        out.print(f"results in {out_dir}/ ({', '.join(files)})", highlight=False)


async def _demo(args: argparse.Namespace) -> int:
    from functions.local.demo_site import start_demo_site

    site = await start_demo_site()
    err.print(f"demo site on {site.url}")
    if "127.0.0.0/8" not in args.allow_cidr:
        args.allow_cidr.append("127.0.0.0/8")
    try:
        return await _crawl(args, [site.url], command="skycrawl demo")
    finally:
        await site.close()


async def _tenants(args: argparse.Namespace) -> int:
    command = f"skycrawl tenants {args.action}"
    if args.action == "list" and _no_data_dir(args):
        out.print(f"tenants: 0 (no data dir {_local(args).data_dir} yet)", highlight=False)
        return 0
    async with open_session(
        _local(args), {}, command=command, read_only=args.action == "list"
    ) as s:
        op = s.operator_key
        if args.action == "create":
            quotas = {
                k: v
                for k, v in (
                    ("max_containers", args.max_containers),
                    ("parallel_per_container", args.parallel),
                )
                if v
            }
            created = plain(await s.api(op).create_tenant({"name": args.name, "quotas": quotas}))
            out.print(f"tenant {created['id']} created; API key (shown once):")
            out.print(created["api_key"], markup=False, highlight=False)
            if s.server_url and created.get("resources", {}).get("web_app"):
                out.print(f"web app: {created['resources']['web_app']}", highlight=False)
        elif args.action == "list":
            items = plain(await s.api(op).list_tenants())["items"]
            table = Table(
                Column("id", no_wrap=True, min_width=max((len(t["id"]) for t in items), default=2)),
                Column("name", overflow="fold"),
                "state",
                "max containers",
                Column("created", overflow="fold"),
            )
            for t in items:
                table.add_row(
                    t["id"],
                    t["name"],
                    t["state"],
                    str(t["quotas"]["max_containers"]),
                    t["created_at"],
                )
            out.print(table)
        else:
            await s.api(op).delete_tenant(args.tenant_id)
            out.print(f"tenant {args.tenant_id} deleted")
    return 0


async def _usage_report(args: argparse.Namespace) -> int:
    usage_query(args)  # a backwards range is refused before a stack is opened
    async with open_session(_local(args), {}, command="skycrawl usage", read_only=True) as s:
        return await show_usage(s, args, out)


async def _export(args: argparse.Namespace) -> int:
    _check_out_dir(args.out)
    async with open_session(_local(args), {}, command="skycrawl export") as s:
        files = await export_crawl(s, args.crawl_id, args.out)
    out.print(f"crawl {args.crawl_id}: results in {args.out}/ ({', '.join(files)})")
    return 0


def _no_data_dir(args: argparse.Namespace) -> bool:
    """Nothing ever ran on this data directory (a read-only command must not create it)."""
    return not _local(args).data_dir.exists()


async def _status(args: argparse.Namespace) -> int:
    if _no_data_dir(args):
        data_dir = _local(args).data_dir
        out.print(f"server: not running; no data dir {data_dir} (nothing has run here yet)")
        out.print("tenants: 0")
        return 0
    async with open_session(_local(args), {}, command="skycrawl status", read_only=True) as s:
        if s.busy is not None:
            out.print(f"server: not running; {s.busy} (read-only view)")
        else:
            out.print(f"server: {s.server_url or 'not running (embedded for this command)'}")
        tenants = plain(await s.api(s.operator_key).list_tenants())["items"]
        out.print(f"tenants: {len(tenants)}")
        table = Table("container", "tenant", "state", "work", "egress", *FLEET_COLUMNS)
        for t in tenants:
            for c in await containers_of(s, t["id"]):
                table.add_row(
                    c["id"],
                    c["tenant_id"],
                    c["state"],
                    str(len(c["in_flight"])),
                    c["egress"]["name"],
                    *fleet_cells(c),
                )
        out.print(table)
    return 0


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "up":
        from functions.local.server import serve

        provider = args.provider or os.environ.get("SKYCRAWL_PROVIDER") or "local"
        if provider not in UP_PROVIDERS:
            err.print(
                f"skycrawl: up runs the {' or '.join(UP_PROVIDERS)} provider, not {provider!r}"
            )
            return EXIT_USAGE
        overrides = _overrides(args, embedded_defaults=False)
        await serve(_local(args), overrides, args.host, args.port, provider=provider)
        return 0
    if args.command == "crawl":
        return await _crawl(args, list(args.urls))
    if args.command == "demo":
        return await _demo(args)
    if args.command == "demo-site":
        from functions.local.demo_site import serve_forever

        await serve_forever(args.host, args.port)
        return 0
    if args.command == "tenants":
        return await _tenants(args)
    if args.command == "export":
        return await _export(args)
    if args.command == "usage":
        return await _usage_report(args)
    if args.command == "simulate":
        from simulator.command import run as simulate

        return await simulate(args, out, err)
    return await _status(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()  # no URL credentials in a log line
    try:
        return asyncio.run(_dispatch(args))
    except KeyboardInterrupt:
        err.print("skycrawl: interrupted")
        return EXIT_INTERRUPTED
    except DataDirBusy as exc:
        err.print(f"skycrawl: {exc}", markup=False, highlight=False)
        return EXIT_USAGE
    except (UsageError, UsageInputError) as exc:
        err.print(f"skycrawl: {exc}", markup=False, highlight=False)
        return EXIT_USAGE
    except ValidationError as exc:
        err.print(f"skycrawl: {settings_error_line(exc)}", markup=False, highlight=False)
        return EXIT_USAGE
    except ApiError as exc:
        err.print(f"skycrawl: {_problem_line(exc)}", markup=False, highlight=False)
        return EXIT_USAGE if 400 <= exc.status < 500 else EXIT_ERROR
    except (SkycrawlError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err.print(f"skycrawl: {message}", markup=False, highlight=False)
        return EXIT_ERROR


def _problem_line(exc: ApiError) -> str:
    errors = exc.errors
    if errors and isinstance(errors[0], dict):
        first = errors[0]
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return f"{exc.detail} — {where}: {first.get('msg', '')}".rstrip(": ")
    return exc.detail


if __name__ == "__main__":
    sys.exit(main())
