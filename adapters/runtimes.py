"""One container runtime per egress: the runtime kinds an egress may name, chosen lazily.

An egress's ``runtime`` names a kind; each kind belongs to one adapter family, whose provider
module has ``build_runtime(settings, egress) -> ContainerRuntime`` (reading that family's
own ``SKYCRAWL_<FAMILY>_*`` settings from the environment). A composition root calls
``build_runtimes`` with the builder of its home family (which knows its already-made
settings and clients), so one
deployment can start containers on several runtimes at once -- ECS in us-east-1 and engine
subprocesses on the control plane's machine, say -- while its bus and state stay in the home
cloud. Nothing of another family is imported unless an egress names one of its kinds (and
then that family's extra must be installed: ``pip install 'skycrawl[gcp]'``).

=============================  ========  ======================================================
``runtime``                    family    what starts the containers
=============================  ========  ======================================================
``local``, ``subprocess``      local     engine subprocesses of the control plane's process
``ecs``, ``ecs-fargate``       aws       ECS RunTask on Fargate (``egress.region``: ECS client)
``aci``                        azure     Container Instances (``egress.region``: location)
``cloud-run``, ``cloudrun``    gcp       Cloud Run job executions (``egress.region``: the job's)
``docker``, ``kubernetes``     selfhosted  the self-hosted runtime ``SKYCRAWL_SELFHOSTED_RUNTIME``
``selfhosted``                 self-     the runtime ``SKYCRAWL_SELFHOSTED_RUNTIME`` names
                               hosted    (Docker, Kubernetes Jobs, subprocesses)
=============================  ========  ======================================================

Limits: the engine image is built with one family's extras; a container started on another
cloud reaches the home bus and blobs through the environment the home composition root
passes (its network must reach them, and its credentials are the home cloud's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from adapters import load_provider
from core.errors import ConfigurationError
from core.models import Egress
from core.ports import ContainerRuntime
from core.settings import SkycrawlSettings

RUNTIME_FAMILIES: dict[str, str] = {
    "local": "local",
    "subprocess": "local",
    "ecs": "aws",
    "ecs-fargate": "aws",
    "aci": "azure",
    "cloud-run": "gcp",
    "cloudrun": "gcp",
    "docker": "selfhosted",
    "kubernetes": "selfhosted",
    "selfhosted": "selfhosted",  # Docker, Kubernetes Jobs or subprocesses, as configured
}

RuntimeBuilder = Callable[[Egress], ContainerRuntime]


def family_of(egress: Egress) -> str:
    """The adapter family whose runtime starts ``egress``'s containers."""
    family = RUNTIME_FAMILIES.get(egress.runtime)
    if family is None:
        known = ", ".join(sorted(RUNTIME_FAMILIES))
        raise ConfigurationError(
            f"egress {egress.name!r}: unknown runtime {egress.runtime!r} (known: {known})"
        )
    return family


def build_runtimes(
    settings: SkycrawlSettings,
    *,
    home: str,
    build_home: RuntimeBuilder,
    overrides: Mapping[str, ContainerRuntime] | None = None,
    egresses: Sequence[Egress] | None = None,
) -> dict[str, ContainerRuntime]:
    """One runtime per egress of ``settings.egresses``, by egress name.

    ``home`` is the composition root's family: its egresses are built by ``build_home``
    (which may return one object for several egresses: runtimes list by egress), every
    other family's by its provider's ``build_runtime``. ``overrides`` replace the
    runtime of the egresses they name (tests run engines as subprocesses that way)."""
    chosen = dict(overrides or {})
    runtimes: dict[str, ContainerRuntime] = {}
    for egress in egresses if egresses is not None else settings.egresses:
        if egress.name in chosen:
            runtimes[egress.name] = chosen[egress.name]
            continue
        family = family_of(egress) if egress.runtime else home
        if family == home:
            runtimes[egress.name] = build_home(egress)
        else:
            runtime: ContainerRuntime = load_provider(family).build_runtime(settings, egress)
            runtimes[egress.name] = runtime
    return runtimes


def same_runtime(
    runtime: ContainerRuntime, settings: SkycrawlSettings
) -> dict[str, ContainerRuntime]:
    """``runtime`` for every egress of the pool (a test or a single-runtime deployment)."""
    return {egress.name: runtime for egress in settings.egresses}
