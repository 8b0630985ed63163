"""What ``GET /v1/containers`` shows of a container: where it runs and leaves from.

Each item is the container record with its egress's proxy URLs redacted (no password ever
leaves the control plane), plus ``runtime``, ``region`` and ``proxies``: every proxy of the
container's pool by id, redacted URL and fleet-wide health (``ok``, or ``out`` with the
reason it was scored out, until its cool-down ends).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from core.egress_scoring import EgressHealthRecord, proxies_of, redact_proxy
from core.models import Container, Frozen


class ProxyView(Frozen):
    id: str
    url: str  # redacted: ``http://user:***@host:port``, or ``direct``
    state: Literal["ok", "out"] = "ok"
    reason: str | None = None


class ContainerView(Container):
    """A container record as the operator API shows it (proxy credentials redacted)."""

    runtime: str
    region: str
    proxies: list[ProxyView]


def container_view(container: Container, health: Mapping[str, EgressHealthRecord]) -> ContainerView:
    egress = container.egress
    seen = health.get(egress.name)
    views = []
    for pid, url in proxies_of(egress).items():
        h = None if seen is None else seen.proxies.get(pid)
        out = h is not None and h.out
        views.append(
            ProxyView(
                id=pid,
                url=redact_proxy(url),
                state="out" if out else "ok",
                reason=h.reason if out and h is not None else None,
            )
        )
    redacted = egress.model_copy(
        update={
            "proxy_url": None if egress.proxy_url is None else redact_proxy(egress.proxy_url),
            "proxies": [redact_proxy(u) for u in egress.proxies],
        }
    )
    return ContainerView(
        **{**container.model_dump(), "egress": redacted},
        runtime=egress.runtime,
        region=egress.region,
        proxies=views,
    )
