"""End to end over HTTP: API and relay as real processes, the real broker and ClickHouse engine."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.api import models
from tests.support.api import Api
from tests.support.environment import TOKENS
from tests.support.factories import personal_number, registration_body
from tests.support.waiting import wait_until


def test_registration_reaches_history_and_hourly_counts(api: Api) -> None:
    body = registration_body(commune_code="22453")
    created = api.call("POST", "/v1/registrations", json=body)
    assert created.status_code == 201, created.text
    account_id = created.json()["account_id"]
    assert body["citizen_id"] not in account_id.replace("-", "")

    def history() -> dict[str, Any] | None:
        read = {"citizen_id": body["citizen_id"], "purpose": "e2e check"}
        got = api.call("POST", "/v1/citizens/history", role="auditor", json=read).json()
        signed = got.get("verification", {}).get("status") != "pending"  # projected and signed
        return got if got.get("events") and signed else None

    trail: Any = wait_until(history, 90)  # the first test of a fresh broker: groups form first
    assert trail["account_id"] == account_id
    assert trail["citizen_id"] == body["citizen_id"]
    assert trail["events"][0]["payload"]["full_name"] == body["full_name"]
    assert [e["event_type"] for e in trail["events"]] == ["registration_received"]
    assert trail["events"][0]["device_id"] == body["device_id"]
    assert trail["verification"]["verified"] is True, trail["verification"]

    def counted() -> int:
        params = {"level": "commune", "code": "22453"}
        hourly = api.call("GET", "/v1/progress/hourly", role="viewer", params=params).json()
        return sum(h["counts"].get("registration_received", 0) for h in hourly["hours"])

    # ClickHouse commits the audit row's part before its materialized views' parts: a read
    # between the two sees the history and not yet the count. Once counted, exactly once.
    assert wait_until(counted, 30) == 1


def test_a_resent_command_gets_the_first_result_and_a_reused_id_is_refused(api: Api) -> None:
    body = registration_body()
    first = api.call("POST", "/v1/registrations", json=body)
    again = api.call("POST", "/v1/registrations", json=body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    position = api.position()
    reused = api.call("POST", "/v1/registrations", json={**body, "phone": "none"})
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "command_id_reused"
    assert api.position() == position


def test_lifecycle_rules_are_enforced_with_the_current_state(api: Api) -> None:
    body = registration_body()
    cid = body["citizen_id"]
    assert api.call("POST", "/v1/registrations", json=body).status_code == 201
    activation = {
        "command_id": f"act-{cid}",
        "citizen_id": cid,
        "method": "vneid_app",
        "activated_at": body["captured_at"],
    }
    refused = api.call("POST", "/v1/activations", json=activation)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "activation_requires_approval"
    assert refused.json()["error"]["state"]["account_state"] == "received"
    decision = {
        "command_id": f"dec-{cid}",
        "citizen_id": cid,
        "decision": "approved",
        "decided_at": body["captured_at"],
    }
    assert api.call("POST", "/v1/decisions", json=decision).status_code == 201
    activated = api.call("POST", "/v1/activations", json={**activation, "command_id": f"a2-{cid}"})
    assert activated.status_code == 201
    assert activated.json()["account_state"] == "activated"


def test_unknown_citizen_gets_404(api: Api) -> None:
    change = {
        "command_id": "st-unknown-1",
        "citizen_id": personal_number(),
        "status": "deceased",
        "source": "civil_registry",
        "effective_at": "2023-06-01T00:00:00+07:00",
    }
    response = api.call("POST", "/v1/status-changes", json=change)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "account_not_found"


BAD_REGISTRATIONS = [
    ("missing field", lambda b: b.pop("device_id"), 422, "device_id"),
    ("wrong type", lambda b: b.update(citizen_id=56090001234), 422, "citizen_id"),
    ("unknown enum", lambda b: b.update(channel="drone"), 422, "channel"),
    ("short number", lambda b: b.update(citizen_id="05609000123"), 422, "citizen_id"),
    ("year mismatch", lambda b: b.update(citizen_id="056085000001"), 422, "citizen_id"),
    ("unknown commune", lambda b: b.update(commune_code="99999"), 422, "commune_code"),
    ("naive time", lambda b: b.update(captured_at="2023-06-27T09:00:00"), 422, "captured_at"),
    (
        "future time",
        lambda b: b.update(captured_at="2099-01-01T00:00:00+07:00"),
        422,
        "captured_at",
    ),
    (
        "before campaign",
        lambda b: b.update(captured_at="2020-01-01T00:00:00+07:00"),
        422,
        "captured_at",
    ),
    ("unknown field", lambda b: b.update(nickname="x"), 422, "nickname"),
]


@pytest.mark.parametrize(
    ("case", "spoil", "status", "field"), BAD_REGISTRATIONS, ids=[c[0] for c in BAD_REGISTRATIONS]
)
def test_bad_registration_is_refused_and_records_nothing(
    api: Api, case, spoil, status, field
) -> None:
    body = registration_body()
    spoil(body)
    position = api.position()
    response = api.call("POST", "/v1/registrations", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert field in error["fields"]
    assert str(body["citizen_id"]) not in response.text  # errors never echo the number
    assert api.position() == position


def test_malformed_json_and_oversized_bodies_are_refused(api: Api) -> None:
    position = api.position()
    broken = api.call(
        "POST",
        "/v1/registrations",
        content=b'{"command_id": ',
        headers={"Content-Type": "application/json"},
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "malformed_json"
    huge = api.call(
        "POST",
        "/v1/registrations",
        content=b"x" * (9 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what streams in
        for _ in range(9):
            yield b"x" * (1024 * 1024)

    streamed = api.call(
        "POST", "/v1/sync", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "body_too_large"
    assert api.position() == position


@pytest.mark.parametrize(
    ("method", "path", "role", "status"),
    [
        ("POST", "/v1/registrations", None, 401),
        ("POST", "/v1/registrations", "viewer", 403),
        ("POST", "/v1/citizens/history", "station", 403),
        ("POST", "/v1/citizens/history", "viewer", 403),
        ("POST", "/v1/citizens/state", "viewer", 403),
        ("POST", "/v1/decisions", "viewer", 403),
        ("POST", "/v1/decisions", None, 401),
        ("GET", "/v1/progress/hourly?level=commune&code=22420", None, 401),
    ],
)
def test_roles_are_checked(api: Api, method: str, path: str, role: str | None, status: int) -> None:
    response = api.call(method, path, role=role, json=registration_body())
    assert response.status_code == status
    assert response.json()["error"]["code"] in ("unauthenticated", "forbidden")


def test_openapi_lists_the_contract(api: Api) -> None:
    paths = api.http.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/registrations",
        "/v1/decisions",
        "/v1/activations",
        "/v1/status-changes",
        "/v1/citizens/history",
        "/v1/citizens/state",
        "/v1/progress/hourly",
        "/healthz",
    ):
        assert path in paths


PERSONAL_NUMBER = (r"^[0-9]{12}$", models.PERSONAL_NUMBER)  # any 12 digits; the document's


def test_openapi_has_no_personal_number_in_a_path_or_query(api: Api) -> None:
    """Personal numbers travel in JSON bodies: URLs end up in proxy, browser and server logs."""
    paths = api.http.get("/openapi.json").json()["paths"]
    assert [p for p in paths if "citizen" in p and "{" in p] == []
    assert [p for p in paths if "{citizen_id}" in p or "{personal_number}" in p] == []
    for path, operations in paths.items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                where = f"{method.upper()} {path} {parameter['in']} {parameter['name']}"
                assert parameter["name"] not in ("citizen_id", "personal_number"), where
                assert parameter.get("schema", {}).get("pattern") not in PERSONAL_NUMBER, where
    # The reads and the decision take it in the body instead.
    for path in ("/v1/citizens/history", "/v1/citizens/state", "/v1/decisions"):
        assert "requestBody" in paths[path]["post"], path


def test_a_query_token_opens_the_feed_and_nothing_else(api: Api) -> None:
    viewer = TOKENS["viewer"]
    with api.http.stream("GET", "/v1/feed", params={"token": viewer}) as feed:
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("text/event-stream")
        assert "event: hello" in next(feed.iter_text())
    assert api.http.get("/v1/feed", params={"token": "not-a-token"}).status_code == 401
    for path, params in (
        ("/v1/progress", {"level": "commune", "code": "22420"}),
        ("/v1/progress/hourly", {"level": "commune", "code": "22420"}),
    ):
        refused = api.http.get(path, params={**params, "token": viewer})
        assert refused.status_code == 401, path
        assert refused.json()["error"]["code"] == "unauthenticated"
    read = {"citizen_id": personal_number(), "purpose": "e2e"}
    position = api.position()
    refused = api.http.post("/v1/citizens/history", params={"token": TOKENS["auditor"]}, json=read)
    assert refused.status_code == 401
    assert api.position() == position  # refused before anything was recorded


def test_retired_paths_with_a_number_answer_410(api: Api) -> None:
    number = personal_number()
    for method, path, role in (
        ("GET", f"/v1/citizens/{number}/history?purpose=x", "auditor"),
        ("GET", f"/v1/citizens/{number}/state?purpose=x", "auditor"),
        ("POST", f"/v1/registrations/{number}/decision", "station"),
    ):
        response = api.call(method, path, role=role)
        assert response.status_code == 410, path
        assert response.json()["error"]["code"] == "gone"
        assert number not in response.text


def test_auditor_tool_prints_the_timeline_and_its_verification(api: Api, tmp_path: Path) -> None:
    body = registration_body(commune_code="22528")
    assert api.call("POST", "/v1/registrations", json=body).status_code == 201
    decision = {
        "command_id": f"d-{body['citizen_id']}",
        "citizen_id": body["citizen_id"],
        "decision": "rejected",
        "reason": "fingerprints unreadable",
        "decided_at": body["captured_at"],
    }
    assert api.call("POST", "/v1/decisions", json=decision).status_code == 201
    command = [sys.executable, "-m", "services.auditor", "--purpose", "e2e"]  # number on stdin
    env = {**os.environ, "API_URL": str(api.http.base_url), "AUDITOR_TOKEN": TOKENS["auditor"],
           "AUDITOR_KEY_FILE": str(tmp_path / "log.pub"),
           "AUDITOR_STATE_FILE": str(tmp_path / "seen.json")}  # fmt: skip
    number = body["citizen_id"] + "\n"
    unpinned = subprocess.run(command, env=env, input=number, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    assert unpinned.returncode == 2 and "no pinned key" in unpinned.stderr
    pin = [sys.executable, "-m", "services.auditor", "--pin"]
    wait_until(lambda: subprocess.run(pin, env=env, capture_output=True, timeout=60).returncode
               == 0, 30, every=0.3)  # fmt: skip

    def run() -> subprocess.CompletedProcess[str] | None:
        done = subprocess.run(
            command, env=env, input=number, capture_output=True, text=True, timeout=60
        )
        return done if done.returncode == 0 else None  # projected and signed

    done: Any = wait_until(run, 30, every=0.3)
    assert "VERIFIED: 2 events" in done.stdout
    assert (tmp_path / "seen.json").exists()  # the checkpoint it will check the next one with
    assert "fingerprints unreadable" in done.stdout and "22528" in done.stdout
    viewer = {**env, "AUDITOR_TOKEN": TOKENS["viewer"]}
    refused = subprocess.run(
        command, env=viewer, input=number, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "forbidden" in refused.stderr


def test_logs_never_hold_a_personal_number(api: Api) -> None:
    """Runs last in this module: every number the tests sent is looked for in both logs."""
    assert len(api.numbers) > 10
    text = "".join(path.read_text() for path in api.logs)
    assert "relay resumes" in text and "assigned" in text  # the logs were really written
    assert [n for n in api.numbers if n in text] == []
