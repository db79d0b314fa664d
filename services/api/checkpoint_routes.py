"""The signed log's public face: checkpoints, consistency proofs between them, the public key.

Nothing here is personal: a checkpoint is a tree size and a root hash. An auditor pins the key
once (from a trusted channel, not only from this endpoint), then checks every checkpoint and
proof it gets from here, or from anywhere, against it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from schemas.proofs import proof_json
from services.api.deps import READ, backbone_of
from services.api.errors import ApiError
from services.api.models import WholeNumber
from services.api.responses import errors
from services.signer.proofs import checkpoint_json
from services.signer.signer import VERIFIER_KEY
from services.signer.tree import TreeStore

router = APIRouter(prefix="/v1/checkpoints", tags=["signed log"])
NO_LOG = ["no_signed_log"]


def _log(request: Request) -> TreeStore:
    log = backbone_of(request).log
    if log is None:
        raise ApiError(404, "no_signed_log", "this server keeps no signed log")
    return log


def _origin(request: Request) -> str:
    return backbone_of(request).settings.checkpoint_origin


@router.get("/latest", dependencies=[READ], responses=errors({404: [*NO_LOG, "no_checkpoint"]}))
def latest(request: Request) -> dict[str, Any]:
    """The newest signed checkpoint: origin, tree size, root hash (base64) and the signed note
    (C2SP tlog-checkpoint, Ed25519)."""
    found = checkpoint_json(_origin(request), _log(request).latest_checkpoint())
    if found is None:
        raise ApiError(404, "no_checkpoint", "no checkpoint has been signed yet")
    return found


@router.get("/key", dependencies=[READ], responses=errors({404: [*NO_LOG, "no_key"]}))
def key(request: Request) -> dict[str, Any]:
    """The verifier key of the log (`name+keyid+base64 key`, C2SP signed-note): pin it, then
    check every checkpoint with it."""
    found = _log(request).meta(VERIFIER_KEY)
    if found is None:
        raise ApiError(404, "no_key", "the signer has not started yet")
    return {"origin": _origin(request), "verifier_key": found}


@router.get(
    "/consistency",
    dependencies=[READ],
    responses=errors({404: NO_LOG, 422: ["invalid_request", "invalid_sizes"]}),
)
def consistency(
    request: Request,
    first: Annotated[
        int, Query(alias="from", ge=0, le=2**62, description="older tree size"), WholeNumber
    ],
    second: Annotated[
        int, Query(alias="to", ge=0, le=2**62, description="newer tree size"), WholeNumber
    ],
) -> dict[str, Any]:
    """RFC 9162 consistency proof that the tree of size `to` extends the tree of size `from`
    (both at most the latest checkpoint's size)."""
    log = _log(request)
    newest = log.latest_checkpoint()
    top = newest.size if newest else 0
    if first > second or second > top:
        raise ApiError(
            422, "invalid_sizes", f"need 0 <= from <= to <= {top} (the latest checkpoint)",
            {"from": "at most `to`", "to": f"at most {top}"},
        )  # fmt: skip
    hashes = log.consistency_proof(first, second)
    return {"from": first, "to": second, "hashes": proof_json(0, second, hashes)["hashes"]}


@router.get(
    "/inclusion",
    dependencies=[READ],
    responses=errors({404: [*NO_LOG, "no_checkpoint", "not_signed"], 422: ["invalid_request"]}),
)
def inclusion(
    request: Request,
    position: Annotated[
        int, Query(ge=1, le=2**62, description="the event's store position"), WholeNumber
    ],
    size: Annotated[
        int | None,
        Query(ge=1, le=2**62, description="tree size (default: the latest)"),
        WholeNumber,
    ] = None,
) -> dict[str, Any]:
    """RFC 9162 inclusion proof of the event at a store `position` (the `position` field of every
    record on the topic) in the tree of a signed checkpoint: what a subscriber checks a record
    with (`schemas.leaf.leaf_bytes`, `schemas.merkle.verify_inclusion`)."""
    log = _log(request)
    checkpoint = log.checkpoint(size) if size else log.latest_checkpoint()
    if checkpoint is None:
        raise ApiError(404, "no_checkpoint", "no checkpoint was signed at that size")
    index = log.indexes_of([position]).get(position)
    if index is None or index >= checkpoint.size:
        raise ApiError(404, "not_signed", "no event at this position is in that checkpoint")
    proof = proof_json(index, checkpoint.size, log.inclusion_proof(index, checkpoint.size))
    return {**proof, "checkpoint": checkpoint_json(_origin(request), checkpoint)}


@router.get(
    "/{size}",
    dependencies=[READ],
    responses=errors({404: [*NO_LOG, "no_checkpoint"], 422: ["invalid_request"]}),
)
def at_size(
    request: Request,
    size: Annotated[
        int, Path(ge=0, le=2**62, description="a tree size (number of leaves)"), WholeNumber
    ],
) -> dict[str, Any]:
    """The checkpoint signed at exactly this tree size."""
    found = checkpoint_json(_origin(request), _log(request).checkpoint(size))
    if found is None:
        raise ApiError(404, "no_checkpoint", f"no checkpoint was signed at size {size}")
    return found
