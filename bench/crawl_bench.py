"""Speed and memory of skycrawl against Scrapy and Crawlee for Python on a generated local site.

    python bench/crawl_bench.py [--pages 5000] [--rounds 3] [--concurrency 16]
                                [--only skycrawl,scrapy,crawlee] [--large]

Each crawl is its own subprocess, measured by bench/_measure.py (wall time, user/sys CPU and
peak RSS from ``os.wait4``). Rounds are interleaved with a rotating order so that drift on the
machine hits every crawler alike. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _harness import (
    BENCH_DIR,
    DEFAULT_SEED,
    WORK_DIR,
    Site,
    SiteServer,
    ensure_site,
    machine_busy_seconds,
    wait_for_quiet,
)

PROJECT_DIR = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"
PEERS_DIR = BENCH_DIR / "peers"
MEASURE = BENCH_DIR / "_measure.py"
LARGE_PAGES = 50_000
#: What the peers use to turn a page into markdown (``--peer-markdown``), installed beside them
PEER_MARKDOWN_LIBS = "trafilatura html-to-markdown markdownify"


# --------------------------------------------------------------------------------------------
# Crawlers
# --------------------------------------------------------------------------------------------


def count_ok_pages(path: Path) -> int:
    """Distinct URLs with status 200 in a JSON-lines file (robots.txt records excluded)."""
    seen: set[str] = set()
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or rec.get("status") != 200:
                continue
            url = str(rec.get("url", ""))
            if not url.endswith("/robots.txt"):
                seen.add(url)
    return len(seen)


def _python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(name: str, requirement: str, dist: str) -> str:
    """Create ``bench/.venvs/<name>`` with ``requirement`` on first use; return ``dist``'s version."""
    venv = VENVS_DIR / name
    py = _python_of(venv)
    probe = [str(py), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"]
    if py.exists():
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return done.stdout.strip()
    base = shutil.which("python3") or sys.executable
    print(f"setting up {venv} ({requirement}) ...", file=sys.stderr, flush=True)
    log = WORK_DIR / f"pip-{name}.log"
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, stdout=out)
        pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True, stdout=out, stderr=out)
        subprocess.run([*pip, *requirement.split()], check=True, stdout=out, stderr=out)
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


class Crawler(ABC):
    name: str
    label: str

    @abstractmethod
    def prepare(self) -> str:
        """Install what is missing; return a version string. Raises if it cannot."""

    @abstractmethod
    def command(self, start_url: str, out: Path, pages: int, concurrency: int) -> list[str]:
        """The command line of one crawl writing its results under ``out`` (a fresh dir)."""

    @abstractmethod
    def count(self, out: Path) -> int:
        """Pages fetched with status 200 according to the crawl's output."""


class Skycrawl(Crawler):
    name = "skycrawl"
    label = "skycrawl"
    formats = ""  # --skycrawl-format: "" = the engine's default (metadata, links, markdown)

    def python(self) -> Path:
        py = PROJECT_DIR / ".venv" / "bin" / "python"
        return py if py.exists() else Path(sys.executable)

    def prepare(self) -> str:
        rev = subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
        return f"git {rev.stdout.strip() or '?'}"

    def command(self, start_url: str, out: Path, pages: int, concurrency: int) -> list[str]:
        return [
            str(self.python()),
            "-m",
            "engine_container",
            "--standalone",
            start_url,
            "--out",
            str(out),
            "--concurrency",
            str(concurrency),
            "--per-host-concurrency",  # the peers allow all 16 on the one host too
            str(concurrency),
            "--max-pages",
            str(pages + 10),
            "--max-depth",
            "1000",
            "--allow-cidr",
            "127.0.0.0/8",
            *(["--format", self.formats] if self.formats else []),
        ]

    def count(self, out: Path) -> int:
        path = out / "pages.jsonl"
        if not path.exists():
            found = sorted(out.rglob("pages.jsonl"))
            if not found:
                return 0
            path = found[0]
        return count_ok_pages(path)


