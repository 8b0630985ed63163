"""WARC/1.1 records, one gzip member per record: a complete archive of what was fetched.

Per fetch (``fetch_records``): for each redirect hop a ``request`` and a ``response`` record,
then the final ``request`` and ``response``, and for a page rendered in Chromium a
``conversion`` record of the rendered DOM referring to that response. Each ``request`` names its response in
``WARC-Concurrent-To``; ``WARC-Date`` is when that request was sent. A ``revisit`` record
replaces the final ``response`` when the server answered ``304 Not Modified`` to a
conditional re-crawl (profile ``server-not-modified``, referring to the earlier crawl's
capture) or when the payload is byte-identical to one archived earlier in the same crawl
(profile ``identical-payload-digest``, ``WARC-Refers-To`` the first capture; the index is
bounded, see ``PayloadIndex``). Each file starts with a ``warcinfo`` record. The output
passes ``warcio check`` and is indexed by ``cdxj-indexer`` (pywb's indexer); the tests run
both.

Why not warcio's ``WARCWriter`` on the hot path: measured on this box (2 cores, 15 KB HTML
page), warcio costs ~850 µs per record with ``gzip=True`` (it compresses at level 9) and still
~240 µs with ``gzip=False`` (per-record ``StatusAndHeaders`` objects, chunked digests), all on
the event loop, where the whole per-page budget at 750 pages/s is ~1.3 ms. Building the same
record here costs ~50 µs (two SHA-1 digests included); the sinks build and compress records
(zlib level 3, ~300 µs per 15 KB page) in a worker thread at flush time, where hashlib and zlib
release the GIL and use the second core. Every record carries ``WARC-Block-Digest`` and
``WARC-Payload-Digest`` (SHA-1, base32); the tests read the files back with warcio's
``ArchiveIterator(check_digests=True)``.

The stored HTTP body is the *decoded* body (what ``pages.jsonl`` hashes), so the recorded
headers drop ``Content-Encoding`` and ``Transfer-Encoding`` and carry the decoded
``Content-Length``. A response whose body was not kept (a non-HTML type, or a body over a cap)
is written with its headers only and ``WARC-Truncated: length``. Concatenated ``.warc.gz``
chunks are a valid ``.warc.gz`` (gzip members concatenate).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from core.redaction import MASK, redact_url
from engine_container.fetcher import FetchResult

# zlib level 3: on the benchmark's HTML ~18 % less CPU than level 6 for ~3.5 % more bytes
COMPRESS_LEVEL = 3
_DROPPED = frozenset({b"transfer-encoding", b"content-encoding", b"content-length"})
SERVER_NOT_MODIFIED = "http://netpreserve.org/warc/1.1/revisit/server-not-modified"
IDENTICAL_PAYLOAD = "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest"


def _sha1(*parts: bytes) -> str:
    digest = hashlib.sha1()  # noqa: S324 - WARC digests are SHA-1 by convention, not security
    for part in parts:
        digest.update(part)
    return "sha1:" + base64.b32encode(digest.digest()).decode("ascii")


def warc_date(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(
    kind: str,
    fields: list[tuple[str, str]],
    block: bytes,
    when: datetime,
    record_id: str | None = None,
) -> bytes:
    head = [
        "WARC/1.1",
        f"WARC-Type: {kind}",
        f"WARC-Record-ID: {record_id or new_record_id()}",
        f"WARC-Date: {warc_date(when)}",
    ]
    head += [f"{name}: {_shown(name, value)}" for name, value in fields]
    head.append(f"Content-Length: {len(block)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + block + b"\r\n\r\n"


def _shown(name: str, value: str) -> str:
    """A WARC header's value as archived: URL credentials masked (``core.redaction``)."""
    return redact_url(value) if name.endswith("Target-URI") and "@" in value else value


def new_record_id() -> str:
    return f"<urn:uuid:{uuid.uuid4()}>"


