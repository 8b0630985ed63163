"""Sitemap files parsed safely: namespaces, text sitemaps, lastmod, XXE, bombs, damage."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest

from engine_container.decoding import BodyTooLarge
from engine_container.sitemaps import (
    SitemapUrl,
    newest_first,
    parse_lastmod,
    parse_sitemap,
    unpack,
)


def test_urlset_without_namespace_and_with_whitespace() -> None:
    data = b"<urlset><url>\n <loc> http://a.test/x </loc>\n<lastmod>2024-05-01</lastmod></url></urlset>"
    (url,) = parse_sitemap(data).urls
    assert url == SitemapUrl("http://a.test/x", datetime(2024, 5, 1, tzinfo=UTC))


def test_index_lists_child_sitemaps() -> None:
    data = (
        b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        b"<sitemap><loc>http://a.test/1.xml</loc></sitemap>"
        b"<sitemap><loc>http://a.test/2.xml.gz</loc></sitemap></sitemapindex>"
    )
    sitemap = parse_sitemap(data)
    assert sitemap.urls == []
    assert sitemap.sitemaps == ["http://a.test/1.xml", "http://a.test/2.xml.gz"]


def test_text_sitemap() -> None:
    data = b"http://a.test/1\n\nnot a url\nhttps://a.test/2\n"
    assert [u.loc for u in parse_sitemap(data).urls] == ["http://a.test/1", "https://a.test/2"]


def test_external_entities_are_not_resolved(tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    data = (
        f'<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x SYSTEM "file://{secret}">]>'
        "<urlset><url><loc>http://a.test/&x;</loc></url></urlset>"
    ).encode()
    urls = parse_sitemap(data).urls
    assert all("TOP-SECRET" not in u.loc for u in urls)


def test_urls_per_file_are_capped() -> None:
    entries = b"".join(b"<url><loc>http://a.test/%d</loc></url>" % i for i in range(100))
    assert len(parse_sitemap(b"<urlset>" + entries + b"</urlset>", max_urls=10).urls) == 10


def test_a_damaged_file_keeps_what_came_before_the_damage() -> None:
    data = b"<urlset><url><loc>http://a.test/ok</loc></url><url><loc>http://a.test/cut"
    assert [u.loc for u in parse_sitemap(data).urls][:1] == ["http://a.test/ok"]


def test_gzip_is_unpacked_within_the_cap() -> None:
    assert unpack(gzip.compress(b"<urlset/>"), 100) == b"<urlset/>"
    bomb = gzip.compress(b"\0" * 10_000_000)
    with pytest.raises(BodyTooLarge):
        unpack(bomb, 1_000_000)


def test_lastmod_forms_and_order() -> None:
    assert parse_lastmod("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_lastmod("yesterday") is None
    urls = [
        SitemapUrl("a", None),
        SitemapUrl("b", datetime(2020, 1, 1, tzinfo=UTC)),
        SitemapUrl("c", datetime(2024, 1, 1, tzinfo=UTC)),
        SitemapUrl("d", None),
    ]
    assert newest_first(urls) == ["c", "b", "a", "d"]
