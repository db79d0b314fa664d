"""Auditor reads through the API in-process, on the real store, broker and ClickHouse engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.relay.relay import Relay
from services.settings import Settings
from tests.conftest import TOKENS, wait_until
from tests.factories import registration_body

AUDITOR = {"Authorization": f"Bearer {TOKENS['auditor']}"}
STATION = {"Authorization": f"Bearer {TOKENS['station']}"}


@pytest.fixture
def app(kafka_bootstrap, env_for, chdb_url) -> Iterator[tuple[TestClient, Any]]:
    settings = Settings.from_env(env_for(CLICKHOUSE_URL=chdb_url))
    with TestClient(create_app(settings)) as client:
        yield client, client.app.state.backbone  # type: ignore[attr-defined]


def publish(backbone: Any) -> None:
    relay = Relay(backbone.settings, backbone.registry)
    relay.start()
    while relay.step():
        pass
    relay.close()


def registered_and_approved(client: TestClient, backbone: Any) -> str:
    body = registration_body()
    assert client.post("/v1/registrations", json=body, headers=STATION).status_code == 201
    decision = {"command_id": f"d-{body['citizen_id']}", "decision": "approved",
                "decided_at": body["captured_at"]}
    path = f"/v1/registrations/{body['citizen_id']}/decision"
    assert client.post(path, json=decision, headers=STATION).status_code == 201
    publish(backbone)
    return str(body["citizen_id"])


def history(client: TestClient, citizen_id: str, count: int) -> dict[str, Any]:
    def got() -> dict[str, Any] | None:
        body = client.get(f"/v1/citizens/{citizen_id}/history", headers=AUDITOR).json()
        return body if len(body["events"]) >= count else None

    return wait_until(got, 60)  # type: ignore[return-value]


def test_untouched_history_verifies(app) -> None:
    client, backbone = app
    citizen = registered_and_approved(client, backbone)
    answer = history(client, citizen, 2)
    assert answer["verification"]["verified"] is True
    assert answer["events"][1]["previous_hash"] == answer["events"][0]["hash"]


def test_altered_row_breaks_the_chain_at_that_event(app) -> None:
    client, backbone = app
    citizen = registered_and_approved(client, backbone)
    events = history(client, citizen, 2)["events"]
    target = events[1]["event_id"]
    backbone.trail.client.command(
        f"ALTER TABLE {backbone.trail.table} UPDATE detail = "
        f"'{{\"decision\":\"rejected\",\"reason\":\"\"}}' WHERE event_id = '{target}' "
        f"SETTINGS mutations_sync = 1"
    )
    answer = client.get(f"/v1/citizens/{citizen}/history", headers=AUDITOR).json()
    assert answer["verification"]["verified"] is False
    assert answer["verification"]["first_broken_link"] == {"sequence": 2, "event_id": target}


def test_deleted_row_makes_the_history_incomplete(app) -> None:
    client, backbone = app
    citizen = registered_and_approved(client, backbone)
    events = history(client, citizen, 2)["events"]
    backbone.trail.client.command(
        f"ALTER TABLE {backbone.trail.table} DELETE WHERE event_id = '{events[1]['event_id']}' "
        f"SETTINGS mutations_sync = 1"
    )
    answer = client.get(f"/v1/citizens/{citizen}/history", headers=AUDITOR).json()
    assert answer["verification"]["verified"] is False
    assert answer["verification"]["missing_sequences"] == [2]
