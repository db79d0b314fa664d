"""Avro single-object encoding of citizen events."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import (
    MAGIC,
    AvroCodec,
    SerializationError,
    UnknownSchemaError,
    citizen_event_codec,
    load_schema,
    schema_fingerprint,
    schema_versions,
)

NS = "vn.project06.eid."
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def record(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": str(uuid.uuid4()), "event_type": "registration_decided",
        "account_id": str(uuid.uuid4()), "sequence": 2, "position": 7,
        "sealed_citizen_id": "sealed:v1:AAAA",
        "occurred_at": datetime(2023, 6, 27, 2, 0, tzinfo=UTC),
        "recorded_at": datetime(2023, 6, 27, 2, 0, 1, tzinfo=UTC),
        "province_code": "56", "commune_code": "22420",
        "previous_hash": "0" * 64, "hash": "a" * 64,
        "payload": (NS + "RegistrationDecided", {"decision": "approved", "sealed_reason": ""}),
    }  # fmt: skip
    base.update(overrides)
    return base


def test_encoding_starts_with_magic_and_fingerprint() -> None:
    codec = citizen_event_codec()
    data = codec.encode(record())
    assert data[:2] == MAGIC
    assert data[2:10] == schema_fingerprint(codec.writer)


texts = st.text(max_size=40)


@given(name=texts, reason=texts, seq=st.integers(1, 2**31 - 1))
def test_round_trip_keeps_every_field(name: str, reason: str, seq: int) -> None:
    codec = citizen_event_codec()
    payload = {
        "sealed_full_name": name, "sealed_date_of_birth": "sealed:v1:x", "sealed_sex": "s",
        "station_id": "s", "device_id": "d", "operator_id": "o", "channel": "station",
        "phone": "none", "attempt": 1,
    }  # fmt: skip
    original = record(sequence=seq, payload=(NS + "RegistrationReceived", payload))
    decoded = codec.decode(codec.encode(original))
    assert decoded["payload"] == payload
    assert decoded["sequence"] == seq
    assert str(decoded["event_id"]) == original["event_id"]


@pytest.mark.parametrize(
    "garbage", [b"", b"\xc3\x01", b"hello world", b"\xc3\x01" + bytes(8) + b"x"]
)
def test_garbage_is_a_serialization_error(garbage: bytes) -> None:
    with pytest.raises(SerializationError):
        citizen_event_codec().decode(garbage)


def test_truncated_body_is_a_serialization_error() -> None:
    data = citizen_event_codec().encode(record())
    with pytest.raises(SerializationError):
        citizen_event_codec().decode(data[:-5])


def test_wrong_type_cannot_be_encoded() -> None:
    with pytest.raises(SerializationError):
        citizen_event_codec().encode(record(sequence="two"))


def test_reader_of_older_schema_decodes_newer_writer(tmp_path: Path) -> None:
    old = load_schema(Path("schemas/citizen_event.v2.avsc"))
    newer_json = json.loads(Path("schemas/citizen_event.v2.avsc").read_text())
    newer_json["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    newer = load_schema_from(newer_json, tmp_path)
    writer = AvroCodec(writer=newer, known=[old])
    data = writer.encode(record(note="added later"))
    decoded = AvroCodec(writer=old, known=[newer]).decode(data, reader=old)
    assert "note" not in decoded
    assert decoded["commune_code"] == "22420"


def load_schema_from(schema: dict[str, object], tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "newer.avsc"
    path.write_text(json.dumps(schema))
    return load_schema(path)


def test_the_v2_reader_resolves_v1_records_without_their_clear_personal_fields() -> None:
    v1 = load_schema(Path("schemas/citizen_event.v1.avsc"))
    clear = {
        "full_name": "Nguyễn Thị Lan", "date_of_birth": date(1990, 5, 1), "sex": "female",
        "station_id": "s", "device_id": "d", "operator_id": "o", "channel": "station",
        "phone": "none", "attempt": 1,
    }  # fmt: skip
    old = {**record(payload=(NS + "RegistrationReceived", clear)), "citizen_id": "056190001234"}
    del old["sealed_citizen_id"]
    data = AvroCodec(writer=v1, known=[]).encode(old)

    decoded = citizen_event_codec().decode(data)

    assert decoded["sealed_citizen_id"] == ""
    assert "citizen_id" not in decoded
    assert decoded["payload"]["sealed_full_name"] == ""
    assert "Nguyễn" not in json.dumps(decoded, default=str, ensure_ascii=False)


# --- version 3: the actor --------------------------------------------------------------------

V2_PATH, V3_PATH = Path("schemas/citizen_event.v2.avsc"), Path("schemas/citizen_event.v3.avsc")


def test_the_relay_writes_v3_and_reads_every_published_version() -> None:
    codec = citizen_event_codec()
    assert codec.writer == load_schema(V3_PATH)
    data = codec.encode(record(actor="op-hanoi-007"))
    assert data[2:10] == schema_fingerprint(load_schema(V3_PATH))
    assert codec.decode(data)["actor"] == "op-hanoi-007"
    assert codec.decode(codec.encode(record()))["actor"] is None  # none recorded: null


def test_v3_is_v2_plus_an_optional_actor() -> None:
    v2, v3 = json.loads(V2_PATH.read_text()), json.loads(V3_PATH.read_text())
    added = [f for f in v3["fields"] if f["name"] not in {g["name"] for g in v2["fields"]}]
    assert added == [{**added[0], "name": "actor", "type": ["null", "string"], "default": None}]
    assert [f for f in v3["fields"] if f["name"] != "actor"] == v2["fields"]


def test_a_v2_reader_resolves_v3_records_and_a_v3_reader_v2_records() -> None:
    """Avro schema resolution in both directions, with fastavro alone (as a subscriber does)."""
    v2, v3 = load_schema(V2_PATH), load_schema(V3_PATH)
    newer = record(actor="dev-cam-ranh-01")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v3, newer)
    body.seek(0)
    old_reader = fastavro.schemaless_reader(body, v3, v2)
    assert "actor" not in old_reader  # type: ignore[operator]
    assert old_reader["payload"] == newer["payload"][1]  # type: ignore[call-overload,index]

    older = record()
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v2, older)
    body.seek(0)
    new_reader = fastavro.schemaless_reader(body, v2, v3)
    assert new_reader["actor"] is None  # type: ignore[call-overload,index]
    assert new_reader["commune_code"] == "22420"  # type: ignore[call-overload,index]
    # The codec does the same by fingerprint: a v2 record on the topic decodes with actor null.
    from_topic = AvroCodec(writer=v2, known=[]).encode(older)
    assert citizen_event_codec().decode(from_topic)["actor"] is None


@given(
    name=st.text(max_size=40),
    seq=st.integers(min_value=0, max_value=2**31),
    at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_plain_decoding_is_decoding_with_ids_and_times_left_as_on_the_wire(
    name: str, seq: int, at: datetime
) -> None:
    codec = citizen_event_codec()
    moment = at.replace(tzinfo=UTC, microsecond=at.microsecond // 1000 * 1000)
    data = codec.encode(record(sequence=seq, recorded_at=moment, actor=name))
    full, plain = codec.decode(data), codec.decode_plain(data)
    ms = timedelta(milliseconds=1)
    assert plain["recorded_at"] == (moment - EPOCH) // ms
    assert plain["occurred_at"] == (full["occurred_at"] - EPOCH) // ms
    for key in ("event_id", "account_id"):
        assert plain[key] == str(full[key])
    rest = ("event_id", "account_id", "occurred_at", "recorded_at")
    assert {k: v for k, v in plain.items() if k not in rest} == {
        k: v for k, v in full.items() if k not in rest
    }


def test_plain_decoding_reads_older_versions_and_refuses_what_decode_refuses() -> None:
    codec = citizen_event_codec()
    older = AvroCodec(load_schema(schema_versions()[1]), [])  # v2: no actor
    data = older.encode(record())
    assert {k: str(v) for k, v in codec.decode_plain(data).items() if k == "event_id"} == {
        "event_id": str(codec.decode(data)["event_id"])
    }
    assert codec.decode_plain(data)["actor"] == codec.decode(data)["actor"]
    with pytest.raises(SerializationError):
        codec.decode_plain(b"\xc3\x01" + codec.header[2:] + b"\xff")
    with pytest.raises(SerializationError):
        codec.decode_plain(b"junk")
    unknown = MAGIC + b"\x00" * 8 + b"body"
    with pytest.raises(UnknownSchemaError):
        codec.decode_plain(unknown)
