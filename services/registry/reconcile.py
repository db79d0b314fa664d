"""Civil-registry reconciliation: death records in, idempotent `deceased` status changes out.

    python -m services.registry.reconcile deaths.csv

The CSV has a header with `personal_number,date_of_death,registry_reference`. Each record becomes
a status change whose command id is derived from the registry reference, so a file can be
re-run safely. The report counts matched (newly recorded), already recorded, unknown (no
account for that number) and invalid rows; it names rows by line, never by personal number.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import Counter
from datetime import date
from typing import Any

import orjson

from services.registry.application import Registry
from services.registry.commands import ChangeStatus
from services.registry.domain import DECEASED, RuleViolationError

COLUMNS = ("personal_number", "date_of_death", "registry_reference")
ACTOR = "death-record-reconciliation"  # the recorded actor when run from the command line


def _check(row: dict[str, str]) -> str | None:
    """What is wrong with a row, or None."""
    number = (row.get("personal_number") or "").strip()
    if len(number) != 12 or not number.isdigit():
        return "personal_number must be 12 digits"
    try:
        if date.fromisoformat((row.get("date_of_death") or "").strip()) > date.today():
            return "date_of_death is in the future"
    except ValueError:
        return "date_of_death must be YYYY-MM-DD"
    if not (row.get("registry_reference") or "").strip():
        return "registry_reference is empty"
    return None


def _apply(registry: Registry, row: dict[str, str], actor: str) -> tuple[str, str | None]:
    number = row["personal_number"].strip()
    account = registry.account(number)
    if account is None:
        return "unknown", None
    reference = row["registry_reference"].strip()
    command = ChangeStatus(
        command_id=f"death-record:{reference}", citizen_id=number, status="deceased",
        reason=f"death record {reference}", source="civil_registry",
        effective_at=f"{row['date_of_death'].strip()}T00:00:00+07:00", actor=actor,
    )  # fmt: skip
    if account.citizen_status == DECEASED:
        return "already_recorded", None
    try:
        outcome = registry.handle(command)
    except RuleViolationError as exc:
        return "invalid", exc.message
    return ("already_recorded" if outcome.duplicate else "matched"), None


def reconcile(registry: Registry, text: str, actor: str = ACTOR) -> dict[str, Any]:
    """Apply every death record of a CSV text, recorded as done by `actor`; returns the report."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"CSV header lacks {', '.join(missing)}")
    counts: Counter[str] = Counter()
    problems = []
    for line, row in enumerate(reader, start=2):
        problem = _check(row)
        status, detail = ("invalid", problem) if problem else _apply(registry, row, actor)
        counts[status] += 1
        if detail:
            problems.append({"line": line, "status": status, "reason": detail})
    summary = {k: counts.get(k, 0) for k in ("matched", "already_recorded", "unknown", "invalid")}
    return {**summary, "rows": sum(counts.values()), "problems": problems}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.registry.reconcile",
        description="Record civil-registry death records as `deceased` status changes "
        "(idempotent by registry reference). Reads the event store chosen by VAR_DIR / "
        "PERSISTENCE_MODULE / SQLITE_DBNAME.",
    )
    parser.add_argument(
        "csv",
        type=argparse.FileType("r", encoding="utf-8"),
        help="CSV with personal_number,date_of_death,registry_reference ('-' = stdin)",
    )
    args = parser.parse_args(argv)
    from services.settings import Settings

    try:
        report = reconcile(Registry(Settings.from_env()), args.csv.read())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
