"""Personal data on the real store, broker and ClickHouse engine: sealed everywhere, erasable.

Known personal numbers, Vietnamese names, dates of birth and free-text reasons go in through
the API; then every place they could end up (topic and dead-letter topic, every read-model
table, the event store and key store files, the logs) is searched for them in clear. Erasure
destroys the citizen's data key: the history reads `[erased]`, counts and chains stay, a
rebuild from the topic cannot bring anything back. Without the key-encryption key nothing
starts and nothing is written.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition

from projections.audit import audit_trail
from projections.clickhouse import connect
from projections.rebuild import rebuild
from schemas.chain import first_broken_link
from services.api.app import create_app
from services.registry.application import Registry
from services.registry.commands import DecideRegistration
from services.registry.sealing import ERASED, PREFIX, KeyEncryptionKeyError
from services.settings import Settings
from tests.support.api import Api, api_and_relay
from tests.support.broker import as_admin
from tests.support.environment import TOKENS, bearer, deployment_env
from tests.support.factories import VN, personal_number, register_command, registration_body
from tests.support.kafka import publish_all
from tests.support.processes import ROOT, free_port
from tests.support.signed import signed_up
from tests.support.stores import event_store_bytes, key_store_bytes
from tests.support.waiting import wait_until

ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
AUDITOR = {"Authorization": f"Bearer {TOKENS['auditor']}"}
STATION = {"Authorization": f"Bearer {TOKENS['station']}"}
VIEWER = {"Authorization": f"Bearer {TOKENS['viewer']}"}


@dataclass(frozen=True)
class Person:
    citizen_id: str
    full_name: str
    date_of_birth: str
    sex: str
    reason: str  # a decision or status reason that names someone

    def secrets(self) -> list[str]:
        """What must never be found in clear outside the authorised reads."""
        return [self.citizen_id, self.full_name, self.date_of_birth, self.reason]


def person(name: str, born: str, female: bool, serial: int, reason: str) -> Person:
    year = int(born[:4])
    number = personal_number(year=year, female=female, serial=serial)
    return Person(number, name, born, "female" if female else "male", reason)


def people() -> list[Person]:
    serial = secrets.randbelow(10**6)
    return [
        person("Nguyễn Thị Lan", "1987-11-23", True, serial, "ảnh mờ, Phạm Văn Đức ký xác nhận"),
        person("Trần Văn Hùng", "1975-03-14", False, serial + 1, "giấy tờ của Trần Văn Hùng đủ"),
        person("Lê Thị Hoa Đào", "1992-08-30", True, serial + 2, "báo tử: bà Lê Thị Hoa Đào"),
    ]


def now() -> str:
    return (datetime.now(VN) - timedelta(minutes=1)).isoformat()


# --- the deployment in this process (TestClient, embedded projector) ------------------------


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[TestClient, Any]]:
    """The API app (with its embedded projector) in this process, and its backbone."""
    with TestClient(create_app(settings)) as client:
        yield client, client.app.state.backbone  # type: ignore[attr-defined]


@pytest.fixture
def settings(kafka_bootstrap, env_for, chdb_url) -> Settings:
    return Settings.from_env(env_for(CLICKHOUSE_URL=chdb_url))


@pytest.fixture
def app(settings) -> Iterator[tuple[TestClient, Any]]:
    with serving(settings) as served:
        yield served


def register(client: TestClient, who: Person) -> None:
    body = registration_body(
        citizen_id=who.citizen_id, full_name=who.full_name, date_of_birth=who.date_of_birth,
        sex=who.sex, captured_at=now(),
    )  # fmt: skip
    response = client.post("/v1/registrations", json=body, headers=STATION)
    assert response.status_code == 201, response.text


def decide(backbone: Any, who: Person, decision: str = "approved") -> None:
    """Through the group-commit writer, as the decision endpoint does."""
    command = DecideRegistration(
        command_id=f"dec-{uuid.uuid4()}", citizen_id=who.citizen_id, decision=decision,
        reason=who.reason, decided_at=now(),
    )  # fmt: skip
    backbone.batcher.submit(command)


def status(client: TestClient, who: Person, value: str, reason: str = "") -> None:
    body = {"command_id": f"st-{uuid.uuid4()}", "citizen_id": who.citizen_id, "status": value,
            "reason": reason or who.reason, "source": "civil-registry",
            "effective_at": now()}  # fmt: skip
    response = client.post("/v1/status-changes", json=body, headers=bearer("officer"))
    assert response.status_code == 201, response.text


def activate(client: TestClient, who: Person) -> None:
    body = {"command_id": f"act-{uuid.uuid4()}", "citizen_id": who.citizen_id,
            "method": "vneid_app", "activated_at": now()}  # fmt: skip
    response = client.post("/v1/activations", json=body, headers=STATION)
    assert response.status_code == 201, response.text


def erasure(who: Person, command_id: str | None = None, **more: Any) -> dict[str, Any]:
    return {
        "command_id": command_id or f"erase-{uuid.uuid4()}", "citizen_id": who.citizen_id,
        "legal_basis": "Decree 13/2023 art. 16: the data subject withdrew consent",
        "reference": "DPO-2025-0042", **more,
    }  # fmt: skip


def erase(client: TestClient, body: dict[str, Any], headers: dict[str, str] = ADMIN) -> Any:
    return client.post("/v1/citizens/erasure", json=body, headers=headers)


def projected(backbone: Any, who: Person, count: int) -> list[dict[str, Any]]:
    """The account's rows in the read model once `count` are there (the relay run first)."""
    publish_all(backbone.settings, backbone.registry)
    account = backbone.registry.account_id(who.citizen_id)
    found: Any = wait_until(lambda: (rows := backbone.trail.history(account)) and
                            len(rows) >= count and rows, 60)  # fmt: skip
    return list(found)


