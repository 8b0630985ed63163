"""Rendered crawls: skycrawl (render: always) against Crawlee for Python's PlaywrightCrawler.

    python bench/browser_bench.py [--pages 300] [--rounds 3] [--concurrency 4]
                                  [--only skycrawl,crawlee] [--crawlee-block route]

Both crawl the same generated JavaScript site (bench/_jssite.py: every page's content and
links exist only after its script fetched its data) with the same Chromium
(``--chromium``, Debian's ``/usr/bin/chromium``), the same number of pages rendering at once
in one browser context, both waiting for the same selector, both blocking images, fonts and
media, both extracting title + text + links. Each crawl is its own subprocess measured by
bench/_measure.py: wall time, CPU, and the peak RSS / PSS of the whole process tree, Chromium
included. Pages are checked against the site (title, text marker, every link): "correct".
nginx logs every request for an image, font or video: "blocked hits" must stay 0. The
machine's load average is recorded at the start and end of every crawl. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _harness import DEFAULT_SEED, WORK_DIR, SiteServer, wait_for_quiet
from _jssite import READY_SELECTOR, JsSite, count_correct, ensure_js_site
from crawl_bench import (
    PEERS_DIR,
    Crawler,
    Run,
    Skycrawl,
    count_ok_pages,
    ensure_venv,
    machine_info,
    run_one,
    warm_page_cache,
)

CHROMIUM = Path("/usr/bin/chromium")
CRAWLEE_VENV = "crawlee-playwright"
#: Paths nginx logs: what both crawlers block (images, the web font, the video)
BLOCKED_PREFIXES = ("/img/", "/fonts/", "/media/")


class SkycrawlRender(Skycrawl):
    """The engine's standalone crawl (the container's code path) with ``--render always``;
    ``SKYCRAWL_BROWSER_PAGES`` = the concurrency (pages rendering at once, one context)."""

    label = "skycrawl (render: always)"
    chromium = CHROMIUM

    def command(self, start_url: str, out: Path, pages: int, concurrency: int) -> list[str]:
        env = [
            "env",
            f"SKYCRAWL_BROWSER_PAGES={concurrency}",
            f"SKYCRAWL_CHROMIUM_PATH={self.chromium}",
        ]
        return [
            *env,
            *super().command(start_url, out, pages, concurrency),
            "--render",
            "always",
            "--wait-for",
            READY_SELECTOR,
            "--format",
            "metadata,text,links",
            "--no-sitemaps",  # the site has none, and Crawlee does not look for one
        ]


class CrawleePlaywright(Crawler):
    """Crawlee for Python's PlaywrightCrawler in its own venv (bench/peers/crawlee_playwright.py)."""

    name = "crawlee"
    label = "Crawlee PlaywrightCrawler"
    block = "route"  # --crawlee-block
    chromium = CHROMIUM

    def prepare(self) -> str:
        version = ensure_venv(CRAWLEE_VENV, "crawlee[playwright]", "crawlee")
        return f"{version} (--block {self.block})"

    def command(self, start_url: str, out: Path, pages: int, concurrency: int) -> list[str]:
        return [
            str(Path(__file__).resolve().parent / ".venvs" / CRAWLEE_VENV / "bin" / "python"),
            str(PEERS_DIR / "crawlee_playwright.py"),
            start_url,
            str(out / "pages.jsonl"),
            "--wait-for",
            READY_SELECTOR,
            "--concurrency",
            str(concurrency),
            "--max-pages",
            str(pages + 10),
            "--executable",
            str(self.chromium),
            "--block",
            self.block,
        ]

    def count(self, out: Path) -> int:
        path = out / "pages.jsonl"
        return count_ok_pages(path) if path.exists() else 0


CRAWLERS: dict[str, Crawler] = {c.name: c for c in (SkycrawlRender(), CrawleePlaywright())}


@dataclass
class BrowserRun:
    """One crawl: the figures of ``crawl_bench.Run`` plus what this bench adds."""

    run: Run
    correct: int = 0
    blocked_hits: int | None = None  # requests for blocked types that reached the server
    load_start: float = 0.0  # 1-minute load average when the crawl started

    def as_json(self) -> dict[str, Any]:
        return {
            **self.run.as_json(),
            "correct": self.correct,
            "blocked_hits": self.blocked_hits,
            "load_start": self.load_start,
            "load_end": self.run.load_avg,
        }


def find_pages_file(out: Path) -> Path | None:
    path = out / "pages.jsonl"
    if path.exists():
        return path
    found = sorted(out.rglob("pages.jsonl"))
    return found[0] if found else None


