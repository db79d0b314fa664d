"""Turns validated request bodies into registry commands, with the checks that need context."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from services.api.models import (
    ActivationIn,
    DecisionIn,
    RegistrationIn,
    StatusChangeIn,
    TargetIn,
)
from services.registry.commands import (
    ActivateAccount,
    ChangeStatus,
    Command,
    DecideRegistration,
    RegisterCitizen,
    SetTarget,
)
from services.registry.validation import check_person, check_time, province_of
from services.settings import Settings

C = TypeVar("C", bound=Command)


def registration(body: RegistrationIn, settings: Settings) -> RegisterCitizen:
    check_person(body.citizen_id, body.date_of_birth, body.sex)
    province = province_of(body.commune_code)
    _check_time("captured_at", body.captured_at, settings)
    return RegisterCitizen(
        command_id=body.command_id,
        citizen_id=body.citizen_id,
        full_name=body.full_name,
        date_of_birth=body.date_of_birth.isoformat(),
        sex=body.sex,
        commune_code=body.commune_code,
        province_code=province,
        station_id=body.station_id,
        device_id=body.device_id,
        operator_id=body.operator_id,
        channel=body.channel,
        phone=body.phone,
        captured_at=body.captured_at.isoformat(),
    )


def decision(body: DecisionIn, settings: Settings) -> DecideRegistration:
    return _timed(DecideRegistration, body, "decided_at", settings)


def activation(body: ActivationIn, settings: Settings) -> ActivateAccount:
    return _timed(ActivateAccount, body, "activated_at", settings)


def status_change(body: StatusChangeIn, settings: Settings) -> ChangeStatus:
    return _timed(ChangeStatus, body, "effective_at", settings)


def _timed(command: type[C], body: BaseModel, field: str, settings: Settings) -> C:
    """`command` from a body whose fields it shares, its time checked and kept as ISO text."""
    moment = getattr(body, field)
    _check_time(field, moment, settings)
    return command(**{**body.model_dump(), field: moment.isoformat()})


def target(commune_code: str, body: TargetIn) -> SetTarget:
    return SetTarget(
        command_id=body.command_id,
        commune_code=commune_code,
        province_code=province_of(commune_code),
        metric=body.metric,
        target=body.target,
        deadline=body.deadline.isoformat(),
    )


def _check_time(field: str, value, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    check_time(field, value, settings.campaign_start, settings.max_future_seconds)
