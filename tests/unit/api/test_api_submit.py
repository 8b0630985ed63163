"""POST /v1/crawls: validation, SSRF guard, quotas, idempotency, and nothing partial."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_harness import BASE_URL, SEED, Harness, assert_problem

from core.messages import CrawlSubmitted
from core.models import Quotas

Tenant = tuple[str, str]


async def test_submit_answers_202_with_status_url_and_enqueues(
    harness: Harness, tenant: Tenant
) -> None:
    tenant_id, key = tenant
    response = await harness.submit(key, {"seeds": ["https://example.com/"], "max_pages": 5})
    assert response.status == 202
    body = response.parsed()
    assert body["id"].startswith("cr_")
    assert body["status"] == "pending"
    assert body["status_url"] == f"{BASE_URL}/v1/crawls/{body['id']}"
    assert response.headers["location"] == body["status_url"]
    stored = await harness.records.crawls.get(tenant_id, body["id"])
    assert stored is not None
    assert stored.value.spec.max_pages == 5
    assert await harness.records.active.get(tenant_id, body["id"]) is not None
    assert await harness.inbox() == [CrawlSubmitted(tenant_id=tenant_id, crawl_id=body["id"])]


async def test_submit_then_get_status(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    crawl_id = (await harness.submit(key)).parsed()["id"]
    harness.clock.advance(3)
    response = await harness.call("GET", f"/v1/crawls/{crawl_id}", key=key)
    assert response.status == 200
    status = response.parsed()
    assert status["id"] == crawl_id
    assert status["status"] == "pending"
    assert status["counts"] == {"queued": 0, "fetched": 0, "failed": 0, "bytes": 0}
    assert status["container_id"] is None
    assert status["attempts"] == 0
    assert status["timings"]["duration_s"] == 3.0
    assert status["timings"]["dispatched_at"] is None
    assert status["links"]["pages"] == f"{BASE_URL}/v1/crawls/{crawl_id}/pages"


BAD_SPECS: list[tuple[str, Any]] = [
    ("unknown field", {"seeds": ["https://example.com/"], "colour": "red"}),
    ("no seeds", {"seeds": []}),
    ("missing seeds", {"max_pages": 3}),
    ("ftp scheme", {"seeds": ["ftp://example.com/"]}),
    ("file scheme", {"seeds": ["file:///etc/passwd"]}),
    ("javascript", {"seeds": ["javascript:alert(1)"]}),
    ("no host", {"seeds": ["http:///path"]}),
    ("whitespace", {"seeds": ["http://exa mple.com/"]}),
    ("bad port", {"seeds": ["http://example.com:99999/"]}),
    ("too many seeds", {"seeds": [f"https://example.com/{i}" for i in range(1001)]}),
    (
        "metadata header",
        {"seeds": ["https://example.com/"], "headers": {"Metadata-Flavor": "Google"}},
    ),
    ("host header", {"seeds": ["https://example.com/"], "headers": {"Host": "internal"}}),
    ("bad regex", {"seeds": ["https://example.com/"], "include": ["("]}),
    ("negative depth", {"seeds": ["https://example.com/"], "max_depth": -1}),
    ("seeds not a list", {"seeds": "https://example.com/"}),
    ("bad scope", {"seeds": ["https://example.com/"], "scope": "everything"}),
    ("bad webhook", {"seeds": ["https://example.com/"], "webhook_url": "gopher://x/"}),
]


@pytest.mark.parametrize(("case", "spec"), BAD_SPECS, ids=[c for c, _ in BAD_SPECS])
async def test_invalid_spec_is_422_with_errors_and_stores_nothing(
    harness: Harness, tenant: Tenant, case: str, spec: Any
) -> None:
    _, key = tenant
    problem = assert_problem(await harness.submit(key, spec, api=_roomy(harness)), 422)
    assert problem["type"] == "urn:skycrawl:problem:validation"
    assert problem["errors"]
    for error in problem["errors"]:
        assert set(error) == {"loc", "msg", "type"}
    await harness.assert_nothing_stored()


def _roomy(harness: Harness) -> Any:
    """An Api accepting large bodies (the 1001-seed case is ~30 kB)."""
    return harness.with_settings(max_request_bytes=1_000_000)


async def test_secret_header_values_are_not_echoed(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    spec = {"seeds": ["https://example.com/"], "headers": {"X-Api-Token": "hunter2-secret"}}
    response = await harness.submit(key, spec)
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["loc"] == ["headers"]
    assert b"hunter2-secret" not in response.body
    await harness.assert_nothing_stored()


@pytest.mark.parametrize(
    "body",
    [b"{", b"not json", b"\xff\xfe\x00", b"", b'{"seeds": [}', b'{"a":' + b"[" * 50_000],
    ids=["truncated", "text", "binary", "empty", "syntax", "deep"],
)
async def test_malformed_json_is_400(harness: Harness, tenant: Tenant, body: bytes) -> None:
    _, key = tenant
    response = await harness.call(
        "POST",
        "/v1/crawls",
        key=key,
        body=body,
        headers={"content-type": "application/json"},
        api=_roomy(harness),
    )
    problem = assert_problem(response, 400)
    assert problem["type"] == "urn:skycrawl:problem:malformed-json"
    await harness.assert_nothing_stored()


@pytest.mark.parametrize("document", [[SEED], "seeds", 42, None, True])
async def test_non_object_json_is_422(harness: Harness, tenant: Tenant, document: Any) -> None:
    _, key = tenant
    response = await harness.call(
        "POST",
        "/v1/crawls",
        key=key,
        body=json.dumps(document).encode(),
        headers={"content-type": "application/json"},
    )
    problem = assert_problem(response, 422)
    assert "object" in problem["detail"]
    await harness.assert_nothing_stored()


async def test_oversize_body_is_413(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    api = harness.with_settings(max_request_bytes=200)
    spec = {"seeds": [f"https://example.com/{i}" for i in range(20)]}
    assert_problem(await harness.submit(key, spec, api=api), 413)
    await harness.assert_nothing_stored()
    # exactly at the limit is fine
    small = {"seeds": ["https://example.com/"], "include": ["x" * 100]}
    body_len = len(json.dumps(small).encode())
    api = harness.with_settings(max_request_bytes=body_len)
    assert (await harness.submit(key, small, api=api)).status == 202
    assert len(await harness.inbox()) == 1


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_wrong_content_type_is_415(
    harness: Harness, tenant: Tenant, content_type: str | None
) -> None:
    _, key = tenant
    headers = {} if content_type is None else {"content-type": content_type}
    response = await harness.call(
        "POST", "/v1/crawls", key=key, body=b'{"seeds": ["https://example.com/"]}', headers=headers
    )
    assert_problem(response, 415)
    await harness.assert_nothing_stored()


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.skycrawl+json"],
)
async def test_json_ish_content_types_are_accepted(
    harness: Harness, tenant: Tenant, content_type: str
) -> None:
    _, key = tenant
    response = await harness.submit(key, headers={"content-type": content_type})
    assert response.status == 202


UNSAFE = [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:8080/",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://[::ffff:169.254.169.254]/",
    "http://metadata.google.internal/computeMetadata/v1/",
]


@pytest.mark.parametrize("seed", UNSAFE)
async def test_blocked_ip_seed_is_refused(harness: Harness, tenant: Tenant, seed: str) -> None:
    _, key = tenant
    response = await harness.submit(key, {"seeds": ["https://example.com/", seed]})
    problem = assert_problem(response, 422)
    assert problem["type"] == "urn:skycrawl:problem:unsafe-url"
    assert problem["errors"][0]["loc"] == ["seeds", 1]
    await harness.assert_nothing_stored()


async def test_blocked_webhook_is_refused(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    spec = {"seeds": ["https://example.com/"], "webhook_url": "http://127.0.0.1:9/hook"}
    problem = assert_problem(await harness.submit(key, spec), 422)
    assert problem["errors"][0]["loc"] == ["webhook_url"]
    await harness.assert_nothing_stored()


async def test_allowed_cidr_lets_loopback_through_but_never_metadata(
    harness: Harness, tenant: Tenant
) -> None:
    _, key = tenant
    api = harness.with_settings(allow_cidrs=["127.0.0.0/8", "169.254.0.0/16"])
    assert (await harness.submit(key, {"seeds": ["http://127.0.0.1:8080/"]}, api=api)).status == 202
    assert len(await harness.inbox()) == 1
    metadata = {"seeds": ["http://169.254.169.254/"]}
    assert_problem(await harness.submit(key, metadata, api=api), 422)
    await harness.assert_nothing_stored(crawls=1)


async def test_send_failure_leaves_nothing_behind(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    broken = harness.with_settings(inbox_queue="no-such-queue")
    problem = assert_problem(await harness.submit(key, api=broken), 500)
    assert problem["detail"] == "an unexpected error occurred; it has been logged"
    await harness.assert_nothing_stored()
    assert await harness.count("idempotency") == 0
    # with an idempotency key, the key is released too
    headers = {"idempotency-key": "k-1"}
    assert_problem(await harness.submit(key, api=broken, headers=headers), 500)
    await harness.assert_nothing_stored()
    assert await harness.count("idempotency") == 0
    assert (await harness.submit(key, headers=headers)).status == 202


# ------------------------------------------------------------------ idempotency


async def test_same_idempotency_key_and_body_gives_one_crawl(
    harness: Harness, tenant: Tenant
) -> None:
    _, key = tenant
    headers = {"Idempotency-Key": "order-42"}
    first = await harness.submit(key, headers=headers)
    second = await harness.submit(key, headers=headers)
    assert first.status == second.status == 202
    assert first.parsed() == second.parsed()
    assert second.headers["location"] == first.headers["location"]
    assert second.headers.get("idempotent-replayed") == "true"
    assert await harness.count("crawls") == 1
    assert len(await harness.inbox()) == 1


async def test_same_idempotency_key_different_body_is_422(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    headers = {"Idempotency-Key": "order-42"}
    assert (await harness.submit(key, headers=headers)).status == 202
    other = {"seeds": ["https://example.org/"]}
    problem = assert_problem(await harness.submit(key, other, headers=headers), 422)
    assert problem["type"] == "urn:skycrawl:problem:idempotency-key-reused"
    assert await harness.count("crawls") == 1
    assert len(await harness.inbox()) == 1


async def test_idempotency_keys_are_per_tenant_and_expire(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    _, other_key = await harness.create_tenant("globex")
    headers = {"Idempotency-Key": "same"}
    first = (await harness.submit(key, headers=headers)).parsed()["id"]
    other = (await harness.submit(other_key, headers=headers)).parsed()["id"]
    assert first != other
    harness.clock.advance(24 * 3600 + 1)
    again = (await harness.submit(key, headers=headers)).parsed()["id"]
    assert again != first
    assert await harness.count("crawls") == 3


@pytest.mark.parametrize("value", ["", "x" * 256, "has space", "tab\tkey", "é"])
async def test_bad_idempotency_key_is_400(harness: Harness, tenant: Tenant, value: str) -> None:
    _, key = tenant
    assert_problem(await harness.submit(key, headers={"Idempotency-Key": value}), 400)
    await harness.assert_nothing_stored()


# ------------------------------------------------------------------ quotas


async def test_max_pending_is_429_with_retry_after(harness: Harness) -> None:
    _, key = await harness.create_tenant("small", Quotas(max_pending=2))
    for _ in range(2):
        assert (await harness.submit(key)).status == 202
    assert len(await harness.inbox()) == 2
    response = await harness.submit(key)
    problem = assert_problem(response, 429)
    assert problem["type"] == "urn:skycrawl:problem:quota-exceeded"
    assert int(response.headers["retry-after"]) >= 1
    await harness.assert_nothing_stored(crawls=2)


async def test_submissions_per_minute_is_429_until_the_next_minute(harness: Harness) -> None:
    _, key = await harness.create_tenant("chatty", Quotas(submissions_per_minute=2))
    for _ in range(2):
        assert (await harness.submit(key)).status == 202
    assert len(await harness.inbox()) == 2
    response = await harness.submit(key)
    assert_problem(response, 429)
    assert response.headers["retry-after"] == "50"  # the clock is at hh:mm:10
    await harness.assert_nothing_stored(crawls=2)
    harness.clock.advance(50)
    assert (await harness.submit(key)).status == 202


async def test_a_replay_does_not_count_against_quotas(harness: Harness) -> None:
    _, key = await harness.create_tenant("small", Quotas(max_pending=1, submissions_per_minute=1))
    headers = {"Idempotency-Key": "once"}
    for _ in range(3):
        assert (await harness.submit(key, headers=headers)).status == 202
    assert await harness.count("crawls") == 1


@pytest.mark.parametrize(
    ("field", "pattern"),
    [("exclude", r"(a)\1"), ("include", r"/docs/(?=v2)"), ("exclude", r"(?<!\.)html$")],
    ids=["backreference", "lookahead", "lookbehind"],
)
async def test_patterns_re2_cannot_run_are_422_naming_the_pattern(
    harness: Harness, tenant: Tenant, field: str, pattern: str
) -> None:
    _, key = tenant
    spec = {"seeds": ["https://example.com/"], field: ["/ok/", pattern]}
    problem = assert_problem(await harness.submit(key, spec), 422)
    (error,) = problem["errors"]
    assert error["loc"] == [field]
    assert repr(pattern) in error["msg"]
    assert "RE2" in error["msg"]
    await harness.assert_nothing_stored()


@pytest.mark.parametrize(
    "spec",
    [
        {"page_timeout_s": 0.5},
        {"page_timeout_s": 301},
        {"recrawl_of": "../other-tenant"},
        {"use_sitemaps": "sometimes"},
        {"render": "sometimes"},
        {"wait_for": ""},
        {"block_resources": ["script"]},
        {"screenshot": {"format": "gif"}},
        {"scroll": {"max_scrolls": 51}},
        {"scroll": {"max_scrolls": 0}},
        {"scroll": {"delay_ms": 50}},
        {"scroll": {"max_scrolls": "5"}},
        {"scroll": 5},
    ],
    ids=[
        "budget too small",
        "budget too large",
        "recrawl path",
        "sitemaps not a bool",
        "render mode",
        "empty wait_for",
        "scripts cannot be blocked",
        "screenshot format",
        "too many scrolls",
        "no scrolls",
        "scroll delay too short",
        "scrolls as a string",
        "scroll not an object",
    ],
)
async def test_bad_crawl_rules_are_422(harness: Harness, tenant: Tenant, spec: Any) -> None:
    _, key = tenant
    problem = assert_problem(
        await harness.submit(key, {"seeds": ["https://example.com/"], **spec}), 422
    )
    assert problem["errors"][0]["loc"][:1] == [next(iter(spec))]
    await harness.assert_nothing_stored()


async def test_a_render_crawl_is_accepted_with_its_browser_options(
    harness: Harness, tenant: Tenant
) -> None:
    _, key = tenant
    spec = {
        "seeds": ["https://example.com/"],
        "render": "auto",
        "wait_for": "#app h1",
        "scroll": {"max_scrolls": 5},
    }
    response = await harness.submit(key, spec)
    assert response.status == 202
    (stored,) = [i for i in await harness.state.scan(table="crawls") if "spec" in i.data]
    saved = stored.data["spec"]
    assert (saved["render"], saved["wait_for"], saved["block_resources"]) == (
        "auto",
        "#app h1",
        ["image", "font", "media"],
    )
    assert saved["scroll"] == {"max_scrolls": 5, "delay_ms": 1000}


async def test_recrawl_of_must_name_one_of_the_tenants_crawls(
    harness: Harness, tenant: Tenant
) -> None:
    _, key = tenant
    seed = "https://example.com/"
    problem = assert_problem(
        await harness.submit(key, {"seeds": [seed], "recrawl_of": "cr_nope"}), 422
    )
    assert problem["errors"][0]["loc"] == ["recrawl_of"]
    assert "cr_nope" in problem["errors"][0]["msg"]
    await harness.assert_nothing_stored()
    first = await harness.submit(key, {"seeds": [seed]})
    assert first.status == 202
    earlier = json.loads(first.body)["id"]
    again = await harness.submit(key, {"seeds": [seed], "recrawl_of": earlier})
    assert again.status == 202
    latest = await harness.submit(key, {"seeds": [seed], "recrawl_of": "latest"})
    assert latest.status == 202