def audited_history(client: TestClient, who: Person) -> dict[str, Any]:
    """The auditor's read through the API (recorded): personal fields in clear or [erased]."""
    body = {"citizen_id": who.citizen_id, "purpose": "data protection officer check"}
    response = client.post("/v1/citizens/history", json=body, headers=AUDITOR)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def received(client: TestClient, commune: str = "22420") -> dict[str, Any]:
    params = {"level": "commune", "code": commune}
    body: dict[str, Any] = client.get("/v1/progress", params=params, headers=VIEWER).json()
    return {metric: body[metric]["count"] for metric in ("received", "activated")}


# --- where personal data could end up --------------------------------------------------------


def topic_bytes(bootstrap: str, topic: str) -> bytes:
    """Keys, values and headers of every record of `topic` (aborted ones too), concatenated."""
    consumer = KafkaConsumer(
        **as_admin(bootstrap), isolation_level="read_uncommitted", enable_auto_commit=False
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return b""
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        chunks: list[bytes] = []

        def drained() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    chunks.extend([record.key or b"", record.value or b""])
                    chunks.extend(value for _, value in record.headers or [])
            return all(consumer.position(tp) >= ends[tp] for tp in tps)

        wait_until(drained, 60, every=0)
        return b"\n".join(chunks)
    finally:
        consumer.close()


def topics_beside(settings: Settings) -> list[str]:
    """The deployment's other topics: access records, and the dead letters of both."""
    access = settings.access_topic
    return [settings.dlq_topic, access, f"{access}.dlq"]


def clickhouse_text(url: str, database: str) -> tuple[list[str], bytes]:
    """Every table of `database` and all of their rows as TSV text."""
    client = connect(url, database)
    tables = [
        row[0]
        for row in client.query(
            "SELECT name FROM system.tables WHERE database = {d:String}", parameters={"d": database}
        ).result_rows
    ]
    text = b"".join(client.raw_query(f"SELECT * FROM {database}.{t} FORMAT TSV") for t in tables)
    return tables, text


def file_bytes(*paths: Path) -> bytes:
    """The files at `paths` and their -wal / -shm / -journal companions, where they exist."""
    found = [Path(f"{p}{suffix}") for p in paths for suffix in ("", "-wal", "-shm", "-journal")]
    return b"".join(p.read_bytes() for p in found if p.exists())


def response_bytes(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, ensure_ascii=False).encode()


def clear_values_in(data: bytes, everyone: list[Person]) -> list[str]:
    return [value for who in everyone for value in who.secrets() if value.encode() in data]


# --- sealed everywhere -------------------------------------------------------------------------


def test_no_personal_value_is_stored_published_projected_or_logged_in_clear(
    app, caplog, chdb_url
) -> None:
    caplog.set_level(logging.INFO)
    client, backbone = app
    settings = backbone.settings
    lan, hung, hoa = everyone = people()
    for who in everyone:
        register(client, who)
    decide(backbone, lan)
    decide(backbone, hung)
    decide(backbone, hoa, "rejected")
    activate(client, hung)
    status(client, hung, "locked")
    status(client, hoa, "deceased")
    for who, count in ((lan, 2), (hung, 4), (hoa, 3)):
        projected(backbone, who, count)

    # The auditor, and only the auditor, sees them in clear (the read is recorded).
    answer = audited_history(client, lan)
    assert clear_values_in(response_bytes(answer), [lan]) == lan.secrets()  # the search finds
    shown = answer["events"]
    assert (shown[0]["payload"]["full_name"], shown[0]["payload"]["date_of_birth"]) == (
        lan.full_name, lan.date_of_birth)  # fmt: skip
    assert shown[1]["payload"]["reason"] == lan.reason
    publish_all(settings, registry=backbone.registry)

    # The topic, the access topic and their dead letters, raw.
    published = topic_bytes(settings.kafka_bootstrap, settings.kafka_topic)
    assert published.count(PREFIX.encode()) >= 3 * 3 + 3  # names, births, sexes, reasons...
    assert clear_values_in(published, everyone) == []
    for topic in topics_beside(settings):
        assert clear_values_in(topic_bytes(settings.kafka_bootstrap, topic), everyone) == []

    # Every table of the deployment's database, as text.
    tables, rows = clickhouse_text(chdb_url, settings.clickhouse_database)
    assert "audit_events" in tables
    assert PREFIX.encode() in rows
    assert clear_values_in(rows, everyone) == []

    # The event store (at-rest cipher) and the key store (wrapped data keys), bytes stored.
    stored = event_store_bytes(settings)
    assert len(stored) > 10_000
    assert clear_values_in(stored, everyone) == []
    assert clear_values_in(key_store_bytes(settings), everyone) == []

    # What this process logged (API, registry, relay, projector).
    logged = "\n".join(r.getMessage() for r in caplog.records).encode()
    assert clear_values_in(logged, everyone) == []


# --- erasure ---------------------------------------------------------------------------------


def test_erasure_makes_the_fields_unreadable_for_ever_and_keeps_counts_and_chain(
    settings, chdb_url
) -> None:
    with serving(settings) as (client, backbone):
        rows, account, hung = erased_while_serving(client, backbone)
    # The API has stopped (its projector too): a rebuild from offset zero reads the same
    # ciphertext and cannot open it.
    rebuild(settings, show_progress=False)
    trail = audit_trail(chdb_url, settings.clickhouse_database)
    rebuilt = trail.history(account)
    assert [r["payload"] for r in rebuilt] == [r["payload"] for r in rows]
    assert first_broken_link(rebuilt) is None
    fresh = Registry(settings)
    try:
        sealed = [rebuilt[0]["payload"][f"sealed_{n}"] for n in ("full_name", "date_of_birth")]
        assert all(value.startswith(PREFIX) for value in sealed)
        assert {fresh.reveal(account, value) for value in sealed} == {ERASED}
        assert fresh.reveal(account, rebuilt[1]["payload"]["sealed_reason"]) == ERASED
        other = fresh.account_id(hung.citizen_id)
        hung_rows = trail.history(other)
        assert fresh.reveal(other, hung_rows[0]["payload"]["sealed_full_name"]) == hung.full_name
    finally:
        fresh.close()


def erased_while_serving(
    client: TestClient, backbone: Any
) -> tuple[list[dict[str, Any]], uuid.UUID, Person]:
    """Erase one of two citizens through the API and check what readers see; the erased
    account's rows, its id, and the other citizen."""
    settings, registry = backbone.settings, backbone.registry
    lan, hung, _ = people()
    for who in (lan, hung):
        register(client, who)
        decide(backbone, who)
    before_rows = projected(backbone, lan, 2)
    projected(backbone, hung, 2)
    counts = received(client)
    account = registry.account_id(lan.citizen_id)

    body = erasure(lan)
    response = erase(client, body)
    assert response.status_code == 201, response.text
    assert "idempotent-replayed" not in response.headers
    outcome = response.json()
    assert (outcome["account_id"], outcome["version"], outcome["erased"]) == (
        str(account), 3, True)  # fmt: skip

    rows = projected(backbone, lan, 3)
    assert [r["event_type"] for r in rows] == [
        "registration_received", "registration_decided", "personal_data_erased"]  # fmt: skip
    assert rows[2]["payload"] == {"legal_basis": body["legal_basis"], "reference": "DPO-2025-0042"}
    # The sealed values stay as they were: the chain commits to them and still verifies.
    assert [r["payload"] for r in rows[:2]] == [r["payload"] for r in before_rows]
    assert first_broken_link(rows) is None
    assert registry.reveal(account, rows[0]["payload"]["sealed_full_name"]) == ERASED

    signed_up(backbone)
    answer = audited_history(client, lan)
    assert answer["verification"]["verified"] is True
    assert answer["verification"]["chain_intact"] is True
    first, decided = answer["events"][0]["payload"], answer["events"][1]["payload"]
    assert {k: first[k] for k in ("full_name", "date_of_birth", "sex")} == dict.fromkeys(
        ("full_name", "date_of_birth", "sex"), ERASED)  # fmt: skip
    assert decided["reason"] == ERASED
    assert first["sealed_full_name"].startswith(PREFIX)
    assert lan.full_name not in str(answer) and lan.date_of_birth not in str(answer)
    # Someone else's data is untouched.
    assert audited_history(client, hung)["events"][0]["payload"]["full_name"] == hung.full_name
    assert received(client) == counts

    # A resend gets the first outcome and records nothing; so does one without requested_at.
    position = registry.recorder.max_notification_id()
    again = erase(client, body)
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (201, "true")
    assert again.json() == outcome
    assert registry.recorder.max_notification_id() == position
    # A second erasure (another command) succeeds and records no event on the account.
    second = erase(client, erasure(lan))
    assert second.status_code == 201, second.text
    assert second.json()["version"] == 3
    assert len(list(registry.events.get(account))) == 3
    # The erased citizen takes no more commands.
    refused = client.post("/v1/registrations", headers=STATION, json=registration_body(
        citizen_id=lan.citizen_id, full_name="X", date_of_birth=lan.date_of_birth,
        sex=lan.sex, captured_at=now()))  # fmt: skip
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "personal_data_erased")

    publish_all(settings, registry)
    wait_until(lambda: received(client) == counts and len(backbone.trail.history(account)) == 3)
    return rows, account, hung


