"""What operators see: /healthz, /readyz and /metrics of the API with its embedded projector,
and the relay's own metrics port, on the real store, broker and ClickHouse engine."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from services.api.app import create_app
from services.api.health import component_reasons
from services.settings import Settings
from tests.support.environment import TOKENS
from tests.support.factories import registration_body
from tests.support.kafka import publish_all
from tests.support.processes import ROOT, free_port, running, stop
from tests.support.signed import signed_up
from tests.support.waiting import wait_until

STATION = {"Authorization": f"Bearer {TOKENS['station']}"}
AUDITOR = {"Authorization": f"Bearer {TOKENS['auditor']}"}
API, RELAY = "api", "relay"


def documented(served_by: str) -> set[str]:
    """The metric names README.md's operating table says `served_by` exposes."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Operating: health, readiness, metrics", 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in re.findall(r"^\| `(eid_[a-z_]+)` \|(.*)$", section, re.M):
        cells = [c.strip() for c in row[1].split("|")]
        if served_by in cells[2]:
            names.add(row[0])
    return names


def scrape(text: str) -> dict[str, float]:
    """`name{label="value",...}` (labels sorted) -> value, for every sample in `text`."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def exposed(text: str) -> set[str]:
    """The names in a scrape: of each family, and of each sample (counters end in _total)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name, *(s.name for s in family.samples)}
    return names


def metrics(client: TestClient) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return scrape(response.text)


@pytest.fixture
def make_app(kafka_bootstrap, env_for, chdb_url) -> Iterator[Any]:
    """Starts an app (with the embedded projector) on this test's deployment, env on top."""
    clients: list[TestClient] = []

    def start(**env: str) -> tuple[TestClient, Any]:
        settings = Settings.from_env(env_for(CLICKHOUSE_URL=chdb_url, **env))
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client, client.app.state.backbone  # type: ignore[attr-defined]

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def ready(client: TestClient) -> dict[str, Any] | None:
    response = client.get("/readyz")
    return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]


def unready(client: TestClient) -> dict[str, Any] | None:
    response = client.get("/readyz")
    if response.status_code == 503:
        body: dict[str, Any] = response.json()
        assert body["status"] == "unready" and body["reasons"]
        return body
    assert response.status_code == 200
    return None


def registered_and_projected(client: TestClient, backbone: Any) -> dict[str, Any]:
    body = registration_body()
    assert client.post("/v1/registrations", json=body, headers=STATION).status_code == 201
    publish_all(backbone.settings, backbone.registry)
    wait_until(lambda: metrics(client)["eid_projector_stored_total"] >= 1, 60)
    return body


def test_metrics_count_commands_projection_and_reads(make_app) -> None:
    client, backbone = make_app()
    body = registered_and_projected(client, backbone)
    resent = client.post("/v1/registrations", json=body, headers=STATION)
    assert resent.status_code == 201 and resent.headers["Idempotent-Replayed"] == "true"
    late = registration_body(captured_at="2020-01-01T00:00:00+07:00")  # before the campaign
    assert client.post("/v1/registrations", json=late, headers=STATION).status_code == 422
    device = "dev-ops-1"
    items = [{"type": "registration", **registration_body(device_id=device)}, {"type": "nope"}]
    sync = client.post("/v1/sync", json={"device_id": device, "commands": items}, headers=STATION)
    assert sync.json()["summary"] == {"created": 1, "refused": 1}
    read = {"citizen_id": body["citizen_id"], "purpose": "audit"}
    signed_up(backbone)
    history = client.post("/v1/citizens/history", json=read, headers=AUDITOR).json()
    assert history["verification"]["status"] == "verified"

    text = client.get("/metrics").text
    found = scrape(text)
    assert "_created" not in text  # no creation-time series beside the counters
    assert documented(API) - exposed(text) == set(), "documented but not exposed"
    assert found['eid_commands_total{outcome="created",type="registration"}'] == 2
    assert found['eid_commands_total{outcome="duplicate",type="registration"}'] == 1
    assert found['eid_commands_total{outcome="refused",type="registration"}'] == 1
    assert found['eid_commands_total{outcome="refused",type="other"}'] == 1
    assert found['eid_commands_total{outcome="error",type="registration"}'] == 0
    assert found["eid_projector_stored_total"] >= 1
    assert found["eid_projector_freshness_seconds_count"] >= 1
    assert found["eid_projector_batch_events_count"] >= 1
    assert found["eid_projector_dead_letters_total"] == 0
    assert found["eid_event_store_position"] >= 3
    assert found['eid_component_state{component="projector",state="running"}'] == 1
    assert found['eid_component_state{component="projector",state="failed"}'] == 0
    assert found['eid_history_verifications_total{result="verified"}'] == 1
    route = 'method="POST",route="/v1/registrations",status="201"'
    assert found[f"eid_http_request_duration_seconds_count{{{route}}}"] == 2
    template = 'method="POST",route="/v1/citizens/history",status="200"'
    assert found[f"eid_http_request_duration_seconds_count{{{template}}}"] == 1
    # Labels are templates and bounded sets: no personal number, name or account id.
    account = str(backbone.registry.account_id(body["citizen_id"]))
    for personal in (body["citizen_id"], body["full_name"], account, items[0]["citizen_id"]):
        assert personal not in text
    client.get("/no/such/079123456789")
    assert client.get("/v1/citizens/079123456789/history").status_code == 410  # retired path
    assert "079123456789" not in client.get("/metrics").text


