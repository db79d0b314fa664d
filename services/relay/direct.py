"""The relay's direct path: a stored event's public record, encoded, straight from its state.

`mapping.to_record` wants a domain event (the mapper decrypts, decodes with its object hook,
builds UUIDs and datetimes and the event object) and `AvroCodec.encode` walks the schema for
each record: together 30 µs an event, as much as the Kafka producer's own send. `DirectEncoder`
decrypts and decompresses with the mapper's own cipher and compressor, reads the state with
orjson and writes the Avro body of `citizen_event.v3.avsc` itself, field by field in the
schema's order: the same bytes (proven in tests/unit/test_relay_fast_encoding.py against the
mapping and the codec, for every event type). Whatever it does not expect (another writer
schema or transcoder, an upcast class version, a value of another type, a naive time, a
number beyond its Avro type) is handed back (`None`): the relay then takes the long way, which
publishes it or stops with the reason, exactly as before (`mapping.outgoing`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder, Mapper
from eventsourcing.utils import resolve_topic

from schemas import event_types as types
from schemas.codec import SCHEMA_DIR, AvroCodec, load_schema
from services.relay.mapping import PUBLIC_TOPICS, Outgoing, public_type

WRITER_SCHEMA = SCHEMA_DIR / "citizen_event.v3.avsc"  # the layout `_body` writes


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_LENGTHS = tuple(_varint(n << 1) for n in range(1 << 14))  # a string's length, zigzag varint
_SMALL = tuple(_varint(n) for n in range(1 << 14))  # a varint below 2**14
_LOW = tuple(bytes((n & 0x7F | 0x80, n >> 7 | 0x80)) for n in range(1 << 14))  # its 2 low bytes
_HIGH: dict[int, bytes] = {}  # varints of what is above the low 14 bits (times, positions)
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NULL = b"\x00"  # union branch 0 (null) of `actor`
_STRING = b"\x02"  # union branch 1 (string) of `actor`


class _Unexpected(Exception):
    """A value the direct path does not write: the long way decides."""


def _unsigned(value: int) -> bytes:
    """The varint of `value` >= 0: a table for the low 14 bits; what is above them changes
    seldom from one event to the next (a time every 8 s, a position every 8,192)."""
    if value < 1 << 14:
        return _SMALL[value]
    high = value >> 14
    found = _HIGH.get(high)
    if found is None:
        if len(_HIGH) > 1 << 16:
            _HIGH.clear()
        found = _HIGH[high] = _varint(high)
    return _LOW[value & 0x3FFF] + found


def _long(value: int) -> bytes:
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        raise _Unexpected
    return _unsigned(value << 1 if value >= 0 else ((-value) << 1) - 1)


def _int(value: int) -> bytes:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise _Unexpected
    return _unsigned(value << 1 if value >= 0 else ((-value) << 1) - 1)


def _strings(parts: list[bytes], *values: Any) -> None:
    for value in values:
        if type(value) is not str:
            raise _Unexpected
        data = value.encode()
        parts.append(_LENGTHS[len(data)])  # IndexError beyond 16 KiB: the long way
        parts.append(data)


def _millis(value: Any) -> bytes:
    """An aware time as timestamp-millis, as fastavro writes it (a naive one it reads as local
    time: not taken here)."""
    if type(value) is not str:
        raise _Unexpected
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise _Unexpected
    delta = moment - _EPOCH
    return _long((delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000)


def _event_id(account: bytes, version: int) -> str:
    """`str(identity.event_id(account, version))`, from the account id's 16 bytes."""
    digest = bytearray(
        hashlib.sha1(account + str(version).encode(), usedforsecurity=False).digest()
    )
    digest[6] = digest[6] & 0x0F | 0x50
    digest[8] = digest[8] & 0x3F | 0x80
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _timestamp(state: dict[str, Any]) -> Any:
    """The ISO text of the library's stored `timestamp` (transcoding `datetime_iso`)."""
    stamp = state["timestamp"]
    if type(stamp) is not dict or len(stamp) != 2 or stamp["_type_"] != "datetime_iso":
        raise _Unexpected
    return stamp["_data_"]


