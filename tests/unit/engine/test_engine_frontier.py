"""Frontier: URL normalisation, link resolution, de-duplication, scope, limits, checkpoints."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.models import CrawlCounts, CrawlSpec, Scope
from engine_container.frontier import (
    Frontier,
    LinkResolver,
    checkpoint_counts,
    checkpoint_next_seq,
    normalize_url,
    registrable_domain,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTP://Example.COM:80/a", "http://example.com/a"),
        ("https://example.com:443/", "https://example.com/"),
        ("http://example.com:8080/", "http://example.com:8080/"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com?q=1", "http://example.com/?q=1"),
        ("http://example.com/a/./b/../c", "http://example.com/a/c"),
        ("http://example.com/a#frag", "http://example.com/a"),
        ("http://example.com/%7euser/%2f", "http://example.com/~user/%2F"),
        ("http://example.com/a?b=2&a=1", "http://example.com/a?b=2&a=1"),
        ("http://example.com/a?", "http://example.com/a"),
        ("http://b\u00fccher.de/", "http://xn--bcher-kva.de/"),
        ("  http://example.com/x  ", "http://example.com/x"),
        ("mailto:someone@example.com", None),
        ("ftp://example.com/", None),
        ("not a url", None),
    ],
)
def test_normalize_url(raw: str, expected: str | None) -> None:
    assert normalize_url(raw) == expected


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("/p", "http://a.test/p"),
        ("p", "http://a.test/dir/p"),
        ("../p", "http://a.test/p"),
        ("./p?x=1", "http://a.test/dir/p?x=1"),
        ("?x=1", "http://a.test/dir/page.html?x=1"),
        ("//b.test/q", "http://b.test/q"),
        ("https://B.test:443/r#s", "https://b.test/r"),
        ("p q", "http://a.test/dir/p%20q"),
        ("#top", None),
        ("javascript:void(0)", None),
        ("mailto:x@y", None),
        ("", None),
    ],
)
def test_links_resolve_against_the_page(href: str, expected: str | None) -> None:
    assert LinkResolver("http://a.test/dir/page.html").resolve(href) == expected


@given(st.text(alphabet="abcXYZ019-._~/!$&'()*+,;=:@?%", max_size=30))
def test_fast_path_equals_general_resolution(href: str) -> None:
    resolver = LinkResolver("http://a.test:8080/dir/page.html")
    href = href.strip()
    if not href or href.startswith("#"):
        assert resolver.resolve(href) is None  # the page itself
    else:
        assert resolver.resolve(href) == resolver._slow(href)


def spec(**fields: object) -> CrawlSpec:
    return CrawlSpec.model_validate({"seeds": ["http://a.example.test/"], **fields})


def drain(frontier: Frontier) -> list[tuple[str, int]]:
    out = []
    while (item := frontier.take()) is not None:
        out.append((item.url, item.depth))
        frontier.done(item.url)
    return out


def test_duplicates_and_equivalent_forms_are_queued_once() -> None:
    frontier = Frontier(spec(max_pages=100))
    frontier.add_seeds()
    drain(frontier)
    added = frontier.add_links(
        "http://a.example.test/",
        ["/x", "/x#f", "http://A.EXAMPLE.TEST:80/x", "/y/../x", "/", "/y"],
        1,
    )
    assert added == 1 + 1  # /x and /y; "/" is the seed
    assert [u for u, _ in drain(frontier)] == [
        "http://a.example.test/x",
        "http://a.example.test/y",
    ]


LINKS = [
    "http://a.example.test/1",
    "http://b.example.test/2",
    "http://example.test/3",
    "http://other.test/4",
    "https://a.example.test/5",
]


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (Scope.same_host, {"/1", "/5"}),
        (Scope.same_domain, {"/1", "/2", "/3", "/5"}),
        (Scope.any, {"/1", "/2", "/3", "/4", "/5"}),
    ],
)
def test_scope(scope: Scope, expected: set[str]) -> None:
    frontier = Frontier(spec(scope=scope))
    frontier.add_links("http://a.example.test/", LINKS, 1)
    assert {u[u.rindex("/") :] for u, _ in drain(frontier)} == expected


def test_registrable_domain_uses_the_bundled_public_suffix_list() -> None:
    assert registrable_domain("www.bbc.co.uk") == "bbc.co.uk"
    assert registrable_domain("a.b.example.test") == "example.test"
    assert registrable_domain("user.github.io") == "user.github.io"
    assert registrable_domain("127.0.0.1") == "127.0.0.1"


def test_exclude_wins_and_include_must_match() -> None:
    frontier = Frontier(spec(include=[r"/docs/"], exclude=[r"\.pdf$", r"/docs/private"]))
    frontier.add_links(
        "http://a.example.test/",
        ["/docs/a", "/docs/b.pdf", "/docs/private/c", "/blog/d"],
        1,
    )
    assert [u for u, _ in drain(frontier)] == ["http://a.example.test/docs/a"]


def test_seeds_ignore_include_and_scope() -> None:
    frontier = Frontier(spec(include=["nothing-matches"]))
    frontier.add_seeds()
    assert drain(frontier) == [("http://a.example.test/", 0)]


def test_max_depth() -> None:
    frontier = Frontier(spec(max_depth=1))
    assert frontier.add_links("http://a.example.test/", ["/d1"], 1) == 1
    assert frontier.add_links("http://a.example.test/d1", ["/d2"], 2) == 0


def test_max_pages_counts_pages_taken() -> None:
    frontier = Frontier(spec(max_pages=3))
    frontier.add_seeds()
    frontier.add_links("http://a.example.test/", [f"/{i}" for i in range(10)], 1)
    assert frontier.queued == 3  # never admits more than it may fetch
    assert len(drain(frontier)) == 3
    assert frontier.take() is None


def test_checkpoint_round_trip_keeps_in_flight_urls() -> None:
    frontier = Frontier(spec(max_pages=50))
    frontier.add_seeds()
    frontier.add_links("http://a.example.test/", ["/1", "/2", "/3"], 1)
    first = frontier.take()
    second = frontier.take()
    assert first is not None
    assert second is not None
    frontier.done(first.url)  # second is still in flight
    state = frontier.to_checkpoint(counts=CrawlCounts(fetched=1), next_seq=7)
    restored = Frontier.from_checkpoint(spec(max_pages=50), state)
    assert checkpoint_counts(state).fetched == 1
    assert checkpoint_next_seq(state) == 7
    assert restored.taken == 1
    urls = [u for u, _ in drain(restored)]
    assert urls == [second.url, "http://a.example.test/2", "http://a.example.test/3"]
    assert restored.add_links("http://a.example.test/", ["/1", "/2", "/new"], 1) == 1


def test_checkpoint_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        Frontier.from_checkpoint(spec(), {"version": 99})


def test_memory_at_50k_pages_is_bounded() -> None:
    frontier = Frontier(spec(max_pages=50_000))
    tracemalloc.start()
    try:
        for block in range(500):
            hrefs = [f"/section-{block}/page-{i}.html?ref=home" for i in range(100)]
            frontier.add_links("http://a.example.test/", hrefs, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frontier.queued == 50_000
    # seen hashes (~60 B/URL) + queue entries with their URL strings (~150 B/URL)
    assert peak < 16 * 1024 * 1024, peak
