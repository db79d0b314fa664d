"""Auditor's command line: print a citizen's timeline and whether its history verifies.

    echo 056090001234 | AUDITOR_TOKEN=... python -m services.auditor --purpose "complaint 2023/118"

The personal number is read from standard input (a process's arguments are visible to every
user of the machine in `ps`); giving it as an argument still works, for scripts that must.

It reads through the HTTP API, so the read is checked against the auditor role and recorded
(who, when, why) like any other. Exit status: 0 verified, 1 not verified, 2 error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import httpx

COLUMNS = ("#", "occurred (device)", "recorded (server)", "event", "commune", "station",
           "device", "operator", "channel", "detail")  # fmt: skip


def fetch(url: str, token: str, citizen_id: str, purpose: str) -> dict[str, Any]:
    response = httpx.post(  # the personal number in the body: never in a URL
        f"{url.rstrip('/')}/v1/citizens/history",
        json={"citizen_id": citizen_id, "purpose": purpose},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    body: dict[str, Any] = response.json()
    if response.status_code != 200:
        error = body.get("error", {})
        code, message = error.get("code"), error.get("message")
        print(f"error {response.status_code}: {code}: {message}", file=sys.stderr)
        raise SystemExit(2)
    return body


def _detail(event: dict[str, Any]) -> str:
    """The payload beyond the columns: the fields the API opened for the auditor (reason,
    sex) in clear; name and date of birth left out as before, sealed values never shown."""
    skip = {"station_id", "device_id", "operator_id", "channel", "phone", "full_name",
            "date_of_birth"}  # fmt: skip
    return ", ".join(
        f"{k}={v}"
        for k, v in event["payload"].items()
        if k not in skip and not k.startswith("sealed_") and v != ""
    )


def timeline(history: dict[str, Any]) -> list[tuple[str, ...]]:
    return [
        (str(e["sequence"]), e["occurred_at"][:19], e["recorded_at"][:19], e["event_type"],
         e["commune_code"], e["station_id"], e["device_id"], e["operator_id"], e["channel"],
         _detail(e))
        for e in history["events"]
    ]  # fmt: skip


def render(rows: list[tuple[str, ...]]) -> str:
    table = [COLUMNS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in table)  # fmt: skip


def verdict(verification: dict[str, Any]) -> str:
    if verification["verified"]:
        return (f"VERIFIED: {verification['events_in_store']} events, chain intact, "
                "none missing")  # fmt: skip
    if verification.get("status") == "pending":
        return (f"PENDING: {verification['pending']} of {verification['events_in_store']} "
                "events recorded but not projected yet; the rest verifies")  # fmt: skip
    parts = ["NOT VERIFIED:"]
    if not verification["chain_intact"]:
        link = verification["first_broken_link"]
        parts.append(f"chain broken at sequence {link['sequence']} (event {link['event_id']});")
    if verification["missing_sequences"]:
        parts.append(f"missing sequences {verification['missing_sequences']};")
    parts.append(f"{verification['events_in_read_model']} of "
                 f"{verification['events_in_store']} events in the read model")  # fmt: skip
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.auditor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "citizen_id",
        nargs="?",
        help="the 12-digit personal identification number (default: read from standard input, "
        "which keeps it out of the process list)",
    )
    parser.add_argument("--purpose", required=True, help="why you read it (recorded)")
    parser.add_argument(
        "--url",
        default=os.environ.get("API_URL", f"http://127.0.0.1:{os.environ.get('API_PORT', '8060')}"),
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("AUDITOR_TOKEN"),
        help="auditor bearer token (default: env AUDITOR_TOKEN)",
    )
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("give --token or set AUDITOR_TOKEN")
    citizen_id = args.citizen_id or sys.stdin.readline().strip()
    if not citizen_id:
        parser.error("give the personal number on standard input")
    try:
        history = fetch(args.url, args.token, citizen_id, args.purpose)
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {args.url}: {exc.__class__.__name__}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"account {history['account_id']}  state {history['state']['account_state']}"
          f"  citizen {history['state']['citizen_status']}")  # fmt: skip
    print(render(timeline(history)))
    print(verdict(history["verification"]))
    raise SystemExit(0 if history["verification"]["verified"] else 1)


if __name__ == "__main__":
    main()
