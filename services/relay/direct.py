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
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import Cipher, JSONTranscoder, Mapper
from eventsourcing.utils import resolve_topic

from schemas import event_types as types
from schemas.codec import SCHEMA_DIR, AvroCodec, load_schema
from services.relay.mapping import PUBLIC_TOPICS, Outgoing, public_type

WRITER_SCHEMA = SCHEMA_DIR / "citizen_event.v3.avsc"  # the layout `_encode` writes


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
_MILLISECOND = timedelta(milliseconds=1)
_ZERO = _NULL = b"\x00"  # the long 0; union branch 0 (null) of `actor`
_STRING = b"\x02"  # union branch 1 (string) of `actor`


class _Unexpected(Exception):
    """A value the direct path does not write: the long way decides."""


def _high(value: int) -> bytes:
    if len(_HIGH) > 1 << 16:
        _HIGH.clear()
    found = _HIGH[value] = _varint(value)
    return found


def _zigzag(value: int, low: int, high: int) -> bytes:
    """The zigzag varint of an integer from `low` to `high`: a table for the low 14 bits;
    what is above them changes seldom from one event to the next (a time every 8 s, a
    position every 8,192)."""
    if type(value) is not int or not low <= value <= high:
        raise _Unexpected
    value = value << 1 if value >= 0 else ((-value) << 1) - 1
    if value < 1 << 14:
        return _SMALL[value]
    return _LOW[value & 0x3FFF] + (_HIGH.get(value >> 14) or _high(value >> 14))


def _long(value: int) -> bytes:
    return _zigzag(value, _LONG_MIN, _LONG_MAX)


def _millis(value: Any) -> bytes:
    """An aware time as timestamp-millis, as fastavro writes it (a naive one it reads as local
    time: not taken here)."""
    if type(value) is not str:
        raise _Unexpected
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise _Unexpected
    # fastavro: (days * 86400 + seconds) * 1000 + int(microseconds / 1000) of the delta
    return _zigzag((moment - _EPOCH) // _MILLISECOND, _LONG_MIN, _LONG_MAX)


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


def _decrypter(cipher: Cipher) -> Callable[[bytes], bytes]:
    """`cipher.decrypt`; for the library's AESCipher (eventsourcing 9.5.6: nonce, tag and
    ciphertext; a new AESGCM each call) the same with one AESGCM for every event."""
    if type(cipher) is not AESCipher:
        return cipher.decrypt
    aead = AESGCM(cipher.key)

    def decrypt(data: bytes) -> bytes:
        if len(data) < 28:
            raise _Unexpected
        return aead.decrypt(data[:12], data[28:] + data[12:28], None)

    return decrypt


class DirectEncoder:
    """Stored events of the public topics to the records the relay sends, without the mapper's
    domain events, the mapping's record dicts or the codec's schema walk."""

    def __init__(self, mapper: Mapper[Any], codec: AvroCodec) -> None:
        self._decrypt = _decrypter(mapper.cipher) if mapper.cipher else None
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
        self._bodies: dict[str, Callable[[dict[str, Any]], tuple[Any, ...]]] = {
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
        if type(originator) is not UUID:
            raise _Unexpected
        version = notification.originator_version
        event_id = _event_id(originator.bytes, version)
        occurred, recorded = _millis(state["occurred_at"]), _millis(_timestamp(state))
        if event_type == types.HISTORY_READ:  # no sequence, no chain, no citizen (mapping.py)
            subject, account = state["subject"], state["account_id"]
            items = [event_id, event_type, account, _ZERO, _long(notification.id), "",
                     occurred, recorded, subject["province_code"], subject["commune_code"],
                     "", "", *_read(state), _NULL]  # fmt: skip
        else:
            account = str(originator)
            if "subject" in state:
                subject = state["subject"]
                citizen = subject["sealed_citizen_id"]
            else:  # the created event: the citizen and the registration it came from
                subject, citizen = state["registration"], state["sealed_citizen_id"]
            link = state["link"]
            items = [event_id, event_type, account, _long(version), _long(notification.id),
                     citizen, occurred, recorded, subject["province_code"],
                     subject["commune_code"], link["previous_hash"], link["hash"],
                     *self._bodies[event_type](state)]  # fmt: skip
            actor = state.get("actor", "") or None
            items += (_NULL,) if actor is None else (_STRING, actor)
        headers = [("event_type", event_type.encode()), ("event_id", event_id.encode())]
        value = _joined(self._header, items)
        return Outgoing(event_type == types.HISTORY_READ, account.encode(), value, headers)


def _joined(header: bytes, items: list[Any]) -> bytes:
    """The header, then each item: a str as an Avro string, bytes as they are (already
    encoded), anything else not taken."""
    parts = [header]
    append = parts.append
    for item in items:
        kind = type(item)
        if kind is str:
            data = item.encode()
            append(_LENGTHS[len(data)])  # IndexError beyond 16 KiB: the long way
            append(data)
        elif kind is bytes:
            append(item)
        else:
            raise _Unexpected
    return b"".join(parts)


# The payload union's branches, in the schema's order: a zigzag varint of the index, then the
# record's fields.


def _registration(state: dict[str, Any]) -> tuple[Any, ...]:
    reg = state["registration"]
    return (b"\x00", reg["sealed_full_name"], reg["sealed_date_of_birth"], reg["sealed_sex"],
            reg["station_id"], reg["device_id"], reg["operator_id"], reg["channel"],
            reg["phone"], _zigzag(state.get("attempt", 1), _INT_MIN, _INT_MAX))  # fmt: skip


def _decision(state: dict[str, Any]) -> tuple[Any, ...]:
    return b"\x02", state["decision"], state["sealed_reason"]


def _activation(state: dict[str, Any]) -> tuple[Any, ...]:
    return b"\x04", state["method"]


def _status(state: dict[str, Any]) -> tuple[Any, ...]:
    return (b"\x06", state["status"], state["sealed_reason"], state["source"],
            state["account_state"], state["citizen_status"])  # fmt: skip


def _erasure(state: dict[str, Any]) -> tuple[Any, ...]:
    return b"\x08", state["legal_basis"], state["reference"]


def _read(state: dict[str, Any]) -> tuple[Any, ...]:
    return b"\x0a", state["actor"], state["role"], state["purpose"], state["scope"]
