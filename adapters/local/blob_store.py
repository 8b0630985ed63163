"""Local BlobStore: one file per key under a root directory.

Features
    Key ``a/b/c.json`` is the file ``<root>/a/b/c.json``. Writes are atomic: the bytes go to a
    temporary file in ``<root>/.tmp/`` (same file system), are flushed to disk and then moved
    into place with ``os.replace``, so a reader sees the old or the new object, never half of
    one, even if the writer dies. ``list`` returns keys sorted, under any string prefix (like
    S3, the prefix need not end at a ``/``); ``delete`` and ``delete_prefix`` prune empty
    directories. Several processes may share the root.

Limits
    Keys follow the one rule of every BlobStore (``core.ports.blob_store.check_key``: at most
    960 bytes of UTF-8, segments of at most 255 bytes -- a file name's limit --, no empty,
    ``.`` or ``..`` segment, leading ``/``, backslash or control character, not under
    ``.tmp/``) -- anything else is ``core.errors.InvalidRequest`` (so no key escapes the root). A file cannot also be a
    directory: writing ``a/b`` when ``a`` exists (or the reverse) is ``core.errors.Conflict``
    (the core's key layout never does this). Objects are held in memory,
    at most 5 GiB. ``content_type`` is accepted and not stored. File I/O runs in worker threads
    (``asyncio.to_thread``).

Settings
    ``SKYCRAWL_LOCAL_DATA_DIR`` (the root is ``<data_dir>/blobs``). Costs disk space only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from core.errors import ConfigurationError, Conflict, InvalidRequest, NotFound
from core.ports.blob_store import RESERVED_SEGMENT as _TMP
from core.ports.blob_store import STREAM_CHUNK_BYTES, BlobCapabilities, check_key, check_prefix


def _walk_keys(root: Path, prefix: str) -> list[str]:
    directory = prefix.rpartition("/")[0]
    start = root.joinpath(*directory.split("/")) if directory else root
    keys: list[str] = []
    for dirpath, dirnames, filenames in os.walk(start):
        relative = Path(dirpath).relative_to(root).as_posix()
        base = "" if relative == "." else f"{relative}/"
        if not base:
            dirnames[:] = [name for name in dirnames if name != _TMP]
        keys.extend(base + name for name in filenames if (base + name).startswith(prefix))
    return sorted(keys)


class FileBlobStore:
    """BlobStore on a directory tree, with atomic replace-on-write."""

    capabilities = BlobCapabilities(max_object_bytes=5 * 1024**3)

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        check_key(key)
        return self.root.joinpath(*key.split("/"))

    async def put(
        self, *, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        path = self._path(key)
        if len(data) > self.capabilities.max_object_bytes:
            raise InvalidRequest(f"object larger than {self.capabilities.max_object_bytes} bytes")
        try:
            await asyncio.to_thread(self._write, path, data)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise Conflict(f"blob key {key!r} clashes with a key that is its prefix") from exc

    def _write(self, path: Path, data: bytes) -> None:
        tmp_dir = self.root / _TMP
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / uuid.uuid4().hex
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            for _ in range(5):  # a concurrent delete may prune the directory in between
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(tmp, path)
                    return
                except FileNotFoundError:
                    continue
            raise OSError(f"could not move blob into {path.parent}")
        finally:
            tmp.unlink(missing_ok=True)

    async def get(self, *, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"no blob {key!r}") from exc

    async def exists(self, *, key: str) -> bool:
        path = self._path(key)
        return await asyncio.to_thread(path.is_file)

    async def stream(
        self, *, key: str, chunk_bytes: int = STREAM_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"no blob {key!r}") from exc
        try:  # the open file keeps reading the object it opened, even if it is replaced
            while chunk := await asyncio.to_thread(handle.read, chunk_bytes):
                yield chunk
        finally:
            handle.close()

    async def size(self, *, key: str) -> int:
        path = self._path(key)
        try:
            stat = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound(f"no blob {key!r}") from exc
        if not path.is_file():
            raise NotFound(f"no blob {key!r}")
        return stat.st_size

    async def signed_url(
        self, *, key: str, expires_s: int, download_name: str | None = None
    ) -> str:
        """Files have no URL of their own (``capabilities.signed_urls`` is False): callers
        stream instead."""
        raise ConfigurationError("the file blob store cannot sign URLs; stream the blob")

    async def list(self, *, prefix: str) -> list[str]:
        check_prefix(prefix)
        return await asyncio.to_thread(_walk_keys, self.root, prefix)

    async def delete(self, *, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(self._remove, path)

    def _remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            path.unlink()
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone): stop pruning
                return
            parent = parent.parent

    async def delete_prefix(self, *, prefix: str) -> int:
        check_prefix(prefix)
        return await asyncio.to_thread(self._delete_prefix, prefix)

    def _delete_prefix(self, prefix: str) -> int:
        keys = _walk_keys(self.root, prefix)
        for key in keys:
            self._remove(self._path(key))
        return len(keys)

    async def close(self) -> None:
        return None
