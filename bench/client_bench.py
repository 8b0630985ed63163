"""Micro-benchmark of the HTTP clients alone: aiohttp vs httpx fetching the generated site.

    python bench/client_bench.py [--requests 5000] [--concurrency 16] [--rounds 3] [--pages 5000]
                                 [--only aiohttp,httpx]

Each (client, round) runs in a fresh subprocess of this script (``--worker``) that GETs
``--requests`` distinct pages of the site (cycling if the site is smaller), reads every body
completely and reports wall time and process CPU time of the request loop only (interpreter
start-up and imports excluded). The fetcher's client sets the ceiling of a crawler's pages/s:
a crawler cannot go faster than its client does on a bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from _harness import (
    DEFAULT_SEED,
    WORK_DIR,
    SiteServer,
    ensure_site,
    page_path,
    wait_for_quiet,
)

Fetch = Callable[[str], Awaitable[int]]


async def _drive(urls: list[str], concurrency: int, fetch: Fetch) -> tuple[int, int]:
    """Run ``fetch`` over ``urls`` with ``concurrency`` workers; return (ok count, bytes)."""
    it: Iterator[str] = iter(urls)
    ok = 0
    nbytes = 0

    async def worker() -> None:
        nonlocal ok, nbytes
        for url in it:
            n = await fetch(url)
            if n >= 0:
                ok += 1
                nbytes += n

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, nbytes


async def run_aiohttp(urls: list[str], concurrency: int) -> tuple[int, int]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(url: str) -> int:
            async with session.get(url) as resp:
                body = await resp.read()
                return len(body) if resp.status == 200 else -1

        return await _drive(urls, concurrency, fetch)


async def run_httpx(urls: list[str], concurrency: int) -> tuple[int, int]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def fetch(url: str) -> int:
            resp = await client.get(url)
            return len(resp.content) if resp.status_code == 200 else -1

        return await _drive(urls, concurrency, fetch)


CLIENTS: dict[str, Callable[[list[str], int], Coroutine[Any, Any, tuple[int, int]]]] = {
    "aiohttp": run_aiohttp,
    "httpx": run_httpx,
}


def client_version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


def worker_main(client: str, base_url: str, pages: int, requests: int, concurrency: int) -> None:
    urls = [base_url + page_path(i % pages) for i in range(requests)]
    runner = CLIENTS[client]
    # Import outside the measured window.
    __import__(client)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok, nbytes = asyncio.run(runner(urls, concurrency))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    json.dump({"responses": ok, "bytes": nbytes, "wall_s": wall, "cpu_s": cpu}, sys.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=5000, help="GETs per run (default 5000)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (16)")
    p.add_argument("--rounds", type=int, default=3, help="runs per client (default 3)")
    p.add_argument("--pages", type=int, default=5000, help="site to fetch from (default 5000)")
    p.add_argument("--only", default=",".join(CLIENTS), help="comma-separated clients")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="site generator seed")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="wait up to this many seconds for an idle machine before each run (0 = no)",
    )
    p.add_argument("--no-nginx", action="store_true", help="use the fallback Python server")
    p.add_argument("--worker", choices=list(CLIENTS), help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        worker_main(args.worker, args.base_url, args.pages, args.requests, args.concurrency)
        return 0

    clients = [c.strip() for c in args.only.split(",") if c.strip()]
    if not clients or any(c not in CLIENTS for c in clients):
        p.error(f"--only: choose among {list(CLIENTS)}")
    site = ensure_site(args.pages, seed=args.seed)
    runs: list[dict[str, Any]] = []
    with SiteServer(site.root, prefer_nginx=not args.no_nginx) as server:
        print(
            f"== {args.requests:,} GETs at concurrency {args.concurrency} from a "
            f"{args.pages:,}-page site, served by {server.kind} ({server.version})"
        )
        for rnd in range(args.rounds):
            k = rnd % len(clients)
            for client in clients[k:] + clients[:k]:
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    client,
                    "--base-url",
                    server.base_url,
                    "--pages",
                    str(args.pages),
                    "--requests",
                    str(args.requests),
                    "--concurrency",
                    str(args.concurrency),
                ]
                if args.quiet_wait > 0:
                    wait_for_quiet(args.quiet_wait)
                srv0 = server.cpu_seconds()
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                srv = server.cpu_seconds() - srv0
                if done.returncode != 0:
                    tail = "\n      | ".join(done.stderr.strip().splitlines()[-10:])
                    print(f"  round {rnd + 1}: {client:<8} FAILED\n      | {tail}")
                    runs.append({"client": client, "round": rnd, "ok": False})
                    continue
                m = json.loads(done.stdout)
                n = int(m["responses"])
                m.update(client=client, round=rnd, ok=n == args.requests, server_cpu_s=srv)
                m["req_per_s"] = n / m["wall_s"]
                m["cpu_ms_per_req"] = m["cpu_s"] / max(n, 1) * 1000
                runs.append(m)
                print(
                    f"  round {rnd + 1}: {client:<8} {n:>6} ok {m['wall_s']:6.2f}s "
                    f"{m['req_per_s']:8.0f} req/s {m['cpu_ms_per_req']:6.3f} CPU-ms/req "
                    f"server cpu {srv:4.1f}s"
                )
    summary: dict[str, dict[str, Any]] = {}
    for client in clients:
        ok = [r for r in runs if r["client"] == client and r["ok"]]
        summary[client] = {
            "version": client_version(client),
            "ok_runs": len(ok),
            "req_per_s": statistics.median(r["req_per_s"] for r in ok) if ok else None,
            "cpu_ms_per_req": statistics.median(r["cpu_ms_per_req"] for r in ok) if ok else None,
            "mb_per_s": statistics.median(r["bytes"] / r["wall_s"] / 1e6 for r in ok)
            if ok
            else None,
        }
    print(
        f"\n{'client':<10}{'version':>10}{'ok runs':>9}{'req/s':>10}{'CPU-ms/req':>12}{'MB/s':>8}"
    )
    for client, s in summary.items():
        if s["req_per_s"] is None:
            print(f"{client:<10}{s['version']:>10}{'0':>9}{'-':>10}{'-':>12}{'-':>8}")
            continue
        print(
            f"{client:<10}{s['version']:>10}{s['ok_runs']:>9}{s['req_per_s']:>10.0f}"
            f"{s['cpu_ms_per_req']:>12.3f}{s['mb_per_s']:>8.1f}"
        )
    out = WORK_DIR / f"client-results-{args.requests}.json"
    out.write_text(json.dumps({"params": vars(args), "summary": summary, "runs": runs}, indent=2))
    print(f"results written to {out}")
    return 0 if any(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
