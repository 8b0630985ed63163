"""Cold start of each function entry point: a fresh interpreter to its first response.

    .venv/bin/python bench/coldstart_bench.py [--rounds 7] [--only aws-api,gcp-api]

Every scale-out of a function pays its start-up (and Lambda bills the INIT phase). For each
entry point a new ``python`` process imports the module, builds its composition lazily as it
does in the cloud (settings, SDK clients, the core), and answers one request that needs no
cloud call:

* ``aws-api`` -- ``functions.aws.api.handler`` with an API Gateway (payload 2.0) event for
  ``GET /healthz``;
* ``aws-conductor``, ``aws-housekeeping`` -- the module imported and its stack built
  (``bootstrap.stack()``: the boto3 clients and the core), all that precedes its first
  message (which reads and writes DynamoDB: a round trip, not start-up);
* ``gcp-api`` -- ``functions.gcp.main.api`` with a Flask request for ``GET /healthz``;
* ``azure-api`` -- ``functions.azure.function_app.api`` with an ``HttpRequest`` for
  ``GET /api/healthz``, its stack built as ``get_stack()`` does but without ``prepare()``
  (the inbox queue's create-if-missing: a round trip).

SDK clients are built but reach nothing (endpoints point at 127.0.0.1:9, emulator variables
set): building a client is part of a cold start, a network round trip is not. Printed per
entry point, as medians of ``--rounds`` runs: the bare interpreter (``python -c pass`` in the
same venv), the import of the entry module, and the whole start to the first response; then
the slowest imports below the entry module (``python -X importtime``, one run) and the 1-minute
load average before and after. The goal is 150 ms to the first response. The CPU time (user +
system) of the first-response process is printed too: on a shared, loaded machine it moves
far less than the wall clock does, so compare runs by it when the load differs.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_MS = 150.0
NOWHERE = "http://127.0.0.1:9"

_AWS_CONTEXT = """
class Context:
    function_name = "skycrawl"; memory_limit_in_mb = 512; aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:skycrawl"
    def get_remaining_time_in_millis(self): return 30000
"""

PROBES: dict[str, tuple[str, str]] = {
    # name: (entry module, code that answers one request and prints its status)
    "aws-api": (
        "functions.aws.api",
        _AWS_CONTEXT
        + """
event = {"version": "2.0", "rawPath": "/healthz", "rawQueryString": "", "headers": {},
         "requestContext": {"http": {"method": "GET", "path": "/healthz"}, "stage": "$default",
                            "requestId": "bench"}, "isBase64Encoded": False}
print(entry.handler(event, Context())["statusCode"])
""",
    ),
    "aws-conductor": (
        "functions.aws.conductor",
        """
from functions.aws import bootstrap
print(type(bootstrap.stack()).__name__)
""",
    ),
    "aws-housekeeping": (
        "functions.aws.housekeeping",
        """
from functions.aws import bootstrap
print(type(bootstrap.stack()).__name__)
""",
    ),
    "gcp-api": (
        "functions.gcp.main",
        """
import flask
with flask.Flask("bench").test_request_context("/healthz", method="GET") as ctx:
    print(entry.api(ctx.request).status_code)
""",
    ),
    "azure-api": (
        "functions.azure.function_app",
        """
import asyncio
import azure.functions as func
from functions.azure import bootstrap
bootstrap.use_stack(bootstrap.build_stack())  # as get_stack() does, less prepare()'s round trip
req = func.HttpRequest(method="GET", url="http://localhost/api/healthz", body=b"",
                       route_params={"path": "healthz"})