class Peer(Crawler):
    """A peer crawler in its own venv, run by its script in ``bench/peers/``; both peers take
    the same command line and write ``pages.jsonl``."""

    markdown = "trafilatura"  # --peer-markdown

    def __init__(self, name: str, label: str, requirement: str, script: str) -> None:
        self.name, self.label = name, label
        self._requirement, self._script = requirement, script

    def prepare(self) -> str:
        return ensure_venv(self.name, self._requirement, self.name)

    def command(self, start_url: str, out: Path, pages: int, concurrency: int) -> list[str]:
        return [
            str(_python_of(VENVS_DIR / self.name)),
            str(PEERS_DIR / self._script),
            start_url,
            str(out / "pages.jsonl"),
            "--concurrency",
            str(concurrency),
            "--max-pages",
            str(pages + 10),
            "--markdown",
            self.markdown,
        ]

    def count(self, out: Path) -> int:
        path = out / "pages.jsonl"
        return count_ok_pages(path) if path.exists() else 0


CRAWLERS: dict[str, Crawler] = {
    c.name: c
    for c in (
        Skycrawl(),
        Peer("scrapy", "Scrapy", f"scrapy {PEER_MARKDOWN_LIBS}", "scrapy_spider.py"),
        Peer(
            "crawlee",
            "Crawlee",
            f"crawlee[beautifulsoup,parsel] {PEER_MARKDOWN_LIBS}",
            "crawlee_crawler.py",
        ),
    )
}


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    crawler: str
    pages_target: int
    round: int
    ok: bool = False
    rc: int | None = None
    timed_out: bool = False
    pages: int = 0
    wall_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    maxrss_kb: int = 0
    tree_rss_kb: int = 0  # peak of the summed RSS of the crawl's processes (worker processes)
    tree_pss_kb: int = 0  # the same as PSS: pages shared by forked workers counted once
    load_avg: float = 0.0  # 1-minute load average at the end of the crawl
    server_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    server_errors: int = 0
    error: str = ""

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_s_per_1k(self) -> float:
        return (self.user_s + self.sys_s) / self.pages * 1000 if self.pages else 0.0

    @property
    def rss_mb(self) -> float:
        """Peak RSS of the crawl: of all its processes together when it has several."""
        return max(self.maxrss_kb, self.tree_rss_kb) / 1024

    @property
    def pss_mb(self) -> float:
        return (self.tree_pss_kb or self.maxrss_kb) / 1024

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            pages_per_s=round(self.pages_per_s, 2),
            cpu_s_per_1k=round(self.cpu_s_per_1k, 3),
            rss_mb=round(self.rss_mb, 1),
            pss_mb=round(self.pss_mb, 1),
        )
        return d


def _tail(path: Path, lines: int = 20, chars: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])[-chars:]