def crawl_once(
    crawler: Crawler,
    server: SiteServer,
    site: JsSite,
    rnd: int,
    args: argparse.Namespace,
) -> BrowserRun:
    if args.quiet_wait > 0:
        load = wait_for_quiet(args.quiet_wait)
        if load >= 0.15:
            print(f"[machine still busy: {load:.1f} cores in use] ", end="", flush=True)
    hits_before = server.logged_hits()
    result = BrowserRun(Run(crawler.name, site.pages, rnd))
    result.load_start = round(os.getloadavg()[0], 2)
    runs_dir = WORK_DIR / "browser-runs" / str(site.pages)
    result.run = run_one(
        crawler, server, site, rnd, args.concurrency, args.timeout, True, runs_dir=runs_dir
    )
    hits_after = server.logged_hits()
    if hits_before is not None and hits_after is not None:
        result.blocked_hits = hits_after - hits_before
    out = runs_dir / f"{crawler.name}-r{rnd}" / "out"
    pages_file = find_pages_file(out)
    if pages_file is not None:
        result.correct = count_correct(pages_file, site.expected())[1]
    if result.run.ok and not args.keep_output:
        shutil.rmtree(out, ignore_errors=True)
    return result


@dataclass
class Summary:
    crawler: str
    label: str
    version: str
    runs: int
    ok_runs: int
    pages: float = 0.0
    correct: float = 0.0
    wall_s: float = 0.0
    pages_per_s: float = 0.0
    cpu_s_per_1k: float = 0.0
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    blocked_hits: int | None = None
    load_start: float = 0.0
    load_end: float = 0.0
    other_cores: float = 0.0  # CPU used by everything else on the machine during the crawl
    errors: list[str] = field(default_factory=list)


def summarize(crawler: Crawler, version: str, runs: list[BrowserRun]) -> Summary:
    """Medians over the successful runs (blocked hits: the most any run let through)."""
    ok = [r for r in runs if r.run.ok]
    s = Summary(crawler.name, crawler.label, version, runs=len(runs), ok_runs=len(ok))
    s.errors = [r.run.error for r in runs if r.run.error]
    if not ok:
        return s
    med = statistics.median
    s.pages = med(r.run.pages for r in ok)
    s.correct = med(r.correct for r in ok)
    s.wall_s = med(r.run.wall_s for r in ok)
    s.pages_per_s = med(r.run.pages_per_s for r in ok)
    s.cpu_s_per_1k = med(r.run.cpu_s_per_1k for r in ok)
    s.rss_mb = med(r.run.rss_mb for r in ok)
    s.pss_mb = med(r.run.pss_mb for r in ok)
    hits = [r.blocked_hits for r in ok if r.blocked_hits is not None]
    s.blocked_hits = max(hits) if hits else None
    s.load_start = med(r.load_start for r in ok)
    s.load_end = med(r.run.load_avg for r in ok)
    s.other_cores = med(r.run.other_cpu_s / r.run.wall_s for r in ok)
    return s


def ratios(summaries: dict[str, Summary]) -> dict[str, float | None]:
    """skycrawl / Crawlee for pages/s, CPU per page, peak RSS and PSS (None: no data)."""
    sky, peer = summaries.get("skycrawl"), summaries.get("crawlee")
    if sky is None or peer is None:
        return {}

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if a and b else None

    return {
        "pages_per_s": ratio(sky.pages_per_s, peer.pages_per_s),
        "cpu_s_per_1k": ratio(sky.cpu_s_per_1k, peer.cpu_s_per_1k),
        "rss_mb": ratio(sky.rss_mb, peer.rss_mb),
        "pss_mb": ratio(sky.pss_mb, peer.pss_mb),
    }


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or x == 0 else format(x, spec)


TABLE_HEADERS = (
    "crawler",
    "ok runs",
    "pages",
    "correct",
    "wall s",
    "pages/s",
    "CPU-s/1k pages",
    "peak RSS MB",
    "peak PSS MB",
    "blocked hits",
    "load start→end",
    "other cores",
)


