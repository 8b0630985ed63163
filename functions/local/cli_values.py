"""Checks of the CLI's option values, and one-line messages for bad settings.

Every check runs while the arguments are parsed, so a bad value is one line naming the option
(``skycrawl: argument --idle-ttl: must be a number > 0, not '-3'``) and exit code 2 before
anything starts or is written.
"""

from __future__ import annotations

import argparse
import ipaddress
import math

from pydantic import ValidationError

#: The environment prefix of each settings model, to name a bad field as the user sets it.
_ENV_PREFIX = {"SkycrawlSettings": "SKYCRAWL_", "LocalSettings": "SKYCRAWL_LOCAL_"}


def positive_number(text: str) -> float:
    """A finite number > 0 (seconds)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text!r}")
    return value


def whole_number(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, not {text!r}")
    return value


def cidr_range(text: str) -> str:
    """An IPv4 or IPv6 network such as ``10.0.0.0/8`` (host bits must be zero)."""
    try:
        ipaddress.ip_network(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CIDR range ({exc})") from None
    return text.strip()


def settings_error_line(exc: ValidationError) -> str:
    """``SKYCRAWL_STARTUP_TIMEOUT_S: Input should be greater than 0 (got '-3')`` for a bad
    setting; the first error of any other model, with its field."""
    prefix = _ENV_PREFIX.get(exc.title)
    first = exc.errors()[0] if exc.error_count() else None
    if first is None:
        return str(exc).splitlines()[0]
    where = ".".join(str(part) for part in first["loc"])
    name = f"{prefix}{where.upper()}" if prefix else where
    got = first.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
    more = f"; and {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
    return f"{name}: {first['msg']}{shown}{more}"


def iso_moment(text: str) -> str:
    """An ISO 8601 date (``2030-01-31``) or date-time (``2030-01-31T12:00:00+01:00``),
    passed to the API as written."""
    from datetime import datetime

    try:
        datetime.fromisoformat(text.strip().upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an ISO 8601 date or date-time (2030-01-31, 2030-01-31T12:00), not {text!r}"
        ) from None
    return text.strip()
