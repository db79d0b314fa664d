"""Turns validated request bodies into registry commands, with the checks that need context:
the time, and the scope of the principal who sends them (refused with 403 before submission)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from services.api.errors import ApiError
from services.api.models import (
    ActivationIn,
    DecisionIn,
    RegistrationIn,
    StatusChangeIn,
    TargetIn,
)
from services.credentials import Principal
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


def out_of_scope(field: str, message: str) -> ApiError:
    return ApiError(403, "out_of_scope", message, {field: "outside your scope"})


def check_where(body: RegistrationIn, province: str, principal: Principal) -> None:
    """The station, commune, device and operator a registration names are the principal's."""
    if principal.station_id and body.station_id != principal.station_id:
        raise out_of_scope("station_id", "you may only register for your own station")
    if not principal.serves(body.commune_code, province):
        raise out_of_scope("commune_code", "your station does not serve this commune")
    if principal.kind == "device" and body.device_id != principal.id:
        raise out_of_scope("device_id", "a device registers only as itself")
    if principal.kind == "operator" and body.operator_id != principal.id:
        raise out_of_scope("operator_id", "an operator registers only as themself")


def registration(body: RegistrationIn, settings: Settings, principal: Principal) -> RegisterCitizen:
    check_person(body.citizen_id, body.date_of_birth, body.sex)
    province = province_of(body.commune_code)
    check_where(body, province, principal)
    _check_time("captured_at", body.captured_at, settings)
    return RegisterCitizen(
        **_sender(principal),
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


def decision(body: DecisionIn, settings: Settings, principal: Principal) -> DecideRegistration:
    return _timed(DecideRegistration, body, "decided_at", settings, principal)


def activation(body: ActivationIn, settings: Settings, principal: Principal) -> ActivateAccount:
    return _timed(ActivateAccount, body, "activated_at", settings, principal)


def status_change(body: StatusChangeIn, settings: Settings, principal: Principal) -> ChangeStatus:
    return _timed(ChangeStatus, body, "effective_at", settings, principal)


def _sender(principal: Principal) -> dict[str, Any]:
    """Who sends a command and where they may act: checked against the account it is about."""
    return {
        "actor": principal.id,
        "scope_communes": principal.communes,
        "scope_province": principal.province,
    }


def _timed(
    command: type[C], body: BaseModel, field: str, settings: Settings, principal: Principal
) -> C:
    """`command` from a body whose fields it shares, its time checked and kept as ISO text."""
    moment = getattr(body, field)
    _check_time(field, moment, settings)
    return command(**{**body.model_dump(), field: moment.isoformat()}, **_sender(principal))


def target(commune_code: str, body: TargetIn, principal: Principal) -> SetTarget:
    return SetTarget(
        actor=principal.id,
        command_id=body.command_id,
        commune_code=commune_code,
        province_code=province_of(commune_code),
        metric=body.metric,
        target=body.target,
        deadline=body.deadline.isoformat(),
    )


def _check_time(field: str, value, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    check_time(field, value, settings.campaign_start, settings.max_future_seconds)
