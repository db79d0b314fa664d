"""Command endpoints: each turns a request into a registry command and submits it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from services.api import intake, sync
from services.api.deps import ADMIN, COMMANDS, PersonalNumberPath, backbone_of
from services.api.errors import ApiError
from services.api.models import ActivationIn, DecisionIn, RegistrationIn, StatusChangeIn, TargetIn
from services.api.responses import OrjsonResponse
from services.registry.application import Outcome
from services.registry.reconcile import reconcile

CommunePath = Annotated[str, Path(pattern=r"^[0-9]{5}$")]

router = APIRouter()


def _outcome(outcome: Outcome, status: int = 201) -> OrjsonResponse:
    headers = {"Idempotent-Replayed": "true"} if outcome.duplicate else {}
    return OrjsonResponse(outcome.as_dict(), status_code=status, headers=headers)


@router.post("/v1/registrations", status_code=201, dependencies=[COMMANDS])
async def register(body: RegistrationIn, request: Request) -> OrjsonResponse:
    backbone = backbone_of(request)
    return _outcome(await backbone.submit(intake.registration(body, backbone.settings)))


@router.post("/v1/registrations/{citizen_id}/decision", status_code=201, dependencies=[COMMANDS])
async def decide(
    citizen_id: PersonalNumberPath, body: DecisionIn, request: Request
) -> OrjsonResponse:
    backbone = backbone_of(request)
    return _outcome(await backbone.submit(intake.decision(citizen_id, body, backbone.settings)))


@router.post("/v1/activations", status_code=201, dependencies=[COMMANDS])
async def activate(body: ActivationIn, request: Request) -> OrjsonResponse:
    backbone = backbone_of(request)
    return _outcome(await backbone.submit(intake.activation(body, backbone.settings)))


@router.post("/v1/status-changes", status_code=201, dependencies=[COMMANDS])
async def change_status(body: StatusChangeIn, request: Request) -> OrjsonResponse:
    backbone = backbone_of(request)
    return _outcome(await backbone.submit(intake.status_change(body, backbone.settings)))


@router.post("/v1/sync", dependencies=[COMMANDS])
async def sync_backlog(body: sync.SyncIn, request: Request) -> dict[str, Any]:
    """A device's offline backlog, applied in order; resending all or part is safe."""
    backbone = backbone_of(request)
    prepared = sync.prepare(body, backbone.settings)
    applied = await backbone.submit_backlog(sync.commands_of(prepared))
    return sync.report(body, prepared, applied)


@router.post("/v1/reconciliation/deaths", dependencies=[ADMIN])
async def reconcile_deaths(request: Request) -> dict[str, Any]:
    """A civil-registry CSV (personal_number,date_of_death,registry_reference) as text/csv."""
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_csv", "the body must be UTF-8 CSV") from None
    backbone = backbone_of(request)
    try:
        return await run_in_threadpool(reconcile, backbone.registry, text)
    except ValueError as exc:
        raise ApiError(422, "invalid_csv", str(exc), {"body": str(exc)}) from None


@router.put("/v1/targets/{commune_code}", dependencies=[ADMIN])
async def set_target(commune_code: CommunePath, body: TargetIn, request: Request) -> OrjsonResponse:
    return _outcome(await backbone_of(request).submit(intake.target(commune_code, body)), 200)
