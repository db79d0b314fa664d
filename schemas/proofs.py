"""Checks an auditor (or the API itself) runs on a history answer: each shown event against a
signed checkpoint, and two checkpoints against each other. Standard library, plus the signature
check of `schemas.checkpoint`.

An event or access record is shown with `proof`: {"leaf_index", "tree_size", "hashes"} (base64
SHA-256 hashes, RFC 9162 inclusion path), or `proof: null` while no checkpoint covers it yet.
Its leaf is recomputed from what is shown (`schemas.leaf.leaf_bytes`): a changed field, a
swapped row or a recomputed chain no longer hashes to the leaf the signer committed to.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.checkpoint import Checkpoint
from schemas.leaf import leaf_bytes, without_actor
from schemas.merkle import leaf_hash, verify_consistency, verify_inclusion


def proof_json(index: int, size: int, hashes: Sequence[bytes]) -> dict[str, Any]:
    return {
        "leaf_index": index,
        "tree_size": size,
        "hashes": [base64.b64encode(h).decode() for h in hashes],
    }


def decode_hashes(encoded: Sequence[str]) -> list[bytes]:
    return [base64.b64decode(h, validate=True) for h in encoded]


@dataclass
class Finding:
    """One shown item that fails, or waits for, the signed log."""

    kind: str  # "event" or "read"
    position: int
    sequence: int
    event_id: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "position": self.position, "sequence": self.sequence,
                "event_id": self.event_id, "reason": self.reason}  # fmt: skip


@dataclass
class ProofReport:
    """What the proofs of one answer showed, against one checkpoint."""

    proved: int = 0
    unsigned: list[Finding] = field(default_factory=list)  # no checkpoint covers them yet
    failed: list[Finding] = field(default_factory=list)
    # Proved by a leaf signed before the leaf committed to the actor (schema v3): everything
    # shown but the actor is proved.
    actor_unsigned: list[Finding] = field(default_factory=list)


# check_item's answer for an item whose leaf was signed before schema v3 (without its actor).
ACTOR_NOT_SIGNED = "proved without its actor: signed before the log committed to actors"


def _finding(kind: str, item: Mapping[str, Any], reason: str) -> Finding:
    return Finding(kind, int(item.get("position", 0)), int(item.get("sequence", 0)),
                   str(item.get("event_id", "")), reason)  # fmt: skip


def check_item(item: Mapping[str, Any], checkpoint: Checkpoint) -> str | None:
    """Why `item` (shown with its proof) is not in the tree of `checkpoint`; None if it is;
    `ACTOR_NOT_SIGNED` if it is as a leaf signed before the log committed to actors."""
    proof = item.get("proof")
    if not isinstance(proof, Mapping):
        return "no proof"
    if proof.get("leaf_index") is None:
        return "not in the signed log: the log holds no such event at this position"
    if proof.get("tree_size") != checkpoint.size:
        return f"proof is for a tree of {proof.get('tree_size')} leaves, not {checkpoint.size}"
    try:
        hashes = decode_hashes(proof.get("hashes") or [])
        index = int(proof["leaf_index"])
        leaf = leaf_hash(leaf_bytes(item))
    except (binascii.Error, KeyError, TypeError, ValueError) as exc:
        return f"proof or event does not parse ({type(exc).__name__})"
    if verify_inclusion(leaf, index, checkpoint.size, hashes, checkpoint.root):
        return None
    legacy = without_actor(item)
    if legacy is not None:
        leaf = leaf_hash(leaf_bytes(legacy))
        if verify_inclusion(leaf, index, checkpoint.size, hashes, checkpoint.root):
            return ACTOR_NOT_SIGNED
    return "does not match the signed log (altered, moved or not the event that was signed)"


def check_items(
    items: Sequence[Mapping[str, Any]],
    kind: str,
    checkpoint: Checkpoint | None,
    report: ProofReport | None = None,
) -> ProofReport:
    """Check every shown item; one without a proof is unsigned (pending), unless the checkpoint
    already covers its leaf (then it should have had one: a failure)."""
    report = report or ProofReport()
    for item in items:
        proof = item.get("proof")
        if proof is None or checkpoint is None:
            report.unsigned.append(_finding(kind, item, "no checkpoint covers it yet"))
            continue
        reason = check_item(item, checkpoint)
        if reason is None or reason == ACTOR_NOT_SIGNED:
            report.proved += 1
            if reason is not None:
                report.actor_unsigned.append(_finding(kind, item, reason))
        else:
            report.failed.append(_finding(kind, item, reason))
    return report


def compare_checkpoints(
    old: Checkpoint, new: Checkpoint, proof: Sequence[bytes] | None
) -> str | None:
    """Why `new` cannot follow `old` (a fork, a rollback), given the consistency proof between
    them (from the smaller to the larger); None if the log only grew (or stayed)."""
    if old.origin != new.origin:
        return f"another log: origin {new.origin!r}, pinned {old.origin!r}"
    if old.size == new.size:
        return None if old.root == new.root else "fork: two checkpoints of one size, two roots"
    small, large = (old, new) if old.size < new.size else (new, old)
    if proof is None:
        return "no consistency proof between the checkpoints"
    if not verify_consistency(small.size, large.size, small.root, large.root, proof):
        if new.size < old.size:
            return "rollback: the new checkpoint is smaller and not a prefix of the one seen"
        return "fork: the new checkpoint does not extend the one seen before"
    return None
