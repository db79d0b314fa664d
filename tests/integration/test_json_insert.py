"""The audit rows sent as JSON columns (AuditTrail.store) are the rows the client's own Native
insert writes: every column, the packed `shown` one and the counts derived from them."""

from __future__ import annotations

import random
import string
import uuid
from datetime import UTC, datetime, timedelta

from projections.audit import COLUMNS, AuditTrail, seconds_text, to_columns
from projections.clickhouse import LockedClient, connect
from schemas.codec import citizen_event_codec

NS = "vn.project06.eid."
BASE = datetime(2026, 3, 1, tzinfo=UTC)


def wire(i: int, station: str, note: str, millis: int) -> bytes:
    at = BASE + timedelta(milliseconds=millis)
    payload = (NS + "RegistrationReceived", {
        "sealed_full_name": f"sealed:v1:{note}", "sealed_date_of_birth": "", "sealed_sex": "",
        "station_id": station, "device_id": f"dev-{i}", "operator_id": note,
        "channel": "fixed_station", "phone": "chip", "attempt": i})  # fmt: skip
    if i % 3 == 1:
        payload = (NS + "RegistrationDecided", {"decision": "rejected", "sealed_reason": note})
    return citizen_event_codec().encode({
        "event_id": str(uuid.uuid4()), "event_type": "registration_received",
        "account_id": str(uuid.uuid4()), "sequence": i + 1, "position": 100 + i,
        "sealed_citizen_id": f"sealed:v1:{note}", "occurred_at": at,
        "recorded_at": at + timedelta(milliseconds=i), "province_code": "56",
        "commune_code": "22420", "previous_hash": "0" * 64, "hash": f"{i:064x}",
        "payload": payload, "actor": note,
    })  # fmt: skip


TRICKY = ['', 'a"b', "back\\slash", "new\nline\ttab", "Nguyễn Thị Ánh", "\x00\x01\x1f",
          "{\"json\": [1]}", "emoji \U0001f600", "'quote'", "\u2028\u2029"]  # fmt: skip


def test_json_columns_store_what_the_native_insert_stores(chdb_url: str) -> None:
    client = LockedClient(connect(chdb_url, "json_a"))
    client.make_read_models("json_b")
    codec, topic, rng = citizen_event_codec(), uuid.uuid4(), random.Random(13)
    texts = [(a, b) for a in TRICKY for b in TRICKY[::3]]
    texts += [("".join(rng.choice(string.printable + "ăâđêôơưạảấ") for _ in range(20)),
               str(rng.random())) for _ in range(40)]  # fmt: skip
    starts = [rng.randrange(-(10**11), 10**11) for _ in texts]
    events = [codec.decode_plain(wire(i, s, n, starts[i])) for i, (s, n) in enumerate(texts)]
    columns = to_columns(events, [(i % 3, i) for i in range(len(events))], topic)
    try:
        AuditTrail(client, "json_a").store(columns, "token-1")
        native = list(columns)
        for name in ("occurred_at", "recorded_at"):
            index = COLUMNS.index(name)
            native[index] = [BASE.fromtimestamp(m / 1000, UTC) for m in columns[index]]
        client.insert("json_b.audit_events", native, COLUMNS, "token-1", by_column=True)
        rows = {}
        for db in ("json_a", "json_b"):
            rows[db] = client.query_rows(
                f"SELECT * EXCEPT projected_at, shown FROM {db}.audit_events ORDER BY kafka_offset"
            ) + client.query_rows(f"SELECT shown FROM {db}.audit_events ORDER BY kafka_offset")
            rows[db + "_derived"] = client.query_rows(
                f"SELECT hour, commune_code, event_type, sum(n) FROM {db}.hourly_totals "
                "GROUP BY ALL ORDER BY ALL"
            )
        assert rows["json_a"] == rows["json_b"]
        assert len(rows["json_a"]) == 2 * len(events)
        assert rows["json_a_derived"] == rows["json_b_derived"]
        first = events[0]
        assert rows["json_a"][0][COLUMNS.index("station_id")] == first["payload"].get(
            "station_id", ""
        )
    finally:
        client.command("DROP DATABASE IF EXISTS json_a")
        client.command("DROP DATABASE IF EXISTS json_b")


def test_seconds_text_keeps_every_millisecond() -> None:
    millis = [0, 1, 999, 1000, 1687831200123, -1, -1001, 4102444800999]
    assert seconds_text(millis) == [
        "0.000", "0.001", "0.999", "1.000", "1687831200.123", "-0.001", "-1.001",
        "4102444800.999",
    ]  # fmt: skip
    moments = [BASE + timedelta(milliseconds=m) for m in (0, 7, 123456)]
    assert seconds_text(moments) == seconds_text(
        [int(BASE.timestamp()) * 1000 + m for m in (0, 7, 123456)]
    )
