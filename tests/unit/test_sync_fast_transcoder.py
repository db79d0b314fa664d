"""The registry's orjson transcoder writes and reads exactly what the library's JSON one does."""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)

from services.registry.transcoding import FastTranscoder


class Colour(StrEnum):
    RED = "red"


def transcoders() -> tuple[JSONTranscoder, FastTranscoder]:
    made = JSONTranscoder(), FastTranscoder()
    for transcoder in made:
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
            transcoder.register(transcoding)
    return made


STATES: list[Any] = [
    {
        "timestamp": datetime(2025, 7, 1, 2, 30, tzinfo=UTC),
        "registration": {"sealed_full_name": "sealed:v1:abc", "commune_code": "22420"},
        "link": {"previous_hash": "0" * 64, "hash": "f" * 64},
        "attempt": 1,
        "erased": False,
        "actor": None,
        "scope": ("22420", "22421"),
        "names": ["Nguyễn Văn An", 'quote " back \\ slash', "tab\tnew\nline\x00\x1f\x7f\u2028"],
    },
    {"nested": {"id": uuid.UUID(int=7)}, "list": [uuid.UUID(int=8), {"n": 1}]},
    {"amount": Decimal("1.10"), "ratio": 0.1, "big": 10**16 * 1.0, "huge": 2**70, "neg": -(2**64)},
    {"nan": math.nan, "inf": -math.inf},
    {"colour": Colour.RED, "keys": {1: "one", None: "none", 2.5: "half"}},
    {"at": datetime(2025, 7, 1, 2, 30, tzinfo=UTC), "empty": {}, "none": [], "t": ()},
]


@pytest.mark.parametrize("state", STATES, ids=range(len(STATES)))
def test_each_state_is_written_and_read_as_the_library_does(state: Any) -> None:
    library, fast = transcoders()
    written = library.encode(state)

    assert fast.encode(state) == written
    read_by_library, read_fast = library.decode(written), fast.decode(written)
    assert repr(read_fast) == repr(read_by_library)  # NaN != NaN: compare what they are


def test_random_text_is_escaped_alike() -> None:
    library, fast = transcoders()
    rng = random.Random(13)
    alphabet = [chr(i) for i in range(0x250)] + ["\u2029", "\ufeff", "Ệ", "😀"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        state = {"v": text, text: [text, {"k": text}]}
        assert fast.encode(state) == library.encode(state)
        assert fast.decode(library.encode(state)) == state


def test_a_custom_type_inside_lists_and_objects_is_read_back_innermost_first() -> None:
    library, fast = transcoders()
    at = datetime(2025, 7, 1, 2, 30, tzinfo=UTC)
    state = {"outer": [{"when": at, "who": uuid.UUID(int=3)}, [at]], "d": Decimal("2.5")}
    written = library.encode(state)

    assert fast.decode(written) == state == library.decode(written)
    # an object that only looks like an encoded one (three keys) stays an object
    look_alike = b'{"_type_":"uuid_hex","_data_":"00","x":1}'
    assert fast.decode(look_alike) == library.decode(look_alike)
    for text in (b'{"n":[1.0,-0.0,1e400]}', b'{"n":184467440737095516160}', b"[NaN]", b"2.5"):
        assert repr(fast.decode(text)) == repr(library.decode(text))


def test_what_the_library_refuses_is_refused_alike() -> None:
    library, fast = transcoders()
    for state in ({"x": object()}, {"x": [1, {2, 3}]}, {"on": date(2025, 7, 1)}):
        with pytest.raises(TranscodingNotRegisteredError):
            library.encode(state)
        with pytest.raises(TranscodingNotRegisteredError):
            fast.encode(state)
    unknown = b'{"x":{"_type_":"no_such","_data_":1}}'
    with pytest.raises(TranscodingNotRegisteredError):
        fast.decode(unknown)
    with pytest.raises(UnicodeError):
        fast.encode({"x": "\ud800"})  # a lone surrogate: not UTF-8, as with the library
