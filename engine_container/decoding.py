"""Incremental, bounded decoding of HTTP bodies (``Content-Encoding``).

A ``BodyDecoder`` is fed wire chunks as they arrive and never holds more than its cap of
decoded bytes: each ``zlib`` call is given ``max_length`` so a gzip bomb (1 GiB of zeros
compresses to ~1 MiB) is stopped as soon as the output passes the cap, with memory bounded by
the cap, not by the bomb. Supported: identity, gzip (also multi-member), deflate (zlib-wrapped
or raw). Brotli (``br``) is deliberately not advertised: the Python brotli bindings cannot
bound the output of one call, which would void the bomb guarantee; servers honour
``Accept-Encoding`` and send gzip instead.
"""

from __future__ import annotations

import zlib
from typing import Protocol

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
