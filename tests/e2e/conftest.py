"""The API and the relay as real processes, for tests over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import AUTH_TOKENS, TOKENS, python_process, unique, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """An HTTP client of one running deployment, calling as a role."""

    def __init__(self, base: str, logs: list[Path]) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=30)
        self.logs = logs
        self.numbers: set[str] = set()  # every personal number sent, to look for in the logs

    def call(
        self, method: str, path: str, role: str | None = "station", **kw: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
        headers.update(kw.pop("headers", {}))
        body = kw.get("json")
        if isinstance(body, dict) and isinstance(body.get("citizen_id"), str):
            self.numbers.add(body["citizen_id"])
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
def running_api(kafka_bootstrap: str, directory: Path) -> Iterator[Api]:
    """`python -m services.relay` and `python -m services.api` on a fresh deployment."""
    port = free_port()
    env = {
        "VAR_DIR": str(directory / "var"), "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "KAFKA_TOPIC": unique("citizen-events"), "PROJECTOR_GROUP": unique("projector"),
        "CLICKHOUSE_DATABASE": "eid", "AUTH_TOKENS": AUTH_TOKENS, "API_PORT": str(port),
        "PSEUDONYM_SECRET": "e2e-secret", "CAMPAIGN_START": "2023-01-01T00:00:00+07:00",
    }  # fmt: skip
    logs = [directory / name for name in ("relay.log", "api.log")]
    with logs[0].open("w") as relay_log, logs[1].open("w") as api_log:
        relay = python_process(["-m", "services.relay"], env, stdout=relay_log, stderr=relay_log)
        server = python_process(["-m", "services.api"], env, stdout=api_log, stderr=api_log)
    client = Api(f"http://127.0.0.1:{port}", logs)
    try:
        wait_until(client.healthy, 90, every=0.2)
        yield client
    finally:
        for proc in (server, relay):
            proc.terminate()
        for proc in (server, relay):
            proc.wait(30)
