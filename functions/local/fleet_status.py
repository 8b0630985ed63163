"""The fleet columns of ``skycrawl status``: where each container runs and leaves from."""

from __future__ import annotations

from typing import Any

FLEET_COLUMNS = ("runtime", "region", "proxy")


def fleet_cells(container: dict[str, Any]) -> tuple[str, str, str]:
    """Runtime, region and proxies (redacted, as ``GET /v1/containers`` gives them; an out
    proxy is marked ``(out: reason)``) of one container item."""
    proxies = []
    for proxy in container.get("proxies", []):
        cell = str(proxy.get("url", ""))
        if proxy.get("state") == "out":
            cell += f" (out: {proxy.get('reason') or 'scored out'})"
        proxies.append(cell)
    return (
        str(container.get("runtime", "")),
        str(container.get("region", "")),
        ", ".join(proxies) or "direct",
    )
