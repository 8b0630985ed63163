"""``python -m engine_container``: the crawler container's entry point.

Without ``--standalone`` it runs the bus worker (``engine_container.worker.main``), which
takes its configuration from ``SKYCRAWL_*`` variables. With ``--standalone`` it crawls the
given seed URLs with no bus, state or blob store, and writes ``DIR/pages.jsonl`` (each page's
formats as its ``content``), ``DIR/crawl.warc.gz`` and, with ``--extract`` or ``--handler``,
``DIR/items.jsonl``::

    python -m engine_container --standalone https://example.com/ --out ./out \\
        [--concurrency N] [--per-host-concurrency N] [--max-pages N] [--max-depth N] \\
        [--scope same-host|same-domain|any] [--allow-cidr CIDR]... [--user-agent UA] \\
        [--no-robots] [--no-sitemaps] [--page-timeout S] [--format F,...] \\
        [--extract FILE] [--handler NAME] [--render always|auto] [--wait-for SELECTOR] \\
        [--scroll N [--scroll-delay MS]]

It prints one summary line (pages, failed, seconds, pages/s). Standalone runs are not bound by
the service's per-tenant limits on ``--max-pages``/``--max-depth``. Other settings (timeouts,
body caps, proxy, politeness) come from ``SKYCRAWL_*`` variables as in the container. Bad input
prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from core.errors import InvalidRequest
from core.models import CrawlCounts, CrawlSpec, Scope
from core.netguard import check_url
from engine_container import handlers
from engine_container.browser import BrowserPool
from engine_container.bus_crawl import build_analysis, build_politeness
from engine_container.crawler import Crawler
from engine_container.fetcher import Fetcher
from engine_container.output_options import add_output_options, output_fields
from engine_container.settings import EngineSettings
from engine_container.sinks import StandaloneSink
from engine_container.tuning import tune_process

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 300:
        raise argparse.ArgumentTypeError(f"must be between 1 and 300 seconds: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m engine_container", description="skycrawl crawler engine")
    p.add_argument("--standalone", action="store_true", help="crawl URLs without any bus")
    p.add_argument("urls", nargs="+", metavar="URL", help="seed URLs")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--concurrency", type=_positive, default=None, help="requests in flight")
    p.add_argument(
        "--per-host-concurrency", type=_positive, default=None, help="requests in flight per host"
    )
    p.add_argument("--max-pages", type=_positive, default=100, help="pages to fetch (100)")
    p.add_argument("--max-depth", type=_positive, default=3, help="link depth from seeds (3)")
    p.add_argument("--scope", choices=[s.value for s in Scope], default=Scope.same_host.value)
    p.add_argument("--allow-cidr", action="append", default=[], metavar="CIDR")
    p.add_argument("--user-agent", default=None)
    p.add_argument("--no-robots", action="store_true", help="ignore robots.txt")
    p.add_argument(
        "--no-sitemaps", action="store_true", help="do not queue the URLs of the seeds' sitemaps"
    )
    p.add_argument(
        "--page-timeout",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="time budget of one page, retries included (1-300 s, default 30)",
    )
    p.add_argument(
        "--render",
        choices=["never", "always", "auto"],
        default="never",
        help="render pages in Chromium: always, or auto for app shells (default never)",
    )
    p.add_argument(
        "--wait-for",
        default=None,
        metavar="SELECTOR",
        help="after load, wait for this CSS selector (or networkidle) when rendering",
    )
    p.add_argument(
        "--scroll",
        type=_positive,
        default=None,
        metavar="N",
        help="scroll rendered pages to their bottom until they stop growing, N times at most "
        "(1-50; default no scrolling)",
    )
    p.add_argument(
        "--scroll-delay",
        type=_positive,
        default=None,
        metavar="MS",
        help="with --scroll: a page has stopped growing after this long without growth or "
        "requests (100-10000 ms, default 1000)",
    )
    add_output_options(p)
    return p


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
    return " ".join(str(detail).split())


def _scroll_field(args: argparse.Namespace) -> dict[str, object]:
    if args.scroll is None:
        if args.scroll_delay is not None:
            raise UsageError("--scroll-delay needs --scroll")
        return {}
    scroll: dict[str, int] = {"max_scrolls": args.scroll}
    if args.scroll_delay is not None:
        scroll["delay_ms"] = args.scroll_delay
    return {"scroll": scroll}


def _configure(args: argparse.Namespace) -> tuple[EngineSettings, CrawlSpec]:
    overrides: dict[str, object] = {}
    if args.concurrency:
        overrides["concurrency"] = args.concurrency
    if args.per_host_concurrency:
        overrides["per_host_concurrency"] = args.per_host_concurrency
    if args.allow_cidr:
        overrides["allow_cidrs"] = ",".join(args.allow_cidr)
    if args.user_agent:
        overrides["user_agent"] = args.user_agent
    settings = EngineSettings(**overrides)  # type: ignore[arg-type]
    spec = CrawlSpec(
        seeds=args.urls,
        scope=Scope(args.scope),
        max_depth=min(args.max_depth, 100),
        max_pages=max(1, min(args.max_pages, 1_000_000)),
        respect_robots=not args.no_robots,
        use_sitemaps=not args.no_sitemaps,
        page_timeout_s=args.page_timeout,
        render=args.render,
        wait_for=args.wait_for,
        **_scroll_field(args),
        **output_fields(args),
    )
    # the service's per-tenant ceilings do not bind a local run
    spec = spec.model_copy(
        update={"max_depth": args.max_depth, "max_pages": max(1, args.max_pages)}
    )
    policy = settings.address_policy()
    for seed in spec.seeds:
        check_url(seed, policy)
    if spec.handler is not None:
        handlers.load(spec.handler)  # installed? (the one running it here is the operator)
    return settings, spec


async def _crawl(settings: EngineSettings, spec: CrawlSpec, sink: StandaloneSink) -> CrawlCounts:
    task = asyncio.current_task()
    if task is not None:  # SIGTERM: stop like Ctrl-C, with what was crawled flushed to disk
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        politeness = build_politeness(settings)
        analysis = build_analysis(settings)
        try:
            async with Fetcher(settings) as fetcher, BrowserPool(settings) as browser:
                crawler = Crawler(
                    spec,
                    fetcher,
                    sink,
                    settings,
                    politeness=politeness,
                    analysis=analysis,
                    browser=browser,
                )
                return await crawler.run()
        finally:
            await analysis.close()
            await politeness.close()
    finally:
        await sink.close()


def standalone(argv: Sequence[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
        settings, spec = _configure(args)
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {args.out} exists and is not a directory")
    except (UsageError, ValidationError, InvalidRequest, ValueError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sink = StandaloneSink(args.out)
    except OSError as exc:
        print(f"error: cannot write to {args.out}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    tune_process()
    started = time.perf_counter()
    try:
        counts = asyncio.run(_crawl(settings, spec, sink))
    except OSError as exc:
        print(f"error: cannot write to {args.out}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"interrupted: pages crawled so far are in {args.out}", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, and a non-zero status
        print(f"error: crawl failed: {_one_line(exc)}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    pages = counts.fetched + counts.failed
    rate = pages / seconds if seconds > 0 else 0.0
    print(f"{pages} pages, {counts.failed} failed, {seconds:.2f} s, {rate:.1f} pages/s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m engine_container``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--standalone" in args:
        return standalone(args)
    worker = importlib.import_module("engine_container.worker")  # lazily: bus mode only
    result = worker.main()
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    return int(result) if isinstance(result, int) else 0
