"""Erasure of a citizen's personal data (crypto-shredding), by an administrator, for a legal basis.

The registry records `personal_data_erased` and destroys the citizen's data key: every sealed
field of the account (in the store, on the topic, in the read models, in backups) reads
`[erased]` from then on. Counts, places, times and the hash chains are unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import Field, StrictStr

from services.api.command_routes import outcome_response, submit_counted
from services.api.deps import ADMIN, backbone_of
from services.api.models import Body, Id, Instant, PersonalNumber
from services.api.responses import OrjsonResponse, errors
from services.registry.commands import EraseCitizen

router = APIRouter()


class ErasureIn(Body):
    command_id: Id
    citizen_id: PersonalNumber
    legal_basis: Annotated[StrictStr, Field(min_length=3, max_length=200)]
    reference: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    requested_at: Instant | None = None  # default: now


ERASURE_RULES = ["record_must_be_kept", "personal_data_erased"]
ERASURE_ERRORS = errors(
    {
        404: ["account_not_found"],
        409: ["record_must_be_kept", "command_id_reused", "concurrent_update"],
    },
    body=True,
)


@router.post(
    "/v1/citizens/erasure", status_code=201, dependencies=[ADMIN], responses=ERASURE_ERRORS
)
async def erase(body: ErasureIn, request: Request) -> OrjsonResponse:
    """Erase the citizen's personal data for `legal_basis` (case `reference`): 201 with the
    outcome; a second erasure changes nothing and succeeds; 409 `record_must_be_kept` while
    the account is activated or locked (revoke it first); 404 for an unknown citizen."""
    moment = body.requested_at or datetime.now(UTC)  # not part of the digest: resends match
    command = EraseCitizen(
        command_id=body.command_id,
        citizen_id=body.citizen_id,
        legal_basis=body.legal_basis,
        reference=body.reference,
        requested_at=moment.isoformat(),
        actor=request.state.actor,
    )
    return outcome_response(await submit_counted(backbone_of(request), "erasure", lambda: command))
