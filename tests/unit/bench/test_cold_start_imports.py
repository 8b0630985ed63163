"""What a function's cold start does not pay for, entry point by entry point: each probe of
``bench/coldstart_bench.py`` (a fresh interpreter, the entry module, its stack built, one
request answered) is run, and the modules it loaded are checked. No cloud SDK is imported
before a port is used (``core.ports.deferred``; boto3 clients are ``LazyClient``\\ s), nor
the X-Ray SDK with tracing off, httpx (webhooks), croniter (schedules), the web app, the
API's route modules (``/healthz`` is answered without them), and no
pydantic validator is built for a model the request did not touch (``defer_build``). A
timing would be flaky on a shared machine; these imports are what the timings are made of
(hundreds of milliseconds for the Azure and Google SDKs)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]

#: Never loaded before the first request of any entry point.
NOT_ON_A_COLD_START = [
    "aws_xray_sdk",
    "boto3",
    "httpx",
    "croniter",
    "core.webapp.app",
    "core.api.crawls",  # the API's routes, but /healthz and /openapi.json
    "grpc",
    "google.auth",
    "google.cloud.firestore",
    "google.cloud.run_v2",
    "google.cloud.storage",
    "google.cloud.tasks_v2",
    "google.pubsub_v1",
    "requests",
    "azure.core",
    "azure.data.tables",
    "azure.identity",
    "azure.mgmt",
    "azure.servicebus",
    "azure.storage",
    "cryptography",
]
#: Flask (and its Jinja) is what functions-framework serves the GCP entry point with.
NOT_OUTSIDE_GCP = ["flask", "jinja2"]
#: Models no first request needs: their validators are built on first use.
UNBUILT = ["CrawlSpec", "Crawl", "Container", "Tenant"]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "coldstart_bench", ROOT / "bench/coldstart_bench.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


BENCH = _bench()


@pytest.mark.parametrize("name", sorted(BENCH.PROBES))
def test_a_cold_start_imports_no_sdk_and_builds_no_model_it_does_not_use(
    name: str, tmp_path: Path
) -> None:
    module, probe = BENCH.PROBES[name]
    watched = NOT_ON_A_COLD_START + ([] if name.startswith("gcp") else NOT_OUTSIDE_GCP)
    report = f"""
import json, sys
import core.models as models
loaded = sorted(m for m in {watched!r} if m in sys.modules)
built = sorted(n for n in {UNBUILT!r} if getattr(models, n).__pydantic_complete__)
print(json.dumps({{"loaded": loaded, "built": built}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module} as entry\n{probe}\n{report}"],
        env=BENCH.environment(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer, line = done.stdout.strip().splitlines()[-2:]
    assert answer in ("200", "AwsStack")  # the request was answered / the stack was built
    assert json.loads(line) == {"loaded": [], "built": []}