print(asyncio.run(entry.api(req)).status_code)
""",
    ),
}


def environment(work: Path) -> dict[str, str]:
    """What the deployed functions read, pointed at nowhere. Google's clients want
    Application Default Credentials when built: an ``authorized_user`` file, which is only
    used (refreshed) on a first call, which no probe makes."""
    adc = work / "adc.json"
    adc.write_text(
        '{"type": "authorized_user", "client_id": "bench", "client_secret": "bench", '
        '"refresh_token": "bench"}'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYCRAWL_", "AWS_"))}
    env.update(
        PYTHONDONTWRITEBYTECODE="1",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="skycrawl",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        SKYCRAWL_AWS_ENDPOINT_URL=NOWHERE,
        SKYCRAWL_OPERATOR_KEY="bench-operator-key",
        GOOGLE_APPLICATION_CREDENTIALS=str(adc),
        GOOGLE_CLOUD_PROJECT="bench",
        NO_GCE_CHECK="True",  # never ask a metadata server
        SKYCRAWL_GCP_PROJECT="bench",
        SKYCRAWL_GCP_BUCKET="bench",
        SKYCRAWL_GCP_TIMER_URL="http://127.0.0.1:9/internal/timers",
        SKYCRAWL_GCP_TIMER_SERVICE_ACCOUNT="timers@bench.iam.gserviceaccount.com",
        PUBSUB_EMULATOR_HOST="127.0.0.1:9",
        FIRESTORE_EMULATOR_HOST="127.0.0.1:9",
        STORAGE_EMULATOR_HOST=NOWHERE,
        SKYCRAWL_AZURE_STORAGE_CONNECTION_STRING=(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBe"
            "ksoGMGw==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
            "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
            "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        ),
        SKYCRAWL_AZURE_BUS="storage-queue",
    )
    return env


def _timed(code: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU (user + system) milliseconds of one fresh process, and its last line."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"probe failed:\n{done.stderr[-3000:]}")
    return elapsed, cpu, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def slowest_imports(module: str, env: dict[str, str], top: int) -> list[tuple[str, float]]:
    """The ``top`` slowest imports (cumulative ms) directly below ``module``'s own import."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if not cumulative.strip().isdigit():
            continue
        depth = (len(name) - len(name.lstrip())) // 2
        if depth == 1:  # imported by the entry module itself
            rows.append((name.strip(), int(cumulative) / 1000))
    return sorted(rows, key=lambda row: -row[1])[:top]


@dataclass(frozen=True)
class Row:
    name: str
    bare_ms: float
    import_ms: float
    first_response_ms: float
    answer: str
    first_response_cpu_ms: float


def measure(name: str, rounds: int, env: dict[str, str]) -> Row:
    module, probe = PROBES[name]
    bare, imported, answered, cpu = [], [], [], []
    answer = ""
    for _ in range(rounds):  # interleaved, so that load changes hit all three alike
        bare.append(_timed("pass", env)[0])
        imported.append(_timed(f"import {module}", env)[0])
        elapsed, used, answer = _timed(f"import {module} as entry\n{probe}", env)
        answered.append(elapsed)
        cpu.append(used)
    return Row(
        name,
        statistics.median(bare),
        statistics.median(imported),
        statistics.median(answered),
        answer,
        statistics.median(cpu),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--top", type=int, default=6, help="slowest imports shown per entry")
    parser.add_argument("--only", default=",".join(PROBES), help="comma-separated entry points")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        parser.error(f"unknown entry points {unknown}; choose from {', '.join(PROBES)}")
    work = ROOT / "bench" / ".work"
    work.mkdir(parents=True, exist_ok=True)
    env = environment(work)
    load_before = os.getloadavg()[0]
    rows = [measure(name, args.rounds, env) for name in names]
    load_after = os.getloadavg()[0]
    print(
        f"{os.cpu_count()} CPUs, load {load_before:.2f} -> {load_after:.2f}; medians of "
        f"{args.rounds} fresh processes each; goal {GOAL_MS:.0f} ms to the first response\n"
    )
    print(
        "| entry point | bare python ms | import ms | first response ms | over bare ms | answer "
        "| first response cpu ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.name} | {r.bare_ms:.0f} | {r.import_ms:.0f} | {r.first_response_ms:.0f} | "
            f"{r.first_response_ms - r.bare_ms:.0f} | {r.answer} | {r.first_response_cpu_ms:.0f} |"
        )
    print()
    for name in names:
        module = PROBES[name][0]
        imports = ", ".join(f"{m} {ms:.0f}" for m, ms in slowest_imports(module, env, args.top))
        print(f"{name}: slowest imports of {module} (ms): {imports}")
    met = all(r.first_response_ms <= GOAL_MS for r in rows)
    print(f"\ngoal {GOAL_MS:.0f} ms to the first response: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
