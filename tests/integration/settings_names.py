"""Every environment variable a settings model reads (``SKYCRAWL_...``), for checking the
names that deployment files (Kubernetes manifests, compose) pass."""

from __future__ import annotations

from pydantic_settings import BaseSettings

from adapters.selfhosted.container_runtime import DockerSettings
from adapters.selfhosted.kubernetes_runtime import KubernetesSettings
from adapters.selfhosted.settings import SelfhostedSettings
from core.settings import SkycrawlSettings

SETTINGS: tuple[type[BaseSettings], ...] = (
    SkycrawlSettings,
    SelfhostedSettings,
    DockerSettings,
    KubernetesSettings,
)


def setting_names() -> set[str]:
    names = set()
    for model in SETTINGS:
        prefix = str(model.model_config.get("env_prefix", ""))
        names |= {f"{prefix}{field}".upper() for field in model.model_fields}
    return names
