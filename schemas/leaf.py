"""What one leaf of the signed Merkle log commits to: the canonical bytes of one public event.

Standard library only. The signer computes a leaf from the record it maps from the event store,
the API from a read-model row, an auditor or a subscriber from what they were shown or sent:
all of them call `leaf_bytes` on the same fields and must get the same bytes.

The leaf covers everything an auditor is shown for an event: its ids, store position, sequence,
type, event and recording times (UTC milliseconds, what the topic carries), locality, station,
device, operator, channel, phone, the sealed personal number, the payload, the per-account
chain link and, since schema v3, the actor (the principal whose command caused the event) when
one was recorded: an event without one (null or empty) has no `actor` key, so its leaf is the
same bytes as before v3. Personal fields are committed to as their sealed (encrypted) values,
never in clear: a leaf stays verifiable after the citizen's data key is destroyed (erasure),
and says nothing about the citizen to whoever holds the log. The clear values an auditor is
shown beside the sealed ones (`full_name` beside `sealed_full_name`, ...) are decrypted by the
API from them and are not part of the leaf.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

LEAF_VERSION = b"project06.eid/leaf/v1\n"
# Where and with what a registration was taken: read-model columns of their own, and top-level
# leaf fields ("" for other events), so that a row cannot show them without committing to them.
WHERE_FIELDS = ("station_id", "device_id", "operator_id", "channel", "phone")
# Clear values shown beside a sealed one (`sealed_<name>`): derived, not committed.
CLEAR_FIELDS = ("full_name", "date_of_birth", "sex", "reason")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_millis(value: datetime | str | int) -> int:
    """Milliseconds since 1970 UTC (floored, as Avro's timestamp-millis); a naive datetime or
    ISO string without offset is UTC (ClickHouse answers DateTime64 values naive)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value)
    else:
        return int(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def leaf_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    """The committed fields of one event, from a public record (payload as decoded: a dict, or
    the (record name, dict) pair of a union branch) or from a history answer's event (the
    where-fields may sit at the top level or in a registration's payload)."""
    payload = event["payload"]
    if isinstance(payload, tuple | list):
        payload = payload[1]
    payload = dict(payload)
    where = {name: str(event.get(name) or payload.get(name) or "") for name in WHERE_FIELDS}
    for name in WHERE_FIELDS:
        payload.pop(name, None)
    for name in CLEAR_FIELDS:
        if f"sealed_{name}" in payload:
            payload.pop(name, None)
    fields: dict[str, Any] = {
        "event_id": str(event["event_id"]).lower(),
        "event_type": str(event["event_type"]),
        "account_id": str(event["account_id"]).lower(),
        "sequence": int(event["sequence"]),
        "position": int(event["position"]),
        "sealed_citizen_id": str(event.get("sealed_citizen_id") or ""),
        "occurred_at": utc_millis(event["occurred_at"]),
        "recorded_at": utc_millis(event["recorded_at"]),
        "province_code": str(event["province_code"]),
        "commune_code": str(event["commune_code"]),
        **where,
        "payload": payload,
        "previous_hash": str(event.get("previous_hash") or ""),
        "hash": str(event.get("hash") or ""),
    }
    actor = event.get("actor")
    if actor:
        fields["actor"] = str(actor)
    return fields


def without_actor(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """`event` as a leaf signed before schema v3 saw it (no actor), or None if it has none.

    Leaves signed before the leaf committed to the actor stay valid; an event recorded with an
    actor then is shown with it now. Such a leaf proves everything but the actor, and only
    such a leaf: a leaf that commits to an actor never matches the event without it.
    """
    if not event.get("actor"):
        return None
    return {**event, "actor": None}


def leaf_bytes(event: Mapping[str, Any]) -> bytes:
    """The leaf data of one event: a version line, then its committed fields as canonical JSON
    (keys sorted, no spaces, UTF-8). The tree hashes it with `merkle.leaf_hash`."""
    canonical = json.dumps(
        leaf_fields(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return LEAF_VERSION + canonical.encode("utf-8")
