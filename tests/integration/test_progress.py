"""Progress-room reads through the API in-process, counted by the real projector in ClickHouse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.settings import Settings
from tests.support.environment import TOKENS, deployment_env, unique
from tests.support.factories import registration_body
from tests.support.kafka import publish_all
from tests.support.waiting import wait_until

STATION = {"Authorization": f"Bearer {TOKENS['station']}"}
VIEWER = {"Authorization": f"Bearer {TOKENS['viewer']}"}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
DAY = "2023-06-27"
WINDOW = {"since": f"{DAY}T00:00:00+07:00", "until": f"{DAY}T23:59:00+07:00"}
INTAKE = [  # (device, local time, channel, phone)
    ("dev-A", "08:10", "station", "smart"),
    ("dev-A", "08:40", "station", "none"),
    ("dev-A", "11:05", "home_visit", "basic"),
    ("dev-B", "09:00", "mobile_team", "none"),
]


@pytest.fixture(scope="module")
def counted(kafka_bootstrap, tmp_path_factory, chdb_url, module_store_env) -> Iterator[TestClient]:
    env = deployment_env(tmp_path_factory.mktemp("progress"), kafka_bootstrap,
                         CLICKHOUSE_URL=chdb_url, PSEUDONYM_SECRET="p",
                         CAMPAIGN_START="2023-01-01", **module_store_env)  # fmt: skip
    settings = Settings.from_env(env)
    with TestClient(create_app(settings)) as client:
        for device, at, channel, phone in INTAKE:
            body = registration_body(commune_code="22420", device_id=device, channel=channel,
                                     phone=phone, captured_at=f"{DAY}T{at}:00+07:00")  # fmt: skip
            assert client.post("/v1/registrations", json=body, headers=STATION).status_code == 201
        target = {"command_id": unique("t"), "metric": "received", "target": 8,
                  "deadline": "2023-06-30"}  # fmt: skip
        assert client.put("/v1/targets/22420", json=target, headers=ADMIN).status_code == 200
        backbone: Any = client.app.state.backbone  # type: ignore[attr-defined]
        publish_all(settings, backbone.registry)
        wait_until(lambda: backbone.projector.stored >= len(INTAKE), 60)
        yield client


def hourly(client: TestClient, by: str) -> dict[str, dict[str, int]]:
    params = {"commune_code": "22420", "by": by, **WINDOW}
    body = client.get("/v1/progress/hourly", params=params, headers=VIEWER).json()
    return {h["hour"][11:16]: h["counts"] for h in body["hours"]}


def test_hourly_counts_follow_the_hour_of_capture(counted) -> None:
    assert hourly(counted, "event_type") == {
        "08:00": {"registration_received": 2},
        "09:00": {"registration_received": 1},
        "11:00": {"registration_received": 1},
    }


def test_hourly_counts_split_by_channel_phone_and_device(counted) -> None:
    assert hourly(counted, "channel")["08:00"] == {"station": 2}
    assert hourly(counted, "channel")["11:00"] == {"home_visit": 1}
    assert hourly(counted, "phone")["08:00"] == {"none": 1, "smart": 1}
    assert hourly(counted, "device")["09:00"] == {"dev-B": 1}


def test_province_rollup_counts_every_commune(counted) -> None:
    params = {"province_code": "56", **WINDOW}
    body = counted.get("/v1/progress/hourly", params=params, headers=VIEWER).json()
    assert sum(h["total"] for h in body["hours"]) == len(INTAKE)


def test_device_days_show_throughput_and_idle_hours(counted) -> None:
    params = {"commune_code": "22420", **WINDOW}
    days = counted.get("/v1/progress/devices", params=params, headers=VIEWER).json()["days"]
    summary = {d["device_id"]: (d["date"], d["registrations"], d["active_hours"],
                                d["idle_hours"], d["peak_per_hour"]) for d in days}  # fmt: skip
    assert summary == {"dev-A": (DAY, 3, 2, 2, 2), "dev-B": (DAY, 1, 1, 0, 1)}
    # Working hours in Vietnam time, as the engine formats them: the first and the last clock
    # hour with a registration.
    spans = {d["device_id"]: (d["first_hour"], d["last_hour"], d["station_id"]) for d in days}
    assert spans["dev-A"][:2] == (f"{DAY}T08:00:00+07:00", f"{DAY}T11:00:00+07:00")
    assert spans["dev-B"][:2] == (f"{DAY}T09:00:00+07:00", f"{DAY}T09:00:00+07:00")
    assert all(isinstance(st, str) and st for *_, st in spans.values())


def test_cumulative_progress_against_the_target(counted) -> None:
    params = {"level": "commune", "code": "22420"}
    body = counted.get("/v1/progress", params=params, headers=VIEWER).json()
    assert body["received"] == {"count": 4, "target": 8, "deadline": "2023-06-30",
                                "percent": 50.0}  # fmt: skip
    assert body["activated"]["count"] == 0 and body["activated"]["target"] is None
