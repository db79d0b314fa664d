"""The subscriber example (schemas/examples/subscriber.py) against the real Kafka broker.

It runs as a subprocess, as a downstream service would run it: it has only fastavro,
kafka-python and the .avsc files. These tests check what it prints line by line.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import fastavro
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from schemas.chain import first_broken_link
from schemas.codec import MAGIC, citizen_event_codec, schema_fingerprint, schema_versions
from services.kafka import read_credentials
from services.registry.application import Registry
from services.registry.commands import EraseCitizen
from services.registry.sealing import ERASED, PREFIX
from services.settings import Settings
from tests.support.broker import as_admin, credentials_file
from tests.support.environment import unique
from tests.support.factories import approve_command, personal_number, register_command
from tests.support.kafka import publish_all, read_topic
from tests.support.processes import ROOT

V1 = ROOT / "schemas" / "citizen_event.v1.avsc"
V2 = ROOT / "schemas" / "citizen_event.v2.avsc"
NEWEST = schema_versions()[-1]  # the version the relay writes
NS = "vn.project06.eid."
SEALED = "sealed:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # opaque to a subscriber


# --- helpers -------------------------------------------------------------------------------


def run_subscriber(
    bootstrap: str, topic: str, *args: str, user: str = "admin"
) -> tuple[list[dict[str, Any]], str]:
    """Run the example to completion as Kafka `user` (the subscriber principal may read only
    a deployment's public topics; topics made here are the admin's); its JSON lines (parsed)
    and its stderr."""
    password = read_credentials(credentials_file(bootstrap)).get(user, "")
    login = ["--user", user] if password else []
    done = subprocess.run(
        [sys.executable, "-m", "schemas.examples.subscriber", "--bootstrap", bootstrap,
         "--topic", topic, "--timeout", "20", *login, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "KAFKA_PASSWORD": password},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def undecodable_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("undecodable ")]


def create_topic(bootstrap: str, partitions: int = 1) -> str:
    topic = unique("subscriber-events")
    admin = KafkaAdminClient(**as_admin(bootstrap))
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    return topic


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Plain (non-transactional) sends, in this order, all to partition 0."""
    producer = KafkaProducer(**as_admin(bootstrap))
    try:
        for value in values:
            producer.send(topic, key=b"k", value=value, partition=0).get(timeout=30)
    finally:
        producer.close(timeout=10)


