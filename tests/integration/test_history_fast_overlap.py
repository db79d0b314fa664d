"""A history read queries the read model while its access record is read and committed, and
still answers only once the record is committed (on each event store)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.settings import Settings
from tests.support.environment import bearer
from tests.support.factories import registration_body
from tests.support.kafka import publish_all
from tests.support.waiting import wait_until

WAIT_S = 30  # a bound on each hand-off below, never reached when the read works


@pytest.fixture
def app(kafka_bootstrap, env_for, chdb_url) -> Iterator[tuple[TestClient, Any]]:
    settings = Settings.from_env(env_for(CLICKHOUSE_URL=chdb_url))
    with TestClient(create_app(settings)) as client:
        yield client, client.app.state.backbone  # type: ignore[attr-defined]


def registered(client: TestClient) -> str:
    body = registration_body()
    response = client.post("/v1/registrations", json=body, headers=bearer("station"))
    assert response.status_code == 201
    return str(body["citizen_id"])


def read(client: TestClient, citizen_id: str) -> Any:
    body = {"citizen_id": citizen_id, "purpose": "audit"}
    return client.post("/v1/citizens/history", json=body, headers=bearer("auditor"))


def test_the_read_model_is_queried_while_the_read_is_recorded(app, monkeypatch) -> None:
    client, backbone = app
    citizen_id = registered(client)
    query_running, record_running = threading.Event(), threading.Event()
    real_rows, real_record = backbone.trail.history_and_reads, backbone.registry.record_access

    def rows(account_id: Any) -> Any:
        query_running.set()
        assert record_running.wait(WAIT_S), "the record did not start while the query ran"
        return real_rows(account_id)

    def record(*args: Any, **kwargs: Any) -> Any:
        record_running.set()
        assert query_running.wait(WAIT_S), "the query did not start while the record ran"
        return real_record(*args, **kwargs)

    monkeypatch.setattr(backbone.trail, "history_and_reads", rows)
    monkeypatch.setattr(backbone.registry, "record_access", record)

    response = read(client, citizen_id)

    assert response.status_code == 200
    assert response.json()["citizen_id"] == citizen_id


def test_an_answer_leaves_only_once_its_record_is_committed(app, monkeypatch) -> None:
    """The record is made to commit after the query has returned: the answer still waits."""
    client, backbone = app
    citizen_id = registered(client)
    queried = threading.Event()
    real_rows, real_record = backbone.trail.history_and_reads, backbone.registry.record_access

    def rows(account_id: Any) -> Any:
        try:
            return real_rows(account_id)
        finally:
            queried.set()

    def record(*args: Any, **kwargs: Any) -> Any:
        assert queried.wait(WAIT_S)
        return real_record(*args, **kwargs)

    monkeypatch.setattr(backbone.trail, "history_and_reads", rows)
    monkeypatch.setattr(backbone.registry, "record_access", record)
    before = backbone.registry.recorder.max_notification_id()

    response = read(client, citizen_id)

    assert response.status_code == 200
    assert backbone.registry.recorder.max_notification_id() == before + 1


def test_a_failed_read_model_query_answers_500_with_the_read_recorded(app, monkeypatch) -> None:
    client, backbone = app
    citizen_id = registered(client)

    def broken(account_id: Any) -> Any:
        raise OSError("read model unreachable")

    monkeypatch.setattr(backbone.trail, "history_and_reads", broken)
    before = backbone.registry.recorder.max_notification_id()
    failing = TestClient(client.app, raise_server_exceptions=False)  # no second start-up

    response = read(failing, citizen_id)

    assert response.status_code == 500
    assert "events" not in response.text and citizen_id not in response.text
    assert backbone.registry.recorder.max_notification_id() == before + 1


def test_a_read_that_cannot_be_recorded_opens_no_personal_field(app, monkeypatch) -> None:
    client, backbone = app
    citizen_id = registered(client)
    publish_all(backbone.settings, backbone.registry)
    wait_until(lambda: read(client, citizen_id).json()["events"], 60)  # a field to open
    opened = []
    real_reveal = backbone.registry.reveal

    def reveal(*args: Any) -> Any:
        opened.append(args)
        return real_reveal(*args)

    def refused(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(backbone.registry, "reveal", reveal)
    monkeypatch.setattr(backbone.registry, "record_access", refused)
    failing = TestClient(client.app, raise_server_exceptions=False)  # no second start-up

    response = read(failing, citizen_id)

    assert response.status_code == 500
    assert opened == []
