"""What an analysis worker process loads for a crawl without ``extract`` or a handler: not
pydantic, the crawl models, the frontier or ``importlib.metadata`` (together ~20 MB of each
worker's memory, which the bench's summed RSS counts; README "Speed and memory")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PROBE = """
import sys
import engine_container.analysis_worker
from engine_container.analysis import Job, OutputPlan, analyse

body = b"<html><head><title>T</title><meta name=description content=d></head><body>"
body += b"<main><h1>H</h1><p>text <a href='/a'>a</a></p></main></body></html>"
plan = OutputPlan(formats=("metadata", "links", "markdown", "text", "html"))
job = Job(url="http://127.0.0.1/", status=200, body=body, content_type="text/html",
          media_type="text/html", plan=plan)
assert analyse(job).content
heavy = ("pydantic", "core.models", "core.output", "engine_container.frontier",
         "importlib.metadata")
print(" ".join(name for name in heavy if name in sys.modules))
"""


def test_a_plain_crawls_worker_loads_no_pydantic_nor_the_crawl_models() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
