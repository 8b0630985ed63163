"""Body decoding with caps, and WARC records that warcio reads back with valid digests."""

from __future__ import annotations

import gzip
import io
import zlib
from datetime import UTC, datetime

import pytest
from warcio.archiveiterator import ArchiveIterator

from engine_container.decoding import BodyDecoder, BodyTooLarge, UnsupportedEncoding
from engine_container.fetcher import FetchResult
from engine_container.parsing import examine, parse_html
from engine_container.warc import gzip_members, response_record, warcinfo_record

PAGE = b"<html><title>x</title>" + b"hello world " * 1000 + b"</html>"


def feed_in_chunks(decoder: BodyDecoder, data: bytes, size: int = 1000) -> bytes:
    for i in range(0, len(data), size):
        decoder.feed(data[i : i + size])
    return decoder.finish()


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        (None, PAGE),
        ("identity", PAGE),
        ("gzip", gzip.compress(PAGE)),
        ("x-gzip", gzip.compress(PAGE)),
        ("deflate", zlib.compress(PAGE)),
        ("deflate", zlib.compress(PAGE, wbits=-15)),  # raw deflate, as some servers send
        ("GZIP", gzip.compress(PAGE[:5000]) + gzip.compress(PAGE[5000:])),  # two members
    ],
)
def test_decodes_incrementally(encoding: str | None, encoded: bytes) -> None:
    assert feed_in_chunks(BodyDecoder(encoding, 1 << 20), encoded) == PAGE


def test_decoded_cap_stops_a_bomb_early() -> None:
    bomb = gzip.compress(bytes(50 << 20), compresslevel=9)  # 50 MiB of zeros in ~50 KiB
    decoder = BodyDecoder("gzip", 1 << 20)
    with pytest.raises(BodyTooLarge, match=f"decoded body exceeds {1 << 20} bytes"):
        feed_in_chunks(decoder, bomb, 64 * 1024)


def test_a_body_exactly_at_the_cap_is_fine() -> None:
    assert len(feed_in_chunks(BodyDecoder("gzip", 4096), gzip.compress(bytes(4096)))) == 4096


def test_unknown_or_corrupt_encodings_are_errors() -> None:
    with pytest.raises(UnsupportedEncoding, match="br"):
        BodyDecoder("br", 100)
    with pytest.raises(UnsupportedEncoding, match="corrupt"):
        BodyDecoder("gzip", 1000).feed(b"definitely not gzip")


def fetch_result(**overrides: object) -> FetchResult:
    values: dict[str, object] = {
        "url": "http://example.test/a",
        "final_url": "http://example.test/b",
        "status": 200,
        "headers": {"content-type": "text/html"},
        "body": PAGE,
        "wire_bytes": 400,
        "elapsed_ms": 1.0,
        "redirects": 1,
        "content_type": "text/html",
        "reason": "OK",
        "raw_headers": (
            (b"Content-Type", b"text/html"),
            (b"Content-Encoding", b"gzip"),
            (b"Content-Length", b"400"),
            (b"Server", b"test"),
        ),
    }
    values.update(overrides)
    return FetchResult(**values)  # type: ignore[arg-type]


def test_warc_records_read_back_with_valid_digests() -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    data = gzip_members(
        [
            warcinfo_record({"software": "test"}, now, "x.warc.gz"),
            response_record(fetch_result(), now),
            response_record(fetch_result(body=b"", truncated=True, content_type="app/pdf"), now),
        ]
    )
    records = list(ArchiveIterator(io.BytesIO(data), check_digests=True))
    assert [r.rec_type for r in records] == ["warcinfo", "response", "response"]
    first = records[1]
    assert first.rec_headers.get_header("WARC-Target-URI") == "http://example.test/b"
    assert first.rec_headers.get_header("WARC-Date") == "2030-01-02T03:04:05.123456Z"
    assert first.http_headers.get_statuscode() == "200"
    # the stored body is the decoded one, so the headers say so
    assert first.http_headers.get_header("Content-Encoding") is None
    assert first.http_headers.get_header("Content-Length") == str(len(PAGE))
    assert first.http_headers.get_header("Server") == "test"
    assert records[2].rec_headers.get_header("WARC-Truncated") == "length"


def test_each_record_is_its_own_gzip_member() -> None:
    now = datetime.now(UTC)
    one = gzip_members([response_record(fetch_result(), now)])
    two = gzip_members([response_record(fetch_result(), now)] * 2)
    assert zlib.decompress(one, wbits=31).startswith(b"WARC/1.1\r\n")
    records = list(ArchiveIterator(io.BytesIO(one + two)))
    assert len(records) == 3


def test_html_parsing_finds_title_base_and_followable_links() -> None:
    page = parse_html(
        b'<html><head><title>\n Caf\xc3\xa9 </title><base href="/b/"></head>'
        b'<a href="x">1</a><a>no href</a><a href="y" rel="NoFollow ugc">2</a><a href="">3</a>'
    )
    assert (page.title, page.base, page.links) == ("Caf\u00e9", "/b/", ["x", ""])
    latin = parse_html(b"<title>Caf\xe9</title>", "text/html; charset=ISO-8859-1")
    assert latin.title == "Caf\u00e9"
    facts = examine(b"<title>t</title>", None, parse=False)
    assert facts.page is None
    assert facts.sha256 is not None
    assert len(facts.sha256) == 64
