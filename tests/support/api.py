"""The API and the relay as real processes, and an HTTP client that calls them as a role."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.environment import COMMAND_ROLES, TOKENS, deployment_env
from tests.support.processes import free_port, running
from tests.support.waiting import wait_until

NUMBER_IN_PATH = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")


class Api:
    """An HTTP client of one running deployment, calling as a role."""

    def __init__(self, base: str, logs: list[Path]) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=30)
        self.logs = logs
        self.numbers: set[str] = set()  # every personal number sent, to look for in the logs

    def call(self, method: str, path: str, role: str | None = "", **kw: Any) -> httpx.Response:
        """The request as `role` (default: the role that sends commands to `path`, else
        station; None: no token)."""
        if role == "":
            role = COMMAND_ROLES.get(path, "station")
        headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
        headers.update(kw.pop("headers", {}))
        body = kw.get("json")
        if isinstance(body, dict) and isinstance(body.get("citizen_id"), str):
            self.numbers.add(body["citizen_id"])
        self.numbers.update(NUMBER_IN_PATH.findall(path))  # only the retired paths have one
        return self.http.request(method, path, headers=headers, **kw)

    def position(self) -> int:
        return int(self.http.get("/healthz").json()["event_store_position"])

    def received(self, commune: str) -> int:
        params = {"level": "commune", "code": commune}
        body = self.call("GET", "/v1/progress", role="viewer", params=params).json()
        return int(body["received"]["count"])

    def healthy(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False


@contextmanager
def api_and_relay(env: dict[str, str], logs: Path) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """`python -m services.relay` and `python -m services.api` with `env`, each logging to
    `logs`/<name>.log; both stopped (the API first) when the block ends."""
    with (
        running(["-m", "services.relay"], env, logs / "relay.log") as relay,
        running(["-m", "services.api"], env, logs / "api.log") as api,
    ):
        yield {"relay": relay, "api": api}


@contextmanager
def running_api(kafka_bootstrap: str, directory: Path, **store: str) -> Iterator[Api]:
    """A fresh deployment's relay and API under `directory`, once the API answers /healthz;
    `store` picks its event store (SQLite by default)."""
    port = free_port()
    env = deployment_env(directory / "var", kafka_bootstrap, CLICKHOUSE_DATABASE="eid",
                         API_PORT=str(port), PSEUDONYM_SECRET="e2e-secret", **store)  # fmt: skip
    client = Api(f"http://127.0.0.1:{port}", [directory / "relay.log", directory / "api.log"])
    with api_and_relay(env, directory), client.http:
        wait_until(client.healthy, 90, every=0.2)
        yield client


def store_position(backbone: Any) -> int:
    """The event store's last notification id of an in-process API's backbone (0: empty)."""
    return int(backbone.registry.recorder.max_notification_id() or 0)
