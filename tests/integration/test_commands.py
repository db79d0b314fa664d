"""Commands over the API in-process: sync, targets, death records, bad input leaving no trace."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import store_position as position
from tests.support.environment import COMMAND_ROLES, TOKENS, bearer
from tests.support.factories import personal_number, registration_body
from tests.support.kafka import publish_all, read_topic

STATION = {"Authorization": f"Bearer {TOKENS['station']}"}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
VIEWER = {"Authorization": f"Bearer {TOKENS['viewer']}"}


def published(backbone: Any, expect: int) -> list[Any]:
    publish_all(backbone.settings, backbone.registry)
    return read_topic(backbone.settings.kafka_bootstrap, backbone.settings.kafka_topic, expect)


def backlog(device: str, count: int) -> list[dict[str, Any]]:
    """`count` registrations captured on `device` (a station's backlog: registrations and
    activations; decisions are the reviewers')."""
    return [{"type": "registration", **registration_body(device_id=device)} for _ in range(count)]


def test_sync_applies_a_backlog_in_order_and_a_resend_is_safe(api) -> None:
    client, backbone = api
    items = backlog("dev-offline-1", 100)
    bad = registration_body(
        device_id="dev-offline-1", citizen_id="056090000001", date_of_birth="1991-01-01"
    )
    items.insert(10, {"type": "registration", **bad})
    items.append(
        {
            "type": "activation",
            "command_id": "act-early",
            "citizen_id": personal_number(),
            "method": "assisted",
            "activated_at": bad["captured_at"],
        }
    )
    first = client.post(
        "/v1/sync", json={"device_id": "dev-offline-1", "commands": items}, headers=STATION
    ).json()
    statuses = [r["status"] for r in first["results"]]
    assert first["summary"] == {"created": 100, "refused": 2}
    assert statuses[10] == "refused" and "citizen_id" in first["results"][10]["error"]["fields"]
    assert first["results"][-1]["error"]["code"] == "account_not_found"
    assert [r["index"] for r in first["results"]] == list(range(len(items)))
    stored = position(backbone)

    # The device did not get the answer and resends the second half, then all of it.
    half = client.post(
        "/v1/sync", json={"device_id": "dev-offline-1", "commands": items[51:]}, headers=STATION
    ).json()
    assert half["summary"] == {"duplicate": 50, "refused": 1}
    whole = client.post(
        "/v1/sync", json={"device_id": "dev-offline-1", "commands": items}, headers=STATION
    ).json()
    assert whole["summary"] == {"duplicate": 100, "refused": 2}
    assert [r.get("result") for r in whole["results"]] == [
        r.get("result") for r in first["results"]
    ]
    assert position(backbone) == stored
    assert len(published(backbone, 100)) == 100


def test_sync_refuses_commands_of_another_device_and_oversized_backlogs(api) -> None:
    client, backbone = api
    other = {"type": "registration", **registration_body(device_id="dev-2")}
    answer = client.post(
        "/v1/sync", json={"device_id": "dev-1", "commands": [other]}, headers=STATION
    ).json()
    assert answer["results"][0]["error"]["code"] == "device_mismatch"
    too_many = client.post(
        "/v1/sync", json={"device_id": "dev-1", "commands": [{}] * 5001}, headers=STATION
    )
    assert too_many.status_code == 422
    assert position(backbone) == 0


def test_latest_target_wins_and_progress_shows_percent(api) -> None:
    client, backbone = api
    for command_id, target in (("t-1", 112), ("t-2", 200)):
        body = {
            "command_id": command_id,
            "metric": "received",
            "target": target,
            "deadline": "2023-06-30",
        }
        assert client.put("/v1/targets/22420", json=body, headers=ADMIN).status_code == 200
    assert (
        client.put(
            "/v1/targets/22420",
            json={"command_id": "t-3", "metric": "received", "target": 5, "deadline": "2023-06-30"},
            headers=STATION,
        ).status_code
        == 403
    )
    target = backbone.registry.target("22420", "received")
    assert (target.target, target.version) == (200, 2)
    answer = client.get(
        "/v1/progress", params={"level": "province", "code": "56"}, headers=VIEWER
    ).json()
    assert answer["name"] == "Khánh Hòa"
    assert answer["received"]["target"] == 200
    assert [c["commune_code"] for c in answer["communes"]] == ["22420"]


def test_death_records_endpoint_reports_matches(api) -> None:
    client, _ = api
    reg = registration_body()
    client.post("/v1/registrations", json=reg, headers=STATION)
    csv = (
        "personal_number,date_of_death,registry_reference\n"
        f"{reg['citizen_id']},2023-07-01,HK-1\n{personal_number()},2023-07-01,HK-2\n"
    )
    report = client.post("/v1/reconciliation/deaths", content=csv.encode(), headers=ADMIN).json()
    assert (report["matched"], report["unknown"]) == (1, 1)
    forbidden = client.post("/v1/reconciliation/deaths", content=csv.encode(), headers=STATION)
    assert forbidden.status_code == 403


def _citizen() -> dict[str, Any]:
    return registration_body()


BAD_COMMANDS = [
    (
        "decision unknown enum",
        "POST",
        "/v1/decisions",
        {
            "command_id": "x1",
            "citizen_id": "{cid}",
            "decision": "maybe",
            "decided_at": "2023-06-27T10:00:00+07:00",
        },
        422,
    ),
    (
        "decision future",
        "POST",
        "/v1/decisions",
        {
            "command_id": "x2",
            "citizen_id": "{cid}",
            "decision": "approved",
            "decided_at": "2099-06-27T10:00:00+07:00",
        },
        422,
    ),
    (
        "decision bad number",
        "POST",
        "/v1/decisions",
        {
            "command_id": "x3",
            "citizen_id": "12ab",
            "decision": "approved",
            "decided_at": "2023-06-27T10:00:00+07:00",
        },
        422,
    ),
    (
        "decision without a number",
        "POST",
        "/v1/decisions",
        {"command_id": "x3b", "decision": "approved", "decided_at": "2023-06-27T10:00:00+07:00"},
        422,
    ),
    (
        "decision at the retired path",
        "POST",
        "/v1/registrations/{cid}/decision",
        {"command_id": "x3c", "decision": "approved", "decided_at": "2023-06-27T10:00:00+07:00"},
        410,
    ),
    (
        "activation before approval",
        "POST",
        "/v1/activations",
        {
            "command_id": "x4",
            "citizen_id": "{cid}",
            "method": "assisted",
            "activated_at": "2023-06-27T10:00:00+07:00",
        },
        409,
    ),
    (
        "activation wrong method",
        "POST",
        "/v1/activations",
        {
            "command_id": "x5",
            "citizen_id": "{cid}",
            "method": "sms",
            "activated_at": "2023-06-27T10:00:00+07:00",
        },
        422,
    ),
    (
        "unlock a received account",
        "POST",
        "/v1/status-changes",
        {
            "command_id": "x6",
            "citizen_id": "{cid}",
            "status": "unlocked",
            "source": "x",
            "effective_at": "2023-06-27T10:00:00+07:00",
        },
        409,
    ),
    (
        "status unknown",
        "POST",
        "/v1/status-changes",
        {
            "command_id": "x7",
            "citizen_id": "{cid}",
            "status": "vanished",
            "source": "x",
            "effective_at": "2023-06-27T10:00:00+07:00",
        },
        422,
    ),
    (
        "status returned while normal",
        "POST",
        "/v1/status-changes",
        {
            "command_id": "x8",
            "citizen_id": "{cid}",
            "status": "returned",
            "source": "x",
            "effective_at": "2023-06-27T10:00:00+07:00",
        },
        409,
    ),
    ("second open registration", "POST", "/v1/registrations", "again", 409),
    (
        "target not positive",
        "PUT",
        "/v1/targets/22420",
        {"command_id": "x9", "metric": "received", "target": 0, "deadline": "2023-06-30"},
        422,
    ),
    (
        "target unknown commune",
        "PUT",
        "/v1/targets/99999",
        {"command_id": "x10", "metric": "received", "target": 5, "deadline": "2023-06-30"},
        404,
    ),
    (
        "target unknown metric",
        "PUT",
        "/v1/targets/22420",
        {"command_id": "x11", "metric": "smiles", "target": 5, "deadline": "2023-06-30"},
        422,
    ),
]


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "status"), BAD_COMMANDS, ids=[c[0] for c in BAD_COMMANDS]
)
def test_refused_command_leaves_no_trace(api, case, method, path, body, status) -> None:
    client, backbone = api
    reg = registration_body()
    assert client.post("/v1/registrations", json=reg, headers=STATION).status_code == 201
    before = position(backbone)
    if body == "again":
        body = {**reg, "command_id": "another-id"}
    else:
        body = {
            k: (v.format(cid=reg["citizen_id"]) if isinstance(v, str) else v)
            for k, v in body.items()
        }
    headers = ADMIN if method == "PUT" else bearer(COMMAND_ROLES.get(path, "station"))
    response = client.request(
        method, path.format(cid=reg["citizen_id"]), json=body, headers=headers
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    if status == 409:
        assert "account_state" in error["state"]
    assert reg["citizen_id"] not in response.text
    assert position(backbone) == before
    assert len(published(backbone, 1)) == 1  # only the valid registration reached the topic
