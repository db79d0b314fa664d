"""The HTTP contract in-process: what the OpenAPI document declares, and the answers to values
it refuses or cannot describe (out-of-range times, codes that do not fit, the former shapes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.settings import Settings
from tests.support.environment import TOKENS, deployment_env
from tests.support.factories import registration_body
from tests.support.kafka import publish_all
from tests.support.waiting import wait_until

VIEWER = {"Authorization": f"Bearer {TOKENS['viewer']}"}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
STATION = {"Authorization": f"Bearer {TOKENS['station']}"}
DAY = "2023-06-27"
WINDOW = {"since": f"{DAY}T00:00:00+07:00", "until": f"{DAY}T23:59:00+07:00"}


@pytest.fixture(scope="module")
def client(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, chdb_url: str
) -> Iterator[TestClient]:
    """One deployment with two registrations in commune 22420 counted by the projector."""
    env = deployment_env(tmp_path_factory.mktemp("contract"), kafka_bootstrap,
                         CLICKHOUSE_URL=chdb_url, PSEUDONYM_SECRET="c",
                         CAMPAIGN_START="2023-01-01")  # fmt: skip
    settings = Settings.from_env(env)
    with TestClient(create_app(settings)) as client:
        for at in ("08:10", "09:20"):
            body = registration_body(commune_code="22420", captured_at=f"{DAY}T{at}:00+07:00")
            assert client.post("/v1/registrations", json=body, headers=STATION).status_code == 201
        backbone: Any = client.app.state.backbone  # type: ignore[attr-defined]
        publish_all(settings, backbone.registry)
        wait_until(lambda: backbone.projector.stored >= 2, 60)
        yield client


def received(response: Any) -> int:
    assert response.status_code == 200, response.text
    return sum(h["counts"].get("registration_received", 0) for h in response.json()["hours"])


def test_every_v1_operation_declares_its_errors_with_the_error_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = operation["responses"]
            expected = {"500"} | ({"401", "403"} if path.startswith("/v1/") else set())
            assert expected <= set(declared), f"{method} {path}: {sorted(declared)}"
            for status, response in declared.items():
                if status[0] in "45" and path.startswith("/v1/"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["properties"]["error"]["required"] == [
                        "code",
                        "message",
                        "fields",
                    ]
                    assert schema["properties"]["error"]["properties"]["code"]["enum"]


def test_the_document_states_the_rules_it_can(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    registration = schemas["RegistrationIn"]
    assert registration["additionalProperties"] is False
    assert registration["properties"]["citizen_id"]["pattern"].endswith("[0-3][0-9]{8}$")
    assert registration["properties"]["commune_code"]["pattern"] == "^[0-9]{5}$"
    assert registration["properties"]["captured_at"]["format"] == "date-time"
    assert "campaign start" in registration["properties"]["captured_at"]["description"]
    assert registration["properties"]["date_of_birth"]["format"] == "date"


def test_hourly_counts_by_level_and_code(client: TestClient) -> None:
    commune = {"level": "commune", "code": "22420", **WINDOW}
    province = {"level": "province", "code": "56", **WINDOW}
    assert received(client.get("/v1/progress/hourly", params=commune, headers=VIEWER)) == 2
    assert received(client.get("/v1/progress/hourly", params=province, headers=VIEWER)) == 2


def test_the_former_commune_code_parameter_still_answers(client: TestClient) -> None:
    legacy = {"commune_code": "22420", **WINDOW}
    assert received(client.get("/v1/progress/hourly", params=legacy, headers=VIEWER)) == 2
    both = {"commune_code": "22420", "province_code": "56"}
    refused = client.get("/v1/progress/devices", params=both, headers=VIEWER)
    assert refused.status_code == 422
    assert {"level", "code"} <= set(refused.json()["error"]["fields"])


@pytest.mark.parametrize("path", ["/v1/progress", "/v1/progress/hourly", "/v1/progress/devices"])
def test_a_code_that_does_not_fit_its_level_is_named(client: TestClient, path: str) -> None:
    response = client.get(path, params={"level": "commune", "code": "56"}, headers=VIEWER)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "code_level_mismatch"
    assert "code" in response.json()["error"]["fields"]
    unknown = client.get(path, params={"level": "province", "code": "00"}, headers=VIEWER)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_locality"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/access-log", {"since": "0236-12-03T12:57:37.888Z"}),
        ("/v1/access-log", {"until": "0001-01-01T00:00:00+05:00"}),
        (
            "/v1/progress/devices",
            {"level": "province", "code": "56", "since": "0007-07-12T08:55:50Z"},
        ),  # fmt: skip
        (
            "/v1/progress/hourly",
            {"level": "commune", "code": "22420", "since": "9999-12-31T23:59:59-05:00"},
        ),  # fmt: skip
        (
            "/v1/progress/hourly",
            {"level": "commune", "code": "22420", "until": "0002-01-01T00:00:00Z"},
        ),  # fmt: skip
    ],
)
def test_times_out_of_the_read_models_range_read_nothing_instead_of_failing(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    response = client.get(path, params=params, headers=ADMIN)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("value", ["0.5", "1700000000", "2023-06-27T08:00:00", "2023-06-27"])
def test_a_time_must_be_rfc3339_with_an_offset(client: TestClient, value: str) -> None:
    response = client.get("/v1/access-log", params={"until": value}, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert "until" in response.json()["error"]["fields"]


def test_an_inverted_window_is_refused_naming_since(client: TestClient) -> None:
    params = {"level": "commune", "code": "22420", "since": WINDOW["until"],
              "until": WINDOW["since"]}  # fmt: skip
    response = client.get("/v1/progress/hourly", params=params, headers=VIEWER)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_window"
    assert "since" in response.json()["error"]["fields"]


@pytest.mark.parametrize("limit", ["1.0", "1_0", " 5", "ten"])
def test_a_count_must_be_a_whole_number(client: TestClient, limit: str) -> None:
    response = client.get("/v1/access-log", params={"limit": limit}, headers=ADMIN)
    assert response.status_code == 422
    assert "limit" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("captured_at", 1687834800), ("date_of_birth", 0), ("captured_at", "2023-06-27 08:00")],
)
def test_a_body_time_must_be_text_in_its_format(client: TestClient, field: str, value: Any) -> None:
    body = registration_body(**{field: value})
    response = client.post("/v1/registrations", json=body, headers=STATION)
    assert response.status_code == 422
    assert field in response.json()["error"]["fields"]


def test_a_whole_float_is_an_integer_and_a_string_is_not(client: TestClient) -> None:
    target = {"command_id": "contract-target-1", "metric": "received", "deadline": "2023-12-31"}
    accepted = client.put("/v1/targets/22420", json={**target, "target": 12.0}, headers=ADMIN)
    assert accepted.status_code == 200, accepted.text
    refused = client.put(
        "/v1/targets/22420", json={**target, "command_id": "c2", "target": "12"}, headers=ADMIN
    )
    assert refused.status_code == 422
    assert "target" in refused.json()["error"]["fields"]


def test_a_sync_item_with_a_type_that_is_not_text_is_refused_alone(client: TestClient) -> None:
    body = {"device_id": "dev-01", "commands": [{"type": ["registration"]}, {}]}
    response = client.post("/v1/sync", json=body, headers=STATION)
    assert response.status_code == 200, response.text
    assert response.json()["summary"] == {"refused": 2}


def test_unknown_routes_and_methods_answer_in_the_error_shape(client: TestClient) -> None:
    missing = client.get("/v1/nothing-here", headers=VIEWER)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    wrong = client.delete("/v1/registrations", headers=STATION)
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")
    assert "POST" in wrong.headers["allow"]


def test_a_body_that_is_not_utf8_is_malformed_json(client: TestClient) -> None:
    response = client.post(
        "/v1/registrations",
        content=b"\xff\xfe{",
        headers={**STATION, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
