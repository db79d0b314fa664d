"""Auditor reads through the API in-process, on the real store, broker and ClickHouse engine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.registry.commands import EraseCitizen
from services.settings import Settings
from tests.support.environment import TOKENS, bearer
from tests.support.factories import personal_number, registration_body
from tests.support.kafka import publish_all
from tests.support.waiting import wait_until

AUDITOR = {"Authorization": f"Bearer {TOKENS['auditor']}"}
STATION = {"Authorization": f"Bearer {TOKENS['station']}"}


@pytest.fixture
def app(kafka_bootstrap, env_for, chdb_url) -> Iterator[tuple[TestClient, Any]]:
    settings = Settings.from_env(env_for(CLICKHOUSE_URL=chdb_url))
    with TestClient(create_app(settings)) as client:
        yield client, client.app.state.backbone  # type: ignore[attr-defined]


def registered_and_approved(client: TestClient, backbone: Any, **overrides: Any) -> str:
    body = registration_body(**overrides)
    assert client.post("/v1/registrations", json=body, headers=STATION).status_code == 201
    decision = {
        "command_id": f"d-{body['citizen_id']}",
        "citizen_id": body["citizen_id"],
        "decision": "approved",
        "reason": "documents checked",
        "decided_at": body["captured_at"],
    }
    assert (
        client.post("/v1/decisions", json=decision, headers=bearer("reviewer")).status_code == 201
    )
    publish_all(backbone.settings, backbone.registry)
    return str(body["citizen_id"])


def read(client: TestClient, citizen_id: str, scope: str = "history", **more: Any) -> Any:
    """POST /v1/citizens/<scope> as the auditor: the number in the body, never in the URL."""
    body = {"citizen_id": citizen_id, "purpose": "audit", **more}
    return client.post(f"/v1/citizens/{scope}", json=body, headers=AUDITOR)


def history(
    client: TestClient, citizen_id: str, count: int, settled: bool = True
) -> dict[str, Any]:
    """The history once `count` events are shown (and, if `settled`, projected and signed)."""

    def got() -> dict[str, Any] | None:
        body = read(client, citizen_id).json()
        signed = not settled or body["verification"]["status"] != "pending"
        return body if len(body["events"]) >= count and signed else None

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
    answer = read(client, citizen).json()
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
    answer = read(client, citizen).json()
    assert answer["verification"]["verified"] is False
    assert answer["verification"]["missing_sequences"] == [2]


ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}


def test_every_read_is_recorded_and_visible_in_the_access_log(app) -> None:
    client, backbone = app
    citizen = registered_and_approved(client, backbone)
    history(client, citizen, 2)
    read(client, citizen, "state", purpose="complaint 123")
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
    for scope in ("history", "state"):
        response = client.post(
            f"/v1/citizens/{scope}", json={"citizen_id": citizen}, headers=AUDITOR
        )
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
        return read(client, citizen, "state", as_of=at.isoformat()).json()  # type: ignore[no-any-return]

    assert state(between)["account_state"] == "received"
    assert state(events[1].timestamp)["account_state"] == "approved"
    assert state(before)["exists"] is False


def access_reads(client: TestClient, account_id: str, count: int) -> list[dict[str, Any]]:
    """The access log's reads of `account_id`, once there are at least `count`."""

    def found() -> list[dict[str, Any]] | None:
        reads = client.get("/v1/access-log", headers=ADMIN).json()["reads"]
        mine = [r for r in reads if r["account_id"] == account_id]
        return mine if len(mine) >= count else None

    return wait_until(found, 30)  # type: ignore[return-value]


def test_the_auditor_sees_personal_fields_in_clear_the_read_model_only_sealed(app) -> None:
    client, backbone = app
    name = f"Lê Thị Kiểm Toán {uuid.uuid4().hex[:8]}"
    number = personal_number(year=1990, female=True)
    citizen = registered_and_approved(
        client, backbone, full_name=name, sex="female", citizen_id=number
    )
    answer = history(client, citizen, 2)
    assert answer["citizen_id"] == citizen
    registration, decision = answer["events"]
    assert registration["payload"]["full_name"] == name
    assert registration["payload"]["date_of_birth"] == "1990-05-01"
    assert registration["payload"]["sex"] == "female"
    assert decision["payload"]["reason"] == "documents checked"
    # The sealed values stay in the answer as stored (the chain is computed over them).
    for event, field in ((registration, "sealed_full_name"), (decision, "sealed_reason")):
        assert event["payload"][field].startswith("sealed:v1:")
    assert answer["verification"]["verified"] is True

    account = backbone.registry.account_id(citizen)
    rows = backbone.trail.client.query_rows(
        f"SELECT * FROM {backbone.trail.table} WHERE account_id = {{a:UUID}}", {"a": str(account)}
    )
    assert len(rows) == 2
    text = str(rows)
    for clear in (name, "1990-05-01", "documents checked", citizen):
        assert clear not in text
    details = [str(value) for row in rows for value in row if "sealed_" in str(value)]
    assert len(details) == 2 and all("sealed:v1:" in d for d in details)


