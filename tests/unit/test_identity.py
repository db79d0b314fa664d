"""Personal numbers, pseudonyms and event ids."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registry.identity import (
    PersonalNumberError,
    account_id,
    check_personal_number,
    event_id,
)


def test_valid_number_passes() -> None:
    check_personal_number("056090001234", date(1990, 5, 1), "male")
    check_personal_number("079305001234", date(2005, 1, 1), "female")


@pytest.mark.parametrize(
    ("number", "dob", "sex", "rule"),
    [
        ("05609000123", date(1990, 1, 1), "male", "format"),
        ("05609000123x", date(1990, 1, 1), "male", "format"),
        ("003090001234", date(1990, 1, 1), "male", "province_code"),
        ("056290001234", date(1990, 1, 1), "male", "century"),
        ("056190001234", date(1990, 1, 1), "male", "sex"),
        ("056091001234", date(1990, 1, 1), "male", "birth_year"),
    ],
)
def test_invalid_number_names_the_rule(number: str, dob: date, sex: str, rule: str) -> None:
    with pytest.raises(PersonalNumberError) as err:
        check_personal_number(number, dob, sex)
    assert err.value.rule == rule
    assert number not in str(err.value)


@given(st.from_regex(r"^[0-9]{12}$", fullmatch=True))
def test_pseudonym_is_stable_keyed_and_hides_the_number(number: str) -> None:
    a = account_id(number, b"secret-1")
    assert a == account_id(number, b"secret-1")
    assert a != account_id(number, b"secret-2")
    assert number not in str(a).replace("-", "")


def test_event_ids_are_stable_per_version() -> None:
    acc = uuid.uuid4()
    assert event_id(acc, 1) == event_id(acc, 1) != event_id(acc, 2)
