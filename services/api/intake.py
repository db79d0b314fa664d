"""Turns validated request bodies into registry commands, with the checks that need context."""

from __future__ import annotations

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
    DecideRegistration,
    RegisterCitizen,
    SetTarget,
)
from services.registry.validation import check_person, check_time, province_of
from services.settings import Settings


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


def decision(citizen_id: str, body: DecisionIn, settings: Settings) -> DecideRegistration:
    _check_time("decided_at", body.decided_at, settings)
    return DecideRegistration(
        command_id=body.command_id,
        citizen_id=citizen_id,
        decision=body.decision,
        reason=body.reason,
        decided_at=body.decided_at.isoformat(),
    )


def activation(body: ActivationIn, settings: Settings) -> ActivateAccount:
    _check_time("activated_at", body.activated_at, settings)
    return ActivateAccount(
        command_id=body.command_id,
        citizen_id=body.citizen_id,
        method=body.method,
        activated_at=body.activated_at.isoformat(),
    )


def status_change(body: StatusChangeIn, settings: Settings) -> ChangeStatus:
    _check_time("effective_at", body.effective_at, settings)
    return ChangeStatus(
        command_id=body.command_id,
        citizen_id=body.citizen_id,
        status=body.status,
        reason=body.reason,
        source=body.source,
        effective_at=body.effective_at.isoformat(),
    )


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
