"""The edge between psycopg and the core's error tree (``core.errors``).

``translated()`` wraps every database call of the self-hosted adapters: a lost or refused
connection, a pool that found no free connection in time, a serialization failure or a
deadlock -- anything another try may fix -- becomes ``core.errors.Retryable``. Errors that
mean a bug (SQL, constraint violations the adapter did not expect) pass through unchanged;
the adapters turn the expected ones (a duplicate key, a missing row) into ``Conflict`` /
``NotFound`` themselves. A missing table (``UndefinedTable``: a tenant's schema dropped by
its teardown, ``adapters.selfhosted.tenant_stores``) is ``NotFound``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from psycopg import OperationalError, errors
from psycopg_pool import PoolTimeout

from core.errors import NotFound, Retryable

_TRANSIENT = (
    OperationalError,
    PoolTimeout,
    errors.SerializationFailure,
    errors.DeadlockDetected,
)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise ``Retryable`` (from the psycopg error) for what may succeed when tried again,
    ``NotFound`` for a table that does not exist (a tenant's schema its teardown dropped)."""
    try:
        yield
    except _TRANSIENT as exc:
        raise Retryable(f"PostgreSQL {what}: {str(exc).strip() or type(exc).__name__}") from exc
    except errors.UndefinedTable as exc:
        raise NotFound(f"PostgreSQL {what}: {str(exc).strip()}") from exc
