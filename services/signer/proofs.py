"""The API's side of the signed log: proofs for what a history answer shows, and the verdict.

The verdict compares what the read model shows with what was signed; it never trusts a row's
own hashes. A row is proved when its leaf, recomputed from the row, is in the tree of the
latest checkpoint at the index the signer gave its store position. Completeness comes from two
sources the read model cannot change: the event store (each account event's sequence) and the
signer's index (every signed access record of the account).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from projections.audit import verify_history
from schemas.checkpoint import Checkpoint
from schemas.leaf import utc_millis
from schemas.proofs import ProofReport, check_items, proof_json
from services.signer.tree import IndexedLeaf, StoredCheckpoint, TreeStore


@dataclass(frozen=True)
class SignedView:
    """The checkpoint the proofs are against, and the account's signed leaves not shown."""

    checkpoint: StoredCheckpoint | None
    missing: list[IndexedLeaf]


def attach_proofs(
    tree: TreeStore, account_id: UUID, events: list[dict[str, Any]], reads: list[dict[str, Any]]
) -> SignedView:
    """Give every shown item its `proof` against the latest checkpoint (None while unsigned);
    a row at a position the log signed for no leaf gets a proof with no leaf index."""
    items = [*events, *reads]
    checkpoint = tree.latest_checkpoint()
    if checkpoint is None:
        for item in items:
            item["proof"] = None
        return SignedView(None, [])
    size = checkpoint.size
    index = tree.indexes_of([int(item["position"]) for item in items])
    signed = {p: i for p, i in index.items() if i < size}
    proofs = tree.inclusion_proofs(sorted(set(signed.values())), size)
    last = tree.leaf(size - 1)
    last_signed = last.position if last else 0
    for item in items:
        position = int(item["position"])
        if position in signed:
            item["proof"] = proof_json(signed[position], size, proofs[signed[position]])
        elif position in index or position > last_signed:
            item["proof"] = None  # appended after this checkpoint: the next one covers it
        else:
            item["proof"] = {"leaf_index": None, "tree_size": size, "hashes": []}
    shown = {int(item["position"]) for item in items}
    missing = [leaf for leaf in tree.leaves_of(str(account_id))
               if leaf.index < size and leaf.position not in shown]  # fmt: skip
    return SignedView(checkpoint, missing)


def checkpoint_json(origin: str, checkpoint: StoredCheckpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    body = Checkpoint(origin, checkpoint.size, checkpoint.root)
    return {"origin": origin, "size": checkpoint.size, "root": body.body().split("\n")[2],
            "note": checkpoint.note}  # fmt: skip


def verify_signed_history(
    origin: str,
    events: list[dict[str, Any]],
    reads: list[dict[str, Any]],
    recorded: dict[int, datetime],
    watermark: datetime | None,
    reads_watermark: datetime | None,
    view: SignedView,
) -> dict[str, Any]:
    """The verdict on one answer: `broken` if any shown item is not what was signed (or the
    chain is broken), `incomplete` if something signed or stored is not shown, `pending` if
    one of the account's events is not projected or not signed yet, else `verified`.

    Reads trail by nature (each answer records one more): a read not projected or not signed
    yet is counted (`pending_reads`, `unsigned_reads`), it does not hold the verdict back; a
    signed read the read model should hold by now and does not is `incomplete`.
    """
    base = verify_history(events, recorded, watermark)
    checkpoint = (
        None
        if view.checkpoint is None
        else Checkpoint(origin, view.checkpoint.size, view.checkpoint.root)
    )
    report = check_items(events, "event", checkpoint)
    check_items(reads, "read", checkpoint, report)
    mark = None if reads_watermark is None else utc_millis(reads_watermark)
    reads_missing: list[int] = []
    reads_pending: list[int] = []
    for leaf in view.missing:
        if leaf.kind != "access":
            continue  # account events: the store's sequences say it (missing_sequences)
        late = mark is None or leaf.recorded_ms > mark
        (reads_pending if late else reads_missing).append(leaf.position)
    unsigned_events = [f for f in report.unsigned if f.kind == "event"]
    status = _status(base, report, reads_missing, bool(unsigned_events))
    first = report.failed[0] if report.failed else None
    return {
        **base,
        "status": status,
        "verified": status == "verified",
        "complete": base["complete"] and not reads_missing,
        "first_broken_link": base["first_broken_link"] if first is None else {
            "sequence": first.sequence, "event_id": first.event_id},
        "signed_log": {
            "checkpoint_size": view.checkpoint.size if view.checkpoint else 0,
            "proved": report.proved,
            "unsigned": len(unsigned_events),
            "unsigned_reads": len(report.unsigned) - len(unsigned_events),
            "failed": [f.as_dict() for f in report.failed],
            "missing_reads": reads_missing,
            "pending_reads": len(reads_pending),
            # signed before the log committed to actors (schema v3): all but the actor proved
            "actor_unsigned": [f.position for f in report.actor_unsigned],
        },
    }  # fmt: skip


def _status(
    base: dict[str, Any], report: ProofReport, missing_reads: list[int], unsigned: bool
) -> str:
    if report.failed or not base["chain_intact"]:
        return "broken"
    if base["status"] == "incomplete" or missing_reads:
        return "incomplete"
    if base["status"] == "pending" or unsigned:
        return "pending"
    return "verified"
