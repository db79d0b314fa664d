"""Fixtures over real services: the Kafka broker (started once if none answers), chdb, names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.settings import Settings
from tests.support.broker import TEST_PORT, running_broker
from tests.support.environment import deployment_env
from tests.support.processes import ROOT


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Apache Kafka broker: the one already running, or one started for this session."""
    with running_broker(ROOT / "var", port=TEST_PORT) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded ClickHouse data directory per test process (chdb allows one per process)."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def env_for(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """The environment of a fresh deployment: its own var/, topic, group and database.

    Every call in one test gives the same deployment (same names), `overrides` on top.
    """
    base = deployment_env(tmp_path / "var", f"127.0.0.1:{TEST_PORT}")

    def make(**overrides: str) -> dict[str, str]:
        return {**base, **overrides}

    return make


@pytest.fixture
def settings(env_for: Callable[..., dict[str, str]]) -> Settings:
    """The settings of this test's fresh deployment (`env_for()` read once)."""
    return Settings.from_env(env_for())
