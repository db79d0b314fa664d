"""Command endpoints: each turns a request into a registry command and submits it."""

from __future__ import annotations

import csv
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from services.api import intake, sync
from services.api.auth import principal_of
from services.api.deps import ADMIN, COMMANDS, DECIDE, OFFICE, backbone_of, gone
from services.api.errors import DOMAIN_ERRORS, ApiError
from services.api.models import ActivationIn, DecisionIn, RegistrationIn, StatusChangeIn, TargetIn
from services.api.responses import RULE_CODES, OrjsonResponse, errors
from services.credentials import Principal
from services.registry.application import Outcome
from services.registry.commands import Command
from services.registry.reconcile import reconcile
from services.registry.validation import InvalidCommandError, province_of
from services.settings import Settings

if TYPE_CHECKING:
    from services.api.bootstrap import Backbone

CommunePath = Annotated[
    str,
    Path(pattern=r"^[0-9]{5}$", description="a current commune or ward code (else 404)"),
]
# A command: the rules its body can break (422), the citizen's history (409), an unknown citizen.
SEMANTIC = ["invalid_request", "invalid_command"]
# 403 beyond the role: outside the principal's scope, or a decision on one's own registration.
SCOPE = ["forbidden", "out_of_scope"]
LIMIT = {429: ["rate_limited"]}
COMMAND_ERRORS = errors(
    {403: SCOPE, 404: ["account_not_found"], 409: RULE_CODES, 422: SEMANTIC, **LIMIT}, body=True
)
DECISION_ERRORS = errors(
    {403: [*SCOPE, "own_registration"], 404: ["account_not_found"], 409: RULE_CODES,
     422: SEMANTIC, **LIMIT}, body=True,
)  # fmt: skip
REGISTRATION_ERRORS = errors({403: SCOPE, 409: RULE_CODES, 422: SEMANTIC, **LIMIT}, body=True)
STATION = [COMMANDS]  # role and command limit

router = APIRouter()
Intake = Callable[[Any, Settings, Principal], Command]  # a body, settings, sender -> command


def outcome_response(outcome: Outcome, status: int = 201) -> OrjsonResponse:
    headers = {"Idempotent-Replayed": "true"} if outcome.duplicate else {}
    return OrjsonResponse(outcome.as_dict(), status_code=status, headers=headers)


async def submit_counted(backbone: Backbone, kind: str, build: Callable[[], Command]) -> Outcome:
    """Submit the command `build` makes, counting its outcome: created, duplicate, refused
    (invalid, against a rule, or conflicting: answered 4xx) or error (a fault: 5xx)."""
    try:
        outcome = await backbone.submit(build())
    except DOMAIN_ERRORS:
        backbone.metrics.command(kind, "refused")
        raise
    except Exception:
        backbone.metrics.command(kind, "error")
        raise
    backbone.metrics.command(kind, "duplicate" if outcome.duplicate else "created")
    return outcome


async def _command(request: Request, kind: str, intake_of: Intake, body: Any) -> OrjsonResponse:
    """The route body every command endpoint shares: build from the request, submit, answer."""
    backbone = backbone_of(request)
    build = partial(intake_of, body, backbone.settings, principal_of(request))
    return outcome_response(await submit_counted(backbone, kind, build))


@router.post(
    "/v1/registrations", status_code=201, dependencies=STATION, responses=REGISTRATION_ERRORS
)
async def register(body: RegistrationIn, request: Request) -> OrjsonResponse:
    return await _command(request, "registration", intake.registration, body)


@router.post("/v1/decisions", status_code=201, dependencies=[DECIDE], responses=DECISION_ERRORS)
async def decide(body: DecisionIn, request: Request) -> OrjsonResponse:
    """A registration approved or rejected (reviewer; never by whoever took it); the personal
    number is in the body."""
    return await _command(request, "decision", intake.decision, body)


