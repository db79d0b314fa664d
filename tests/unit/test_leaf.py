"""What a Merkle leaf commits to (schemas/leaf.py), and the signer's fast encoding of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.checkpoint import Checkpoint
from schemas.leaf import leaf_bytes, leaf_fields, utc_millis
from schemas.merkle import leaf_hash
from schemas.proofs import ACTOR_NOT_SIGNED, check_item, check_items, proof_json
from services.signer.signer import fast_leaf_bytes


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "0B4F8A52-5C1E-4E8B-9D2A-1F3C5E7A9B0D", "event_type": "registration_received",
        "account_id": "7d7d1a4e-3b1c-4c55-8a9e-2f6b0c1d2e3f", "sequence": 1, "position": 17,
        "sealed_citizen_id": "sealed:v1:abc", "province_code": "01", "commune_code": "00004",
        "occurred_at": datetime(2024, 3, 1, 8, 30, 0, 123456, tzinfo=UTC),
        "recorded_at": datetime(2024, 3, 1, 8, 30, 1, 999999, tzinfo=UTC),
        "previous_hash": "0" * 64, "hash": "f" * 64,
        "payload": {"sealed_full_name": "sealed:v1:n", "station_id": "st-1", "device_id": "d-1",
                    "operator_id": "op-1", "channel": "station", "phone": "smart", "attempt": 1},
    }  # fmt: skip
    return {**base, **overrides}


def test_a_record_and_its_read_model_row_give_the_same_leaf() -> None:
    # The row: where-fields in columns, times naive UTC in milliseconds, ids lower case.
    rec = record()
    where = ("station_id", "device_id", "operator_id", "channel", "phone")
    payload = {k: v for k, v in rec["payload"].items() if k not in where}
    row = {**rec, "event_id": rec["event_id"].lower(), "payload": payload,
           "occurred_at": datetime(2024, 3, 1, 8, 30, 0, 123000),
           "recorded_at": "2024-03-01T15:30:01.999+07:00",
           **{k: rec["payload"][k] for k in where}}  # fmt: skip
    assert leaf_bytes(row) == leaf_bytes(rec)
    # What the auditor is shown in clear beside a sealed value is not part of the leaf.
    shown = {**row, "payload": {**payload, "full_name": "Nguyễn Văn A"}}
    assert leaf_bytes(shown) == leaf_bytes(rec)


def test_every_shown_field_is_committed_to() -> None:
    rec = record()
    changed = [
        {"event_id": "0b4f8a52-5c1e-4e8b-9d2a-1f3c5e7a9b0e"}, {"sequence": 2}, {"position": 18},
        {"event_type": "registration_decided"}, {"province_code": "02"},
        {"commune_code": "00007"}, {"sealed_citizen_id": "sealed:v1:abd"},
        {"occurred_at": rec["occurred_at"] + timedelta(milliseconds=1)},
        {"recorded_at": rec["recorded_at"] + timedelta(milliseconds=1)},
        {"previous_hash": "1" * 64}, {"hash": "e" * 64},
        {"payload": {**rec["payload"], "operator_id": "op-2"}},
        {"payload": {**rec["payload"], "sealed_full_name": "sealed:v1:m"}},
        {"payload": {**rec["payload"], "attempt": 2}},
        {"account_id": "7d7d1a4e-3b1c-4c55-8a9e-2f6b0c1d2e30"},
    ]  # fmt: skip
    leaves = {leaf_bytes(record(**change)) for change in changed}
    assert len(leaves) == len(changed) and leaf_bytes(rec) not in leaves


def test_times_are_utc_milliseconds_whatever_their_form() -> None:
    moment = datetime(2024, 3, 1, 8, 30, 0, 123999, tzinfo=UTC)
    hanoi = moment.astimezone(timezone(timedelta(hours=7)))
    expected = utc_millis(moment)
    assert expected % 1000 == 123
    assert utc_millis(hanoi) == utc_millis(hanoi.isoformat()) == expected
    assert utc_millis(moment.replace(tzinfo=None)) == expected == utc_millis(expected)


text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["decision", "sealed_reason", "source", "status", "x"]),
                       st.one_of(text, st.integers(-(2**53), 2**53)), max_size=5),
       text, text)  # fmt: skip
def test_the_signers_fast_encoding_is_the_canonical_one(
    payload: dict[str, Any], station: str, commune: str
) -> None:
    rec = record(payload={**payload, "station_id": station}, commune_code=commune)
    assert fast_leaf_bytes(rec) == leaf_bytes(rec)
    assert leaf_fields(rec)["station_id"] == station


def test_the_actor_is_committed_to_when_recorded_and_absent_leaves_are_as_before() -> None:
    rec = record()
    assert "actor" not in leaf_fields(rec)
    # No actor (a v2 record, an access record, an event from before principals): same bytes.
    assert leaf_bytes({**rec, "actor": None}) == leaf_bytes({**rec, "actor": ""}) == leaf_bytes(rec)
    with_actor = record(actor="op-hanoi-007")
    assert leaf_fields(with_actor)["actor"] == "op-hanoi-007"
    assert fast_leaf_bytes(with_actor) == leaf_bytes(with_actor)
    leaves = {leaf_bytes(record(actor=a)) for a in ("op-hanoi-007", "op-hanoi-008", None)}
    assert len(leaves) == 3


def test_a_leaf_signed_before_v3_proves_all_but_the_actor_and_only_such_a_leaf() -> None:
    signed_before = leaf_hash(leaf_bytes(record()))  # a signer before v3: no actor committed
    signed_after = leaf_hash(leaf_bytes(record(actor="op-1")))
    checkpoint = Checkpoint("test/log", 1, signed_before)
    shown = {**record(actor="op-1"), "proof": proof_json(0, 1, [])}
    assert check_item(shown, checkpoint) == ACTOR_NOT_SIGNED
    report = check_items([shown], "event", checkpoint)
    assert report.proved == 1 and [f.position for f in report.actor_unsigned] == [17]
    # Signed with its actor: another actor, or none shown, fails; the right one is proved.
    checkpoint = Checkpoint("test/log", 1, signed_after)
    assert check_item(shown, checkpoint) is None
    for actor in ("op-2", None, ""):
        tampered = {**shown, "actor": actor}
        reason = check_item(tampered, checkpoint)
        assert reason is not None and reason != ACTOR_NOT_SIGNED
