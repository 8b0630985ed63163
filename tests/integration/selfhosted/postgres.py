"""Scratch databases on the machine's PostgreSQL (127.0.0.1:5432, trust auth, user postgres).

``shared_url()`` creates one database per test process on first use (the contract suites
share it: their queues, tables and keys are uniquely named) and drops it when the process
exits; ``fresh_database()`` creates one for a single test (the end-to-end story starts from
an empty database) and drops it afterwards. ``SKYCRAWL_TEST_POSTGRES_URL`` points elsewhere
(the maintenance database the scratch databases are created from).

The machine's PostgreSQL runs before a session starts; if it has stopped, the first
connection starts Debian's cluster again (``pg_ctlcluster ... main start``), as the machine's
own start-up does, and tries once more.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ADMIN_URL = os.environ.get(
    "SKYCRAWL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

_lock = threading.Lock()
_shared: str | None = None


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError:
        versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        if not versions or shutil.which("pg_ctlcluster") is None:
            raise
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
            check=False,
            capture_output=True,
            timeout=60,
        )
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=10)


def create_database() -> tuple[str, str]:
    """A new empty database: its name and its URL."""
    name = f"skycrawl_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, make_conninfo(ADMIN_URL, dbname=name)


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def shared_url() -> str:
    """The test process's scratch database, created now if it does not exist yet."""
    global _shared
    with _lock:
        if _shared is None:
            name, _shared = create_database()
            atexit.register(drop_database, name)
        return _shared


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A database of its own for one test (its URL), dropped afterwards."""
    name, url = create_database()
    try:
        yield url
    finally:
        drop_database(name)
