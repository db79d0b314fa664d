"""What a deployment's event store and key store hold, as raw bytes, whichever store it is on:
the SQLite files, or every value of the PostgreSQL tables (for looking for clear values)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services import pg
from services.settings import Settings
from tests.support.environment import unique


def _file_bytes(*paths: Path) -> bytes:
    """The files at `paths` and their -wal / -shm / -journal companions, where they exist."""
    found = [Path(f"{p}{suffix}") for p in paths for suffix in ("", "-wal", "-shm", "-journal")]
    return b"".join(p.read_bytes() for p in found if p.exists())


def _table_bytes(settings: Settings, query: str) -> bytes:
    with pg.connect(settings) as conn:
        rows = conn.execute(query).fetchall()
    return b"".join(
        value if isinstance(value, bytes) else str(value).encode()
        for row in rows
        for value in row
        if value is not None
    )


def event_store_bytes(settings: Settings) -> bytes:
    """Every stored event (ids, topics, states) of the deployment."""
    if settings.event_store == "postgres":
        return _table_bytes(settings, "SELECT * FROM registry_events")
    return _file_bytes(settings.sqlite_path)


def key_store_bytes(settings: Settings) -> bytes:
    """Every row of the deployment's key store (wrapped data keys, the KEK check)."""
    if settings.event_store == "postgres":
        return _table_bytes(settings, "SELECT * FROM data_keys") + _table_bytes(
            settings, "SELECT * FROM data_keys_meta"
        )
    return _file_bytes(settings.key_store)


def another_store(settings: Settings) -> Settings:
    """The same deployment on another, empty event store: a new SQLite file, or a new schema
    (left behind in the test cluster) on PostgreSQL."""
    if settings.event_store == "postgres":
        return dataclasses.replace(settings, postgres_schema=unique("t"))
    return dataclasses.replace(settings, sqlite_path=settings.var_dir / f"{unique('other')}.sqlite")
