"""BlobStore port: pages, manifests, checkpoints and exports under ``/``-separated keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BlobCapabilities:
    max_object_bytes: int


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

    async def delete(self, *, key: str) -> None:
        """Delete; absent is not an error."""
        ...

    async def delete_prefix(self, *, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many."""
        ...

    async def close(self) -> None: ...
