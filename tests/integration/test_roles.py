"""Who may do what: the role matrix cell by cell, scopes, own registrations, the recorded actor,
revoked credentials and per-principal rate limits (real broker, real store, both stores)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services import pg
from services.api.app import create_app
from services.credentials import Principal, token_hash
from services.settings import ROLES, Settings
from tests.support.api import store_position as position
from tests.support.environment import bearer
from tests.support.factories import registration_body

# The README's matrix: endpoint -> the roles that may call it (admin may call every one).
READERS = {"viewer", "auditor", "station", "reviewer", "officer", "admin"}
MATRIX: list[tuple[str, str, set[str]]] = [
    ("POST", "/v1/registrations", {"station", "admin"}),
    ("POST", "/v1/activations", {"station", "admin"}),
    ("POST", "/v1/sync", {"station", "admin"}),
    ("POST", "/v1/decisions", {"reviewer", "admin"}),
    ("POST", "/v1/status-changes", {"officer", "admin"}),
    ("POST", "/v1/citizens/history", {"auditor", "admin"}),
    ("POST", "/v1/citizens/state", {"auditor", "admin"}),
    ("POST", "/v1/citizens/erasure", {"admin"}),
    ("POST", "/v1/reconciliation/deaths", {"admin"}),
    ("PUT", "/v1/targets/22420", {"admin"}),
    ("GET", "/v1/access-log", {"admin"}),
    ("GET", "/v1/progress", READERS),
    ("GET", "/v1/progress/hourly", READERS),
    ("GET", "/v1/progress/devices", READERS),
    ("GET", "/v1/progress/freshness", READERS),
    ("GET", "/v1/checkpoints/latest", READERS),
    ("GET", "/v1/checkpoints/key", READERS),
    ("GET", "/v1/checkpoints/consistency", READERS),
    ("GET", "/v1/checkpoints/inclusion", READERS),
    ("GET", "/v1/checkpoints/1", READERS),
]
T = "2023-06-27T10:05:00+07:00"


def principal(backbone: Any, pid: str, role: str, **scope: Any) -> dict[str, str]:
    """A principal added to the deployment's credential store; its Authorization header."""
    token = backbone.credentials.add(Principal(pid, role, **scope))
    return {"Authorization": f"Bearer {token}"}


def events_of(backbone: Any, citizen_id: str) -> list[Any]:
    account = backbone.registry.account(citizen_id)
    return list(backbone.registry.repository.event_store.get(account.id))


def decision(citizen_id: str, verdict: str = "approved") -> dict[str, str]:
    return {"command_id": f"dec-{citizen_id}-{verdict}", "citizen_id": citizen_id,
            "decision": verdict, "decided_at": T}  # fmt: skip


def status(citizen_id: str, value: str) -> dict[str, str]:
    return {"command_id": f"st-{citizen_id}-{value}", "citizen_id": citizen_id, "status": value,
            "source": "test", "effective_at": T}  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
def test_each_role_calls_exactly_the_endpoints_of_its_row_in_the_matrix(api, role: str) -> None:
    client, backbone = api
    seen, expected = {}, {}
    for method, path, allowed in MATRIX:
        # An empty body or no query: a role that may call gets past authorization (and is
        # refused on its input instead); nothing is recorded either way.
        response = client.request(method, path, json={}, headers=bearer(role))
        refused = response.status_code in (401, 403)
        if refused:
            assert response.json()["error"]["code"] == "forbidden", (path, response.text)
        seen[f"{method} {path}"] = not refused
        expected[f"{method} {path}"] = role in allowed
    assert seen == expected
    assert position(backbone) == 0


def test_every_endpoint_of_the_matrix_refuses_a_missing_or_unknown_token(api) -> None:
    client, _ = api
    for method, path, _allowed in MATRIX:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            response = client.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, (path, response.text)


def test_a_station_may_not_record_deceased_or_revoked_an_officer_may(api) -> None:
    client, backbone = api
    reg = registration_body()
    assert client.post("/v1/registrations", json=reg, headers=bearer("station")).status_code == 201
    assert client.post("/v1/decisions", json=decision(reg["citizen_id"]),
                       headers=bearer("reviewer")).status_code == 201  # fmt: skip
    before = position(backbone)
    for value in ("deceased", "revoked", "locked"):
        refused = client.post("/v1/status-changes", json=status(reg["citizen_id"], value),
                              headers=bearer("station"))  # fmt: skip
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert position(backbone) == before
    done = client.post("/v1/status-changes", json=status(reg["citizen_id"], "deceased"),
                       headers=bearer("officer"))  # fmt: skip
    assert done.status_code == 201
    assert done.json()["citizen_status"] == "deceased"