def run_one(
    crawler: Crawler,
    server: SiteServer,
    site: Site,
    rnd: int,
    concurrency: int,
    timeout: float,
    keep_output: bool,
    quiet_wait: float = 0.0,
    runs_dir: Path | None = None,
) -> Run:
    run = Run(crawler=crawler.name, pages_target=site.pages, round=rnd)
    run_dir = (runs_dir or WORK_DIR / "runs" / str(site.pages)) / f"{crawler.name}-r{rnd}"
    shutil.rmtree(run_dir, ignore_errors=True)
    out = run_dir / "out"
    out.mkdir(parents=True)
    cmd = crawler.command(f"{server.base_url}/index.html", out, site.pages, concurrency)
    (run_dir / "cmd.json").write_text(json.dumps(cmd))
    wrapper = [
        sys.executable,
        str(MEASURE),
        "--timeout",
        str(timeout),
        "--stdout",
        str(run_dir / "stdout.log"),
        "--stderr",
        str(run_dir / "stderr.log"),
        "--",
        *cmd,
    ]
    if quiet_wait > 0:
        load = wait_for_quiet(quiet_wait)
        if load >= 0.15:
            print(f"[machine still busy: {load:.1f} cores in use] ", end="", flush=True)
    server_cpu, busy, log_at = server.cpu_seconds(), machine_busy_seconds(), server.error_log_size()
    proc = subprocess.Popen(
        wrapper, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_DIR
    )
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        # Ctrl-C or the like: _measure.py passes SIGTERM on to the crawl's process group.
        proc.terminate()
        proc.wait(timeout=30)
        raise
    run.server_cpu_s = round(server.cpu_seconds() - server_cpu, 3)
    busy = machine_busy_seconds() - busy
    server_errors = server.errors_since(log_at)
    run.server_errors = len(server_errors)
    if server_errors:
        print(
            f"[server logged {len(server_errors)} error(s), e.g. {server_errors[-1][-160:]}] ",
            end="",
            flush=True,
        )
    try:
        m = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        run.error = f"_measure.py failed: {stderr.strip()[-2000:]}"
        return run
    run.rc, run.timed_out = int(m["rc"]), bool(m["timed_out"])
    run.wall_s, run.user_s, run.sys_s = float(m["wall_s"]), float(m["user_s"]), float(m["sys_s"])
    run.maxrss_kb = int(m["maxrss_kb"])
    run.tree_rss_kb = int(m.get("tree_rss_kb", 0))
    run.tree_pss_kb = int(m.get("tree_pss_kb", 0))
    run.load_avg = round(os.getloadavg()[0], 2)
    # CPU used on the machine during the crawl by neither the crawler nor the server: noise.
    run.other_cpu_s = round(max(0.0, busy - run.user_s - run.sys_s - run.server_cpu_s), 3)
    try:
        run.pages = crawler.count(out)
    except OSError as exc:
        run.error = f"could not read the output: {exc}"
    if run.timed_out:
        run.error = f"timed out after {timeout:.0f}s\n{_tail(run_dir / 'stderr.log')}"
    elif run.rc != 0:
        run.error = f"exit code {run.rc}\n{_tail(run_dir / 'stderr.log')}"
    elif run.pages == 0 and not run.error:
        files = sorted(
            f"{p.relative_to(out)} ({p.stat().st_size:,} B)" for p in out.rglob("*") if p.is_file()
        )
        run.error = (
            f"no page with status 200 in the output; {out} holds: {', '.join(files) or 'nothing'}"
            f"\nstdout: {_tail(run_dir / 'stdout.log', 3)}\nstderr: {_tail(run_dir / 'stderr.log')}"
        )
    run.ok = not run.error
    if run.ok and not keep_output:  # a failed crawl's output is kept for a post-mortem
        shutil.rmtree(out, ignore_errors=True)
    return run


def warm_page_cache(site: Site) -> None:
    """Read every file once so that the first crawl does not pay for disk reads."""
    for path in site.root.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                while f.read(1 << 20):
                    pass


@dataclass
class Summary:
    crawler: str
    label: str
    version: str
    runs: int
    ok_runs: int
    pages: float = 0.0
    pages_per_s: float = 0.0
    cpu_s_per_1k: float = 0.0
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    load_avg: float = 0.0
    wall_s: float = 0.0
    cpu_util: float = 0.0
    server_cpu_util: float = 0.0
    other_cpu_util: float = 0.0
    errors: list[str] = field(default_factory=list)


def summarize(crawler: Crawler, version: str, runs: list[Run]) -> Summary:
    ok = [r for r in runs if r.ok]
    s = Summary(crawler.name, crawler.label, version, runs=len(runs), ok_runs=len(ok))
    s.errors = [r.error for r in runs if r.error]
    if ok:
        med = statistics.median
        s.pages = med(r.pages for r in ok)
        s.pages_per_s = med(r.pages_per_s for r in ok)
        s.cpu_s_per_1k = med(r.cpu_s_per_1k for r in ok)
        s.rss_mb = med(r.rss_mb for r in ok)
        s.pss_mb = med(r.pss_mb for r in ok)
        s.load_avg = med(r.load_avg for r in ok)
        s.wall_s = med(r.wall_s for r in ok)
        s.cpu_util = med((r.user_s + r.sys_s) / r.wall_s for r in ok)
        s.server_cpu_util = med(r.server_cpu_s / r.wall_s for r in ok)
        s.other_cpu_util = med(r.other_cpu_s / r.wall_s for r in ok)
    return s


