"""Schemathesis against ``/openapi.json`` (the ``fuzz`` tier): requests generated from the
published description, sent to the real API over its ASGI adapter. Every request the schema
calls valid must be accepted (``positive_data_acceptance``: 2xx, or 404 for ids that do not
exist), no answer may be a 5xx, and every answer must match its documented status, headers,
content type and schema.

The API runs on a loop in its own thread over the local adapters (SQLite, files); the tenant
routes get a tenant key, the operator routes the operator key.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import schemathesis
from api_harness import OPERATOR_KEY, START, make_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi import checks

from adapters.local.blob_store import FileBlobStore
from adapters.local.container_runtime import SubprocessRuntime
from adapters.local.message_bus import SqliteMessageBus
from adapters.local.provisioner import DirectoryProvisioner
from adapters.local.state_store import SqliteStateStore
from core.api import Api
from core.clock import FakeClock
from core.models import Quotas
from core.output import MAX_NESTING
from core.records import Records
from core.tenancy import TenantService
from functions.local.asgi import create_asgi_app

pytestmark = pytest.mark.fuzz
T = TypeVar("T")
EXPECTED = ["2XX", "404"]


class _ApiThread:
    """The API and its stores on an event loop in a thread; ``run`` calls into it."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.root = root

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=60)

    async def start(self) -> None:
        clock = FakeClock(START)
        self.settings = make_settings(public_base_url="http://testserver")
        self.state = SqliteStateStore(self.root / "state.sqlite3", clock=clock)
        self.bus = SqliteMessageBus(self.root / "bus.sqlite3", clock=clock)
        await self.bus.ensure_queue(name=self.settings.inbox_queue)
        await self.bus.ensure_topic(topic=self.settings.dispatch_topic)
        self.blobs = FileBlobStore(self.root / "blobs")
        self.runtime = SubprocessRuntime(
            command=(sys.executable, "-c", "pass"), log_dir=self.root / "logs"
        )
        records = Records(self.state)
        tenants = TenantService(
            records,
            DirectoryProvisioner(self.root / "provisioned"),
            self.bus,
            self.blobs,
            self.runtime,
            clock,
            self.settings,
        )
        self.api = Api(
            records=records,
            tenants=tenants,
            bus=self.bus,
            blobs=self.blobs,
            clock=clock,
            settings=self.settings,
        )
        transport = httpx.ASGITransport(app=create_asgi_app(self.api))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        quotas = Quotas(max_pending=1_000_000, submissions_per_minute=100_000)
        created = await self.client.post(
            "/v1/tenants",
            json={"name": "fuzz", "quotas": quotas.model_dump()},
            headers={"authorization": f"Bearer {OPERATOR_KEY}"},
        )
        assert created.status_code == 201, created.text
        self.tenant_key = str(created.json()["api_key"])
        earlier = await self.client.post(
            "/v1/crawls",
            json={"seeds": ["https://example.com/"]},
            headers={"authorization": f"Bearer {self.tenant_key}"},
        )
        self.crawl_id = str(earlier.json()["id"])
        self.document = (await self.client.get("/openapi.json")).json()

    async def stop(self) -> None:
        await self.client.aclose()
        await self.runtime.close()
        await self.bus.close()
        await self.state.close()
        await self.blobs.close()

    async def send(self, kwargs: dict[str, Any]) -> httpx.Response:
        return await self.client.request(**kwargs)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


# The formats the description gives the strings the API compiles (core/output.py): a CSS
# selector and an XPath the extraction can run. Hypothesis cannot invent valid ones from
# the name, so a few of each kind are offered.
schemathesis.openapi.format(
    "css-selector", st.sampled_from(["p", "h1.title", "div > a[href]", "#main li:nth-child(2)"])
)
schemathesis.openapi.format(
    "xpath", st.sampled_from(["//p", "//a/@href", "//h1/text()", "//li[2]"])
)


def _schema(api: _ApiThread) -> schemathesis.BaseSchema:
    config = SchemathesisConfig()
    project = config.projects.default
    project.checks.positive_data_acceptance.expected_statuses = EXPECTED
    project.generation.modes = [GenerationMode.POSITIVE]
    project.phases.coverage.enabled = False
    return schemathesis.openapi.from_dict(api.document, config=config)


# parametrize needs the document when the module is collected: the API starts then, in a
# temporary directory, and stops with the module's fixture below
API = _ApiThread(Path(tempfile.mkdtemp(prefix="skycrawl-fuzz-")))
API.run(API.start())
schema = _schema(API)


@pytest.fixture(scope="module", autouse=True)
def _stop_the_api() -> Iterator[None]:
    yield
    API.run(API.stop())
    API.close()


#: Checks that look at the one answer only; the others send requests of their own (through
#: ``requests``, to a host name that would be resolved off this machine).
CHECKS = [
    not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.positive_data_acceptance,
]


def _expressible(spec: object) -> None:
    """Take out of a generated crawl request what the API refuses for reasons no schema can
    say: a handler the operator did not install and allow, extract fields nested deeper
    than ``MAX_NESTING`` levels."""
    if not isinstance(spec, dict):
        return
    spec.pop("handler", None)
    extract = spec.get("extract")
    if isinstance(extract, dict):
        _prune(extract.get("fields"), 1)


def _prune(fields: object, depth: int) -> None:
    if not isinstance(fields, dict):
        return
    for rule in fields.values():
        if not isinstance(rule, dict):
            continue
        if depth >= MAX_NESTING:
            rule.pop("fields", None)
        else:
            _prune(rule.get("fields"), depth + 1)


@schema.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_valid_looking_request_is_accepted_and_answered_as_documented(
    case: schemathesis.Case,
) -> None:
    operator = case.operation.definition.raw.get("security") == [{"operatorKey": []}]
    key = OPERATOR_KEY if operator else API.tenant_key
    headers = {"authorization": f"Bearer {key}"}
    if isinstance(case.body, dict) and case.body.get("recrawl_of") not in (None, "latest"):
        # a reference must name an existing crawl, which no schema can say
        case.body["recrawl_of"] = API.crawl_id
    if isinstance(case.body, dict):
        _expressible(case.body.get("crawl", case.body))
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    for transport_only in ("follow_redirects", "allow_redirects", "verify", "timeout", "cookies"):
        kwargs.pop(transport_only, None)
    response = API.run(API.send(kwargs))
    case.validate_response(response, checks=CHECKS, headers=headers)
