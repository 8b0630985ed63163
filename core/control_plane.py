"""The control plane every deployable composes from its ports: conductor, housekeeping,
tenancy and API over one set of records. Each entry point (local server, Lambda, Azure
Functions, Cloud Functions) builds its provider's ports and calls ``build_control_plane``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core import telemetry
from core.api import Api
from core.conductor import Conductor, Housekeeper
from core.conductor.outbox import Outbox
from core.errors import ConfigurationError
from core.netguard import AddressPolicy
from core.ports import Ports
from core.records import Records
from core.settings import SkycrawlSettings
from core.tenancy import TenantService
from core.webhooks import WebhookNotifier


@dataclass
class ControlPlane:
    records: Records
    conductor: Conductor
    housekeeper: Housekeeper
    tenants: TenantService
    api: Api


def build_control_plane(
    ports: Ports, settings: SkycrawlSettings, *, engine_env: Mapping[str, str]
) -> ControlPlane:
    """Wire the core over ``ports``; ``engine_env`` is what containers need to connect
    (with this process's ``OTEL_*`` variables, so that they export telemetry alike)."""
    telemetry.setup("skycrawl-control")  # off unless the OTEL_* variables ask for it
    engine_env = {**telemetry.container_env(), **engine_env}
    try:
        policy = AddressPolicy.from_cidrs(settings.allow_cidrs)
    except ValueError as exc:
        raise ConfigurationError(f"SKYCRAWL_ALLOW_CIDRS: {exc}") from exc
    records = Records(ports.state)
    notifier = WebhookNotifier(
        policy=policy,
        records=records,
        outbox=Outbox(ports),
        clock=ports.clock,
        inbox_queue=settings.inbox_queue,
    )
    conductor = Conductor(
        ports=ports,
        settings=settings,
        engine_env=engine_env,
        records=records,
        notifier=notifier,
        events=notifier,
    )
    tenants = TenantService(
        records=records,
        provisioner=ports.provisioner,
        bus=ports.bus,
        blobs=ports.blobs,
        runtime_for=ports.runtime_for,
        clock=ports.clock,
        settings=settings,
    )
    api = Api(
        records=records,
        tenants=tenants,
        bus=ports.bus,
        blobs=ports.blobs,
        clock=ports.clock,
        settings=settings,
    )
    return ControlPlane(
        records=records,
        conductor=conductor,
        housekeeper=Housekeeper(conductor),
        tenants=tenants,
        api=api,
    )
