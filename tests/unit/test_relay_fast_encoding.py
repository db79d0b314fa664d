"""The relay's direct path gives, byte for byte, the record the long way gives (mapper, mapping,
codec), for every event type; what it does not expect it leaves to the long way."""

from __future__ import annotations

import base64
import os
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from eventsourcing.compressor import ZlibCompressor
from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    Notification,
    UUIDAsHex,
)
from eventsourcing.utils import Environment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import citizen_event_codec
from services.registry.domain import AccessRecord, Account
from services.registry.transcoding import FastTranscoder
from services.relay.direct import DirectEncoder
from services.relay.mapping import outgoing

TEXT = st.text(st.characters(codec="utf-8"), max_size=90)
LONG_TEXT = st.text(st.characters(codec="utf-8"), min_size=60, max_size=3000)
FIELD = st.one_of(TEXT, TEXT, LONG_TEXT)
ACTOR = st.one_of(st.just(""), st.just(None), TEXT)  # None: stored before actors existed
ZONES = [UTC, timezone(timedelta(hours=7)), timezone(timedelta(hours=-9, minutes=-30))]
MOMENT = st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=st.sampled_from(ZONES))
# occurred at, as the registry stores it: ISO text with an offset, to the micro- or millisecond
ISO = st.builds(
    datetime.isoformat, MOMENT, timespec=st.sampled_from(["auto", "milliseconds", "seconds"])
)


def mapper(cipher: bool = True, compressor: bool = False, fast: bool = True) -> Mapper[Any]:
    transcoder = FastTranscoder() if fast else JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    key = base64.b64encode(os.urandom(32)).decode()
    return Mapper(
        transcoder=transcoder,
        compressor=ZlibCompressor() if compressor else None,
        cipher=AESCipher(Environment(env={"CIPHER_KEY": key})) if cipher else None,
    )


MAPPERS = {
    "cipher": mapper(),
    "cipher+zlib": mapper(compressor=True),
    "plain": mapper(cipher=False),
    "library-transcoder": mapper(fast=False),
}


def account_events(text: Callable[[], str], when: Callable[[], str]) -> list[Any]:
    """Every kind of account event, values from `text` and times from `when`: received, decided
    (rejected), received again, decided, activated, status changes of both kinds, revoked,
    erased."""
    place = {"commune_code": text(), "province_code": text()}
    registration = {
        **{f"sealed_{name}": text() for name in ("full_name", "date_of_birth", "sex")},
        **place,
        **{name: text() for name in ("station_id", "device_id", "operator_id", "channel")},
        "phone": text(),
    }

    account = Account.open(uuid.uuid4(), text(), registration, when(), text())
    account.decide("rejected", text(), when(), text())
    account.register_again({**registration, "phone": text()}, when(), text())
    account.decide("approved", text(), when(), text())
    account.activate(text(), when(), text())
    account.change_status("locked", text(), text(), when(), text())
    account.change_status("emigrated", text(), text(), when(), text())
    account.change_status("revoked", text(), text(), when(), text())
    account.erase(text(), text(), when(), text())
    return list(account.collect_events())


def plain_events() -> list[Any]:
    return account_events(
        lambda: f"text-{random.randrange(10**6)}", lambda: datetime.now(UTC).isoformat()
    )


@st.composite
def account_history(draw: st.DrawFn) -> list[Any]:
    events = account_events(lambda: draw(FIELD), lambda: draw(ISO))
    for event in events:
        event.__dict__["timestamp"] = draw(MOMENT)  # recorded at: any time, any offset
        actor = draw(ACTOR)
        if actor is None:
            del event.__dict__["actor"]
        else:
            event.__dict__["actor"] = actor
    return events


def access_event(text: Callable[[], str], when: Callable[[], str]) -> Any:
    place = {"commune_code": text(), "province_code": text()}
    record = AccessRecord(
        account_id=str(uuid.uuid4()), subject=place, actor=text(), role=text(),
        purpose=text(), scope=text(), occurred_at=when(),
    )  # fmt: skip
    (event,) = record.collect_events()
    return event


@st.composite
def access_record(draw: st.DrawFn) -> Any:
    event = access_event(lambda: draw(FIELD), lambda: draw(ISO))
    event.__dict__["timestamp"] = draw(MOMENT)
    return event


