"""X-Ray tracing for the AWS functions, imported only when it is on.

Powertools' ``Tracer`` imports the X-Ray SDK when it is constructed, even when tracing is off
(about 200 ms of every cold start on a quiet machine, ``bench/coldstart_bench.py``). Lambda
bills that INIT time, so ``tracer(service)`` builds the real ``Tracer`` only when Powertools
itself would trace -- inside Lambda (``LAMBDA_TASK_ROOT``), not under SAM local, and without
``POWERTOOLS_TRACE_DISABLED=true`` -- and otherwise a stand-in whose decorators return the
handler unchanged. Turn Active Tracing on for a function and leave
``POWERTOOLS_TRACE_DISABLED`` unset to get traces.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

F = TypeVar("F", bound=Callable[..., Any])


class HandlerTracer(Protocol):
    """What the functions use of a tracer: ``@tracer.capture_lambda_handler(...)``."""

    def capture_lambda_handler(
        self, lambda_handler: None = None, capture_response: bool | None = None
    ) -> Callable[[F], F]: ...


class NoTracer:
    """Tracing off: the handler runs as it is, and nothing imports the X-Ray SDK."""

    def __init__(self, service: str) -> None:
        self.service = service

    def capture_lambda_handler(
        self, lambda_handler: None = None, capture_response: bool | None = None
    ) -> Callable[[F], F]:
        def keep(handler: F) -> F:
            return handler

        return keep


def tracing_enabled() -> bool:
    """What Powertools' ``Tracer`` decides about the environment (its documented rules, with
    its own constants and truthy parsing; both are cheap to import)."""
    disabled = os.getenv(constants.TRACER_DISABLED_ENV, "false")
    if resolve_truthy_env_var_choice(env=disabled):
        return False
    if not os.getenv(constants.LAMBDA_TASK_ROOT_ENV):
        return False
    return not (os.getenv(constants.SAM_LOCAL_ENV) or os.getenv(constants.CHALICE_LOCAL_ENV))


def tracer(service: str) -> HandlerTracer:
    """Powertools' ``Tracer`` when tracing is on, else a ``NoTracer``."""
    if not tracing_enabled():
        return NoTracer(service)
    from aws_lambda_powertools import Tracer

    return cast(HandlerTracer, Tracer(service=service))
