"""Composition root of the AWS Lambda functions (``api``, ``conductor``, ``housekeeping``).

``stack()`` builds the ports, the conductor, the housekeeper, the tenant service and the API
once per cold start, from ``SkycrawlSettings`` (``SKYCRAWL_*``) and ``AwsSettings``
(``SKYCRAWL_AWS_*``) -- the operator key read from Secrets Manager by reference
(``adapters.aws.secrets``) --, and keeps them for the warm invocations that follow. Importing this
module builds nothing and calls nothing.

``run(coro)`` runs a coroutine of the async core from a synchronous Lambda handler on the
thread's own event loop, created on first use and kept open: Lambda freezes and thaws the
process between invocations, and a loop that is never closed survives that (asyncio.run
would create and close one per invocation). One loop per thread also lets tests call
handlers from worker threads.

On Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set), ``route_core_logs`` sends the core's loggers
(``skycrawl.*``) through the function's Powertools logger, so they are JSON lines with the
same correlation id.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from adapters.aws.message_bus import SqsMessageBus
from adapters.aws.provider import build_ports, engine_env
from adapters.aws.secrets import resolve_secrets
from adapters.aws.settings import AwsSettings
from core import telemetry
from core.api import Api
from core.clock import Clock
from core.conductor import Conductor, Housekeeper
from core.control_plane import build_control_plane
from core.errors import ConfigurationError
from core.ports import ContainerRuntime, Ports
from core.records import Records
from core.settings import SkycrawlSettings
from core.tenancy import TenantService

T = TypeVar("T")


@dataclass
class AwsStack:
    """Everything the three functions use, built once."""

    settings: SkycrawlSettings
    aws: AwsSettings
    ports: Ports
    bus: SqsMessageBus
    records: Records
    conductor: Conductor
    housekeeper: Housekeeper
    tenants: TenantService
    api: Api


def build_aws_stack(
    settings: SkycrawlSettings,
    aws: AwsSettings,
    *,
    runtime: ContainerRuntime | None = None,
    runtimes: Mapping[str, ContainerRuntime] | None = None,
    clock: Clock | None = None,
) -> AwsStack:
    """Build the stack explicitly: one runtime per egress (``runtime`` replaces every
    egress's, ``runtimes`` those it names, e.g. with local subprocesses)."""
    ports = build_ports(settings, aws, clock=clock, runtime=runtime, runtimes=runtimes)
    if not isinstance(ports.bus, SqsMessageBus):  # pragma: no cover - build_ports makes one
        raise ConfigurationError("the AWS functions need the SQS message bus")
    plane = build_control_plane(ports, settings, engine_env=engine_env(aws))
    return AwsStack(
        settings=settings,
        aws=aws,
        ports=ports,
        bus=ports.bus,
        records=plane.records,
        conductor=plane.conductor,
        housekeeper=plane.housekeeper,
        tenants=plane.tenants,
        api=plane.api,
    )


_lock = threading.Lock()
_stack: AwsStack | None = None
_loops = threading.local()


def stack() -> AwsStack:
    """The stack of this process, built from the environment on first use."""
    global _stack
    with _lock:
        if _stack is None:
            aws = AwsSettings()
            settings = run(resolve_secrets(SkycrawlSettings(), aws))  # the operator key
            _stack = build_aws_stack(settings, aws)
        return _stack


def install(built: AwsStack | None) -> None:
    """Use ``built`` as this process's stack (None: build from settings on next use)."""
    global _stack
    with _lock:
        _stack = built


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on this thread's long-lived event loop, then export the
    invocation's telemetry (if on) before Lambda freezes the process."""
    loop: asyncio.AbstractEventLoop | None = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _loops.loop = loop
    try:
        return loop.run_until_complete(coro)
    finally:
        telemetry.flush()


def route_core_logs(logger: Logger) -> None:
    """On Lambda, write the core's ``skycrawl.*`` logs through ``logger`` (JSON, correlation
    id). Elsewhere (tests, local runs) leave logging alone."""
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        copy_config_to_registered_loggers(source_logger=logger, include={"skycrawl"})
