"""Provisioner port: per-tenant resources created from code (infrastructure as code)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Provisioner(Protocol):
    async def provision(self, *, tenant_id: str) -> Mapping[str, str]:
        """Create the tenant's resources (idempotent); returns references to them."""
        ...

    async def teardown(self, *, tenant_id: str, resources: Mapping[str, str]) -> None:
        """Remove what ``provision`` created; removing what is gone is not an error."""
        ...

    async def close(self) -> None:
        """Release the clients the provisioner opened itself (not ones it shares)."""
        ...