# Retired: the personal number was in the path (plain str: nothing validated or echoed).
@router.post("/v1/registrations/{citizen_id}/decision", status_code=410, include_in_schema=False)
async def decide_gone(citizen_id: str) -> None:
    raise gone("POST /v1/decisions")


@router.post("/v1/activations", status_code=201, dependencies=STATION, responses=COMMAND_ERRORS)
async def activate(body: ActivationIn, request: Request) -> OrjsonResponse:
    return await _command(request, "activation", intake.activation, body)


@router.post(
    "/v1/status-changes", status_code=201, dependencies=[OFFICE],
    responses=COMMAND_ERRORS,
)  # fmt: skip
async def change_status(body: StatusChangeIn, request: Request) -> OrjsonResponse:
    """A status change (registry officer): lock, unlock, revoke, deceased, emigrated, ..."""
    return await _command(request, "status_change", intake.status_change, body)


@router.post("/v1/sync", dependencies=STATION, responses=errors(LIMIT, body=True))
async def sync_backlog(body: sync.SyncIn, request: Request) -> dict[str, Any]:
    """A device's offline backlog, applied in order; resending all or part is safe."""
    backbone = backbone_of(request)
    prepared = sync.prepare(body, backbone.settings, principal_of(request))
    commands = sync.commands_of(prepared)
    try:
        applied = await backbone.submit_backlog(commands)
    except Exception:
        for item, command in zip(body.commands, prepared, strict=True):
            outcome = "refused" if isinstance(command, dict) else "error"
            backbone.metrics.command(_item_type(item), outcome)
        raise
    report = sync.report(body, prepared, applied)
    for item, result in zip(body.commands, report["results"], strict=True):
        backbone.metrics.command(_item_type(item), result["status"])
    return report


def _item_type(item: dict[str, Any]) -> str:
    """A backlog item's command type as a metric label (a bounded set: else "other")."""
    kind = item.get("type")
    return kind if isinstance(kind, str) and kind in sync.ITEM_TYPES else "other"


CSV_HEADER = "personal_number,date_of_death,registry_reference"
CSV_BODY = {
    "required": True,
    "content": {
        "text/csv": {
            "schema": {
                "type": "string",
                "pattern": rf"^{CSV_HEADER}\r?\n",
                "description": f"UTF-8 CSV whose first line is `{CSV_HEADER}`; one death record "
                "per line after it. A line that is not a valid record is reported as invalid "
                "(200); a body that is not CSV at all: 422 `invalid_csv`.",
            }
        }
    },
}


@router.post(
    "/v1/reconciliation/deaths",
    dependencies=[ADMIN],
    openapi_extra={"requestBody": CSV_BODY},
    responses=errors({400: ["invalid_csv"], 413: ["body_too_large"], 422: ["invalid_csv"]}),
)
async def reconcile_deaths(request: Request) -> dict[str, Any]:
    """A civil-registry CSV (personal_number,date_of_death,registry_reference) as text/csv."""
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(
            400, "invalid_csv", "the body must be UTF-8 CSV", {"body": "not UTF-8"}
        ) from None
    backbone = backbone_of(request)
    try:
        return await run_in_threadpool(reconcile, backbone.registry, text, principal_of(request).id)
    except (ValueError, csv.Error) as exc:  # the message names columns, never a value
        raise ApiError(422, "invalid_csv", str(exc), {"body": str(exc)}) from None


@router.put(
    "/v1/targets/{commune_code}",
    dependencies=[ADMIN],
    responses=errors({404: ["unknown_locality"], 409: ["command_id_reused", "concurrent_update"]},
                     body=True),
)  # fmt: skip
async def set_target(commune_code: CommunePath, body: TargetIn, request: Request) -> OrjsonResponse:
    """The commune's target for `metric` (recorded as an event; the latest wins)."""
    try:
        province_of(commune_code)
    except InvalidCommandError:
        raise ApiError(404, "unknown_locality", "no current commune has this code") from None
    build = partial(intake.target, commune_code, body, principal_of(request))
    return outcome_response(await submit_counted(backbone_of(request), "target", build), 200)