def ratios(summaries: dict[str, Summary]) -> dict[str, dict[str, float | None]]:
    """skycrawl / peer for pages/s, CPU per page and peak RSS (None where a side has no data)."""
    out: dict[str, dict[str, float | None]] = {}
    sky = summaries.get("skycrawl")
    for peer in ("scrapy", "crawlee"):
        other = summaries.get(peer)
        if sky is None or other is None:
            continue

        def ratio(a: float, b: float) -> float | None:
            return round(a / b, 3) if a and b else None

        out[f"skycrawl/{peer}"] = {
            "pages_per_s": ratio(sky.pages_per_s, other.pages_per_s),
            "cpu_s_per_1k": ratio(sky.cpu_s_per_1k, other.cpu_s_per_1k),
            "rss_mb": ratio(sky.rss_mb, other.rss_mb),
        }
    return out


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or x == 0 else format(x, spec)


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def print_table(pages: int, summaries: dict[str, Summary], rat: dict[str, Any]) -> None:
    headers = [
        "crawler",
        "ok",
        "pages",
        "pages/s",
        "CPU-s/1k p",
        "RSS MB",
        "PSS MB",
        "CPU",
        "server CPU",
        "other CPU",
    ]
    rows = [
        [
            s.label,
            f"{s.ok_runs}/{s.runs}",
            _fmt(s.pages, ",.0f"),
            _fmt(s.pages_per_s, ".1f"),
            _fmt(s.cpu_s_per_1k, ".2f"),
            _fmt(s.rss_mb, ".0f"),
            _fmt(s.pss_mb, ".0f"),
            _pct(s.cpu_util) if s.ok_runs else "-",
            _pct(s.server_cpu_util) if s.ok_runs else "-",
            _pct(s.other_cpu_util) if s.ok_runs else "-",
        ]
        for s in summaries.values()
    ]
    versions = ", ".join(f"{s.label} {s.version}" for s in summaries.values())
    ratio_rows = [
        [
            name,
            _fmt(r["pages_per_s"], ".2f"),
            _fmt(r["cpu_s_per_1k"], ".2f"),
            _fmt(r["rss_mb"], ".2f"),
        ]
        for name, r in rat.items()
    ]
    title = f"{pages:,}-page site, medians over the successful runs"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"\n{title}")
        for row in [headers, *rows]:
            print("  ".join(str(c).ljust(16) for c in row))
        for row in ratio_rows:
            print("  ".join(str(c).ljust(16) for c in row))
        print(versions)
        return
    console = Console(width=None if sys.stdout.isatty() else 110)
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if ratio_rows:
        rt = Table(title="ratios (skycrawl / peer)")
        for i, h in enumerate(["", "pages/s", "CPU-s / 1k pages", "peak RSS"]):
            rt.add_column(h, justify="left" if i == 0 else "right")
        for row in ratio_rows:
            rt.add_row(*row)
        console.print(rt)
    console.print(versions)


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pages", type=int, default=5000, help="pages of the site (default 5000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per crawler (default 3)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent requests (16)")
    p.add_argument(
        "--only",
        default=",".join(CRAWLERS),
        help=f"comma-separated crawlers among {','.join(CRAWLERS)} (default: all)",
    )
    p.add_argument("--large", action="store_true", help=f"also run a {LARGE_PAGES:,}-page variant")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="site generator seed")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds before a crawl is killed (default 120 + pages/10)",
    )
    p.add_argument(
        "--no-nginx", action="store_true", help="use the fallback Python server even if nginx is"
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each crawl, wait up to this many seconds for the machine to be idle "
        "(other processes < 0.15 cores); 0 = don't wait (default 30)",
    )
    p.add_argument(
        "--keep-output", action="store_true", help="keep each crawl's output under .work/runs/"
    )
    p.add_argument(
        "--peer-markdown",
        default="trafilatura",
        choices=["trafilatura", "html-to-markdown", "markdownify", "none"],
        help="what Scrapy and Crawlee turn pages into markdown with (default trafilatura)",
    )
    p.add_argument(
        "--skycrawl-format",
        default="",
        help="skycrawl's --format (default: the engine's, metadata,links,markdown; none = no "
        "content, the old metadata-only run)",
    )
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CRAWLERS]
    if unknown or not names:
        p.error(f"--only: unknown crawler(s) {unknown}; choose among {list(CRAWLERS)}")
    args.crawlers = names
    Peer.markdown = args.peer_markdown
    Skycrawl.formats = args.skycrawl_format
    if args.pages < 2 or args.rounds < 1 or args.concurrency < 1:
        p.error("--pages >= 2, --rounds >= 1 and --concurrency >= 1")
    return args


