"""Shared pieces of the benchmarks: a deterministic generated site and a local server for it.

``python bench/_harness.py serve ROOT PORT`` runs the fallback threaded HTTP/1.1 server (used
only when nginx is not on PATH).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / ".work"
SITE_FORMAT_VERSION = 1
DEFAULT_SEED = 20240611
LINKS_PER_PAGE = 20


# --------------------------------------------------------------------------------------------
# Site generation
# --------------------------------------------------------------------------------------------


def page_path(i: int) -> str:
    """URL path of page ``i``: page 0 is the entry point ``/index.html``."""
    return "/index.html" if i == 0 else f"/pages/{i:06d}.html"


def _href(src: int, dst: int, rng: random.Random) -> str:
    """A link from page ``src`` to page ``dst``, root-relative or document-relative at random."""
    if rng.random() < 0.5:
        return page_path(dst)
    in_pages_dir = src != 0
    if dst == 0:
        return "../index.html" if in_pages_dir else "index.html"
    name = f"{dst:06d}.html"
    return name if in_pages_dir else f"pages/{name}"


def _word_pool(rng: random.Random, count: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(count)]


def _paragraph_pool(rng: random.Random, words: list[str], count: int) -> list[str]:
    paras = []
    for _ in range(count):
        n = rng.randint(60, 140)
        text = " ".join(rng.choices(words, k=n))
        paras.append(text[0].upper() + text[1:] + ".")
    return paras


@dataclass(frozen=True)
class Site:
    """A generated site on disk: ``root`` is the document root served over HTTP."""

    pages: int
    seed: int
    dir: Path

    @property
    def root(self) -> Path:
        return self.dir / "www"

    @property
    def marker(self) -> Path:
        return self.dir / "params.json"

    def params(self) -> dict[str, Any]:
        return {
            "version": SITE_FORMAT_VERSION,
            "pages": self.pages,
            "seed": self.seed,
            "links_per_page": LINKS_PER_PAGE,
        }

    def is_ready(self) -> bool:
        try:
            return bool(json.loads(self.marker.read_text()) == self.params())
        except (OSError, ValueError):
            return False


def ensure_site(pages: int, seed: int = DEFAULT_SEED, work_dir: Path = WORK_DIR) -> Site:
    """Generate the ``pages``-page site under ``work_dir/site-<pages>/`` unless already there.

    Page ``i`` links to page ``i + 1`` (the last one back to the index), so every page is
    reachable from ``/index.html``, plus ``LINKS_PER_PAGE - 1`` random other pages. Each page is
    10-20 KB of HTML with a ``<title>``. The output is a pure function of ``(pages, seed)``.
    """
    if pages < 2:
        raise ValueError("a site needs at least 2 pages")
    site = Site(pages=pages, seed=seed, dir=work_dir / f"site-{pages}")
    if site.is_ready():
        return site
    print(f"generating {pages:,}-page site in {site.dir} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    tmp = work_dir / f".site-{pages}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "www" / "pages").mkdir(parents=True)

    rng = random.Random(f"skycrawl-bench/{seed}/{pages}")
    words = _word_pool(rng, 3000)
    paras = _paragraph_pool(rng, words, 600)
    total = 0
    for i in range(pages):
        target = rng.randint(10_000, 20_000)
        nxt = i + 1 if i + 1 < pages else 0
        others = [rng.randrange(pages) for _ in range(LINKS_PER_PAGE - 1)]
        targets = [nxt, *(t for t in others if t != i)]
        title = f"Page {i} - {' '.join(rng.choices(words, k=4)).title()}"
        head = (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{title}</title>\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            "<style>body{font-family:sans-serif;max-width:60em;margin:auto}</style>\n"
            f"</head>\n<body>\n<header><h1>{title}</h1>\n<nav><ul>\n"
            f'<li><a href="{_href(i, 0, rng)}">Home</a></li>\n'
            f'<li><a href="{_href(i, nxt, rng)}" rel="next">Next page</a></li>\n'
            "</ul></nav></header>\n<main>\n"
        )
        parts = [head]
        size = len(head)
        link_iter = iter(targets[1:])
        while size < target - 200:
            para = rng.choice(paras)
            dst = next(link_iter, None)
            if dst is not None:
                cut = rng.randrange(len(para) // 2, len(para))
                anchor = " ".join(rng.choices(words, k=rng.randint(1, 4)))
                para = f'{para[:cut]} <a href="{_href(i, dst, rng)}">{anchor}</a> {para[cut:]}'
            chunk = f"<p>{para}</p>\n"
            parts.append(chunk)
            size += len(chunk)
        # Links that did not fit in the text go into a "related" list.
        rest = list(link_iter)
        if rest:
            items = "".join(f'<li><a href="{_href(i, d, rng)}">Page {d}</a></li>\n' for d in rest)
            parts.append(f"<aside><h2>Related</h2><ul>\n{items}</ul></aside>\n")
        parts.append(f"</main>\n<footer><p>Generated page {i} of {pages}.</p></footer>\n")
        parts.append("</body>\n</html>\n")
        html = "".join(parts)
        out = tmp / "www" / page_path(i).lstrip("/")
        out.write_text(html, encoding="utf-8")
        total += len(html)

    (tmp / "www" / "robots.txt").write_text("User-agent: *\nAllow: /\n", encoding="ascii")
    (tmp / "params.json").write_text(json.dumps(site.params()))
    shutil.rmtree(site.dir, ignore_errors=True)
    tmp.rename(site.dir)
    print(
        f"  {total / 1e6:,.1f} MB in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    return site


# --------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


NGINX_CONF = """\
# Generated by bench/_harness.py: a static file server for the benchmark site.
{user}worker_processes 1;
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    # Small on purpose: each cached entry holds an fd, and a cache larger than the fd limit
    # turns into "Too many open files" (500s) on big sites.
    open_file_cache max=512 inactive=20s;
    types {{
        text/html html;
        text/plain txt;
        text/css css;
        text/javascript js;
        application/json json;
        image/png png;
        font/woff2 woff2;
        video/webm webm;
    }}
    default_type application/octet-stream;
    client_body_temp_path {work}/nginx-tmp/body;
    proxy_temp_path {work}/nginx-tmp/proxy;
    fastcgi_temp_path {work}/nginx-tmp/fastcgi;
    uwsgi_temp_path {work}/nginx-tmp/uwsgi;
    scgi_temp_path {work}/nginx-tmp/scgi;

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {root};
        index index.html;
{locations}    }}
}}
"""


def _group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in process group ``pgid`` (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is state (field 3); pgrp is field 5, utime 14, stime 15.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine so far, all cores (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal guest guest_nice; guests are in user/nice.
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float, threshold: float = 0.15, sample: float = 1.0) -> float:
    """Wait (at most ``max_wait`` s) until the machine uses < ``threshold`` cores; return its load.

    On a shared machine other jobs skew the crawl figures; this keeps a run from starting in the
    middle of someone else's test suite. Returns the last measured load in cores.
    """
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy_seconds()
        time.sleep(sample)
        load = (machine_busy_seconds() - before) / sample
        if load < threshold or time.monotonic() >= deadline:
            return load


class SiteServer:
    """nginx (if on PATH) or a fallback threaded Python server for ``root`` on 127.0.0.1."""

    def __init__(
        self,
        root: Path,
        work_dir: Path = WORK_DIR,
        *,
        prefer_nginx: bool = True,
        logged_prefixes: tuple[str, ...] = (),
    ):
        self.root = root
        self.work_dir = work_dir
        #: URL path prefixes whose requests nginx logs (``logged_hits``); nothing else is logged
        self.logged_prefixes = logged_prefixes
        self.port = free_port()
        self.nginx = shutil.which("nginx") if prefer_nginx else None
        self.kind = "nginx" if self.nginx else "python-threading"
        self.version = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = (self.work_dir / "server.log").open("ab")
        if self.nginx:
            (self.work_dir / "nginx-tmp").mkdir(exist_ok=True)
            conf = self.work_dir / "nginx.conf"
            conf.write_text(
                NGINX_CONF.format(
                    user="user root;\n" if os.geteuid() == 0 else "",
                    work=self.work_dir,
                    port=self.port,
                    root=self.root,
                    locations="".join(
                        f"        location {prefix} {{ access_log {self._hits_log}; }}\n"
                        for prefix in self.logged_prefixes
                    ),
                )
            )
            ver = subprocess.run([self.nginx, "-v"], capture_output=True, text=True, check=False)
            self.version = (ver.stderr or ver.stdout).strip().removeprefix("nginx version: ")
            cmd = [
                self.nginx,
                "-p",
                str(self.work_dir),
                "-c",
                str(conf),
                "-e",
                str(self.work_dir / "nginx-error.log"),
            ]
        else:
            print(
                "WARNING: nginx not found on PATH; serving with Python's ThreadingHTTPServer, "
                "which may be the bottleneck (apt-get install nginx-light).",
                file=sys.stderr,
                flush=True,
            )
            self.version = f"Python {sys.version.split()[0]}"
            cmd = [sys.executable, __file__, "serve", str(self.root), str(self.port)]
        self._proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                tail = (self.work_dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.kind} exited with {self._proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/robots.txt", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} did not come up on {self.base_url}")
            time.sleep(0.05)

    @property
    def _hits_log(self) -> Path:
        return self.work_dir / f"hits-{self.port}.log"

    def logged_hits(self) -> int | None:
        """Requests for ``logged_prefixes`` so far (None: not known, no nginx)."""
        if not self.nginx:
            return None
        try:
            with self._hits_log.open("rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def error_log_size(self) -> int:
        try:
            return (self.work_dir / "nginx-error.log").stat().st_size if self.nginx else 0
        except OSError:
            return 0

    def errors_since(self, offset: int) -> list[str]:
        """Serious lines ([crit], [alert], [emerg], [error]) nginx logged after ``offset``."""
        if not self.nginx:
            return []
        try:
            with (self.work_dir / "nginx-error.log").open("rb") as f:
                f.seek(offset)
                new = f.read().decode(errors="replace")
        except OSError:
            return []
        levels = ("[crit]", "[alert]", "[emerg]", "[error]")
        return [line for line in new.splitlines() if any(lv in line for lv in levels)]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's processes (master and workers)."""
        return _group_cpu_seconds(self._proc.pid) if self._proc else 0.0

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> SiteServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve(site: Site, *, prefer_nginx: bool = True) -> Iterator[SiteServer]:
    with SiteServer(site.root, prefer_nginx=prefer_nginx) as server:
        yield server


class _QuietHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve_forever(root: str, port: int) -> None:
    handler = partial(_QuietHandler, directory=root)
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        httpd.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        _serve_forever(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"usage: {sys.argv[0]} serve ROOT PORT")
