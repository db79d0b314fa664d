"""The Kafka broker of infra/kafka/broker.sh: the one that answers, or one started for a while."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.kafka import read_credentials, scram_login
from tests.support.processes import ROOT, answers

SCRIPT = ROOT / "infra" / "kafka" / "broker.sh"
TEST_PORT = int(os.environ.get("TEST_KAFKA_PORT", "9092"))  # the broker the tests use
# bootstrap -> the SCRAM passwords file of the broker there (infra/kafka/broker.sh writes it)
_CREDENTIALS: dict[str, Path] = {}


def credentials_file(bootstrap: str) -> Path:
    """Where the broker at `bootstrap` keeps its users' passwords (var/kafka/credentials of the
    repository for a broker this session did not start)."""
    return _CREDENTIALS.get(bootstrap, ROOT / "var" / "kafka" / "credentials")


def as_admin(bootstrap: str) -> dict[str, Any]:
    """kafka-python arguments that reach the broker at `bootstrap` as its admin (super user):
    for tests that set up or inspect topics outside any component's permissions."""
    password = read_credentials(credentials_file(bootstrap)).get("admin")
    if password is None:  # a broker without authentication
        return {"bootstrap_servers": bootstrap}
    return scram_login(bootstrap, "admin", password)


class Broker:
    """One broker run by infra/kafka/broker.sh: its state directory and its client port."""

    def __init__(self, var_dir: Path, port: int = 9092, timeout: float | None = None) -> None:
        self.port = port
        _CREDENTIALS[f"127.0.0.1:{port}"] = var_dir / "kafka" / "credentials"
        self.timeout = timeout  # for each broker.sh call; None: as long as it takes
        self.env = {**os.environ, "VAR_DIR": str(var_dir), "KAFKA_PORT": str(port),
                    "KAFKA_CONTROLLER_PORT": str(port + 1)}  # fmt: skip

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def _run(self, action: str) -> None:
        subprocess.run(
            [str(SCRIPT), action], cwd=ROOT, env=self.env, check=True, timeout=self.timeout
        )


@contextmanager
def running_broker(
    var_dir: Path, host: str = "127.0.0.1", port: int = TEST_PORT, timeout: float | None = None
) -> Iterator[str]:
    """The broker that answers at host:port, or one started (and stopped again) for the block."""
    bootstrap = f"{host}:{port}"
    _CREDENTIALS.setdefault(bootstrap, var_dir / "kafka" / "credentials")
    if answers(host, port):
        yield bootstrap
        return
    print(f"no broker at {bootstrap}: starting infra/kafka/broker.sh", flush=True)
    broker = Broker(var_dir, port, timeout)
    broker.start()
    try:
        yield bootstrap
    finally:
        broker.stop()