def single_object(schema_json: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Avro single-object encoding with fastavro alone, for any writer schema."""
    schema = fastavro.parse_schema(copy.deepcopy(schema_json))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, record)
    return MAGIC + schema_fingerprint(schema) + body.getvalue()


def event(sequence: int, payload: tuple[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "event_type": "registration_decided",
        "account_id": str(uuid.uuid4()), "sequence": sequence, "position": 10 + sequence,
        "sealed_citizen_id": SEALED,
        "occurred_at": datetime(2023, 6, 27, 2, 15, tzinfo=UTC),
        "recorded_at": datetime(2023, 6, 27, 2, 15, 3, tzinfo=UTC),
        "province_code": "56", "commune_code": "22420",
        "previous_hash": "0" * 64, "hash": "b" * 64, "payload": payload, **extra,
    }  # fmt: skip


def decided(sequence: int = 2, **extra: Any) -> dict[str, Any]:
    payload = {"decision": "approved", "sealed_reason": SEALED}
    return event(sequence, (NS + "RegistrationDecided", payload), **extra)


def received(sequence: int = 1) -> dict[str, Any]:
    payload = {
        "sealed_full_name": SEALED, "sealed_date_of_birth": SEALED, "sealed_sex": SEALED,
        "station_id": "st-ninh-dong", "device_id": "dev-07", "operator_id": "op-3",
        "channel": "home_visit", "phone": "none", "attempt": 1,
    }  # fmt: skip
    return {**event(sequence, (NS + "RegistrationReceived", payload)),
            "event_type": "registration_received"}  # fmt: skip


def personal(name: str) -> bool:
    """A field the example leaves out by default: sealed (v2), or clear (v1 only)."""
    return name.startswith("sealed_") or name in CLEAR_PERSONAL


CLEAR_PERSONAL = ("citizen_id", "full_name", "date_of_birth", "sex", "reason")


def printed(record: dict[str, Any], *, v1_reader: bool = False, **extra: Any) -> dict[str, Any]:
    """What the example prints for `record` by default: JSON types, no personal field; the
    actor (v3) null when the record has none, unless read as v1."""
    out = {k: v for k, v in record.items() if not personal(k)}
    if not v1_reader:
        out.setdefault("actor", None)
    out["occurred_at"] = record["occurred_at"].isoformat()
    out["recorded_at"] = record["recorded_at"].isoformat()
    out["payload"] = {k: v for k, v in record["payload"][1].items() if not personal(k)}
    return {**out, **extra}


def newer_schema(directory: Path) -> Path:
    """The newest published version plus one optional field: what a compatible later version
    would look like (a synthetic v99, apart from every real version number)."""
    schema = json.loads(NEWEST.read_text())
    schema["fields"].append(
        {"name": "source_system", "type": ["null", "string"], "default": None}
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "citizen_event.v99.avsc"
    path.write_text(json.dumps(schema, indent=2))
    return path


# --- tests ---------------------------------------------------------------------------------


def test_example_imports_no_project_code() -> None:
    """The .avsc files alone suffice: no schemas.codec, no services, no projections."""
    probe = (
        "import sys, schemas.examples.subscriber; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('schemas', 'services', 'projections', 'tests')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == "['schemas', 'schemas.examples', 'schemas.examples.subscriber']"


def test_subscriber_decodes_what_the_relay_published(kafka_bootstrap, env_for) -> None:
    settings = Settings.from_env(env_for())
    registry = Registry(settings)
    citizens = [personal_number(serial=700 + i) for i in range(5)]
    for cid in citizens:
        registry.handle(register_command(cid))
        registry.handle(approve_command(cid))
    publish_all(settings, registry, batch_size=3)

    lines, stderr = run_subscriber(
        kafka_bootstrap, settings.kafka_topic, "--max-messages", "10", user="subscriber"
    )

    assert undecodable_lines(stderr) == []
    by_account: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line in lines:
        by_account[line["account_id"]].append((line["sequence"], line["event_type"]))
    steps = [(1, "registration_received"), (2, "registration_decided")]
    assert by_account == {str(registry.account_id(c)): steps for c in citizens}
    first = next(line for line in lines if line["sequence"] == 1)
    assert (first["occurred_at"], first["commune_code"], first["province_code"]) == (
        "2023-06-27T02:15:00+00:00", "22420", "56")  # fmt: skip
    # Sealed personal fields are left out by default: nothing personal is printed at all.
    assert first["payload"] == {
        "station_id": "st-1", "device_id": "dev-1", "operator_id": "op-1",
        "channel": "station", "phone": "basic", "attempt": 1,
    }  # fmt: skip
    assert not any(personal(name) for line in lines for name in line)
    printed_text = json.dumps(lines, ensure_ascii=False)
    assert "sealed" not in printed_text
    assert not any(cid in printed_text for cid in citizens)
    assert "Trần Văn Test" not in printed_text and "1990-05-01" not in printed_text


def test_v3_records_carry_the_actor_and_a_v2_reader_drops_it(kafka_bootstrap, env_for) -> None:
    """The relay writes v3: the principal recorded with each command is on the topic (null
    when none was recorded); a subscriber still coding against v2 reads the same records
    without it."""
    settings = Settings.from_env(env_for())
    registry = Registry(settings)
    cid = personal_number(serial=811)
    registry.handle(replace(register_command(cid), actor="dev-cam-ranh-01"))
    registry.handle(replace(approve_command(cid), actor="reviewer-khanh-hoa-2"))
    registry.handle(register_command(personal_number(serial=812)))  # no actor recorded
    publish_all(settings, registry)

    lines, stderr = run_subscriber(kafka_bootstrap, settings.kafka_topic, "--max-messages", "3",
                                   user="subscriber")  # fmt: skip
    assert undecodable_lines(stderr) == []
    actors = {(line["account_id"], line["sequence"]): line["actor"] for line in lines}
    account = str(registry.account_id(cid))
    other = str(registry.account_id(personal_number(serial=812)))
    assert actors == {(account, 1): "dev-cam-ranh-01", (account, 2): "reviewer-khanh-hoa-2",
                      (other, 1): None}  # fmt: skip

    old, stderr = run_subscriber(kafka_bootstrap, settings.kafka_topic, "--max-messages", "3",
                                 "--reader-schema", str(V2), user="subscriber")  # fmt: skip
    assert undecodable_lines(stderr) == []
    assert [{k: v for k, v in line.items() if k != "actor"} for line in lines] == old
    registry.close()


def test_sealed_fields_on_request_erasure_and_the_chain_verifies(kafka_bootstrap, env_for) -> None:
    """With a consumer group and --keep-sealed: the personal fields are ciphertext that nobody
    downstream can open (nobody at all once erased); schemas/chain.py verifies the lines."""
    settings = Settings.from_env(env_for())
    registry = Registry(settings)
    cid = personal_number(serial=801)
    registry.handle(register_command(cid))
    registry.handle(approve_command(cid))
    erase = EraseCitizen(command_id=f"erase-{cid}", citizen_id=cid, legal_basis="consent withdrawn",
                         reference="DPO-1", requested_at="2023-06-28T08:00:00+07:00")  # fmt: skip
    registry.handle(erase)
    publish_all(settings, registry)

    lines, _ = run_subscriber(kafka_bootstrap, settings.kafka_topic,
                              "--group", unique("subscriber.audit"), "--keep-sealed",
                              "--max-messages", "3", user="subscriber")  # fmt: skip

    assert [(e["sequence"], e["event_type"]) for e in lines] == [
        (1, "registration_received"), (2, "registration_decided"),
        (3, "personal_data_erased")]  # fmt: skip
    account = registry.account_id(cid)
    assert lines[0]["account_id"] == str(account)
    received_payload = lines[0]["payload"]
    sealed = [lines[0]["sealed_citizen_id"]] + [
        received_payload[f"sealed_{name}"] for name in ("full_name", "date_of_birth", "sex")
    ]
    assert all(value.startswith(PREFIX) for value in sealed)
    assert all(line["sealed_citizen_id"] == lines[0]["sealed_citizen_id"] for line in lines)
    assert lines[1]["payload"] == {"decision": "approved", "sealed_reason": ""}  # none given
    assert lines[2]["payload"] == {"legal_basis": "consent withdrawn", "reference": "DPO-1"}
    printed_text = json.dumps(lines, ensure_ascii=False)
    assert cid not in printed_text and "Trần Văn Test" not in printed_text
    assert "1990-05-01" not in printed_text
    # The data key is destroyed: not even the registry can open what was published.
    assert {registry.reveal(account, value) for value in sealed} == {ERASED}
    # The chain commits to the ciphertext: erasure left it intact, tampering breaks it.
    assert first_broken_link(lines) is None
    lines[1]["payload"]["sealed_reason"] = PREFIX + "edited"
    assert first_broken_link(lines) == 1
    registry.close()


def test_v1_readers_cannot_resolve_v2_and_v2_drops_v1_personal_fields(
    kafka_bootstrap, tmp_path
) -> None:
    """Old clear v1 records stay on the topic: the v2 reader (the default) resolves them with
    their personal fields dropped; a v1 reader fails on v2 records (citizen_id has no
    default): it must upgrade."""
    topic = create_topic(kafka_bootstrap)
    old = {
        **{k: v for k, v in received(sequence=1).items() if k != "sealed_citizen_id"},
        "citizen_id": "056190001234",
        "payload": (NS + "RegistrationReceived", {
            "full_name": "Lê Thị Hoa", "date_of_birth": date(1990, 5, 1), "sex": "female",
            "station_id": "st-ninh-dong", "device_id": "dev-07", "operator_id": "op-3",
            "channel": "home_visit", "phone": "none", "attempt": 1}),
    }  # fmt: skip
    new = decided(sequence=2)
    produce(kafka_bootstrap, topic, [single_object(json.loads(V1.read_text()), old),
                                     citizen_event_codec().encode(new)])  # fmt: skip

    lines, stderr = run_subscriber(kafka_bootstrap, topic, "--max-messages", "2")
    assert undecodable_lines(stderr) == []
    assert lines == [printed(old), printed(new)]
    kept, _ = run_subscriber(kafka_bootstrap, topic, "--max-messages", "2", "--keep-sealed")
    assert kept[0]["sealed_citizen_id"] == "" and kept[1]["sealed_citizen_id"] == SEALED
    assert kept[0]["payload"]["sealed_full_name"] == ""  # the v2 default: dropped, not sealed
    for output in (lines, kept):
        text = json.dumps(output, ensure_ascii=False)
        assert "056190001234" not in text and "Lê Thị Hoa" not in text
        assert "1990-05-01" not in text and "female" not in text

    v1_lines, stderr = run_subscriber(kafka_bootstrap, topic, "--max-messages", "2",
                                      "--reader-schema", str(V1))  # fmt: skip
    assert [line.split(": ")[:2] for line in undecodable_lines(stderr)] == [
        [f"undecodable {topic}/0/1", "cannot decode body"]
    ]
    assert "SchemaResolutionError" in stderr
    # even a v1 reader's output leaves clear fields out
    assert v1_lines == [printed(old, v1_reader=True)]


def test_old_reader_decodes_newer_writer_and_new_reader_gets_default(
    kafka_bootstrap, tmp_path
) -> None:
    newer = newer_schema(tmp_path / "announced")
    newer_json = json.loads(newer.read_text())
    topic = create_topic(kafka_bootstrap)
    from_newer = decided(sequence=2, source_system="vneid-kiosk")
    from_v2 = received(sequence=1)
    produce(kafka_bootstrap, topic, [
        single_object(newer_json, from_newer),
        citizen_event_codec().encode(from_v2),
    ])  # fmt: skip
    extra = ("--schema-dir", str(newer.parent), "--max-messages", "2")

    # Reader holds only the published versions (the newest by default): the added field is
    # dropped by resolution.
    old_reader, stderr = run_subscriber(kafka_bootstrap, topic, *extra)
    assert undecodable_lines(stderr) == []
    want_newer = printed(from_newer)
    want_newer.pop("source_system")
    assert old_reader == [want_newer, printed(from_v2)]

    # Reader holds the newer schema: v2 events get the default.
    new_reader, _ = run_subscriber(kafka_bootstrap, topic, "--reader-schema", str(newer), *extra)
    assert new_reader == [printed(from_newer), printed(from_v2, source_system=None)]


def test_writer_schema_must_be_known_and_consumption_goes_on(kafka_bootstrap, tmp_path) -> None:
    """Without the announced .avsc the newer event is reported, and the next still decodes."""
    newer = newer_schema(tmp_path / "announced")
    newer_parsed = fastavro.parse_schema(json.loads(newer.read_text()))
    topic = create_topic(kafka_bootstrap)
    later = received(sequence=1)
    produce(kafka_bootstrap, topic, [
        single_object(json.loads(newer.read_text()), decided(source_system="x")),
        citizen_event_codec().encode(later),
    ])  # fmt: skip

    lines, stderr = run_subscriber(kafka_bootstrap, topic, "--max-messages", "2")

    fingerprint = schema_fingerprint(newer_parsed).hex()
    assert undecodable_lines(stderr) == [
        f"undecodable {topic}/0/0: unknown writer schema fingerprint {fingerprint}"
    ]
    assert lines == [printed(later)]


def test_a_payload_branch_unknown_to_the_reader_is_skipped(kafka_bootstrap, tmp_path) -> None:
    """Adding a union branch is not forward compatible: old readers must skip those events."""
    schema = json.loads(NEWEST.read_text())
    payload = next(f for f in schema["fields"] if f["name"] == "payload")
    payload["type"].append(
        {
            "type": "record",
            "name": "CardReissued",
            "fields": [{"name": "card_serial", "type": "string"}],
        }
    )
    path = tmp_path / "branch" / "citizen_event.v99.avsc"
    path.parent.mkdir()
    path.write_text(json.dumps(schema))
    topic = create_topic(kafka_bootstrap)
    reissued = {**event(4, (NS + "CardReissued", {"card_serial": "C-1"})),
                "event_type": "card_reissued"}  # fmt: skip
    after = decided(sequence=5)
    produce(kafka_bootstrap, topic, [single_object(schema, reissued),
                                     citizen_event_codec().encode(after)])  # fmt: skip
    extra = ("--schema-dir", str(path.parent), "--max-messages", "2")

    lines, stderr = run_subscriber(kafka_bootstrap, topic, *extra)
    assert [line.split(": ")[:2] for line in undecodable_lines(stderr)] == [
        [f"undecodable {topic}/0/0", "cannot decode body"]
    ]
    assert "SchemaResolutionError" in stderr
    assert lines == [printed(after)]

    upgraded, stderr = run_subscriber(kafka_bootstrap, topic, "--reader-schema", str(path), *extra)
    assert undecodable_lines(stderr) == []
    assert upgraded == [printed(reissued), printed(after)]


def test_garbage_is_reported_dead_lettered_and_consumption_goes_on(kafka_bootstrap) -> None:
    topic = create_topic(kafka_bootstrap)
    codec = citizen_event_codec()
    first, last = received(sequence=1), decided(sequence=2)
    valid = codec.encode(first)
    garbage = [
        b"not avro at all",
        MAGIC + b"\x00" * 8 + b"\x02",  # right magic, no such schema
        valid[: len(valid) // 2],  # known schema, body cut short
        valid + b"\x00",  # known schema, bytes after the body
    ]
    produce(kafka_bootstrap, topic, [valid, *garbage, codec.encode(last)])
    dlq_topic = f"{topic}.dlq"

    lines, stderr = run_subscriber(kafka_bootstrap, topic, "--max-messages", "6",
                                   "--dlq-topic", dlq_topic)  # fmt: skip

    assert lines == [printed(first), printed(last)]
    reported = undecodable_lines(stderr)
    assert reported[:2] == [
        f"undecodable {topic}/0/1: not Avro single-object encoding (bad magic)",
        f"undecodable {topic}/0/2: unknown writer schema fingerprint {'00' * 8}",
    ]
    assert reported[2].startswith(f"undecodable {topic}/0/3: cannot decode body: ")
    assert reported[3] == f"undecodable {topic}/0/4: trailing bytes after the Avro body"
    assert len(reported) == 4

    letters = read_topic(kafka_bootstrap, dlq_topic, expect=4, timeout=30)
    assert [letter.value for letter in letters] == garbage
    headers = [dict(letter.headers) for letter in letters]
    assert [h["dlq_source"].decode() for h in headers] == [f"{topic}/0/{i}" for i in (1, 2, 3, 4)]
    assert [h["dlq_reason"].decode() for h in headers] == [r.split(": ", 1)[1] for r in reported]


def test_records_of_aborted_transactions_are_never_printed(kafka_bootstrap) -> None:
    """read_committed: what a crashed relay left uncommitted never reaches the subscriber."""
    topic = create_topic(kafka_bootstrap)
    codec = citizen_event_codec()
    aborted, committed = decided(sequence=1), decided(sequence=2)
    producer = KafkaProducer(**as_admin(kafka_bootstrap), transactional_id=unique("tx"))
    try:
        producer.init_transactions()
        for record, finish in ((aborted, producer.abort_transaction),
                               (committed, producer.commit_transaction)):  # fmt: skip
            producer.begin_transaction()
            producer.send(topic, value=codec.encode(record), partition=0)
            producer.flush()
            finish()
    finally:
        producer.close(timeout=10)

    lines, stderr = run_subscriber(kafka_bootstrap, topic, "--timeout", "3")

    assert undecodable_lines(stderr) == []
    assert lines == [printed(committed)]
