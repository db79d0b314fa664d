"""Real services for the tests: the Kafka broker (started once if none answers), fresh names."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KAFKA_PORT = int(os.environ.get("TEST_KAFKA_PORT", "9092"))
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
TOKENS = {"station": "st-token", "auditor": "au-token", "viewer": "vi-token", "admin": "ad-token"}
AUTH_TOKENS = ",".join(f"{role}={token}" for role, token in TOKENS.items())


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Apache Kafka broker: the one already running, or one started for this session."""
    if _answers(KAFKA_PORT):
        yield BOOTSTRAP
        return
    env = {
        **os.environ,
        "VAR_DIR": str(ROOT / "var"),
        "KAFKA_PORT": str(KAFKA_PORT),
        "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1),
    }
    subprocess.run([str(ROOT / "infra/kafka/broker.sh"), "start"], env=env, check=True)
    try:
        yield BOOTSTRAP
    finally:
        subprocess.run([str(ROOT / "infra/kafka/broker.sh"), "stop"], env=env, check=False)


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded ClickHouse data directory per test process (chdb allows one per process)."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def env_for(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """The environment of a fresh deployment: its own var/, topic, group and database."""
    base = {
        "VAR_DIR": str(tmp_path / "var"),
        "KAFKA_BOOTSTRAP": BOOTSTRAP,
        "KAFKA_TOPIC": unique("citizen-events"),
        "PROJECTOR_GROUP": unique("projector"),
        "CLICKHOUSE_DATABASE": unique("eid"),
        "AUTH_TOKENS": AUTH_TOKENS,
        "PSEUDONYM_SECRET": "test-secret",
        "CAMPAIGN_START": "2023-01-01T00:00:00+07:00",
    }

    def make(**overrides: str) -> dict[str, str]:
        return {**base, **overrides}

    return make


def wait_until(
    predicate: Callable[[], object], timeout: float = 60.0, every: float = 0.1
) -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


def python_process(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.Popen[str]:
    """Start `python -m ...` of this project with `env` on top of the current environment."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, *args], cwd=ROOT, env={**os.environ, **env}, text=True, **kwargs
    )
