"""The registry's chain link (orjson when it writes the same canonical JSON) is the one
`schemas.chain.link_hash` computes, for any content."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from schemas import event_types as types
from schemas.chain import GENESIS, content_of, link_hash
from services.registry.domain import Account, _link_hash
from services.registry.transcoding import plain_json


def content(payload: dict[str, Any], occurred_at: Any = "2025-07-01T09:30:00.123456+07:00") -> Any:
    return content_of(str(uuid.UUID(int=5)), 1, "RegistrationReceived", occurred_at,
                      "56", "22420", payload)  # fmt: skip


PAYLOADS: list[dict[str, Any]] = [
    {"sealed_full_name": "sealed:v1:AAA", "attempt": 1, "channel": "station", "phone": ""},
    {"reason": 'Nguyễn Văn An\n\t"quoted" \\ \x00\x1f\x7f\u2028😀', "z": None, "a": True},
    {"b": {"é": 1, "e": 2, "É": [3, (4, 5)], "Z": {"y": -(2**63)}}, "a": []},
    {"ratio": 0.1, "big": 1e16},  # floats: written by link_hash itself
    {"huge": 2**64},  # beyond 64 bits: orjson refuses, link_hash writes it
    {"when": datetime(2025, 7, 1, tzinfo=UTC), "id": uuid.UUID(int=1), "d": Decimal("1.5")},
    {1: "int key"},
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_each_content_links_as_the_chain_module_links_it(payload: dict[str, Any]) -> None:
    for previous in (GENESIS, "ab" * 32):
        assert _link_hash(previous, content(payload)) == link_hash(previous, content(payload))


def test_random_text_and_keys_link_alike() -> None:
    rng = random.Random(21)
    alphabet = [chr(i) for i in range(0x250)] + ["\u2029", "\ufeff", "Ệ", "😀", "\U0001f600"]

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(10)))

    for _ in range(2000):
        payload = {text(): text() for _ in range(rng.randrange(5))}
        payload["nested"] = {text(): [text(), rng.randrange(-(2**40), 2**40)]}
        whole = content(payload, occurred_at=datetime(2025, 1, 2, 3, 4, 5, 678999, tzinfo=UTC))
        assert _link_hash(GENESIS, whole) == link_hash(GENESIS, whole)


def test_what_is_plain_json() -> None:
    assert plain_json({"a": [1, "x", None, True, ("t",)], "b": {"c": -(2**63)}})
    for value in ({"a": 1.0}, {"a": datetime.now(UTC)}, {1: "x"}, {"a": uuid.uuid4()}, {"a": {1}}):
        assert not plain_json(value)


def test_an_accounts_links_are_the_chain_modules() -> None:
    registration = {"sealed_full_name": "sealed:v1:x", "commune_code": "22420",
                    "province_code": "56", "channel": "station"}  # fmt: skip
    account_id = uuid.UUID(int=9)
    account = Account.open(account_id, "sealed:v1:id", registration,
                           "2025-07-01T09:30:00+07:00", actor="st-1")  # fmt: skip
    account.decide("approved", "sealed:v1:r", "2025-07-01T10:00:00+07:00", "rv-1")
    created, decided = account.collect_events()

    def chain(previous: str, sequence: int, kind: str, at: str, payload: dict[str, Any]) -> Any:
        whole = content_of(str(account_id), sequence, kind, at, "56", "22420", payload)
        return {"previous_hash": previous, "hash": link_hash(previous, whole)}

    payload = {"sealed_full_name": "sealed:v1:x", "channel": "station", "attempt": 1}
    first = chain(GENESIS, 1, types.REGISTRATION_RECEIVED, "2025-07-01T09:30:00+07:00", payload)
    assert created.link == first  # type: ignore[attr-defined]
    assert decided.link == chain(  # type: ignore[attr-defined]
        first["hash"],
        2,
        types.REGISTRATION_DECIDED,
        "2025-07-01T10:00:00+07:00",
        {"decision": "approved", "sealed_reason": "sealed:v1:r"},
    )
