"""Request bodies and parameters of the HTTP API, validated by pydantic (types, enums, formats).

Every rule the OpenAPI document can state is in the types here (patterns, formats, enums,
lengths, ranges); the rules it can only describe are in the `description` of the field.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
)

from services.registry.identity import BIRTH_PROVINCE_CODES

# RFC 3339 (the `date-time` format of JSON Schema): an offset is required, no Unix timestamps.
RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _rfc3339(value: Any) -> Any:
    if not isinstance(value, str) or not RFC3339.match(value):
        raise ValueError(
            "must be an RFC 3339 date-time with an offset, e.g. 2025-07-01T09:30:00+07:00"
        )
    return value.upper()


def _iso_date(value: Any) -> Any:
    if not isinstance(value, str) or not ISO_DATE.match(value):
        raise ValueError("must be a date YYYY-MM-DD")
    return value


def _whole(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]+", value):
        raise ValueError("must be a whole number")  # not 1.0, 1_0 or " 1"
    return value


def _json_integer(value: Any) -> Any:
    """A JSON integer, 7 or 7.0 (the same number to JSON Schema), never "7" or true."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be an integer")
    return int(value)


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
WholeNumber = BeforeValidator(_whole)
Day = Annotated[date, BeforeValidator(_iso_date)]
CAMPAIGN_TIME = (
    "Not before the campaign start (setting CAMPAIGN_START) and not more than a few minutes in "
    "the future (the server's clock): else 422 `invalid_command` naming this field."
)
CommandTime = Annotated[Instant, Field(description=CAMPAIGN_TIME)]

Id = Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:\-]+$")]
# Digits 1-3: a birth-province code; digit 4: century and sex (0/1: born 1900-1999 male/female,
# 2/3: 2000-2099); 5-6: year of birth; 7-12: serial.
PERSONAL_NUMBER = rf"^({'|'.join(sorted(BIRTH_PROVINCE_CODES))})[0-3][0-9]{{8}}$"
PersonalNumber = Annotated[
    StrictStr,
    Field(
        pattern=PERSONAL_NUMBER,
        description="The 12-digit personal identification number: digits 1-3 a birth-province "
        "code, digit 4 the century and sex (0 / 1: born 1900-1999 male / female, 2 / 3: born "
        "2000-2099), digits 5-6 the last two digits of the year of birth, 7-12 a serial.",
    ),
]
CommuneCode = Annotated[
    StrictStr,
    Field(
        pattern=r"^[0-9]{5}$",
        description="A current commune or ward code (five digits, zero-padded); a code no "
        "current commune has is refused with 422 `invalid_command`.",
    ),
]
Text = Annotated[StrictStr, Field(max_length=500)]
Purpose = Annotated[
    StrictStr, Field(min_length=3, max_length=200, description="why the data is read (recorded)")
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def example(**values: Any) -> ConfigDict:
    """A body's config with one valid example (the document shows it; the fuzzer sends it)."""
    return ConfigDict(json_schema_extra={"examples": [values]})


EXAMPLE_NUMBER = "056090001234"  # born 1990 in province 056, male
EXAMPLE_TIME = "2025-07-01T09:30:00+07:00"


class RegistrationIn(Body):
    model_config = example(
        command_id="reg-0001", citizen_id=EXAMPLE_NUMBER, full_name="Nguyễn Văn An",
        date_of_birth="1990-05-01", sex="male", commune_code="22420", station_id="st-cam-ranh",
        device_id="dev-01", operator_id="op-7", channel="station", phone="smart",
        captured_at=EXAMPLE_TIME,
    )  # fmt: skip
    command_id: Id
    citizen_id: Annotated[
        PersonalNumber,
        Field(
            description="Digits 4-6 must agree with `date_of_birth` and `sex`: else 422 "
            "`invalid_command` naming citizen_id."
        ),
    ]
    full_name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    date_of_birth: Annotated[Day, Field(description="Not in the future (422 `invalid_command`).")]
    sex: Literal["male", "female"]
    commune_code: CommuneCode
    station_id: Id
    device_id: Id
    operator_id: Id = "unknown"
    channel: Literal["station", "home_visit", "mobile_team"]
    phone: Literal["none", "basic", "smart"]
    captured_at: CommandTime


class DecisionIn(Body):
    model_config = example(command_id="dec-0001", citizen_id=EXAMPLE_NUMBER, decision="approved",
                           reason="documents complete",
                           decided_at="2025-07-01T10:00:00+07:00")  # fmt: skip
    command_id: Id
    citizen_id: PersonalNumber
    decision: Literal["approved", "rejected"]
    reason: Text = ""
    decided_at: CommandTime


class ActivationIn(Body):
    model_config = example(command_id="act-0001", citizen_id=EXAMPLE_NUMBER, method="vneid_app",
                           activated_at="2025-07-01T11:00:00+07:00")  # fmt: skip
    command_id: Id
    citizen_id: PersonalNumber
    method: Literal["vneid_app", "assisted"]
    activated_at: CommandTime


class StatusChangeIn(Body):
    model_config = example(command_id="st-0001", citizen_id=EXAMPLE_NUMBER, status="locked",
                           reason="lost phone", source="citizen request",
                           effective_at="2025-07-02T08:00:00+07:00")  # fmt: skip
    command_id: Id
    citizen_id: PersonalNumber
    status: Literal["locked", "unlocked", "revoked", "deceased", "emigrated", "absent", "returned"]
    reason: Text = ""
    source: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    effective_at: CommandTime


class TargetIn(Body):
    model_config = example(command_id="target-0001", metric="received", target=1200,
                           deadline="2025-12-31")  # fmt: skip
    command_id: Id
    metric: Literal["received", "activated"]
    target: Annotated[int, Field(gt=0, le=100_000_000), BeforeValidator(_json_integer)]
    deadline: Day


class HistoryIn(Body):
    """A read of one citizen's history; the personal number travels in the body, never a URL."""

    model_config = example(citizen_id=EXAMPLE_NUMBER, purpose="complaint 2025-118")

    citizen_id: PersonalNumber
    purpose: Purpose


class StateIn(Body):
    """A read of one citizen's account state as of an instant (default now)."""

    model_config = example(citizen_id=EXAMPLE_NUMBER, purpose="complaint 2025-118",
                           as_of="2025-07-01T12:00:00+07:00")  # fmt: skip

    citizen_id: PersonalNumber
    purpose: Purpose
    as_of: Instant | None = None
