"""SSRF policy: a corpus of hostile URLs that must be refused, and what stays allowed."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from core.errors import UnsafeUrl
from core.netguard import AddressPolicy, check_url, is_blocked_address, parse_host

NO_ALLOW = AddressPolicy()

HOSTILE = [
    # loopback in every IPv4 notation
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/admin",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://0177.0000.0000.0001/",
    "http://0x7f.1/",
    "http://0x7F.0.0.1/",
    "http://127.1/",
    "http://127.0.1/",
    "http://017700000001/",
    "http://127.0.0.1./",
    "http://%31%32%37.0.0.1/",
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",  # full-width digits
    "http://127\u30020\u30020\u30021/",  # ideographic full stops
    "http://0/",
    "http://0.0.0.0/",
    # private, shared, link-local, reserved, multicast
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://0xa.1/",
    "http://100.64.0.1/",
    "http://169.254.1.1/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://192.0.2.1/",
    # cloud metadata
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://2852039166/",
    "http://169.254.170.2/v2/credentials",
    "http://168.63.129.16/",
    "http://100.100.100.200/latest/meta-data",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./",
    "http://metadata.goog/",
    "http://metadata/",
    "http://[fd00:ec2::254]/",
    # IPv6 forms
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[::127.0.0.1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[2001:db8::1]/",
    "http://[2001::1]/",
    # userinfo and parser tricks
    "http://example.com@127.0.0.1/",
    "http://user:pass@169.254.169.254/",
    "http://example.com:80@10.0.0.1/",
    "http://127.0.0.1#@example.com/",
    "http://127.0.0.1\\@example.com/",
    "http://1.2.3.4.5/",
    "http://09.1.1.1/",
    "http://0x100.1/",
    "http://256.256.256.256/",
    # not http(s), or no host
    "file:///etc/passwd",
    "ftp://example.com/",
    "gopher://127.0.0.1:6379/_INFO",
    "dict://127.0.0.1:11211/stats",
    "javascript:alert(1)",
    "data:text/html,hi",
    "http:///path",
    "http://",
    "//example.com/",
    "http://exa mple.com/",
    "http://example.com:99999/",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_urls_are_refused(url: str) -> None:
    assert len(HOSTILE) >= 40
    with pytest.raises(UnsafeUrl):
        check_url(url, NO_ALLOW)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "https://example.com:8443/a?b=c#d",
        "http://8.8.8.8/",
        "http://[2606:4700:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
        "http://user@example.com/",
        "HTTPS://Example.COM/",
        "http://b\u00fccher.de/",
    ],
)
def test_public_urls_pass(url: str) -> None:
    check_url(url, NO_ALLOW)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("192.168.257", "192.168.1.1"),
        ("0x", "0.0.0.0"),
        ("1.2.3.4.", "1.2.3.4"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ],
)
def test_ip_notations_parse_like_browsers(host: str, expected: str) -> None:
    assert parse_host(host) == ip_address(expected)


def test_names_are_lowered_and_lose_the_final_dot() -> None:
    assert parse_host("Example.COM.") == "example.com"
    assert parse_host("1.2.3.com") == "1.2.3.com"


def test_nothing_is_allowed_by_default() -> None:
    assert is_blocked_address(ip_address("127.0.0.1")) is not None
    assert is_blocked_address(ip_address("8.8.8.8")) is None


def test_an_allowed_range_opens_only_that_range() -> None:
    policy = AddressPolicy.from_cidrs(["127.0.0.1/32", "10.0.0.0/8"])
    check_url("http://127.0.0.1:8080/", policy)
    check_url("http://0x7f.1/", policy)
    check_url("http://[::ffff:127.0.0.1]/", policy)
    check_url("http://10.20.30.40/", policy)
    with pytest.raises(UnsafeUrl, match="loopback"):
        check_url("http://127.0.0.2/", policy)
    with pytest.raises(UnsafeUrl):
        check_url("http://[::1]/", policy)


def test_metadata_stays_blocked_inside_an_allowed_range() -> None:
    policy = AddressPolicy.from_cidrs(["169.254.0.0/16", "fd00::/8", "168.63.0.0/16"])
    check_url("http://169.254.1.1/", policy)
    for url in (
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://168.63.129.16/",
        "http://[::ffff:169.254.169.254]/",
    ):
        with pytest.raises(UnsafeUrl, match="metadata"):
            check_url(url, policy)


def test_reasons_name_the_category() -> None:
    assert "loopback" in (is_blocked_address(ip_address("::ffff:127.0.0.1")) or "")
    assert "private" in (is_blocked_address(ip_address("10.0.0.1")) or "")
    assert "metadata" in (is_blocked_address(ip_address("169.254.169.254")) or "")


def test_bad_cidr_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"invalid CIDR '10\.0\.0\.0/33' in allow list"):
        AddressPolicy.from_cidrs(["127.0.0.0/8", "10.0.0.0/33"])
    with pytest.raises(ValueError, match="invalid CIDR 'localhost'"):
        AddressPolicy.from_cidrs(["localhost"])


def test_blocked_address_check_of_resolver_answers() -> None:
    policy = AddressPolicy()
    policy.check_address("93.184.216.34")
    with pytest.raises(UnsafeUrl, match="refused to connect"):
        policy.check_address("127.0.0.1")
    with pytest.raises(UnsafeUrl, match="non-IP"):
        policy.check_address("example.com")