def stored(chosen: Mapper[Any], event: Any, position: int) -> Notification:
    """The event as the store gives it back."""
    s = chosen.to_stored_event(event)
    return Notification(
        id=position,
        originator_id=s.originator_id,
        originator_version=s.originator_version,
        topic=s.topic,
        state=s.state,
    )


@pytest.mark.parametrize("name", MAPPERS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=account_history(),
    reads=st.lists(access_record(), min_size=1, max_size=3),
    position=st.integers(1, 2**62),
)
def test_every_event_type_is_encoded_as_the_long_way_encodes_it(
    name: str, history: list[Any], reads: list[Any], position: int
) -> None:
    chosen, codec = MAPPERS[name], citizen_event_codec()
    direct = DirectEncoder(chosen, codec)
    for offset, event in enumerate([*history, *reads]):
        notification = stored(chosen, event, position + offset)

        fast = direct.encode(notification)

        assert fast is not None
        assert fast == outgoing(chosen, codec, notification)


def test_every_public_event_type_is_covered() -> None:
    kinds = {
        type(event) for event in [*plain_events(), access_event(str, datetime.now(UTC).isoformat)]
    }

    assert len(kinds) == 7  # the six public types, a retake being a registration received


def test_the_actor_is_null_when_none_was_recorded() -> None:
    chosen, codec = MAPPERS["cipher"], citizen_event_codec()
    event = plain_events()[0]
    del event.__dict__["actor"]

    fast = DirectEncoder(chosen, codec).encode(stored(chosen, event, 7))

    assert fast is not None
    assert codec.decode(fast.value)["actor"] is None


def unexpected_states() -> dict[str, Any]:
    """Events the direct path must leave to the long way (each alters one stored value)."""
    naive = plain_events()[0]
    naive.__dict__["occurred_at"] = "2025-07-01T09:30:00"  # fastavro reads it as local time
    not_text = plain_events()[1]
    not_text.__dict__["decision"] = 7
    huge = plain_events()[0]
    huge.__dict__["registration"]["phone"] = "x" * 20_000
    no_link = plain_events()[2]
    del no_link.__dict__["link"]
    far = plain_events()[0]
    far.__dict__["attempt"] = 2**40  # beyond Avro's int
    return {"naive time": naive, "not text": not_text, "huge": huge, "no link": no_link,
            "far": far}  # fmt: skip


@pytest.mark.parametrize("case", ["naive time", "not text", "huge", "no link", "far"])
def test_what_it_does_not_expect_goes_the_long_way(case: str) -> None:
    chosen, codec = MAPPERS["cipher"], citizen_event_codec()
    notification = stored(chosen, unexpected_states()[case], 3)

    assert DirectEncoder(chosen, codec).encode(notification) is None


@pytest.mark.parametrize("text", [str, lambda u: u.hex, lambda u: f"{{{u}}}"])
def test_an_originator_id_as_text_goes_the_long_way(text: Callable[[Any], str]) -> None:
    chosen, codec = MAPPERS["cipher"], citizen_event_codec()
    s = stored(chosen, plain_events()[0], 3)
    other = s.__class__(**{**s.__dict__, "originator_id": text(s.originator_id)})

    assert DirectEncoder(chosen, codec).encode(other) is None
    assert outgoing(chosen, codec, other) == outgoing(chosen, codec, s)


def test_a_long_string_is_still_encoded_when_it_fits_the_table() -> None:
    chosen, codec = MAPPERS["cipher"], citizen_event_codec()
    event = plain_events()[0]
    event.__dict__["registration"]["phone"] = "ệ" * 5000  # 15,000 bytes: a 3-byte length
    notification = stored(chosen, event, 3)

    fast = DirectEncoder(chosen, codec).encode(notification)

    assert fast == outgoing(chosen, codec, notification)


def test_another_writer_schema_turns_the_direct_path_off() -> None:
    codec = citizen_event_codec()
    older = type(codec)(codec.writer | {"name": "vn.project06.eid.Other"}, [])

    assert DirectEncoder(MAPPERS["cipher"], older).enabled is False
    assert DirectEncoder(MAPPERS["cipher"], codec).enabled is True