def table_lines(summaries: dict[str, Summary], rat: dict[str, float | None]) -> list[str]:
    """The results as a Markdown table (as pasted into bench/README.md), then the ratios."""
    lines = ["| " + " | ".join(TABLE_HEADERS) + " |", "|" + " --- |" * len(TABLE_HEADERS)]
    for s in summaries.values():
        cells = [
            s.label,
            f"{s.ok_runs}/{s.runs}",
            _fmt(s.pages, ",.0f"),
            _fmt(s.correct, ",.0f"),
            _fmt(s.wall_s, ".1f"),
            _fmt(s.pages_per_s, ".2f"),
            _fmt(s.cpu_s_per_1k, ",.0f"),
            _fmt(s.rss_mb, ",.0f"),
            _fmt(s.pss_mb, ",.0f"),
            "-" if s.blocked_hits is None else str(s.blocked_hits),
            f"{s.load_start:.1f}→{s.load_end:.1f}" if s.ok_runs else "-",
            f"{s.other_cores:.2f}" if s.ok_runs else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if rat:
        named = (
            ("pages/s", "pages_per_s"),
            ("CPU per page", "cpu_s_per_1k"),
            ("peak RSS", "rss_mb"),
            ("peak PSS", "pss_mb"),
        )
        lines.append("")
        lines.append(
            "skycrawl / Crawlee: " + ", ".join(f"{n} {_fmt(rat[k], '.2f')}" for n, k in named)
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pages", type=int, default=300, help="pages of the site (default 300)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per crawler (default 3)")
    p.add_argument("--concurrency", type=int, default=4, help="pages rendering at once (default 4)")
    p.add_argument(
        "--only",
        default=",".join(CRAWLERS),
        help=f"comma-separated crawlers among {','.join(CRAWLERS)} (default: all)",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="site generator seed")
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds per crawl (default 120 + pages)"
    )
    p.add_argument("--chromium", type=Path, default=CHROMIUM, help="the browser both drive")
    p.add_argument(
        "--crawlee-block",
        choices=["route", "block-requests"],
        default="route",
        help="how Crawlee blocks: page.route by resource type, as skycrawl (default), or "
        "Crawlee's block_requests() (CDP URL patterns)",
    )
    p.add_argument("--quiet-wait", type=float, default=30.0, help="see crawl_bench.py (30)")
    p.add_argument("--no-nginx", action="store_true", help="use the fallback Python server")
    p.add_argument("--keep-output", action="store_true", help="keep each crawl's output")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CRAWLERS]
    if unknown or not names:
        p.error(f"--only: unknown crawler(s) {unknown}; choose among {list(CRAWLERS)}")
    if args.pages < 2 or args.rounds < 1 or not 1 <= args.concurrency <= 64:
        p.error("--pages >= 2, --rounds >= 1 and 1 <= --concurrency <= 64")
    if not args.chromium.is_file():
        p.error(f"--chromium: {args.chromium} is missing (apt-get install chromium)")
    args.crawlers = names
    args.timeout = args.timeout or 120 + args.pages
    CrawleePlaywright.block = args.crawlee_block
    SkycrawlRender.chromium = CrawleePlaywright.chromium = args.chromium
    return args


def bench(args: argparse.Namespace, crawlers: list[Crawler], versions: dict[str, str]) -> int:
    site = ensure_js_site(args.pages, seed=args.seed)
    warm_page_cache(site)
    runs: list[BrowserRun] = []
    server = SiteServer(site.root, prefer_nginx=not args.no_nginx, logged_prefixes=BLOCKED_PREFIXES)
    with server:
        print(
            f"== {args.pages:,} JavaScript pages, served by {server.kind} ({server.version}) at "
            f"{server.base_url}, concurrency {args.concurrency}, {args.rounds} round(s), "
            f"{os.cpu_count()} CPUs"
        )
        for rnd in range(args.rounds):
            k = rnd % len(crawlers)
            for crawler in crawlers[k:] + crawlers[:k]:
                print(f"  round {rnd + 1}: {crawler.name:<9} ", end="", flush=True)
                r = crawl_once(crawler, server, site, rnd, args)
                runs.append(r)
                if r.run.ok:
                    print(
                        f"{r.run.pages:>5} pages ({r.correct} correct) {r.run.wall_s:6.1f}s "
                        f"{r.run.pages_per_s:6.2f} p/s cpu {r.run.user_s + r.run.sys_s:6.1f}s "
                        f"rss {r.run.rss_mb:5.0f} MB pss {r.run.pss_mb:5.0f} MB "
                        f"blocked hits {r.blocked_hits} load {r.load_start:.1f}→{r.run.load_avg:.1f}"
                        f" other {r.run.other_cpu_s / r.run.wall_s:.2f} cores"
                    )
                else:
                    print("FAILED: " + r.run.error.replace("\n", "\n      | "))
                time.sleep(1)
        server_info = {"kind": server.kind, "version": server.version}
    summaries = {
        c.name: summarize(c, versions[c.name], [r for r in runs if r.run.crawler == c.name])
        for c in crawlers
    }
    rat = ratios(summaries)
    print(f"\n{args.pages:,}-page JavaScript site, medians over the successful runs")
    print("\n".join(table_lines(summaries, rat)))
    print(", ".join(f"{s.label} {s.version}" for s in summaries.values()))
    chromium = subprocess.run([str(args.chromium), "--version"], capture_output=True, text=True)
    result = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {
            "pages": args.pages,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "timeout_s": args.timeout,
            "quiet_wait_s": args.quiet_wait,
            "crawlee_block": args.crawlee_block,
            "chromium": chromium.stdout.strip(),
        },
        "server": server_info,
        "machine": machine_info(),
        "summary": {name: asdict(s) for name, s in summaries.items()},
        "ratios": rat,
        "runs": [r.as_json() for r in runs],
    }
    path = WORK_DIR / f"browser-results-{args.pages}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {path}")
    return 0 if any(r.run.ok for r in runs) else 1


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwind: the running crawl and the server stop too


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    crawlers: list[Crawler] = []
    versions: dict[str, str] = {}
    for name in args.crawlers:
        crawler = CRAWLERS[name]
        try:
            versions[name] = crawler.prepare()
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"{name}: setup failed ({exc}); skipping it", file=sys.stderr)
            continue
        crawlers.append(crawler)
    if not crawlers:
        print("no crawler to run", file=sys.stderr)
        return 1
    return bench(args, crawlers, versions)


if __name__ == "__main__":
    sys.exit(main())
