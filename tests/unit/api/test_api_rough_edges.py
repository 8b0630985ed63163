"""Rough edges a newcomer hit in the API (issue 12): loose types, HEAD, the OpenAPI
description, and credentials in seeds shown or logged."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from api_harness import OPERATOR_KEY, SEED, Harness, assert_problem

from core.models import PageRecord
from core.redaction import install_log_redaction, redact_text, redact_url
from engine_container.sinks import page_line

Tenant = tuple[str, str]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_pages", "10"),
        ("max_pages", True),
        ("max_pages", 10.5),
        ("max_depth", "2"),
        ("respect_robots", "false"),
        ("respect_robots", 0),
        ("use_sitemaps", "yes"),
        ("page_timeout_s", "5"),
        ("page_timeout_s", True),
        ("scope", 1),
    ],
)
async def test_a_value_of_the_wrong_json_type_is_422(
    harness: Harness, tenant: Tenant, field: str, value: Any
) -> None:
    problem = assert_problem(await harness.submit(tenant[1], {**SEED, field: value}), 422)
    assert problem["errors"][0]["loc"][-1] == field
    await harness.assert_nothing_stored()


async def test_numbers_of_the_right_type_are_still_accepted(
    harness: Harness, tenant: Tenant
) -> None:
    spec = {**SEED, "max_pages": 10.0, "page_timeout_s": 5, "respect_robots": False}
    response = await harness.submit(tenant[1], spec)
    assert response.status == 202, response.body


async def test_tenant_quotas_are_strict_too(harness: Harness) -> None:
    body = {"name": "acme", "quotas": {"max_containers": "2"}}
    response = await harness.call("POST", "/v1/tenants", key=OPERATOR_KEY, json_body=body)
    assert_problem(response, 422)


async def test_head_healthz_is_200_without_a_body(harness: Harness) -> None:
    response = await harness.call("HEAD", "/healthz")
    assert response.status == 200
    assert response.body == b""
    assert response.headers["content-type"].startswith("application/json")


async def test_head_of_a_tenant_route_is_answered_like_get(
    harness: Harness, tenant: Tenant
) -> None:
    response = await harness.call("HEAD", "/v1/crawls", key=tenant[1])
    assert response.status == 200
    assert response.body == b""
    assert (await harness.call("HEAD", "/v1/crawls")).status == 401


async def test_openapi_declares_url_seeds_and_cursor_limits(harness: Harness) -> None:
    document = (await harness.call("GET", "/openapi.json")).parsed()
    spec = document["components"]["schemas"]["CrawlSpec"]
    assert spec["properties"]["seeds"]["items"]["format"] == "uri"
    assert spec["properties"]["seeds"]["items"]["pattern"].startswith("^[Hh][Tt][Tt][Pp]")
    params = {p["name"]: p for p in document["paths"]["/v1/crawls"]["get"]["parameters"]}
    assert params["cursor"]["schema"]["maxLength"] <= 512
    assert "pattern" in params["cursor"]["schema"]
    head = document["paths"]["/healthz"].get("head")
    assert head is not None
    assert head["responses"]["200"]


# ------------------------------------------------------------------ credentials in seeds


def test_redact_url_hides_userinfo_only() -> None:
    assert redact_url("https://bob:s3cret@example.com/a?b=1") == "https://***@example.com/a?b=1"
    assert redact_url("http://token@example.com:8080/") == "http://***@example.com:8080/"
    assert redact_url("https://example.com/a@b") == "https://example.com/a@b"
    assert redact_url("not a url") == "not a url"
    text = "fetch https://bob:pw@x.test/p failed; see http://y.test/"
    assert redact_text(text) == "fetch https://***@x.test/p failed; see http://y.test/"


def test_page_records_never_hold_seed_credentials() -> None:
    page = PageRecord(
        url="https://bob:s3cret@example.com/",
        final_url="https://bob:s3cret@example.com/home",
        fetched_at=datetime(2030, 1, 1, tzinfo=UTC),
        error="connection refused: https://bob:s3cret@example.com/",
    )
    line = page_line(page).decode()
    assert "s3cret" not in line
    assert json.loads(line)["url"] == "https://***@example.com/"


def test_warc_records_never_hold_seed_credentials() -> None:
    from engine_container.fetcher import FetchResult
    from engine_container.warc import request_record, response_record

    fetch = FetchResult(
        url="https://bob:s3cret@example.com/",
        final_url="https://bob:s3cret@example.com/",
        status=200,
        headers={"content-type": "text/html"},
        body=b"<html></html>",
        wire_bytes=13,
        elapsed_ms=1.0,
        redirects=0,
        request_headers=(("Authorization", "Basic Ym9iOnMzY3JldA=="),),
    )
    when = datetime(2030, 1, 1, tzinfo=UTC)
    records = request_record(fetch, when, "<urn:uuid:x>") + response_record(fetch, when)
    assert b"s3cret" not in records
    assert b"Ym9iOnMzY3JldA" not in records
    assert b"WARC-Target-URI: https://***@example.com/" in records


def test_log_lines_never_hold_seed_credentials(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("skycrawl.test-redaction")
    with caplog.at_level(logging.INFO):
        install_log_redaction(caplog.handler)
        logger.info("fetching %s", "https://bob:s3cret@example.com/")
    assert "s3cret" not in caplog.text
    assert "https://***@example.com/" in caplog.text


async def test_the_web_app_shows_seeds_without_credentials(harness: Harness) -> None:
    from test_webapp import signed_in

    tenant_id, key, browser = await signed_in(harness, "creds")
    spec = {"seeds": ["https://bob:s3cret@example.com/"]}
    crawl_id = (await harness.submit(key, spec)).parsed()["id"]
    for path in (f"/t/{tenant_id}/crawls", f"/t/{tenant_id}/crawls/{crawl_id}"):
        page = await browser.get(path)
        assert page.status == 200
        assert b"s3cret" not in page.body
        assert b"https://***@example.com/" in page.body