def bench_size(
    pages: int,
    args: argparse.Namespace,
    crawlers: list[Crawler],
    versions: dict[str, str],
) -> dict[str, Any]:
    site = ensure_site(pages, seed=args.seed)
    warm_page_cache(site)
    timeout = args.timeout or 120 + pages / 10
    runs: list[Run] = []
    with SiteServer(site.root, prefer_nginx=not args.no_nginx) as server:
        print(
            f"\n== {pages:,} pages, served by {server.kind} ({server.version}) at "
            f"{server.base_url}, concurrency {args.concurrency}, {args.rounds} round(s)"
        )
        for rnd in range(args.rounds):
            k = rnd % len(crawlers)
            for crawler in crawlers[k:] + crawlers[:k]:
                print(f"  round {rnd + 1}: {crawler.name:<9} ", end="", flush=True)
                run = run_one(
                    crawler,
                    server,
                    site,
                    rnd,
                    args.concurrency,
                    timeout,
                    args.keep_output,
                    args.quiet_wait,
                )
                runs.append(run)
                if run.ok:
                    short = "" if run.pages >= pages else f"  (only {run.pages}/{pages} pages!)"
                    if run.other_cpu_s > 0.1 * run.wall_s:
                        short += f"  (busy machine: {run.other_cpu_s:.1f} CPU-s used by others)"
                    print(
                        f"{run.pages:>6} pages {run.wall_s:7.1f}s {run.pages_per_s:7.1f} p/s "
                        f"cpu {run.user_s + run.sys_s:6.1f}s rss {run.rss_mb:5.0f} MB "
                        f"server cpu {run.server_cpu_s:5.1f}s other {run.other_cpu_s:5.1f}s "
                        f"load {run.load_avg:.1f}{short}"
                    )
                else:
                    print("FAILED: " + run.error.replace("\n", "\n      | "))
                time.sleep(1)
        server_info = {"kind": server.kind, "version": server.version}
    summaries = {
        c.name: summarize(c, versions[c.name], [r for r in runs if r.crawler == c.name])
        for c in crawlers
    }
    rat = ratios(summaries)
    print_table(pages, summaries, rat)
    result = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {
            "pages": pages,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "timeout_s": timeout,
            "quiet_wait_s": args.quiet_wait,
            "peer_markdown": args.peer_markdown,
            "skycrawl_format": args.skycrawl_format or "default",
        },
        "server": server_info,
        "machine": machine_info(),
        "summary": {name: asdict(s) for name, s in summaries.items()},
        "ratios": rat,
        "runs": [r.as_json() for r in runs],
    }
    path = WORK_DIR / f"results-{pages}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {path}")
    return result


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Unwind normally so that the running crawl and the server are stopped too.
    raise SystemExit(128 + signum)


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
    sizes = [args.pages] + ([LARGE_PAGES] if args.large and args.pages != LARGE_PAGES else [])
    any_ok = False
    for pages in sizes:
        result = bench_size(pages, args, crawlers, versions)
        any_ok |= any(r["ok"] for r in result["runs"])
    return 0 if any_ok else 1


if __name__ == "__main__":
    sys.exit(main())
