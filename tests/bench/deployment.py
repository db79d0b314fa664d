"""One fresh deployment for a bench run: its directory, settings, API address and time budget."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.environment import deployment_env
from tests.support.factories import VN
from tests.support.processes import free_port

POLL_S = 0.2
STALL_S = 60.0  # a phase whose count has not grown for this long has failed
ROLES = ("station", "viewer", "admin", "auditor")


class Deadline:
    """The time budget of the whole run; every wait asks it how long it may take."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def within(self, seconds: float) -> float:
        """A monotonic end time: `seconds` from now, but never past the run's deadline."""
        return time.monotonic() + min(seconds, self.remaining())


class BenchError(RuntimeError):
    """A phase that could not complete; the run reports it and exits with code 1."""


@dataclass
class Deployment:
    """One fresh set of services: its directory, environment and API address."""

    dir: Path
    env: dict[str, str]
    port: int
    tokens: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def kafka_bootstrap() -> str:
    """The broker the bench uses: `KAFKA_BOOTSTRAP`, or the local default."""
    return os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def broker_address() -> tuple[str, int]:
    """Host and port of the first broker in `KAFKA_BOOTSTRAP`."""
    host, _, port = kafka_bootstrap().partition(",")[0].rpartition(":")
    return host or "127.0.0.1", int(port)


def make_deployment(var_dir: Path, store: dict[str, str] | None = None) -> Deployment:
    """A new directory under `var_dir`/bench and settings nothing else uses (random tokens), on
    the event store `store` says (SQLite when None)."""
    stamp = datetime.now(VN).strftime("%Y%m%dT%H%M%S")
    root = var_dir / "bench" / f"{stamp}-{secrets.token_hex(2)}"
    root.mkdir(parents=True)
    tokens = {role: secrets.token_urlsafe(12) for role in ROLES}
    port, tag = free_port(), secrets.token_hex(6)
    env = deployment_env(
        root / "var",
        kafka_bootstrap(),
        tokens,
        KAFKA_TOPIC=f"bench-{tag}",
        PROJECTOR_GROUP=f"bench-projector-{tag}",
        CLICKHOUSE_DATABASE="bench",
        API_HOST="127.0.0.1",
        API_PORT=str(port),
        PSEUDONYM_SECRET=secrets.token_hex(16),
        KAFKA_SESSION_TIMEOUT_MS="6000",
        **(store or {"EVENT_STORE": "sqlite"}),
    )
    return Deployment(root, env, port, tokens)


def wait_healthy(
    client: httpx.Client, dep: Deployment, api: subprocess.Popen[str], end: float
) -> dict[str, Any]:
    """The API's /healthz once it answers 200; BenchError if the API exits or `end` passes."""
    while time.monotonic() < end:
        if api.poll() is not None:
            raise BenchError(f"the API exited with code {api.returncode}; see {dep.dir}/api.log")
        with contextlib.suppress(httpx.TransportError):
            response = client.get(f"{dep.base}/healthz", timeout=2)
            if response.status_code == 200:
                return dict(response.json())
        time.sleep(POLL_S)
    raise BenchError("the API did not answer /healthz in time")


def check_alive(
    procs: dict[str, subprocess.Popen[str]], dep: Deployment, health: dict[str, Any]
) -> None:
    """BenchError if a service process exited or the API reports its projector thread dead."""
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with code {proc.returncode}; see {dep.dir}/{name}.log")
    if health.get("projector_alive") is False:
        raise BenchError(f"the embedded projector thread died; see {dep.dir}/api.log")
