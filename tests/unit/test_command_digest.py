"""The command digest stored in receipts: the same bytes as the first implementation's, so
that a resend after an upgrade still matches its receipt."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.registry.commands import (
    PERSONAL,
    SENDER,
    ActivateAccount,
    ChangeStatus,
    Command,
    DecideRegistration,
    EraseCitizen,
    RegisterCitizen,
    SetTarget,
)

KEY = b"k" * 32


def reference_digest(command: Command, key: bytes) -> str:
    """The digest as first written (dataclasses.asdict, fields popped, sorted keys)."""
    body = dataclasses.asdict(command)
    for name in ("command_id", *SENDER, *command.undigested):
        body.pop(name)
    body["kind"] = command.kind
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def reference_registration(command: RegisterCitizen) -> dict[str, Any]:
    body = dataclasses.asdict(command)
    for name in ("command_id", "citizen_id", "captured_at", *SENDER, *PERSONAL):
        body.pop(name)
    return body


def registration(**changes: Any) -> RegisterCitizen:
    fields: dict[str, Any] = {
        "citizen_id": "056090001234", "full_name": "Nguyễn Văn Ánh",
        "date_of_birth": "1990-05-01", "sex": "female", "commune_code": "22420",
        "province_code": "56", "station_id": "st-1", "device_id": "dev-1",
        "operator_id": "op-1", "channel": "station", "phone": "smart",
        "captured_at": "2023-06-27T09:00:00+07:00", "actor": "st",
        "scope_communes": ("22420",), "scope_province": "56",
    }  # fmt: skip
    return RegisterCitizen("c-1", **{**fields, **changes})


# Computed with the first implementation (dataclasses.asdict): these bytes must not change.
GOLDEN = [
    (registration(), "0e7bb8fb6639e508ed7ef0e2a189dca62e8647da9af121e169442e019a25881b"),
    (
        ChangeStatus(
            "c-2",
            citizen_id="056090001234",
            status="locked",
            reason="Mất thẻ \u0000 \U0001f600",
            source="police",
            effective_at="2023-06-28T09:00:00+07:00",
        ),  # fmt: skip
        "44f59ffbe12d43d5e72f8dd482195199aae52ec0db7f8dd0dd7512186ee82ae0",
    ),
    (
        EraseCitizen(
            "c-3",
            citizen_id="056090001234",
            legal_basis="consent",
            reference="r-1",
            requested_at="2024-01-01T00:00:00Z",
        ),  # fmt: skip
        "0e8501118fc4c15f07829c6297d32d4d04e76e1484be739d1a041ea7385fbf13",
    ),
    (
        SetTarget(
            "c-4",
            commune_code="22420",
            province_code="56",
            metric="activated",
            target=1200,
            deadline="2024-12-31",
        ),  # fmt: skip
        "2e374017df9dbe1866ec7713823ab9075c8d5b055e11d73805e592570a85db79",
    ),
]


@pytest.mark.parametrize(("command", "digest"), GOLDEN)
def test_digest_is_the_one_stored_before(command: Command, digest: str) -> None:
    assert command.digest(KEY) == digest == reference_digest(command, KEY)


class Colour(enum.StrEnum):
    RED = "red"


@dataclass(frozen=True)
class Place:
    commune: str
    codes: tuple[str, ...]
    extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class Odd(Command):
    """Fields of every shape a command could carry (nested, None, containers, enums)."""

    kind: ClassVar[str] = "odd"
    undigested: ClassVar[tuple[str, ...]] = ("skipped",)
    place: Any = None
    items: Any = None
    flag: Any = None
    number: Any = None
    skipped: Any = None


ODD = [
    Odd("o-1"),
    Odd("o-2", place=Place("22420", ("a", "ẞ")), items=[1, 2.5, None, "ü"], flag=True),
    Odd("o-3", place=Place("x", (), {"z": [Place("y", ("1",))], "a": None}), number=-7),
    Odd("o-4", items=({"b": 1, "a": (2, 3)},), flag=False, number=1e300, skipped="gone"),
    Odd("o-5", place=Colour.RED, items=Colour.RED, actor="someone", scope_communes=("1",)),
    Odd("o-6", place="\u0000\ud7ff\U0010ffff", number=2**62, flag=None),
]


@pytest.mark.parametrize("command", ODD)
def test_digest_of_nested_none_and_unicode_fields_is_unchanged(command: Command) -> None:
    assert command.digest(KEY) == reference_digest(command, KEY)


def test_digest_ignores_sender_and_undigested_fields() -> None:
    assert Odd("o", skipped=1, actor="a").digest(KEY) == Odd("o-other", skipped=2).digest(KEY)
    assert Odd("o", number=1).digest(KEY) != Odd("o", number=2).digest(KEY)


text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(text, min_size=12, max_size=12), st.integers(-(2**63), 2**63 - 1), text)
def test_digest_and_registration_of_any_command_are_unchanged(
    values: list[str], number: int, other: str
) -> None:
    reg = registration(**dict(zip(
        ("citizen_id", "full_name", "date_of_birth", "sex", "commune_code", "province_code",
         "station_id", "device_id", "operator_id", "channel", "phone", "captured_at"),
        values, strict=True,
    )))  # fmt: skip
    commands: list[Command] = [
        reg,
        DecideRegistration(other, citizen_id=values[0], decision=values[1], reason=values[2],
                           decided_at=values[3]),
        ActivateAccount(other, citizen_id=values[0], method=values[4], activated_at=values[5]),
        ChangeStatus(other, citizen_id=values[0], status=values[6], reason=values[7],
                     source=values[8], effective_at=values[9]),
        EraseCitizen(other, citizen_id=values[0], legal_basis=values[10],
                     reference=values[11], requested_at=other),
        SetTarget(other, commune_code=values[0], province_code=values[1], metric=values[2],
                  target=number, deadline=values[3]),
    ]  # fmt: skip
    for command in commands:
        assert command.digest(KEY) == reference_digest(command, KEY)
    seal = "sealed:{}".format
    assert reg.registration(seal) == {
        **{f"sealed_{name}": seal(getattr(reg, name)) for name in PERSONAL},
        **reference_registration(reg),
    }
    assert list(reg.registration(seal)) == [*(f"sealed_{n}" for n in PERSONAL),
                                            *reference_registration(reg)]  # fmt: skip