def test_erasure_is_for_admins_of_records_not_in_use(app) -> None:
    client, backbone = app
    lan, hung, _ = people()
    for who in (lan, hung):
        register(client, who)
        decide(backbone, who)
    activate(client, hung)

    for role in ("viewer", "station", "auditor"):
        token = {"Authorization": f"Bearer {TOKENS[role]}"}
        forbidden = erase(client, erasure(lan), headers=token)
        assert (forbidden.status_code, forbidden.json()["error"]["code"]) == (403, "forbidden")
    assert erase(client, erasure(lan), headers={}).status_code == 401
    unknown = erase(client, erasure(person("Đỗ Văn Nam", "1960-01-01", False, 5, "")))
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "account_not_found")
    invalid = erase(client, erasure(lan, legal_basis="", citizen_id="12"))
    assert invalid.status_code == 422
    assert set(invalid.json()["error"]["fields"]) == {"legal_basis", "citizen_id"}

    # An activated or locked account keeps its record; revoked, it may be erased.
    position = backbone.registry.recorder.max_notification_id()
    refused = erase(client, erasure(hung))
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert (error["code"], error["state"]["account_state"]) == ("record_must_be_kept", "activated")
    status(client, hung, "locked")
    locked = erase(client, erasure(hung))
    assert (locked.status_code, locked.json()["error"]["code"]) == (409, "record_must_be_kept")
    assert backbone.registry.recorder.max_notification_id() == position + 2  # lock + receipt
    status(client, hung, "revoked")
    assert erase(client, erasure(hung)).status_code == 201

    # A stated requested_at is the event's time; a body reused with another basis is refused.
    stated = erasure(lan, requested_at=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC).isoformat())
    assert erase(client, stated).status_code == 201
    reused = erase(client, {**stated, "legal_basis": "another basis"})
    assert (reused.status_code, reused.json()["error"]["code"]) == (409, "command_id_reused")
    events = list(backbone.registry.events.get(backbone.registry.account_id(lan.citizen_id)))
    assert events[-1].occurred_at == "2024-05-06T07:08:09+00:00"


