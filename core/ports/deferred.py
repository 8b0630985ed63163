"""Ports (and SDK clients) built on their first use: what a function's cold start skips.

``deferred(build)`` returns a stand-in for what ``build()`` makes -- attribute access, method
calls, ``isinstance`` and ``==`` all go to the real object -- and calls ``build`` (which
imports the cloud SDK and makes its clients) the first time any of that happens, once, under
a lock. A function instance whose first request never touches a port (``GET /healthz``, or a
route that only reads the state store) never imports that port's SDK: hundreds of
milliseconds on Azure and Google Cloud, where the SDKs are large. The proxy is
``lazy_object_proxy.Proxy``.

``Ports.close`` closes only the ports that were built (``is_built``): closing a port that was
never used must not import its SDK just to close nothing.

A port on clients the caller gave (tests, other credentials) is built at once
(``deferred(..., now=True)``): nothing is left to import, and closing it closes them.

What moves: an error that building raises (a missing setting, a bad connection string)
surfaces on first use, so a provider's ``build_ports`` checks its settings eagerly and
defers only the construction of clients and adapters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from lazy_object_proxy import Proxy  # type: ignore[import-untyped, unused-ignore]

if TYPE_CHECKING:
    from core.clock import Clock
    from core.models import Egress
    from core.ports import Ports

T = TypeVar("T")


def deferred(build: Callable[[], T], *, now: bool = False) -> T:
    """A stand-in for ``build()``, which is called on first use (once); ``now``: just
    ``build()`` -- for a port on clients the caller gave (their SDK is imported already, and
    the caller expects ``close`` to close them)."""
    if now:
        return build()
    lock = threading.Lock()
    made: list[T] = []

    def once() -> T:
        with lock:
            if not made:
                made.append(build())
            return made[0]

    return cast(T, Proxy(once))


def deferred_ports(
    build: Callable[[], Ports],
    *,
    runtimes: Sequence[str],
    clock: Clock,
    pool: Sequence[Egress] = (),
) -> Ports:
    """Ports whose adapters ``build`` makes all together, on the first use of any of them
    (for a provider whose adapters share clients and need one another to be built); then
    every stand-in is the real port, and ``Ports.close`` closes them all. ``runtimes``: the
    egress names ``build``'s runtimes are keyed by."""
    from core.ports import Ports

    lock = threading.Lock()
    made: list[Ports] = []
    views: dict[str, Any] = {}

    def part(ports: Ports, key: str) -> Any:
        kind, _, name = key.partition(":")
        return ports.runtimes[name] if kind == "runtime" else getattr(ports, kind)

    def whole() -> Ports:
        with lock:
            if not made:
                made.append(build())
                for key, view in views.items():  # all of them are real from now on
                    view.__wrapped__ = part(made[0], key)
            return made[0]

    def view(key: str) -> Any:
        views[key] = Proxy(lambda: part(whole(), key))
        return views[key]

    return Ports(
        bus=view("bus"),
        scheduler=view("scheduler"),
        state=view("state"),
        blobs=view("blobs"),
        runtimes={name: view(f"runtime:{name}") for name in runtimes},
        provisioner=view("provisioner"),
        clock=clock,
        pool=tuple(pool),
    )


def identity(thing: object) -> int:
    """``id`` of what ``thing`` stands for, once built (two stand-ins of one runtime are one)."""
    if type(thing) is Proxy and thing.__resolved__:  # type: ignore[attr-defined]
        return id(thing.__wrapped__)  # type: ignore[attr-defined]
    return id(thing)


def is_built(thing: object) -> bool:
    """False for a ``deferred`` stand-in not used yet; True for anything else."""
    return type(thing) is not Proxy or bool(thing.__resolved__)  # type: ignore[attr-defined]
