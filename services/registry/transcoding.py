"""The eventsourcing library's JSON format of stored event state, written and read by orjson.

`JSONTranscoder` (eventsourcing 9.5.6) encodes with the standard `json` module (compact
separators, UTF-8, a custom type as `{"_type_": name, "_data_": value}`) and decodes with an
object hook; on a 5,000-command backlog that is a tenth of the writer's time. `FastTranscoder`
gives the same bytes and the same objects: orjson for state made only of the types both write
alike (str, int, bool, None, lists, tuples, dicts with str keys, and datetimes, which orjson
hands to the same transcoding), the library's own encoder for anything else (a float, a UUID,
a Decimal, a subclass, an int beyond 64 bits, ...), and to read anything orjson will not
read or reads otherwise (NaN, a float, an int beyond 64 bits).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder

_SCALARS: frozenset[type] = frozenset({str, int, bool, type(None), datetime})
_ENCODE_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME  # a datetime goes to the registered transcoding


def _plain(value: Any, scalars: frozenset[type] = _SCALARS) -> bool:
    """Whether orjson writes `value` exactly as the library's encoder would: made only of
    `scalars`, lists, tuples and dicts with str keys."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) not in scalars and not _plain(item, scalars)):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # noqa: SIM110 - a loop: all() over a generator is slower here
            if type(item) not in scalars and not _plain(item, scalars):
                return False
        return True
    return kind in scalars


_JSON_SCALARS: frozenset[type] = frozenset({str, int, bool, type(None)})


def plain_json(value: Any) -> bool:
    """Whether `orjson.dumps(value)` is `json.dumps(value, separators=(",", ":"),
    ensure_ascii=False)` encoded as UTF-8, whatever `default` the latter has, with keys sorted
    (OPT_SORT_KEYS, sort_keys=True) or not: str, int (within 64 bits, else orjson refuses),
    bool, None, lists, tuples and dicts with str keys, nothing else (no float: the two write
    some differently)."""
    return _plain(value, _JSON_SCALARS)


class FastTranscoder(JSONTranscoder):
    """`JSONTranscoder`'s format and transcodings, by orjson where that gives the same result."""

    def encode(self, obj: Any) -> bytes:
        if _plain(obj):
            try:
                return orjson.dumps(obj, default=self._encode_obj, option=_ENCODE_OPTIONS)
            except orjson.JSONEncodeError:  # e.g. an int beyond 64 bits: as the library does
                pass
        return super().encode(obj)

    def decode(self, data: bytes) -> Any:
        try:
            return self._hooked(orjson.loads(data))
        except (orjson.JSONDecodeError, _FloatError):  # as the library reads them
            return super().decode(data)

    def _hooked(self, obj: Any) -> Any:
        """`obj` as the library's object hook leaves it: every object, innermost first, turned
        into the custom type it names, if it names one. A float (or an integer beyond 64 bits,
        which orjson reads as one) raises _FloatError: the library's decoder reads those."""
        kind = type(obj)
        if kind is dict:
            for key, value in obj.items():
                if type(value) in _CONTAINERS_AND_FLOAT:
                    obj[key] = self._hooked(value)
            if len(obj) == 2 and "_type_" in obj and "_data_" in obj:
                return self._decode_obj(obj)
        elif kind is list:
            for index, value in enumerate(obj):
                if type(value) in _CONTAINERS_AND_FLOAT:
                    obj[index] = self._hooked(value)
        elif kind is float:
            raise _FloatError
        return obj


class _FloatError(Exception):
    """Decoded state holds a float: read by the library's decoder instead."""


_CONTAINERS_AND_FLOAT = frozenset({dict, list, float})