def http_head(fetch: FetchResult) -> bytes:
    """Status line and headers as stored (see module doc), ending with the blank line."""
    status = f"HTTP/{fetch.http_version} {fetch.status} {fetch.reason}".rstrip()
    lines = [status.encode("latin-1", errors="replace")]
    lines += [k + b": " + v for k, v in fetch.raw_headers if k.lower() not in _DROPPED]
    if not fetch.truncated:
        lines.append(b"Content-Length: %d" % len(fetch.body))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def request_head(fetch: FetchResult) -> bytes:
    """The request line and headers the fetcher sent for ``fetch``."""
    url = fetch.final_url
    rest = url[url.find("//") + 2 :]
    slash = rest.find("/")
    path = rest[slash:] if slash >= 0 else "/"
    lines = [f"GET {path} HTTP/{fetch.http_version}"]
    lines += [
        f"{name}: {MASK if name.lower() == 'authorization' else value}"
        for name, value in fetch.request_headers
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", errors="replace")


def request_record(fetch: FetchResult, when: datetime, concurrent_to: str) -> bytes:
    """The ``request`` record of ``fetch``, pointing at its response with Concurrent-To."""
    block = request_head(fetch)
    fields = [
        ("WARC-Target-URI", fetch.final_url),
        ("WARC-Concurrent-To", concurrent_to),
        ("Content-Type", "application/http;msgtype=request"),
        ("WARC-Block-Digest", _sha1(block)),
    ]
    return _record("request", fields, block, when)


def response_record(
    fetch: FetchResult,
    when: datetime,
    record_id: str | None = None,
    payload_digest: str | None = None,
) -> bytes:
    """An uncompressed ``response`` record for a fetch that got an HTTP response."""
    head = http_head(fetch)
    fields = [
        ("WARC-Target-URI", fetch.final_url),
        ("Content-Type", "application/http;msgtype=response"),
        ("WARC-Payload-Digest", payload_digest or _sha1(fetch.body)),
        ("WARC-Block-Digest", _sha1(head, fetch.body)),
    ]
    if fetch.truncated:
        fields.append(("WARC-Truncated", "length"))
    return _record("response", fields, head + fetch.body, when, record_id)


@dataclass(frozen=True, slots=True)
class Capture:
    """An earlier capture a ``revisit`` record refers to."""

    uri: str
    date: str  # WARC-Date form
    record_id: str | None = None


def revisit_record(
    fetch: FetchResult,
    when: datetime,
    *,
    profile: str,
    refers_to: Capture,
    payload_digest: str | None,
    record_id: str | None = None,
) -> bytes:
    """A ``revisit`` record: the HTTP headers of ``fetch`` and a pointer to ``refers_to``."""
    head = http_head(fetch)
    fields = [
        ("WARC-Target-URI", fetch.final_url),
        ("WARC-Profile", profile),
        ("WARC-Refers-To-Target-URI", refers_to.uri),
        ("WARC-Refers-To-Date", refers_to.date),
        ("Content-Type", "application/http;msgtype=response"),
        ("WARC-Block-Digest", _sha1(head)),
    ]
    if refers_to.record_id:
        fields.insert(2, ("WARC-Refers-To", refers_to.record_id))
    if payload_digest is not None:
        fields.append(("WARC-Payload-Digest", payload_digest))
    return _record("revisit", fields, head, when, record_id)


class PayloadIndex:
    """Payload digest → first capture in this crawl, for identical-payload revisits.

    Bounded to ``max_entries`` (oldest forgotten first): ~350 bytes an entry, so ~7 MB at the
    default 20,000. Used from one thread at a time (the sink's flush).
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self._max = max_entries
        self._first: dict[str, Capture] = {}

    def seen(self, digest: str, capture: Capture) -> Capture | None:
        """The earlier capture with this digest, or None (and ``capture`` is remembered)."""
        earlier = self._first.get(digest)
        if earlier is not None and earlier.uri != capture.uri:
            return earlier
        if earlier is not None:  # the same URI again (a chunk written a second time): refresh
            del self._first[digest]
        if len(self._first) >= self._max:
            del self._first[next(iter(self._first))]
        self._first[digest] = capture
        return None


def fetch_records(
    fetch: FetchResult,
    when: datetime,
    payloads: PayloadIndex | None = None,
    previous: Capture | None = None,
) -> list[bytes]:
    """Every record of one fetch: per redirect hop a request and a response, then the final
    request and its response — a ``revisit`` when the server answered 304 to a conditional
    request (``previous`` is the capture it confirmed) or when the payload repeats one
    already archived in this crawl (``payloads``)."""
    out: list[bytes] = []
    for hop in fetch.hops:
        hop_when = hop.fetched_at or when
        hop_id = new_record_id()
        out.append(request_record(hop, hop_when, hop_id))
        out.append(response_record(hop, hop_when, hop_id))
    when = fetch.fetched_at or when
    record_id = new_record_id()
    if fetch.request_headers:
        out.append(request_record(fetch, when, record_id))
    if fetch.status == 304 and previous is not None:
        out.append(
            revisit_record(
                fetch,
                when,
                profile=SERVER_NOT_MODIFIED,
                refers_to=previous,
                payload_digest=None,
                record_id=record_id,
            )
        )
        return out
    digest, earlier = None, None
    if payloads is not None and fetch.body and not fetch.truncated and fetch.status == 200:
        digest = _sha1(fetch.body)
        earlier = payloads.seen(digest, Capture(fetch.final_url, warc_date(when), record_id))
        if earlier is not None:
            out.append(
                revisit_record(
                    fetch,
                    when,
                    profile=IDENTICAL_PAYLOAD,
                    refers_to=earlier,
                    payload_digest=digest,
                    record_id=record_id,
                )
            )
    if earlier is None:
        out.append(response_record(fetch, when, record_id, digest))
    if fetch.rendered is not None:
        out.append(conversion_record(fetch, when, record_id))
    return out


def conversion_record(fetch: FetchResult, when: datetime, refers_to: str) -> bytes:
    """A ``conversion`` record: the DOM Chromium rendered from the response ``refers_to``."""
    block = fetch.rendered or b""
    fields = [
        ("WARC-Target-URI", fetch.final_url),
        ("WARC-Refers-To", refers_to),
        ("Content-Type", "text/html; charset=utf-8"),
        ("WARC-Block-Digest", _sha1(block)),
    ]
    return _record("conversion", fields, block, when)


def warcinfo_record(info: Mapping[str, str], when: datetime, filename: str = "") -> bytes:
    block = "".join(f"{k}: {v}\r\n" for k, v in info.items()).encode("utf-8")
    fields = [("Content-Type", "application/warc-fields")]
    if filename:
        fields.insert(0, ("WARC-Filename", filename))
    fields.append(("WARC-Block-Digest", _sha1(block)))
    return _record("warcinfo", fields, block, when)


def gzip_members(records: Iterable[bytes], level: int = COMPRESS_LEVEL) -> bytes:
    """Each record as its own gzip member, concatenated (run it in a thread: GIL-free)."""
    out = []
    for record in records:
        packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        out.append(packer.compress(record) + packer.flush())
    return b"".join(out)