class DirectEncoder:
    """Stored events of the public topics to the records the relay sends, without the mapper's
    domain events, the mapping's record dicts or the codec's schema walk."""

    def __init__(self, mapper: Mapper[Any], codec: AvroCodec) -> None:
        self._decrypt = mapper.cipher.decrypt if mapper.cipher else None
        self._decompress = mapper.compressor.decompress if mapper.compressor else None
        self._header = codec.header
        self._types: dict[str, str] = {}
        for topic in PUBLIC_TOPICS:
            cls = resolve_topic(topic)
            if getattr(cls, "class_version", 1) == 1:  # no upcasting to do
                self._types[topic] = public_type(cls)
        self.enabled = isinstance(mapper.transcoder, JSONTranscoder) and (
            codec.writer == load_schema(WRITER_SCHEMA)
        )
        self._bodies: dict[str, Callable[[list[bytes], dict[str, Any]], None]] = {
            types.REGISTRATION_RECEIVED: _registration,
            types.REGISTRATION_DECIDED: _decision,
            types.ACCOUNT_ACTIVATED: _activation,
            types.STATUS_CHANGED: _status,
            types.PERSONAL_DATA_ERASED: _erasure,
            types.HISTORY_READ: _read,
        }

    def encode(self, notification: Any) -> Outgoing | None:
        """The record of one stored event; None: take the long way (mapper, mapping, codec)."""
        event_type = self._types.get(notification.topic)
        if event_type is None or not self.enabled:
            return None
        try:
            return self._encode(notification, event_type)
        except Exception:  # noqa: BLE001 - whatever it is, the long way publishes it or says why
            return None

    def _encode(self, notification: Any, event_type: str) -> Outgoing:
        data = notification.state
        if self._decrypt is not None:
            data = self._decrypt(data)
        if self._decompress is not None:
            data = self._decompress(data)
        state = orjson.loads(data)
        if type(state) is not dict or "class_version" in state:
            raise _Unexpected
        originator = notification.originator_id
        version = notification.originator_version
        parts = [self._header]
        access = event_type == types.HISTORY_READ
        if access:
            subject, account = state["subject"], state["account_id"]
            event_id = _event_id(originator.bytes, version)
            _strings(parts, event_id, event_type, account)
            parts += (_long(0), _long(notification.id))
            _strings(parts, "")
        else:
            account = str(originator)
            event_id = _event_id(originator.bytes, version)
            _strings(parts, event_id, event_type, account)
            parts += (_long(version), _long(notification.id))
            if "subject" in state:
                subject = state["subject"]
                _strings(parts, subject["sealed_citizen_id"])
            else:  # the created event: the citizen and the registration it came from
                subject = state["registration"]
                _strings(parts, state["sealed_citizen_id"])
        parts += (_millis(state["occurred_at"]), _millis(_timestamp(state)))
        _strings(parts, subject["province_code"], subject["commune_code"])
        if access:
            _strings(parts, "", "")
        else:
            link = state["link"]
            _strings(parts, link["previous_hash"], link["hash"])
        self._bodies[event_type](parts, state)
        actor = None if access else state.get("actor", "") or None
        if actor is None:
            parts.append(_NULL)
        else:
            parts.append(_STRING)
            _strings(parts, actor)
        headers = [("event_type", event_type.encode()), ("event_id", event_id.encode())]
        if type(account) is not str:
            raise _Unexpected
        return Outgoing(access, account.encode(), b"".join(parts), headers)


# The payload union's branches, in the schema's order, each a zigzag varint of its index.


def _registration(parts: list[bytes], state: dict[str, Any]) -> None:
    reg = state["registration"]
    parts.append(b"\x00")
    _strings(parts, reg["sealed_full_name"], reg["sealed_date_of_birth"], reg["sealed_sex"],
             reg["station_id"], reg["device_id"], reg["operator_id"], reg["channel"],
             reg["phone"])  # fmt: skip
    parts.append(_int(state.get("attempt", 1)))


def _decision(parts: list[bytes], state: dict[str, Any]) -> None:
    parts.append(b"\x02")
    _strings(parts, state["decision"], state["sealed_reason"])


def _activation(parts: list[bytes], state: dict[str, Any]) -> None:
    parts.append(b"\x04")
    _strings(parts, state["method"])


def _status(parts: list[bytes], state: dict[str, Any]) -> None:
    parts.append(b"\x06")
    _strings(parts, state["status"], state["sealed_reason"], state["source"],
             state["account_state"], state["citizen_status"])  # fmt: skip


def _erasure(parts: list[bytes], state: dict[str, Any]) -> None:
    parts.append(b"\x08")
    _strings(parts, state["legal_basis"], state["reference"])


def _read(parts: list[bytes], state: dict[str, Any]) -> None:
    parts.append(b"\x0a")
    _strings(parts, state["actor"], state["role"], state["purpose"], state["scope"])
