"""Offline sync: one device's backlog applied in order, one result per item, safe to resend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError

from services.api import intake
from services.api.errors import DOMAIN_ERRORS, ApiError, from_domain
from services.api.models import ActivationIn, Body, DecisionIn, Id, RegistrationIn, StatusChangeIn
from services.credentials import Principal
from services.registry.application import Outcome
from services.registry.commands import Command
from services.settings import Settings

MAX_COMMANDS = 5000


class SyncIn(Body):
    device_id: Id
    commands: Annotated[
        list[dict[str, Any]],
        Field(
            max_length=MAX_COMMANDS,
            description="In capture order. Each item: `type` (registration, decision, activation, "
            "status_change) and the fields of that command's body (RegistrationIn, DecisionIn, "
            "ActivationIn, StatusChangeIn); an item that breaks a rule is reported refused in "
            "its result (with the error), the others are applied.",
        ),
    ]


Builder = Callable[[Any, Settings, Principal], Command]
# Item type -> its body, its builder and the role that may send it (admin may send all): a
# station's backlog holds registrations and activations; a decision or status change in it is
# refused (`forbidden`), as it would be at its own endpoint.
ITEM_TYPES: dict[str, tuple[type[BaseModel], Builder, str]] = {
    "registration": (RegistrationIn, intake.registration, "station"),
    "decision": (DecisionIn, intake.decision, "reviewer"),
    "activation": (ActivationIn, intake.activation, "station"),
    "status_change": (StatusChangeIn, intake.status_change, "officer"),
}


def _refused(code: str, message: str, fields: dict[str, str]) -> dict[str, Any]:
    return {"status": "refused", "error": {"code": code, "message": message, "fields": fields}}


def _command(
    item: dict[str, Any], device_id: str, settings: Settings, principal: Principal
) -> Command | dict[str, Any]:
    """The item's command, or the refusal to report for it."""
    item = dict(item)
    kind = item.pop("type", None)
    if not isinstance(kind, str) or kind not in ITEM_TYPES:
        return _refused(
            "invalid_request", "unknown command type", {"type": f"one of {', '.join(ITEM_TYPES)}"}
        )
    model, build, role = ITEM_TYPES[kind]
    if principal.role not in (role, "admin"):
        return _refused("forbidden", f"role {principal.role} may not send {kind}", {"type": kind})
    try:
        body = model.model_validate(item)
    except ValidationError as exc:
        fields = {".".join(str(p) for p in e["loc"]) or "item": e["msg"] for e in exc.errors()}
        return _refused("invalid_request", "the command has invalid fields", fields)
    if getattr(body, "device_id", device_id) != device_id:
        return _refused(
            "device_mismatch",
            "the command was captured on another device",
            {"device_id": "differs from the sync's device_id"},
        )
    try:
        return build(body, settings, principal)
    except ApiError as exc:  # outside the principal's scope
        return _refused(exc.code, exc.message, exc.fields)
    except DOMAIN_ERRORS as exc:
        err = from_domain(exc)
        return _refused(err.code, err.message, err.fields)


def prepare(
    sync: SyncIn, settings: Settings, principal: Principal
) -> list[Command | dict[str, Any]]:
    """Each item's command, or the refusal to report for it (nothing is applied here)."""
    if principal.kind == "device" and sync.device_id != principal.id:
        raise ApiError(403, "out_of_scope", "a device syncs only its own backlog",
                       {"device_id": "outside your scope"})  # fmt: skip
    return [_command(item, sync.device_id, settings, principal) for item in sync.commands]


def commands_of(prepared: list[Command | dict[str, Any]]) -> list[Command]:
    return [c for c in prepared if not isinstance(c, dict)]


def report(
    sync: SyncIn, prepared: list[Command | dict[str, Any]], applied: list[Outcome | Exception]
) -> dict[str, Any]:
    """One result per item, in order (created, duplicate or refused), and a summary."""
    outcomes = iter(applied)
    results = []
    for index, (item, command) in enumerate(zip(sync.commands, prepared, strict=True)):
        outcome = command if isinstance(command, dict) else _result(next(outcomes))
        results.append({"index": index, "command_id": item.get("command_id"), **outcome})
    summary = Counter(item["status"] for item in results)
    return {"device_id": sync.device_id, "summary": dict(summary), "results": results}


def _result(done: Outcome | Exception) -> dict[str, Any]:
    if isinstance(done, Exception):
        err = from_domain(done)
        refused = _refused(err.code, err.message, err.fields)
        if "state" in err.extra:
            refused["error"]["state"] = err.extra["state"]
        return refused
    return {"status": "duplicate" if done.duplicate else "created", "result": done.as_dict()}
