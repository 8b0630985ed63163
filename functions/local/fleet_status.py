"""The fleet columns of ``skycrawl status``: where each container runs and leaves from."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

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


def settings_problem(exc: ValidationError) -> str:
    """One line naming the first bad value, e.g. ``SKYCRAWL_EGRESSES[1].proxies: Value error,
    a proxy must be an http:// or https:// URL with a host`` for a setting."""
    first = exc.errors()[0] if exc.errors() else None
    if first is None:
        return str(exc).splitlines()[0]
    loc = [str(p) for p in first.get("loc", ())]
    if not loc:
        return f"{exc.title}: {first.get('msg', '')}"
    settings = exc.title.endswith("Settings")  # an environment variable, not a CLI value
    name = f"SKYCRAWL_{loc[0].upper()}" if settings else loc[0]
    where = name + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
    return f"{where}: {first.get('msg', '')}"
