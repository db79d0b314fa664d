"""Erasure of a citizen's personal data (crypto-shredding), by an administrator, for a legal basis.

The registry records `personal_data_erased` and destroys the citizen's data key: every sealed
field of the account (in the store, on the topic, in the read models, in backups) reads
`[erased]` from then on. Counts, places, times and the hash chains are unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import AwareDatetime, Field, StrictStr
from starlette.concurrency import run_in_threadpool

from services.api.deps import ADMIN, backbone_of
from services.api.errors import DOMAIN_ERRORS
from services.api.models import Body, Id, PersonalNumber
from services.api.responses import OrjsonResponse
from services.registry.application import Registry
from services.registry.commands import EraseCitizen
from services.registry.identity import command_uuid

router = APIRouter()


class ErasureIn(Body):
    command_id: Id
    citizen_id: PersonalNumber
    legal_basis: Annotated[StrictStr, Field(min_length=3, max_length=200)]
    reference: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    requested_at: AwareDatetime | None = None  # default: now


def _requested_at(registry: Registry, body: ErasureIn) -> str:
    """The stated time, or now; for a resend that left it out (its command_id already has a
    receipt), the time the erasure was recorded with, so that the resend is recognised."""
    if body.requested_at is not None:
        return body.requested_at.isoformat()
    if command_uuid(body.command_id) not in registry.repository:
        return datetime.now(UTC).isoformat()
    account = registry.account(body.citizen_id)
    if account is not None:
        events: list[Any] = list(registry.events.get(account.id))
        erased = [e.occurred_at for e in events if type(e).__name__ == "PersonalDataErased"]
        if erased:
            return str(erased[-1])
    return datetime.now(UTC).isoformat()


@router.post("/v1/citizens/erasure", status_code=201, dependencies=[ADMIN])
async def erase(body: ErasureIn, request: Request) -> OrjsonResponse:
    """Erase the citizen's personal data for `legal_basis` (case `reference`): 201 with the
    outcome; a second erasure changes nothing and succeeds; 409 `record_must_be_kept` while
    the account is activated or locked (revoke it first); 404 for an unknown citizen."""
    backbone = backbone_of(request)
    requested_at = await run_in_threadpool(_requested_at, backbone.registry, body)
    command = EraseCitizen(
        command_id=body.command_id,
        citizen_id=body.citizen_id,
        legal_basis=body.legal_basis,
        reference=body.reference,
        requested_at=requested_at,
    )
    try:
        outcome = await backbone.submit(command)
    except DOMAIN_ERRORS:
        backbone.metrics.command("erasure", "refused")
        raise
    except Exception:
        backbone.metrics.command("erasure", "error")
        raise
    backbone.metrics.command("erasure", "duplicate" if outcome.duplicate else "created")
    headers = {"Idempotent-Replayed": "true"} if outcome.duplicate else {}
    return OrjsonResponse(outcome.as_dict(), status_code=201, headers=headers)
