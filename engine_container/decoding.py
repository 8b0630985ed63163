"""Incremental, bounded decoding of HTTP bodies (``Content-Encoding``).

A ``BodyDecoder`` is fed wire chunks as they arrive and never holds more than its cap of
decoded bytes: each ``zlib`` call is given ``max_length`` so a gzip bomb (1 GiB of zeros
compresses to ~1 MiB) is stopped as soon as the output passes the cap, with memory bounded by
the cap, not by the bomb. Supported: identity, gzip (also multi-member), deflate (zlib-wrapped
or raw). Brotli (``br``) is deliberately not advertised: the Python brotli bindings cannot
bound the output of one call, which would void the bomb guarantee; servers honour
``Accept-Encoding`` and send gzip instead.

Character encodings of HTML (``html_encoding``, ``decode_html``) follow the HTML5 sniffing
order — byte order mark, ``Content-Type`` charset, ``<meta>`` prescan of the first 1024
bytes, then UTF-8 — with w3lib (Scrapy's) implementing the steps and the WHATWG label table,
so Shift_JIS or windows-1252 pages declared only in ``<meta>`` are read correctly.
"""

from __future__ import annotations

import zlib
from typing import Protocol

from w3lib.encoding import (
    html_body_declared_encoding,
    http_content_type_encoding,
    read_bom,
    resolve_encoding,
)

ACCEPT_ENCODING = "gzip, deflate"


class BodyTooLarge(Exception):
    """The decoded body passed its cap."""


class UnsupportedEncoding(Exception):
    """A ``Content-Encoding`` this engine cannot decode, or a corrupt stream."""


class _Codec(Protocol):
    def feed(self, data: bytes, limit: int) -> bytes: ...

    def tail(self, limit: int) -> bytes: ...


class _Identity:
    def feed(self, data: bytes, limit: int) -> bytes:
        return data

    def tail(self, limit: int) -> bytes:
        return b""


class _Zlib:
    """gzip / zlib / raw deflate through ``zlib.decompressobj`` with ``max_length``."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._d = zlib.decompressobj(wbits)
        self._started = False

    def feed(self, data: bytes, limit: int) -> bytes:
        try:
            out = self._d.decompress(data, limit)
        except zlib.error:
            if self._started or self._wbits != zlib.MAX_WBITS:
                raise
            # "deflate" sent as raw deflate (no zlib header): common enough to accept.
            self._wbits = -zlib.MAX_WBITS
            self._d = zlib.decompressobj(self._wbits)
            out = self._d.decompress(data, limit)
        self._started = True
        return out

    def tail(self, limit: int) -> bytes:
        """More output from input already fed (``unconsumed_tail``, next gzip member)."""
        if self._d.unconsumed_tail:
            return self._d.decompress(self._d.unconsumed_tail, limit)
        if self._d.eof and self._d.unused_data.strip(b"\0"):
            rest = self._d.unused_data
            self._d = zlib.decompressobj(self._wbits)
            return self._d.decompress(rest, limit)
        return b""


def _codec(encoding: str) -> _Codec:
    if encoding in ("", "identity"):
        return _Identity()
    if encoding in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Zlib(zlib.MAX_WBITS)
    raise UnsupportedEncoding(f"unsupported content-encoding {encoding!r}")


class BodyDecoder:
    """Feed wire chunks, get the decoded body; ``BodyTooLarge`` past ``max_decoded`` bytes."""

    def __init__(self, content_encoding: str | None, max_decoded: int) -> None:
        self._codec = _codec((content_encoding or "").strip().lower())
        self._max = max_decoded
        self._size = 0
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> None:
        try:
            out = self._codec.feed(data, self._room())
            while out:
                self._keep(out)
                out = self._codec.tail(self._room())
        except zlib.error as exc:
            raise UnsupportedEncoding(f"corrupt compressed body: {exc}") from exc

    def finish(self) -> bytes:
        """The whole decoded body."""
        return self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)

    def _room(self) -> int:
        # one byte more than allowed, so that passing the cap is seen
        return self._max - self._size + 1

    def _keep(self, out: bytes) -> None:
        self._size += len(out)
        if self._size > self._max:
            self._parts.clear()
            raise BodyTooLarge(f"decoded body exceeds {self._max} bytes")
        self._parts.append(out)


# --------------------------------------------------------------------------- character encodings

#: How much of a body the ``<meta charset>`` prescan reads (the HTML5 standard's 1024 bytes).
PRESCAN_BYTES = 1024
_UTF8_CODECS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def html_encoding(body: bytes, content_type: str | None) -> str:
    """The character encoding of an HTML body, in the HTML5 sniffing order.

    1. a byte order mark (UTF-8, UTF-16 LE/BE);
    2. the ``charset`` of the ``Content-Type`` header;
    3. ``<meta charset=...>`` or ``<meta http-equiv="Content-Type" content="...charset=...">``
       in the first ``PRESCAN_BYTES`` bytes;
    4. otherwise UTF-8.

    Labels map to codecs as the WHATWG Encoding standard says (w3lib's table: ``latin-1`` and
    ``iso-8859-1`` mean windows-1252, ``shift_jis`` means cp932, ...). A label Python has no
    codec for is ignored (the next step decides).
    """
    bom, _ = read_bom(body)
    if bom:
        return str(bom)
    if content_type and "charset" in content_type.lower():
        declared = http_content_type_encoding(content_type)
        if declared:
            return str(declared)
    head = body[:PRESCAN_BYTES]
    if b"charset" in head.lower():
        declared = html_body_declared_encoding(head)
        if declared:
            resolved = resolve_encoding(declared)
            # a <meta> claiming UTF-16 is read as UTF-8 (the bytes were ASCII-compatible)
            if resolved and not resolved.startswith("utf-16"):
                return str(resolved)
    return "utf-8"


def decode_html(body: bytes, content_type: str | None) -> bytes | str:
    """``body`` for an HTML parser: the bytes themselves when UTF-8 (Lexbor reads those
    fastest), else text decoded by ``html_encoding`` with undecodable bytes replaced."""
    encoding = html_encoding(body, content_type)
    _, bom = read_bom(body)
    if encoding.replace("_", "-").lower() in _UTF8_CODECS and not bom:
        return body
    try:
        return body[len(bom or b"") :].decode(encoding, errors="replace")
    except LookupError:
        return body