def test_after_erasure_the_auditor_sees_erased(app) -> None:
    client, backbone = app
    citizen = registered_and_approved(client, backbone)
    history(client, citizen, 2)
    backbone.registry.handle(
        EraseCitizen(
            command_id=f"erase-{citizen}",
            citizen_id=citizen,
            legal_basis="test",
            reference="ER-1",
            requested_at=datetime.now(UTC).isoformat(),
        )  # fmt: skip
    )
    answer = history(client, citizen, 2, settled=False)  # the erasure itself is not published
    registration, decision = answer["events"][:2]
    assert registration["payload"]["full_name"] == "[erased]"
    assert registration["payload"]["date_of_birth"] == "[erased]"
    assert decision["payload"]["reason"] == "[erased]"


def test_a_read_of_an_unknown_number_is_recorded_and_answers_404(app) -> None:
    client, backbone = app
    unknown = personal_number()
    before = backbone.registry.recorder.max_notification_id() or 0
    for scope in ("history", "state"):
        response = read(client, unknown, scope, purpose="probing")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "account_not_found"
        assert unknown not in response.text
    assert backbone.registry.recorder.max_notification_id() == before + 2
    assert backbone.registry.account(unknown) is None  # recorded, but no account was made
    publish_all(backbone.settings, backbone.registry)
    account = str(backbone.registry.account_id(unknown))
    reads = access_reads(client, account, 2)
    assert {(r["scope"], r["purpose"], r["role"]) for r in reads} == {
        ("history", "probing", "auditor"),
        ("state", "probing", "auditor"),
    }
    assert all(r["commune_code"] == "" for r in reads)
    assert unknown not in str(reads)


def test_a_read_that_cannot_be_recorded_is_not_answered(app, monkeypatch) -> None:
    """The read model is queried while the read is being recorded; when recording fails, the
    answer is an error and carries nothing of the history."""
    client, backbone = app
    citizen_id = registered_and_approved(client, backbone)
    assert history(client, citizen_id, 2)["events"]  # projected: there is something to leak
    queried = []
    real_rows = backbone.trail.history_and_reads

    def rows(account_id: Any) -> Any:
        queried.append(account_id)
        return real_rows(account_id)

    def refused(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(backbone.trail, "history_and_reads", rows)
    monkeypatch.setattr(backbone.registry, "record_access", refused)
    before = backbone.registry.recorder.max_notification_id()
    failing = TestClient(client.app, raise_server_exceptions=False)  # no second start-up
    response = read(failing, citizen_id)
    assert response.status_code == 500
    assert "events" not in response.text and citizen_id not in response.text
    assert queried  # the query did run, beside the failed record
    assert backbone.registry.recorder.max_notification_id() == before


def test_retired_paths_answer_410_and_record_nothing(app) -> None:
    client, backbone = app
    citizen = registered_and_approved(client, backbone)
    before = backbone.registry.recorder.max_notification_id()
    for method, path, headers in (
        ("GET", f"/v1/citizens/{citizen}/history?purpose=audit", AUDITOR),
        ("GET", f"/v1/citizens/{citizen}/state?purpose=audit", AUDITOR),
        ("GET", "/v1/citizens/not-a-number/history", {}),
        ("POST", f"/v1/registrations/{citizen}/decision", STATION),
    ):
        response = client.request(method, path, headers=headers, json={"decision": "approved"})
        assert response.status_code == 410, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "gone" and error["fields"] == {}
        assert "use POST /v1/" in error["message"]
        assert citizen not in response.text
    assert (
        "POST /v1/citizens/history"
        in client.get(f"/v1/citizens/{citizen}/history", headers=AUDITOR).json()["error"]["message"]
    )
    assert backbone.registry.recorder.max_notification_id() == before


def test_a_query_token_is_refused_outside_the_feed(app) -> None:
    client, backbone = app
    citizen = registered_and_approved(client, backbone)
    before = backbone.registry.recorder.max_notification_id()
    body = {"citizen_id": citizen, "purpose": "audit"}
    refused = client.post(f"/v1/citizens/history?token={TOKENS['auditor']}", json=body)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"
    progress = client.get(f"/v1/progress?level=commune&code=22420&token={TOKENS['viewer']}")
    assert progress.status_code == 401
    assert backbone.registry.recorder.max_notification_id() == before
    # With the header it is the header that counts; a query token beside it changes nothing.
    both = client.post("/v1/citizens/history?token=nonsense", json=body, headers=AUDITOR)
    assert both.status_code == 200
