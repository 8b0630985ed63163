"""Provider adapters, chosen by name from a lazy registry (nothing is imported up front).

Each provider module exposes ``build_ports(settings, ...) -> core.ports.Ports`` for the
control plane (optional arguments are the provider's own: its settings object, a clock, a
runtime override), ``engine_env(...) -> dict[str, str]`` with what a container needs to
reach the same bus and blobs, and ``build_container_ports(settings)`` returning the bus and
blob store an engine container uses. Only ``local`` works without extras; the cloud
providers need ``pip install 'skycrawl[<name>]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from core.errors import ConfigurationError

PROVIDERS: dict[str, str] = {
    "local": "adapters.local.provider",
    "aws": "adapters.aws.provider",
    "azure": "adapters.azure.provider",
    "gcp": "adapters.gcp.provider",
    "selfhosted": "adapters.selfhosted.provider",
}


def load_provider(name: str) -> ModuleType:
    """Import the provider module called ``name``; ``ConfigurationError`` if impossible."""
    module_name = PROVIDERS.get(name)
    if module_name is None:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigurationError(f"unknown provider {name!r} (known: {known})")
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing.partition(".")[0] in ("adapters", "core"):  # our own code, not an extra
            raise ConfigurationError(
                f"provider {name!r} is not part of this installation (no module {missing})"
            ) from exc
        raise ConfigurationError(
            f"provider {name!r} needs: pip install 'skycrawl[{name}]' (missing module {missing!r})"
        ) from exc