def test_a_station_acting_for_another_station_or_commune_is_refused_and_nothing_recorded(
    api,
) -> None:
    client, backbone = api
    station = principal(backbone, "dev-cr-1", "station", kind="device", station_id="st-cam-ranh",
                        communes=("22420",), province="56")  # fmt: skip
    own = {"station_id": "st-cam-ranh", "device_id": "dev-cr-1"}
    for overrides, field in (
        ({"station_id": "st-ninh-hoa"}, "station_id"),
        ({"commune_code": "22423"}, "commune_code"),  # Khánh Hòa, not served by this station
        ({"device_id": "dev-other"}, "device_id"),
    ):
        refused = client.post("/v1/registrations", json=registration_body(**{**own, **overrides}),
                              headers=station)  # fmt: skip
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert (error["code"], list(error["fields"])) == ("out_of_scope", [field])
    assert position(backbone) == 0
    taken = client.post("/v1/registrations", json=registration_body(**own), headers=station)
    assert taken.status_code == 201, taken.text


def test_a_station_may_not_activate_an_account_of_a_commune_it_does_not_serve(api) -> None:
    client, backbone = api
    reg = registration_body(commune_code="22423")
    assert client.post("/v1/registrations", json=reg, headers=bearer("station")).status_code == 201
    assert client.post("/v1/decisions", json=decision(reg["citizen_id"]),
                       headers=bearer("reviewer")).status_code == 201  # fmt: skip
    station = principal(backbone, "op-lan", "station", station_id="st-cam-ranh",
                        communes=("22420",))  # fmt: skip
    before = position(backbone)
    activation = {"command_id": f"act-{reg['citizen_id']}", "citizen_id": reg["citizen_id"],
                  "method": "assisted", "activated_at": T}  # fmt: skip
    refused = client.post("/v1/activations", json=activation, headers=station)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "out_of_scope"
    assert reg["citizen_id"] not in refused.text
    assert position(backbone) == before
    # Its backlog is held to the same scope, item by item.
    backlog = {"device_id": "dev-01", "commands": [{"type": "activation", **activation}]}
    synced = client.post("/v1/sync", json=backlog, headers=station)
    assert synced.status_code == 200, synced.text
    assert synced.json()["results"][0]["error"]["code"] == "out_of_scope"
    assert position(backbone) == before


def test_a_reviewer_may_not_decide_a_registration_it_took(api) -> None:
    client, backbone = api
    device = principal(backbone, "dev-cr-2", "station", kind="device", station_id="st-cam-ranh")
    reg = registration_body(device_id="dev-cr-2", operator_id="op-hoa")
    assert client.post("/v1/registrations", json=reg, headers=device).status_code == 201
    same_person = principal(backbone, "op-hoa", "reviewer")
    before = position(backbone)
    refused = client.post("/v1/decisions", json=decision(reg["citizen_id"]), headers=same_person)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "own_registration"
    assert position(backbone) == before
    other = principal(backbone, "op-binh", "reviewer")
    assert client.post("/v1/decisions", json=decision(reg["citizen_id"]),
                       headers=other).status_code == 201  # fmt: skip


def test_an_admin_who_took_a_registration_may_not_decide_it(api) -> None:
    client, backbone = api
    reg = registration_body()
    assert client.post("/v1/registrations", json=reg, headers=bearer("admin")).status_code == 201
    refused = client.post("/v1/decisions", json=decision(reg["citizen_id"]),
                          headers=bearer("admin"))  # fmt: skip
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "own_registration"


