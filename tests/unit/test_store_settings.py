"""EVENT_STORE picks the event store; the PostgreSQL settings become the library's variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.settings import Settings


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"VAR_DIR": str(tmp_path), "PSEUDONYM_SECRET": "s", **env})


def test_sqlite_is_the_default_store(tmp_path: Path) -> None:
    chosen = settings(tmp_path)
    assert (chosen.event_store, chosen.persistence_module) == ("sqlite", "eventsourcing.sqlite")
    assert chosen.eventsourcing_env()["SQLITE_DBNAME"] == str(tmp_path / "events.sqlite")
    assert "POSTGRES_HOST" not in chosen.eventsourcing_env()


def test_postgres_store_passes_its_location_to_the_eventsourcing_library(tmp_path: Path) -> None:
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "password").write_text("from-the-file\n")
    given = {"EVENT_STORE": "postgres", "POSTGRES_PORT": "6543", "POSTGRES_SCHEMA": "province_56",
             "PERSISTENCE_MODULE": "eventsourcing.sqlite"}  # fmt: skip
    chosen = settings(tmp_path, **given)
    env = chosen.eventsourcing_env()
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"  # EVENT_STORE decides
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("127.0.0.1", "6543")
    assert (env["POSTGRES_DBNAME"], env["POSTGRES_USER"]) == ("eid", "eid")
    assert env["POSTGRES_PASSWORD"] == "from-the-file"
    assert env["POSTGRES_SCHEMA"] == "province_56"
    assert "password='from-the-file'" in chosen.postgres_dsn


def test_a_postgres_persistence_module_alone_means_the_postgres_store(tmp_path: Path) -> None:
    chosen = settings(tmp_path, PERSISTENCE_MODULE="eventsourcing.postgres", POSTGRES_PASSWORD="p")
    assert chosen.event_store == "postgres" and chosen.postgres_password == "p"


def test_an_unknown_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="EVENT_STORE"):
        settings(tmp_path, EVENT_STORE="mysql")
