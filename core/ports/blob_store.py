"""BlobStore port: pages, manifests, checkpoints and exports under ``/``-separated keys.

Keys (one rule, here, for every adapter: ``check_key`` / ``check_prefix``)
    A key is ``/``-separated segments, counted in UTF-8 **bytes**, never characters:

    * at most ``MAX_KEY_BYTES`` = 960 bytes in all. The strictest service limit is 1,024 bytes
      of UTF-8 (S3 object keys and Cloud Storage object names; Azure counts 1,024
      *characters*, which is never fewer bytes), and a deployment may put a store prefix of up
      to ``MAX_STORE_PREFIX_BYTES`` = 64 bytes in front (``SKYCRAWL_AWS_BLOB_PREFIX``, ...):
      960 + 64 = 1,024, so a key valid on one backend is valid on every one, prefix or not;
    * every segment at most ``MAX_SEGMENT_BYTES`` = 255 bytes: the local store maps segments
      to file names, and ext4, XFS, Btrfs and APFS allow 255 bytes per name;
    * no empty, ``.`` or ``..`` segment, no leading ``/``, no backslash and no control
      character (Cloud Storage refuses CR and LF, file systems NUL; XML listings cannot carry
      the rest), and no first segment ``.tmp`` (``RESERVED_SEGMENT``: the local store's
      temporary files; refused everywhere so that no key works in one place only).

    Anything else is ``core.errors.InvalidRequest`` before a request is sent, on every backend
    alike. A listing prefix follows the same rules except that it may be empty and end in
    ``/`` (or in a partial segment). ``tests/contract/test_blob_store.py`` checks a
    multi-byte key at the limit on every backend.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from core.errors import InvalidRequest

MAX_KEY_BYTES = 960
MAX_SEGMENT_BYTES = 255
MAX_STORE_PREFIX_BYTES = 64
RESERVED_SEGMENT = ".tmp"
_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


def _check_segments(text: str, segments: list[str], what: str) -> None:
    if text.startswith("/") or _FORBIDDEN.search(text):
        raise InvalidRequest(
            f"invalid blob {what} {text!r}: a leading '/', a backslash or a control character"
        )
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidRequest(f"invalid blob {what} {text!r}: an empty, '.' or '..' segment")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidRequest(
                f"invalid blob {what}: a segment longer than {MAX_SEGMENT_BYTES} bytes of UTF-8"
            )


def check_key(key: str) -> None:
    """``InvalidRequest`` unless ``key`` is a blob key every backend takes (see above)."""
    size = len(key.encode())
    if not 0 < size <= MAX_KEY_BYTES:
        raise InvalidRequest(f"a blob key has 1 to {MAX_KEY_BYTES} bytes of UTF-8, not {size}")
    segments = key.split("/")
    _check_segments(key, segments, "key")
    if segments[0] == RESERVED_SEGMENT:
        raise InvalidRequest(f"invalid blob key {key!r}: {RESERVED_SEGMENT}/ is reserved")


def check_prefix(prefix: str) -> None:
    """``InvalidRequest`` unless ``prefix`` can start a valid key (``""`` lists everything)."""
    if len(prefix.encode()) > MAX_KEY_BYTES:
        raise InvalidRequest(f"a blob prefix has at most {MAX_KEY_BYTES} bytes of UTF-8")
    segments = prefix.split("/")
    last = segments.pop()  # "" after a trailing "/", or the start of a segment
    _check_segments(prefix, segments, "prefix")
    if last in (".", "..") or len(last.encode()) > MAX_SEGMENT_BYTES:
        raise InvalidRequest(f"invalid blob prefix {prefix!r}")


def check_store_prefix(prefix: str) -> None:
    """The prefix an adapter puts before every key (a deployment setting): empty, or at most
    ``MAX_STORE_PREFIX_BYTES`` bytes of valid segments ending in ``/``."""
    if not prefix:
        return
    if not prefix.endswith("/") or len(prefix.encode()) > MAX_STORE_PREFIX_BYTES:
        raise InvalidRequest(
            f"a blob store prefix ends with '/' and has at most {MAX_STORE_PREFIX_BYTES} bytes"
        )
    _check_segments(prefix, prefix.split("/")[:-1], "store prefix")


def attachment(download_name: str) -> str:
    """A ``Content-Disposition`` value naming ``download_name`` (RFC 6266: an ASCII fallback
    in ``filename``, the UTF-8 name in ``filename*``)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in download_name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(download_name)}"


#: Chunk size of ``BlobStore.stream`` unless asked otherwise: 1 MiB.
STREAM_CHUNK_BYTES = 1 << 20


#: The longest a signed URL may live, on every backend: S3 presigned URLs signed with
#: SigV4 and Cloud Storage V4 signed URLs stop at 7 days; an Azure SAS has no such cap.
MAX_SIGNED_URL_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class BlobCapabilities:
    max_object_bytes: int
    #: ``signed_url`` hands out a URL anyone may GET until it expires (S3 presigned GET, Azure
    #: SAS, Cloud Storage V4); False for stores without one (files), whose callers stream.
    signed_urls: bool = False


def check_expiry(expires_s: int) -> None:
    """``InvalidRequest`` unless ``expires_s`` is 1 s to ``MAX_SIGNED_URL_S``."""
    if not 0 < expires_s <= MAX_SIGNED_URL_S:
        raise InvalidRequest(f"a signed URL lives 1 to {MAX_SIGNED_URL_S} s, not {expires_s}")


class BlobStore(Protocol):
    capabilities: BlobCapabilities

    async def put(
        self, *, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        """Write (or overwrite) atomically: readers see the old or the new object, never half."""
        ...

    async def get(self, *, key: str) -> bytes:
        """Read an object; ``NotFound`` if absent."""
        ...

    async def exists(self, *, key: str) -> bool: ...

    async def list(self, *, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""
        ...

    def stream(self, *, key: str, chunk_bytes: int = STREAM_CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of at most ``chunk_bytes``, read as they are consumed
        (never the whole object in memory); ``NotFound`` on the first iteration if absent."""
        ...

    async def size(self, *, key: str) -> int:
        """The object's length in bytes; ``NotFound`` if absent."""
        ...

    async def signed_url(
        self, *, key: str, expires_s: int, download_name: str | None = None
    ) -> str:
        """A URL that GETs ``key`` without credentials for ``expires_s`` seconds (at most
        ``MAX_SIGNED_URL_S``), answered as an attachment named ``download_name`` if given.
        Only when ``capabilities.signed_urls``; else ``core.errors.ConfigurationError``.
        Signing happens here, without a request: the key need not exist yet."""
        ...

    async def delete(self, *, key: str) -> None:
        """Delete; absent is not an error."""
        ...

    async def delete_prefix(self, *, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many."""
        ...

    async def close(self) -> None: ...
