"""Auditor reads through the API in-process, on the real store, broker and ClickHouse engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.settings import Settings
from tests.support.environment import TOKENS
from tests.support.factories import registration_body
from tests.support.kafka import publish_all
from tests.support.waiting import wait_until

AUDITOR = {"Authorization": f"Bearer {TOKENS['auditor']}"}
STATION = {"Authorization": f"Bearer {TOKENS['station']}"}


@pytest.fixture
def app(kafka_bootstrap, env_for, chdb_url) -> Iterator[tuple[TestClient, Any]]:
    settings = Settings.from_env(env_for(CLICKHOUSE_URL=chdb_url))
    with TestClient(create_app(settings)) as client:
        yield client, client.app.state.backbone  # type: ignore[attr-defined]


def registered_and_approved(client: TestClient, backbone: Any) -> str:
    body = registration_body()
    assert client.post("/v1/registrations", json=body, headers=STATION).status_code == 201
    decision = {
        "command_id": f"d-{body['citizen_id']}",
        "decision": "approved",
        "decided_at": body["captured_at"],
    }
    path = f"/v1/registrations/{body['citizen_id']}/decision"
    assert client.post(path, json=decision, headers=STATION).status_code == 201
    publish_all(backbone.settings, backbone.registry)
    return str(body["citizen_id"])


def history(client: TestClient, citizen_id: str, count: int) -> dict[str, Any]:
    def got() -> dict[str, Any] | None:
        body = client.get(
            f"/v1/citizens/{citizen_id}/history?purpose=audit", headers=AUDITOR
        ).json()
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
        f'\'{{"decision":"rejected","reason":""}}\' WHERE event_id = \'{target}\' '
        f"SETTINGS mutations_sync = 1"
    )
    answer = client.get(f"/v1/citizens/{citizen}/history?purpose=audit", headers=AUDITOR).json()
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
    answer = client.get(f"/v1/citizens/{citizen}/history?purpose=audit", headers=AUDITOR).json()
    assert answer["verification"]["verified"] is False
    assert answer["verification"]["missing_sequences"] == [2]


ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}


def test_every_read_is_recorded_and_visible_in_the_access_log(app) -> None:
    client, backbone = app
    citizen = registered_and_approved(client, backbone)
    history(client, citizen, 2)
    client.get(f"/v1/citizens/{citizen}/state?purpose=complaint%20123", headers=AUDITOR)
    publish_all(backbone.settings, backbone.registry)

    def reads() -> list[dict[str, Any]] | None:
        found = client.get("/v1/access-log", headers=ADMIN).json()["reads"]
        mine = [r for r in found if r["account_id"] == str(backbone.registry.account_id(citizen))]
        return mine if any(r["scope"] == "state" for r in mine) else None

    mine: Any = wait_until(reads, 30)
    assert {(r["scope"], r["purpose"]) for r in mine} >= {
        ("history", "audit"),
        ("state", "complaint 123"),
    }
    assert all(r["role"] == "auditor" and r["actor"].startswith("auditor:") for r in mine)
    assert TOKENS["auditor"] not in str(mine)
    # Reads are not part of the citizen's history or its chain, nor of the progress counts.
    assert history(client, citizen, 2)["verification"]["verified"] is True


def test_a_read_without_a_stated_purpose_is_refused(app) -> None:
    client, backbone = app
    citizen = registered_and_approved(client, backbone)
    before = backbone.registry.recorder.max_notification_id()
    response = client.get(f"/v1/citizens/{citizen}/history", headers=AUDITOR)
    assert response.status_code == 422
    assert "purpose" in response.json()["error"]["fields"]
    assert backbone.registry.recorder.max_notification_id() == before


def test_state_as_of_replays_the_store_up_to_that_instant(app) -> None:
    client, backbone = app
    citizen = registered_and_approved(client, backbone)
    events = list(backbone.registry.events.get(backbone.registry.account_id(citizen)))
    between = events[0].timestamp + (events[1].timestamp - events[0].timestamp) / 2
    before = events[0].timestamp - timedelta(seconds=1)

    def state(at: datetime) -> dict[str, Any]:
        return client.get(
            f"/v1/citizens/{citizen}/state",
            params={"purpose": "audit", "as_of": at.isoformat()},
            headers=AUDITOR,
        ).json()

    assert state(between)["account_state"] == "received"
    assert state(events[1].timestamp)["account_state"] == "approved"
    assert state(before)["exists"] is False
