"""The audit rows of a batch, built column by column for a column-oriented INSERT."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import orjson

from projections.audit import COLUMNS, from_millis, payload_of, to_columns
from schemas.codec import citizen_event_codec
from schemas.event_types import REGISTRATION_RECEIVED

TOPIC = uuid.UUID(int=7)
NS = "vn.project06.eid."


def event(sequence: int, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": uuid.uuid4(), "event_type": REGISTRATION_RECEIVED,
        "account_id": uuid.uuid4(), "sequence": sequence, "position": 10 + sequence,
        "sealed_citizen_id": "sealed:v1:AAAA",
        "occurred_at": datetime(2023, 6, 27, 2, 0, tzinfo=UTC),
        "recorded_at": datetime(2023, 6, 27, 2, 0, sequence, tzinfo=UTC),
        "province_code": "56", "commune_code": "22420",
        "previous_hash": "0" * 64, "hash": f"{sequence:064x}",
        "payload": {"station_id": "st-1", "device_id": "dev-1", "operator_id": "op-1",
                    "channel": "fixed_station", "phone": "none", "attempt": sequence,
                    "since": date(2023, 6, 1)},
        "actor": "station-1",
    }  # fmt: skip
    base.update(overrides)
    return base


def test_each_column_holds_its_field_of_every_record_in_order() -> None:
    first, second = event(1), event(2, actor=None, payload={"decision": "approved"})
    columns = to_columns([first, second], [(0, 5), (2, 9)], TOPIC)
    assert len(columns) == len(COLUMNS)
    rows = [dict(zip(COLUMNS, values, strict=True)) for values in zip(*columns, strict=True)]
    for row, (source, partition, offset) in zip(rows, [(first, 0, 5), (second, 2, 9)], strict=True):
        for name in ("event_id", "event_type", "account_id", "sequence", "position",
                     "sealed_citizen_id", "occurred_at", "recorded_at", "province_code",
                     "commune_code", "previous_hash", "hash"):  # fmt: skip
            assert row[name] == source[name]
        assert (row["kafka_partition"], row["kafka_offset"], row["topic_id"]) == (
            partition, offset, TOPIC)  # fmt: skip
    # where and with what in their own columns, the rest of the payload as JSON
    assert [rows[0][n] for n in ("station_id", "device_id", "operator_id", "channel", "phone")] \
        == ["st-1", "dev-1", "op-1", "fixed_station", "none"]  # fmt: skip
    assert orjson.loads(rows[0]["detail"]) == {"attempt": 1, "since": "2023-06-01"}
    assert rows[0]["actor"] == "station-1"
    assert [rows[1][n] for n in ("station_id", "phone")] == ["", ""]
    assert orjson.loads(rows[1]["detail"]) == {"decision": "approved"}
    assert rows[1]["actor"] == ""  # none recorded
    # the event keeps its payload (the batch's events go on to the subscribers as they are)
    assert first["payload"]["station_id"] == "st-1"


def test_the_payload_comes_back_whole_from_a_row() -> None:
    source = event(1)
    columns = to_columns([source], [(0, 0)], TOPIC)
    row = {name: column[0] for name, column in zip(COLUMNS, columns, strict=True)}
    payload = payload_of(row["event_type"], orjson.loads(row["detail"]), row)
    assert payload == {**source["payload"], "since": "2023-06-01"}


def test_an_empty_batch_has_empty_columns() -> None:
    assert to_columns([], [], TOPIC) == [[] for _ in COLUMNS]


def test_events_decoded_plainly_give_the_same_columns_as_decoded_ones() -> None:
    codec = citizen_event_codec()
    source = event(1)
    wire = codec.encode({**source, "event_id": str(source["event_id"]),
                         "account_id": str(source["account_id"]),
                         "payload": (NS + "RegistrationReceived", {
                             "sealed_full_name": "sealed:v1:B", "sealed_date_of_birth": "",
                             "sealed_sex": "", "station_id": "st-1", "device_id": "dev-1",
                             "operator_id": "op-1", "channel": "fixed_station",
                             "phone": "none", "attempt": 1})})  # fmt: skip
    full, plain = (
        to_columns([codec.decode(wire)], [(0, 1)], TOPIC),
        to_columns([codec.decode_plain(wire)], [(0, 1)], TOPIC),
    )
    for name, a, b in zip(COLUMNS, full, plain, strict=True):
        if name in ("occurred_at", "recorded_at"):
            assert from_millis(b[0]) == a[0]
        else:
            assert str(a[0]) == str(b[0]), name
