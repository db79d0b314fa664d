"""The auditor's own check of a history answer: only the pinned public key is trusted.

1. The answer's checkpoint must be signed by the pinned key.
2. Every event and access record shown must be in that checkpoint's tree: its leaf is
   recomputed from what is shown, its inclusion proof checked against the signed root.
3. The account's events must run 1, 2, 3 ... with no gap.
4. The checkpoint must extend the last one this auditor saw (remembered in a state file):
   a consistency proof from the API is checked, so a rolled-back or forked log is caught.
5. The server's own verdict (completeness against the event store) must be `verified`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.checkpoint import Checkpoint, CheckpointError, open_note
from schemas.proofs import check_items, compare_checkpoints

# Fetches the consistency proof between two tree sizes (smaller first); None if unavailable.
ConsistencySource = Callable[[int, int], list[bytes] | None]


@dataclass
class Seen:
    """The newest checkpoint an auditor has verified, as remembered between runs."""

    checkpoint: Checkpoint
    note: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"note": self.note}) + "\n")
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path, verifier: str) -> Seen | None:
        if not path.exists():
            return None
        note = json.loads(path.read_text())["note"]
        return cls(open_note(note, verifier), note)


@dataclass
class Result:
    ok: bool = True
    status: str = "verified"
    lines: list[str] = field(default_factory=list)
    remember: Seen | None = None

    def fail(self, status: str, line: str) -> None:
        """Record a failure; the status is the first failure's."""
        if self.ok:
            self.ok, self.status = False, status
        self.lines.append(line)


def verify_answer(
    answer: dict[str, Any], verifier: str, seen: Seen | None, consistency: ConsistencySource
) -> Result:
    """Check a history answer against the pinned `verifier` key and what was seen before."""
    result = Result()
    shown = answer.get("checkpoint")
    if not shown:
        result.ok, result.status = False, "pending"
        result.lines.append("PENDING: no checkpoint covers this history yet; try again shortly")
        return result
    try:
        checkpoint = open_note(shown["note"], verifier)
    except (CheckpointError, KeyError, TypeError) as exc:
        result.fail("rejected", f"REJECTED: the checkpoint is not signed by the pinned key: {exc}")
        return result
    events, reads = answer.get("events", []), answer.get("reads", [])
    report = check_items(events, "event", checkpoint)
    check_items(reads, "read", checkpoint, report)
    for f in report.failed:
        what = f"sequence {f.sequence}" if f.kind == "event" else f"read at position {f.position}"
        result.fail("broken", f"BROKEN: {f.kind} {what} (event {f.event_id}): {f.reason}")
    sequences = [int(e.get("sequence", 0)) for e in events]
    if sequences != list(range(1, len(sequences) + 1)):
        result.fail("broken", f"BROKEN: the events' sequences {sequences} are not 1..n")
    _against_seen(result, checkpoint, shown["note"], seen, consistency)
    status = answer.get("verification", {}).get("status")
    unsigned = [f for f in report.unsigned if f.kind == "event"]
    if result.ok and unsigned:
        result.ok, result.status = False, "pending"
        result.lines.append(f"PENDING: {len(unsigned)} shown events are not signed yet")
    if result.ok and status != "verified":
        result.ok, result.status = False, str(status)
        result.lines.append(f"NOT VERIFIED: the server reports {status} (see verification)")
    if result.ok:
        result.lines.append(
            f"VERIFIED: {len(events)} events and {report.proved - len(events)} reads are in "
            f"the log signed at size {checkpoint.size} "
            f"(root {base64.b64encode(checkpoint.root).decode()})"
        )
        if len(report.unsigned):
            result.lines.append(f"({len(report.unsigned)} newer reads are not signed yet)")
        if report.actor_unsigned:
            result.lines.append(
                f"({len(report.actor_unsigned)} events were signed before the log committed to "
                "actors: everything shown of them is proved but their actor)"
            )
    return result


def _against_seen(
    result: Result, checkpoint: Checkpoint, note: str, seen: Seen | None,
    consistency: ConsistencySource,
) -> None:  # fmt: skip
    """Compare with the last checkpoint seen; remember the newer one if they agree."""
    if seen is None:
        result.remember = Seen(checkpoint, note)
        return
    old = seen.checkpoint
    proof = None
    if old.size != checkpoint.size:
        proof = consistency(min(old.size, checkpoint.size), max(old.size, checkpoint.size))
    problem = compare_checkpoints(old, checkpoint, proof)
    if problem is None:
        result.remember = Seen(checkpoint, note) if checkpoint.size >= old.size else seen
        return
    status = problem.split(":")[0] if problem.startswith(("fork", "rollback")) else "unchecked"
    result.fail(status, f"{status.upper()}: {problem}")
    result.lines.append(f"checkpoint seen before:\n{seen.note}")
    result.lines.append(f"checkpoint now:\n{note}")
