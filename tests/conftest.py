"""Fixtures over real services: the Kafka broker and PostgreSQL (each started once if none
answers), chdb, names; the event store of every deployment, SQLite and then PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.settings import Settings
from tests.support.broker import TEST_PORT, running_broker
from tests.support.environment import deployment_env, granted, kafka_login
from tests.support.postgres import STORES, Cluster, running_postgres
from tests.support.processes import ROOT


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Apache Kafka broker: the one already running, or one started for this session."""
    with running_broker(ROOT / "var", port=TEST_PORT) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A real PostgreSQL: infra/postgres/postgres.sh's cluster, started for this session if it
    does not accept logins (and stopped again by its PID)."""
    with running_postgres(ROOT / "var") as cluster:
        yield cluster


@pytest.fixture(scope="module", params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """The event store under test: every test that makes a deployment runs on each."""
    return str(request.param)


@pytest.fixture
def store_env(store: str, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The settings that put this test's deployment on `store` (on PostgreSQL: its own schema,
    dropped afterwards)."""
    yield from _store_env(store, request)


@pytest.fixture(scope="module")
def module_store_env(store: str, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """`store_env` for a deployment that a whole module shares."""
    yield from _store_env(store, request)


def _store_env(store: str, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if store == "sqlite":
        yield {"EVENT_STORE": "sqlite"}
        return
    cluster: Cluster = request.getfixturevalue("postgres")
    with cluster.fresh_schema() as schema:
        yield {**cluster.env(), "POSTGRES_SCHEMA": schema}


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded ClickHouse data directory per test process (chdb allows one per process)."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def env_for(tmp_path: Path, store_env: dict[str, str]) -> Callable[..., dict[str, str]]:
    """The environment of a fresh deployment: its own var/, topic, group, database and store
    (SQLite file or PostgreSQL schema).

    Every call in one test gives the same deployment (same names), `overrides` on top.
    """
    base = deployment_env(tmp_path / "var", f"127.0.0.1:{TEST_PORT}", **store_env)

    def make(**overrides: str) -> dict[str, str]:
        if "KAFKA_BOOTSTRAP" in overrides:  # another broker: its own users
            overrides = {**kafka_login(overrides["KAFKA_BOOTSTRAP"]), **overrides}
        env = {**base, **overrides}
        changed = {"KAFKA_BOOTSTRAP", "KAFKA_TOPIC", "PROJECTOR_GROUP"} & set(overrides)
        return granted(env) if changed else env

    return make


@pytest.fixture
def settings(env_for: Callable[..., dict[str, str]]) -> Settings:
    """The settings of this test's fresh deployment (`env_for()` read once)."""
    return Settings.from_env(env_for())
