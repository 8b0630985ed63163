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
import sys
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from core.errors import SkycrawlError
from core.settings import LocalSettings
from functions.local.client import ApiError, json_or_raise
from functions.local.crawl_command import EXIT_INTERRUPTED, nothing_fetched_line, run_crawl
from functions.local.progress import containers_of
from functions.local.session import DataDirBusy, Session, open_session

EXIT_ERROR, EXIT_USAGE = 1, 2
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"skycrawl: {message} (see 'skycrawl --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="skycrawl", description="Multi-tenant, scale-to-zero crawling.")
    parser.add_argument("--data-dir", type=Path, help="local state (default .skycrawl)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("up", help="run API, conductor and timers on 127.0.0.1")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8787)
    _add_stack_options(up)

    crawl = sub.add_parser("crawl", help="crawl URLs and write pages.jsonl + a WARC")
    crawl.add_argument("urls", nargs="+", metavar="URL")
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
    return parser


def _add_stack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="let crawlers fetch this non-public range (repeatable)",
    )
    p.add_argument("--idle-ttl", type=float, help="seconds before an idle container stops")


def _add_crawl_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pages", type=int, default=100)
    p.add_argument("--max-depth", type=int, default=3)
    p.add_argument("--scope", choices=["same-host", "same-domain", "any"], default="same-host")
    p.add_argument("--session", help="sticky session key (same container, same egress)")
    p.add_argument("--out", type=Path, default=Path("skycrawl-out"), help="output directory")
    p.add_argument("--parallel", type=int, default=1, help="submit the crawl N times at once")
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
    _add_stack_options(p)


def _overrides(args: argparse.Namespace, *, embedded_defaults: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if embedded_defaults:  # an ephemeral stack should scale to zero while you watch
        values.update(
            idle_ttl_s=3.0, timer_period_s=1.0, heartbeat_interval_s=1.0, checkpoint_interval_s=2.0
        )
    if getattr(args, "allow_cidr", None):
        values["allow_cidrs"] = args.allow_cidr
    if getattr(args, "idle_ttl", None):
        values["idle_ttl_s"] = args.idle_ttl
    return values


def _local(args: argparse.Namespace) -> LocalSettings:
    return LocalSettings(data_dir=args.data_dir) if args.data_dir else LocalSettings()


async def _crawl(
    args: argparse.Namespace, urls: list[str], *, command: str = "skycrawl crawl"
) -> int:
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
        code, finals = await run_crawl(s, body, args.parallel, args.out, err)
    _summary(finals, args.out)
    if code == EXIT_INTERRUPTED:
        err.print(f"skycrawl: interrupted; cancelled, what was fetched is in {args.out}/")
        return code
    line = nothing_fetched_line(finals, args.out)
    if line is not None:
        err.print(f"skycrawl: {line}", markup=False, highlight=False)
    return code


async def _post(s: Session, path: str, key: str, body: object) -> Any:
    return json_or_raise(await s.client.call("POST", path, key=key, body=body))


def _summary(finals: list[dict[str, Any]], out_dir: Path) -> None:
    for final in finals:
        counts = final.get("counts", {})
        out.print(
            f"crawl {final['id']} {final['status']}: {counts.get('fetched', 0)} pages fetched, "
            f"{counts.get('failed', 0)} failed, {counts.get('bytes', 0)} bytes"
            + (f" ({final['reason']})" if final.get("reason") else "")
        )
    if finals:
        out.print(f"results in {out_dir}/ (pages.jsonl, crawl.warc.gz)")


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
            created = await _post(s, "/v1/tenants", op, {"name": args.name, "quotas": quotas})
            out.print(f"tenant {created['id']} created; API key (shown once):")
            out.print(created["api_key"], markup=False, highlight=False)
            if s.server_url and created.get("resources", {}).get("web_app"):
                out.print(f"web app: {created['resources']['web_app']}", highlight=False)
        elif args.action == "list":
            table = Table("id", "name", "state", "max containers", "created")
            for t in (await s.get("/v1/tenants", op)).get("items", []):
                table.add_row(
                    t["id"],
                    t["name"],
                    t["state"],
                    str(t["quotas"]["max_containers"]),
                    t["created_at"],
                )
            out.print(table)
        else:
            json_or_raise(await s.client.call("DELETE", f"/v1/tenants/{args.tenant_id}", key=op))
            out.print(f"tenant {args.tenant_id} deleted")
    return 0


async def _status(args: argparse.Namespace) -> int:
    async with open_session(_local(args), {}, command="skycrawl status", read_only=True) as s:
        if s.busy is not None:
            out.print(f"server: not running; {s.busy} (read-only view)")
        else:
            out.print(f"server: {s.server_url or 'not running (embedded for this command)'}")
        tenants = (await s.get("/v1/tenants", s.operator_key)).get("items", [])
        out.print(f"tenants: {len(tenants)}")
        table = Table("container", "tenant", "state", "work", "egress")
        for t in tenants:
            for c in await containers_of(s, t["id"]):
                table.add_row(
                    c["id"],
                    c["tenant_id"],
                    c["state"],
                    str(len(c["in_flight"])),
                    c["egress"]["name"],
                )
        out.print(table)
    return 0


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "up":
        from functions.local.server import serve

        await serve(_local(args), _overrides(args, embedded_defaults=False), args.host, args.port)
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
    return await _status(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_dispatch(args))
    except KeyboardInterrupt:
        err.print("skycrawl: interrupted")
        return EXIT_INTERRUPTED
    except DataDirBusy as exc:
        err.print(f"skycrawl: {exc}", markup=False, highlight=False)
        return EXIT_USAGE
    except ApiError as exc:
        err.print(f"skycrawl: {_problem_line(exc)}", markup=False, highlight=False)
        return EXIT_USAGE if 400 <= exc.status < 500 else EXIT_ERROR
    except (SkycrawlError, ValidationError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err.print(f"skycrawl: {message}", markup=False, highlight=False)
        return EXIT_ERROR


def _problem_line(exc: ApiError) -> str:
    errors = exc.problem.get("errors") or []
    if errors and isinstance(errors[0], dict):
        first = errors[0]
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return f"{exc} — {where}: {first.get('msg', '')}".rstrip(": ")
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