def test_healthz_keeps_its_fields_and_adds_components(make_app) -> None:
    client, backbone = make_app()
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and isinstance(body["event_store_position"], int)
    assert body["projector_alive"] is True
    assert body["components"]["event_store"]["ok"] is True
    assert body["components"]["projector"]["thread_alive"] is True
    assert set(body["components"]["projector"]) >= {"state", "lag", "seconds_since_progress"}


def test_ready_when_the_projector_runs_and_has_caught_up(make_app) -> None:
    client, backbone = make_app()
    registered_and_projected(client, backbone)
    body: Any = wait_until(lambda: ready(client), 60)
    assert body["status"] == "ready" and body["reasons"] == []
    projector = body["components"]["projector"]
    assert projector["state"] == "running" and projector["thread_alive"] is True
    assert projector["lag"] == 0 and projector["stored"] >= 1
    assert body["components"]["event_store"]["position"] >= 1
    assert body["components"]["read_model"]["complete"] is True
    assert body["components"]["relay"]["monitored"] is False


def test_unready_when_the_projector_thread_has_ended(make_app) -> None:
    client, backbone = make_app()
    wait_until(lambda: ready(client), 60)
    backbone.stop.set()
    backbone.thread.join(30)
    assert not backbone.thread.is_alive()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["components"]["projector"]["thread_alive"] is False
    assert any(r.startswith("projector thread is not running") for r in body["reasons"])
    assert client.get("/healthz").status_code == 200  # alive all the same
    found = metrics(client)
    assert found['eid_component_state{component="projector",state="stopped"}'] == 1


def test_unready_when_the_projector_is_stuck_on_a_broken_read_model(make_app) -> None:
    client, backbone = make_app(READY_STUCK_SECONDS="3")
    wait_until(lambda: ready(client), 60)
    backbone.trail.client.command(f"DROP TABLE {backbone.trail.table}")
    body = registration_body()
    assert client.post("/v1/registrations", json=body, headers=STATION).status_code == 201
    publish_all(backbone.settings, backbone.registry)

    def stuck() -> list[str] | None:
        answer = unready(client)
        found = (
            [r for r in answer["reasons"] if r.startswith("projector is stuck")] if answer else []
        )
        return found or None

    reasons: Any = wait_until(stuck, 60)
    assert "last error" in reasons[0], reasons
    projector = client.get("/readyz").json()["components"]["projector"]
    assert projector["state"] == "retrying" and projector["restarts"] >= 1
    assert projector["thread_alive"] is True
    found = metrics(client)
    assert found['eid_component_state{component="projector",state="retrying"}'] == 1
    assert found['eid_component_restarts_total{component="projector"}'] >= 1


def test_unready_when_the_read_model_is_incomplete(make_app) -> None:
    client, backbone = make_app()
    wait_until(lambda: ready(client), 60)
    backbone.trail.mark_rebuild(uuid.UUID(int=0), 5)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["components"]["read_model"] | {"rebuilt_at": None} == {
        "complete": False, "missing_offsets": 5, "rebuilt_at": None}  # fmt: skip
    assert [r for r in body["reasons"] if r.startswith("read_model is incomplete")]
    assert not [r for r in body["reasons"] if r.startswith("projector")]


def test_readiness_rules_for_lag_and_halted_states(tmp_path: Path) -> None:
    settings = Settings.from_env({"VAR_DIR": str(tmp_path), "READY_MAX_LAG": "100"})
    fine = {"state": "running", "seconds_since_progress": 0.1, "lag": 100, "detail": ""}
    assert component_reasons("relay", fine, settings) == []
    assert component_reasons("relay", fine | {"lag": 101}, settings) == [
        "relay is lagging: 101 events behind (READY_MAX_LAG=100)"
    ]
    paused = fine | {"state": "paused", "detail": "partition 1 offset 7: unknown schema"}
    assert component_reasons("projector", paused, settings) == [
        "projector is paused: partition 1 offset 7: unknown schema"
    ]


@pytest.fixture
def relay_process(env_for, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = env_for(RELAY_METRICS_PORT=str(port))
    with running(["-m", "services.relay"], env, tmp_path / "relay.log") as proc:
        yield proc, port


def test_the_relay_serves_its_metrics_and_the_api_reads_them(
    make_app, relay_process, tmp_path: Path
) -> None:
    proc, port = relay_process
    url = f"http://127.0.0.1:{port}/metrics"

    def relay_metrics() -> str | None:
        try:
            return httpx.get(url, timeout=2).text
        except httpx.TransportError:
            assert proc.poll() is None, (tmp_path / "relay.log").read_text()
            return None

    wait_until(relay_metrics, 60)
    client, backbone = make_app(RELAY_METRICS_URL=url)
    for _ in range(3):
        body = registration_body()
        assert client.post("/v1/registrations", json=body, headers=STATION).status_code == 201

    def published() -> dict[str, float] | None:
        found = scrape(httpx.get(url, timeout=2).text)
        return found if found["eid_relay_published_total"] >= 3 else None

    found: Any = wait_until(published, 60)
    assert found['eid_component_state{component="relay",state="running"}'] == 1
    assert found["eid_relay_position"] >= 3
    text = httpx.get(url, timeout=2).text
    assert documented(RELAY) - exposed(text) == set(), "documented but not exposed"
    assert body["citizen_id"] not in text

    answer: Any = wait_until(lambda: ready(client), 60)
    relay = answer["components"]["relay"]
    assert relay["monitored"] is True and relay["state"] == "running"
    assert relay["published"] >= 3

    assert stop(proc) == 0
    response = client.get("/readyz")
    assert response.status_code == 503
    reasons = response.json()["reasons"]
    assert [r for r in reasons if r.startswith(f"relay metrics unreachable at {url}")], reasons
