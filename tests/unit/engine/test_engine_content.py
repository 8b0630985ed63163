"""The per-page formats (``formats``) of one HTML page, as ``analyse`` renders them."""

from __future__ import annotations

import json

import pytest

from core.output import PageContent
from engine_container.analysis import Job, OutputPlan, analyse

PAGE = b"""<!doctype html>
<html lang="de"><head>
<meta charset="utf-8"><title> Widgets &amp; more </title>
<meta name="description" content="All the widgets.">
<meta property="og:title" content="Widgets (OG)"><meta property="og:image" content="/w.png">
<meta name="twitter:card" content="summary">
<link rel="canonical" href="/widgets?page=1#top">
<script type="application/ld+json">{"@context": "https://schema.org", "@type": "Product", "name": "Widget"}</script>
<style>body { color: red }</style>
<script>document.title = "changed";</script>
</head><body>
<header><nav><a href="/">Home</a> <a href="/about">About us</a></nav></header>
<main>
<h1>Widgets</h1>
<p>The best <a href="blue.html" rel="nofollow sponsored">blue   widget</a> in town.</p>
<ul><li>cheap</li><li>sturdy</li></ul>
<div itemscope itemtype="https://schema.org/Offer"><span itemprop="price">10</span></div>
<button onclick="buy()">Buy</button>
</main>
<aside class="sidebar"><p>Sponsored sidebar text</p></aside>
<footer><p>Copyright footer text</p><a href="HTTP://Example.TEST:80/legal#x">Legal</a></footer>
</body></html>"""

URL = "http://example.test/shop/widgets"


def render(
    *formats: str, body: bytes = PAGE, headers: tuple[tuple[str, str], ...] = ()
) -> PageContent:
    job = Job(
        url=URL,
        status=200,
        body=body,
        content_type="text/html; charset=utf-8",
        media_type="text/html",
        plan=OutputPlan(formats=formats),
        headers=headers,
    )
    analysis = analyse(job)
    assert analysis.content is not None
    return PageContent.model_validate_json(analysis.content)


def test_markdown_is_the_main_content_without_boilerplate() -> None:
    markdown = render("markdown").markdown or ""
    assert markdown.startswith("# Widgets")
    assert "[blue widget](http://example.test/shop/blue.html)" in markdown
    assert "- cheap" in markdown
    for boilerplate in ("Home", "About us", "Sponsored sidebar", "Copyright footer", "changed"):
        assert boilerplate not in markdown


def test_text_is_the_same_content_without_markup() -> None:
    text = render("text").text or ""
    assert "The best blue widget in town." in text
    assert "#" not in text
    assert "](" not in text
    assert "Copyright footer" not in text


def test_links_are_absolute_normalised_with_text_and_rel() -> None:
    links = render("links").links or []
    by_url = {link.url: link for link in links}
    assert list(by_url) == [
        "http://example.test/",
        "http://example.test/about",
        "http://example.test/shop/blue.html",
        "http://example.test/legal",
    ]
    assert by_url["http://example.test/about"].text == "About us"
    blue = by_url["http://example.test/shop/blue.html"]
    assert (blue.text, blue.rel) == ("blue widget", "nofollow sponsored")
    assert by_url["http://example.test/"].rel is None


def test_metadata_has_head_fields_cards_and_structured_data() -> None:
    meta = render("metadata").metadata
    assert meta is not None
    assert meta.title == "Widgets & more"
    assert meta.description == "All the widgets."
    assert meta.language == "de"
    assert meta.canonical == "http://example.test/widgets?page=1"
    assert meta.opengraph == {"title": "Widgets (OG)", "image": "/w.png"}
    assert meta.twitter == {"card": "summary"}
    assert meta.json_ld == [
        {"@context": "https://schema.org", "@type": "Product", "name": "Widget"}
    ]
    assert meta.microdata[0]["type"] == "https://schema.org/Offer"
    assert meta.microdata[0]["properties"] == {"price": "10"}


def test_language_falls_back_to_the_content_language_header() -> None:
    body = b"<html><head><title>t</title></head><body><p>x</p></body></html>"
    meta = render("metadata", body=body, headers=(("Content-Language", "fr"),)).metadata
    assert meta is not None
    assert meta.language == "fr"
    assert meta.json_ld == []
    assert meta.microdata == []


def test_cleaned_html_has_no_scripts_styles_or_handlers() -> None:
    html = render("html").html or ""
    assert "<h1>Widgets</h1>" in html
    for gone in ("<script", "<style", "onclick", "document.title"):
        assert gone not in html


def test_raw_html_and_headers_are_as_received() -> None:
    content = render(
        "raw_html",
        "headers",
        headers=(("Content-Type", "text/html"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")),
    )
    assert content.raw_html == PAGE.decode()
    assert content.headers == {"content-type": "text/html", "set-cookie": "a=1, b=2"}


def test_only_the_formats_asked_for_are_set() -> None:
    content = render("links")
    assert content.links
    assert content.markdown is None
    assert content.metadata is None
    assert json.loads(content.model_dump_json(exclude_none=True)).keys() == {"links"}


@pytest.mark.parametrize(
    ("charset", "body"),
    [
        (
            "shift_jis",
            "<title>日本語</title><main><p>こんにちは世界</p></main>".encode("shift_jis"),
        ),
        ("latin-1", "<title>Café</title><main><p>Crème brûlée</p></main>".encode("latin-1")),
    ],
)
def test_markdown_of_pages_in_other_encodings(charset: str, body: bytes) -> None:
    job = Job(
        url=URL,
        status=200,
        body=f'<meta charset="{charset}">'.encode() + body,
        content_type="text/html",
        media_type="text/html",
        plan=OutputPlan(formats=("markdown", "metadata")),
    )
    analysis = analyse(job)
    content = PageContent.model_validate_json(analysis.content or b"{}")
    expected = body.decode("cp932" if charset == "shift_jis" else "cp1252")
    assert content.metadata is not None
    assert content.metadata.title in expected
    assert (content.markdown or "") in expected
    assert content.markdown
