"""Request bodies of the HTTP API, validated by pydantic (types, enums, formats)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr

Id = Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:\-]+$")]
PersonalNumber = Annotated[StrictStr, Field(pattern=r"^[0-9]{12}$")]
Text = Annotated[StrictStr, Field(max_length=500)]
Purpose = Annotated[
    StrictStr, Field(min_length=3, max_length=200, description="why the data is read (recorded)")
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RegistrationIn(Body):
    command_id: Id
    citizen_id: PersonalNumber
    full_name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    date_of_birth: date
    sex: Literal["male", "female"]
    commune_code: Annotated[StrictStr, Field(pattern=r"^[0-9]{5}$")]
    station_id: Id
    device_id: Id
    operator_id: Id = "unknown"
    channel: Literal["station", "home_visit", "mobile_team"]
    phone: Literal["none", "basic", "smart"]
    captured_at: AwareDatetime


class DecisionIn(Body):
    command_id: Id
    citizen_id: PersonalNumber
    decision: Literal["approved", "rejected"]
    reason: Text = ""
    decided_at: AwareDatetime


class ActivationIn(Body):
    command_id: Id
    citizen_id: PersonalNumber
    method: Literal["vneid_app", "assisted"]
    activated_at: AwareDatetime


class StatusChangeIn(Body):
    command_id: Id
    citizen_id: PersonalNumber
    status: Literal["locked", "unlocked", "revoked", "deceased", "emigrated", "absent", "returned"]
    reason: Text = ""
    source: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    effective_at: AwareDatetime


class TargetIn(Body):
    command_id: Id
    metric: Literal["received", "activated"]
    target: Annotated[StrictInt, Field(gt=0, le=100_000_000)]
    deadline: date


class HistoryIn(Body):
    """A read of one citizen's history; the personal number travels in the body, never a URL."""

    citizen_id: PersonalNumber
    purpose: Purpose


class StateIn(Body):
    """A read of one citizen's account state as of an instant (default now; naive = Vietnam)."""

    citizen_id: PersonalNumber
    purpose: Purpose
    as_of: datetime | None = None