def test_a_resend_without_requested_at_is_recognised(app) -> None:
    client, backbone = app
    lan = people()[0]
    register(client, lan)
    body = erasure(lan)
    first = erase(client, body)
    assert first.status_code == 201, first.text
    position = backbone.registry.recorder.max_notification_id()
    again = erase(client, body)
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (201, "true")
    assert again.json() == first.json()
    assert backbone.registry.recorder.max_notification_id() == position


# --- the key-encryption key --------------------------------------------------------------------


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """name -> (size, mtime_ns) of every file under `directory`."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def existing_deployment(env: dict[str, str]) -> Settings:
    """A deployment with a stored registration: an event store and a key store on disk."""
    settings = Settings.from_env(env)
    registry = Registry(settings)
    try:
        registry.handle(register_command())
    finally:
        registry.close()
    assert event_store_bytes(settings) and key_store_bytes(settings)
    return settings


def test_without_its_key_encryption_key_the_registry_refuses_and_writes_nothing(
    env_for, tmp_path
) -> None:
    settings = existing_deployment(env_for())
    before = snapshot(settings.var_dir)

    missing = dataclasses.replace(settings, kek_file=tmp_path / "elsewhere" / "kek")
    with pytest.raises(KeyEncryptionKeyError) as refused:
        Registry(missing)
    message = str(refused.value)
    assert str(missing.kek_file) in message and "missing" in message and "KEK_FILE" in message
    assert not missing.kek_file.exists() and not missing.kek_file.parent.exists()
    assert snapshot(settings.var_dir) == before

    wrong_file = tmp_path / "wrong-kek"
    wrong_file.write_bytes(os.urandom(32))
    with pytest.raises(KeyEncryptionKeyError, match="does not open this key store"):
        Registry(dataclasses.replace(settings, kek_file=wrong_file))
    gc.collect()  # the refused key store's connection (sealing.KeyStore does not close it)
    assert snapshot(settings.var_dir) == before

    short = tmp_path / "short-kek"
    short.write_bytes(b"too short")
    with pytest.raises(KeyEncryptionKeyError, match="32 bytes"):
        Registry(dataclasses.replace(settings, kek_file=short))

    # With the right one, everything is readable again.
    registry = Registry(settings)
    try:
        assert registry.recorder.max_notification_id() > 0
    finally:
        registry.close()


# --- as processes: logs, and refusal to start ------------------------------------------------


def run_to_exit(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_processes_log_no_personal_value_and_refuse_to_start_without_the_kek(
    kafka_bootstrap, tmp_path, store_env
) -> None:
    port = free_port()
    env = deployment_env(tmp_path / "var", kafka_bootstrap, API_PORT=str(port),
                         RELAY_METRICS_PORT="0", **store_env)  # fmt: skip
    settings = Settings.from_env(env)
    everyone = people()
    lan, hung, hoa = everyone
    api = Api(f"http://127.0.0.1:{port}", [tmp_path / "relay.log", tmp_path / "api.log"])
    with api_and_relay(env, tmp_path), api.http:
        wait_until(api.healthy, 90, every=0.2)
        for who in everyone:
            body = registration_body(
                citizen_id=who.citizen_id, full_name=who.full_name,
                date_of_birth=who.date_of_birth, sex=who.sex, captured_at=now(),
            )  # fmt: skip
            assert api.call("POST", "/v1/registrations", json=body).status_code == 201
        change = {"command_id": f"st-{uuid.uuid4()}", "citizen_id": hoa.citizen_id,
                  "status": "deceased", "reason": hoa.reason, "source": "civil-registry",
                  "effective_at": now()}  # fmt: skip
        assert api.call("POST", "/v1/status-changes", json=change).status_code == 201
        erased = api.call("POST", "/v1/citizens/erasure", role="admin", json=erasure(lan))
        assert erased.status_code == 201, erased.text
        refused = api.call("POST", "/v1/citizens/erasure", role="viewer", json=erasure(hung))
        assert refused.status_code == 403
        # Counted once the relay published and the projector stored all five events.
        wait_until(lambda: api.received("22420") == 3, 90, every=0.5)
        published = topic_bytes(kafka_bootstrap, settings.kafka_topic)
        assert published.count(b"personal_data_erased") >= 1
        published += b"".join(topic_bytes(kafka_bootstrap, t) for t in topics_beside(settings))

    logs = file_bytes(tmp_path / "api.log", tmp_path / "relay.log")
    assert b"relay" in logs and b"API:" in logs
    assert clear_values_in(logs, everyone) == []
    assert clear_values_in(published, everyone) == []
    stored = event_store_bytes(settings) + key_store_bytes(settings)
    assert clear_values_in(stored, everyone) == []

    # The deployment's KEK gone: both processes refuse with one line and exit 2.
    before = snapshot(settings.var_dir)
    gone = {**env, "KEK_FILE": str(tmp_path / "no-such-kek")}
    for module in ("services.api", "services.relay"):
        done = run_to_exit(module, gone)
        assert done.returncode == 2, (module, done.returncode, done.stderr[-2000:])
        assert "refusing to start: the key-encryption key" in done.stderr
        assert "is missing" in done.stderr and "Traceback" not in done.stderr
    wrong = tmp_path / "wrong-kek"
    wrong.write_bytes(os.urandom(32))
    done = run_to_exit("services.api", {**env, "KEK_FILE": str(wrong)})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "does not open this key store" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "no-such-kek").exists()
    after = snapshot(settings.var_dir)
    assert {k: v for k, v in after.items() if "chdb" not in k and v[0]} == {
        k: v for k, v in before.items() if "chdb" not in k and v[0]
    }
