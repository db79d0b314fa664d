"""PostgreSQL adapter: connections to the store the settings name, in its schema.

The eventsourcing library opens its own pool for the event store; what else lives in the same
database (the key store; the signer's tables once ported) connects through here, so every
table of one deployment sits in `settings.postgres_schema`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from services.settings import Settings


def conninfo(settings: Settings) -> str:
    """The libpq conninfo of the store, with the deployment's schema first on the search path."""
    return make_conninfo(
        settings.postgres_dsn,
        options=f"-c search_path={settings.postgres_schema}",
        connect_timeout=10,
        application_name="eid-backbone",
    )


def connect(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    """One autocommit connection (transactions are explicit: `with conn.transaction()`)."""
    return psycopg.connect(conninfo(settings), autocommit=True)


def pool(settings: Settings, name: str, max_size: int = 2) -> ConnectionPool:
    """A small pool of autocommit connections; a broken connection is replaced, so a restarted
    server is a transient fault, not a dead adapter."""
    return ConnectionPool(
        conninfo(settings),
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True},
        name=name,
        open=True,
    )


@contextmanager
def setting_up(settings: Settings) -> Iterator[None]:
    """Make the schema if missing and hold the schema's set-up lock while tables are created:
    PostgreSQL's CREATE ... IF NOT EXISTS races between processes that start together. Not
    reentrant across connections: never nest two of these in one process."""
    with connect(settings) as conn:
        key = zlib.crc32(f"eid-setup/{settings.postgres_schema}".encode()) - 2**31
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(settings.postgres_schema)
                )
            )
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
