"""Checks a command must pass before it reaches a citizen's history: numbers, places, times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from vietnam_provinces import Ward

from services.registry.identity import PersonalNumberError, check_personal_number


class InvalidCommandError(ValueError):
    """Bad input: `fields` maps each offending field to what is wrong with it."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def province_of(commune_code: str) -> str:
    """The current province code of a current commune/ward code, or InvalidCommandError."""
    province = province_or_none(commune_code)
    if province is None:
        raise InvalidCommandError({"commune_code": "not a current commune or ward code"})
    return province


@lru_cache(maxsize=8192)  # 3,321 current communes; a lookup imports and scans (~13 µs)
def province_or_none(commune_code: str) -> str | None:
    """The current province code of a current commune/ward code, or None."""
    try:
        ward = Ward.from_code(int(commune_code))  # type: ignore[arg-type]
    except (ValueError, KeyError):
        return None
    return f"{int(ward.province_code):02d}"


def check_time(field: str, value: datetime, campaign_start: datetime, max_future: int) -> None:
    now = datetime.now(UTC)
    if value > now + timedelta(seconds=max_future):
        raise InvalidCommandError({field: f"is more than {max_future} s in the future"})
    if value < campaign_start:
        raise InvalidCommandError({field: "is before the campaign start"})


def check_person(citizen_id: str, date_of_birth: date, sex: str) -> None:
    if date_of_birth > date.today():
        raise InvalidCommandError({"date_of_birth": "is in the future"})
    try:
        check_personal_number(citizen_id, date_of_birth, sex)
    except PersonalNumberError as exc:
        raise InvalidCommandError({"citizen_id": f"{exc} (rule: {exc.rule})"}) from None
