"""Turns the registry's domain events into the public Avro records of topic citizen-events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from eventsourcing.persistence import Mapper
from eventsourcing.utils import get_topic

from schemas import event_types as types
from schemas.codec import AvroCodec
from services.registry.domain import AccessRecord, Account
from services.registry.identity import event_id

NAMESPACE = "vn.project06.eid."

# Domain event class -> public event type (a retake is a registration received again).
_PUBLIC: dict[type, str] = {
    Account.RegistrationReceived: types.REGISTRATION_RECEIVED,  # type: ignore[attr-defined]
    Account.RegistrationRetaken: types.REGISTRATION_RECEIVED,  # type: ignore[attr-defined]
    Account.RegistrationDecided: types.REGISTRATION_DECIDED,  # type: ignore[attr-defined]
    Account.AccountActivated: types.ACCOUNT_ACTIVATED,  # type: ignore[attr-defined]
    Account.StatusChanged: types.STATUS_CHANGED,  # type: ignore[attr-defined]
    Account.PersonalDataErased: types.PERSONAL_DATA_ERASED,  # type: ignore[attr-defined]
    AccessRecord.HistoryRead: types.HISTORY_READ,  # type: ignore[attr-defined]
}

# The event-store topics the relay publishes; everything else (command receipts) stays inside.
PUBLIC_TOPICS: tuple[str, ...] = tuple(get_topic(cls) for cls in _PUBLIC)


def public_type(event_class: type) -> str:
    """The public event type of a domain event class of the public topics (KeyError if none)."""
    return _PUBLIC[event_class]


def _payload(event: Any, event_type: str) -> dict[str, Any]:
    if event_type == types.REGISTRATION_RECEIVED:
        reg = event.registration
        return {
            "sealed_full_name": reg["sealed_full_name"],
            "sealed_date_of_birth": reg["sealed_date_of_birth"],
            "sealed_sex": reg["sealed_sex"],
            "station_id": reg["station_id"],
            "device_id": reg["device_id"],
            "operator_id": reg["operator_id"],
            "channel": reg["channel"],
            "phone": reg["phone"],
            "attempt": getattr(event, "attempt", 1),
        }
    if event_type == types.REGISTRATION_DECIDED:
        return {"decision": event.decision, "sealed_reason": event.sealed_reason}
    if event_type == types.ACCOUNT_ACTIVATED:
        return {"method": event.method}
    if event_type == types.PERSONAL_DATA_ERASED:
        return {"legal_basis": event.legal_basis, "reference": event.reference}
    if event_type == types.HISTORY_READ:
        return {
            "actor": event.actor,
            "role": event.role,
            "purpose": event.purpose,
            "scope": event.scope,
        }
    return {
        "status": event.status,
        "sealed_reason": event.sealed_reason,
        "source": event.source,
        "account_state": event.account_state,
        "citizen_status": event.citizen_status,
    }


def _subject(event: Any) -> dict[str, str]:
    if hasattr(event, "subject"):
        return event.subject  # type: ignore[no-any-return]
    # The created event holds the citizen and the registration it came from.
    reg = event.registration
    return {
        "sealed_citizen_id": event.sealed_citizen_id,
        "commune_code": reg["commune_code"],
        "province_code": reg["province_code"],
    }


def to_record(event: Any, position: int) -> dict[str, Any]:
    """The public record of one domain event at `position` in the store's total order."""
    event_type = public_type(type(event))
    record_name = types.PAYLOAD_RECORDS[event_type]
    subject = _subject(event)
    record = {
        "event_id": str(event_id(event.originator_id, event.originator_version)),
        "event_type": event_type,
        "occurred_at": datetime.fromisoformat(event.occurred_at),
        "recorded_at": event.timestamp,
        "province_code": subject["province_code"],
        "commune_code": subject["commune_code"],
        "position": position,
        "payload": (NAMESPACE + record_name, _payload(event, event_type)),
    }
    if event_type == types.HISTORY_READ:
        # A read is about an account but not part of its history: no sequence, no chain link,
        # and the personal number is not repeated. Its reader is the payload's `actor` (as
        # before schema v3); the envelope's stays null.
        record.update(
            account_id=event.account_id,
            sequence=0,
            sealed_citizen_id="",
            previous_hash="",
            hash="",
            actor=None,
        )
    else:
        record.update(
            account_id=str(event.originator_id),
            sequence=event.originator_version,
            sealed_citizen_id=subject["sealed_citizen_id"],
            previous_hash=event.link["previous_hash"],
            hash=event.link["hash"],
            # Schema v3: the principal whose command caused it (None: none was recorded, as
            # for events stored before principals existed).
            actor=getattr(event, "actor", "") or None,
        )
    return record


class Outgoing(NamedTuple):
    """One record as the relay sends it."""

    access: bool  # an access record: to the restricted topic, not to every subscriber
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def outgoing(mapper: Mapper[Any], codec: AvroCodec, notification: Any) -> Outgoing:
    """The record of one stored event, the long way: the mapper's domain event, its public
    record, the codec's encoding. Raises whatever they raise."""
    record = to_record(mapper.to_domain_event(notification), notification.id)
    value = codec.encode(record)
    headers = [("event_type", record["event_type"].encode()),
               ("event_id", record["event_id"].encode())]  # fmt: skip
    access = record["event_type"] == types.HISTORY_READ
    return Outgoing(access, record["account_id"].encode(), value, headers)
