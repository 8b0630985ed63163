from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.messages import CrawlSubmitted, RunCrawl, decode_dispatch, decode_inbox, encode
from core.models import CrawlSpec, Scope


def test_spec_defaults_and_header_normalisation() -> None:
    spec = CrawlSpec(seeds=["https://example.com/"], headers={"Accept-Language": "en"})
    assert spec.scope is Scope.same_host
    assert spec.headers == {"accept-language": "en"}


@pytest.mark.parametrize(
    "seed",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "http:///nohost",
        "javascript:alert(1)",
        "http://a b/",
    ],
)
def test_spec_refuses_non_http_or_hostless_seeds(seed: str) -> None:
    with pytest.raises(ValidationError):
        CrawlSpec(seeds=[seed])


@pytest.mark.parametrize(
    "header", ["Metadata-Flavor", "X-aws-ec2-metadata-token", "Host", "Metadata"]
)
def test_spec_refuses_headers_that_unlock_metadata(header: str) -> None:
    with pytest.raises(ValidationError, match="may not be set"):
        CrawlSpec(seeds=["https://example.com/"], headers={header: "x"})


def test_spec_refuses_unknown_fields_and_bad_regex() -> None:
    with pytest.raises(ValidationError):
        CrawlSpec.model_validate({"seeds": ["https://example.com/"], "bogus": 1})
    with pytest.raises(ValidationError, match=r"regular expression .* cannot be used"):
        CrawlSpec(seeds=["https://example.com/"], include=["("])


def test_messages_round_trip_with_routing_attributes() -> None:
    spec = CrawlSpec(seeds=["https://example.com/"])
    run = RunCrawl(container_id="c1", tenant_id="t1", crawl_id="k1", attempt=1, spec=spec)
    out = encode(run)
    assert out.attributes["container_id"] == "c1"
    assert decode_dispatch(out.body) == run
    sub = CrawlSubmitted(tenant_id="t1", crawl_id="k1")
    assert decode_inbox(encode(sub).body) == sub


def test_receive_arguments_are_checked_alike_for_every_bus() -> None:
    from core.errors import InvalidRequest
    from core.ports.message_bus import check_receive

    check_receive(max_messages=1, visibility_timeout_s=30, longest_s=43200)
    with pytest.raises(InvalidRequest, match="at least 1"):
        check_receive(max_messages=0, visibility_timeout_s=30, longest_s=43200)
    with pytest.raises(InvalidRequest, match="at most 12 hours"):
        check_receive(max_messages=1, visibility_timeout_s=43201, longest_s=43200)
    with pytest.raises(InvalidRequest, match="at most 7 days"):
        check_receive(max_messages=1, visibility_timeout_s=0, longest_s=7 * 86400)