def test_each_event_records_the_principal_who_caused_it(api) -> None:
    client, backbone = api
    device = principal(backbone, "dev-cr-3", "station", kind="device", station_id="st-cam-ranh")
    reviewer = principal(backbone, "rv-nga", "reviewer")
    officer = principal(backbone, "of-tuan", "officer")
    reg = registration_body(device_id="dev-cr-3")
    citizen = reg["citizen_id"]
    activation = {"command_id": f"act-{citizen}", "citizen_id": citizen, "method": "assisted",
                  "activated_at": T}  # fmt: skip
    for path, body, headers in (
        ("/v1/registrations", reg, device),
        ("/v1/decisions", decision(citizen), reviewer),
        ("/v1/activations", activation, device),
        ("/v1/status-changes", status(citizen, "locked"), officer),
    ):
        assert client.post(path, json=body, headers=headers).status_code == 201
    actors = [event.actor for event in events_of(backbone, citizen)]
    assert actors == ["dev-cr-3", "rv-nga", "dev-cr-3", "of-tuan"]
    # The shortcut's principals are named after their role, with no token in the name.
    reg = registration_body()
    assert client.post("/v1/registrations", json=reg, headers=bearer("station")).status_code == 201
    (event,) = events_of(backbone, reg["citizen_id"])
    assert event.actor.startswith("station:") and "st-token" not in event.actor


def test_death_records_reconciled_by_an_admin_record_that_admin(api) -> None:
    client, backbone = api
    reg = registration_body()
    client.post("/v1/registrations", json=reg, headers=bearer("station"))
    csv = f"personal_number,date_of_death,registry_reference\n{reg['citizen_id']},2023-07-01,HK-9\n"
    admin = principal(backbone, "ad-minh", "admin")
    report = client.post("/v1/reconciliation/deaths", content=csv.encode(), headers=admin).json()
    assert report["matched"] == 1
    assert events_of(backbone, reg["citizen_id"])[-1].actor == "ad-minh"


def test_a_revoked_token_is_refused_on_the_next_call_and_a_rotated_one_at_once(api) -> None:
    client, backbone = api
    store = backbone.credentials
    viewer = principal(backbone, "room-cam-ranh", "viewer")
    progress = {"level": "province", "code": "56"}
    assert client.get("/v1/progress", params=progress, headers=viewer).status_code == 200
    assert store.revoke("room-cam-ranh")
    refused = client.get("/v1/progress", params=progress, headers=viewer)
    assert refused.status_code == 401
    station = principal(backbone, "dev-cr-4", "station", kind="device", station_id="st-cam-ranh")
    new = {"Authorization": f"Bearer {store.rotate('dev-cr-4')}"}
    body = registration_body(device_id="dev-cr-4")
    assert client.post("/v1/registrations", json=body, headers=station).status_code == 401
    assert client.post("/v1/registrations", json=body, headers=new).status_code == 201


def test_only_token_hashes_are_stored(api) -> None:
    _, backbone = api
    store = backbone.credentials
    token = store.add(Principal("dev-cr-5", "station", "device", "st-cam-ranh"))
    rotated = store.rotate("dev-cr-5")
    assert token.encode() not in stored_bytes(backbone.settings)
    assert rotated.encode() not in stored_bytes(backbone.settings)
    assert token_hash(rotated).encode() in stored_bytes(backbone.settings)
    assert store.lookup(rotated) == Principal("dev-cr-5", "station", "device", "st-cam-ranh")
    assert store.lookup(token) is None


def stored_bytes(settings: Settings) -> bytes:
    """Everything the credential store holds: the SQLite file (and its WAL), or every row of
    the PostgreSQL table as text."""
    if settings.event_store != "postgres":
        path = settings.credentials_store
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    with pg.connect(settings) as conn:
        rows = conn.execute("SELECT principals::text FROM principals").fetchall()
    assert not settings.credentials_store.exists()  # nothing in a file beside it
    return "\n".join(str(row[0]) for row in rows).encode()


@pytest.fixture
def limited(kafka_bootstrap, env_for, chdb_url) -> Iterator[tuple[TestClient, Any]]:
    env = env_for(CLICKHOUSE_URL=chdb_url, COMMAND_BURST="3", COMMAND_RATE="0.01")
    with TestClient(create_app(Settings.from_env(env), embedded_projector=False)) as client:
        yield client, client.app.state.backbone  # type: ignore[attr-defined]


def test_commands_beyond_a_principals_burst_get_429_with_retry_after(limited) -> None:
    client, backbone = limited
    send: Callable[[str], Any] = lambda role: client.post(  # noqa: E731
        "/v1/registrations", json=registration_body(), headers=bearer(role)
    )
    assert [send("station").status_code for _ in range(3)] == [201, 201, 201]
    before = position(backbone)
    refused = send("station")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert position(backbone) == before
    assert send("admin").status_code == 201  # another principal has its own bucket
    # Reads are not limited.
    progress = {"level": "province", "code": "56"}
    assert client.get("/v1/progress", params=progress, headers=bearer("station")).is_success
