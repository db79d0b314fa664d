"""Auditor's command line: print a citizen's timeline and whether its history verifies.

    echo 056090001234 | AUDITOR_TOKEN=... python -m services.auditor --purpose "complaint 2023/118"

The personal number is read from standard input (a process's arguments are visible to every
user of the machine in `ps`); giving it as an argument still works, for scripts that must.

It reads through the HTTP API, so the read is checked against the auditor role and recorded
(who, when, why) like any other. The answer is then checked here, trusting only the log's
public key pinned in a file the auditor keeps (--key): the checkpoint's signature, each shown
event's Merkle inclusion proof, and the consistency of the checkpoint with the last one this
auditor saw (--state). Pin the key once from a channel you trust (`python -m services.signer
key` on the log's host), or with --pin (trust on first use: it asks the API).

Exit status: 0 verified, 1 not verified (pending, broken, incomplete, forked, rolled back,
not signed by the pinned key), 2 error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from schemas.checkpoint import CheckpointError, parse_verifier_key
from schemas.proofs import decode_hashes
from services.auditor.verify import Seen, verify_answer

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


def _get(url: str, token: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url.rstrip('/')}{path}", params=params,
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    if response.status_code != 200:
        return None
    return response.json()


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--purpose", help="why you read it (recorded); needed to read")
    parser.add_argument(
        "--url",
        default=os.environ.get("API_URL", f"http://127.0.0.1:{os.environ.get('API_PORT', '8060')}"),
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("AUDITOR_TOKEN"),
        help="auditor bearer token (default: env AUDITOR_TOKEN)",
    )
    home = Path(os.environ.get("HOME", ".")) / ".eid-auditor"
    parser.add_argument(
        "--key", type=Path, default=Path(os.environ.get("AUDITOR_KEY_FILE", home / "log.pub")),
        help="the pinned verifier key of the log (default: env AUDITOR_KEY_FILE or %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--state", type=Path,
        default=Path(os.environ.get("AUDITOR_STATE_FILE", home / "last-checkpoint.json")),
        help="where the last verified checkpoint is remembered (default: env "
        "AUDITOR_STATE_FILE or %(default)s)",
    )  # fmt: skip
    parser.add_argument("--pin", action="store_true",
                        help="fetch the log's key from the API into --key and exit (trust on "
                        "first use: compare it with the operator's published key)")  # fmt: skip
    parser.add_argument(
        "--answer", type=Path, help="verify a saved history answer (JSON) instead of reading one"
    )
    parser.add_argument("--save", type=Path, help="also save the answer read to this file")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.token and not args.answer:
        parser.error("give --token or set AUDITOR_TOKEN")
    try:
        if args.pin:
            raise SystemExit(pin(args.url, args.token, args.key))
        verifier = _pinned(args.key)
        history = _answer(parser, args)
        seen = Seen.load(args.state, verifier)
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {args.url}: {exc.__class__.__name__}", file=sys.stderr)
        raise SystemExit(2) from None
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    def consistency(first: int, second: int) -> list[bytes] | None:
        if not args.token:
            return None
        sizes = {"from": first, "to": second}
        found = _get(args.url, args.token, "/v1/checkpoints/consistency", **sizes)
        return None if found is None else decode_hashes(found["hashes"])

    print(f"account {history['account_id']}  state {history['state']['account_state']}"
          f"  citizen {history['state']['citizen_status']}")  # fmt: skip
    print(render(timeline(history)))
    result = verify_answer(history, verifier, seen, consistency)
    print("\n".join(result.lines))
    if result.remember is not None and result.ok:
        result.remember.save(args.state)
    raise SystemExit(0 if result.ok else 1)


def _pinned(path: Path) -> str:
    if not path.exists():
        raise ValueError(
            f"no pinned key at {path}: get the log's verifier key from its operator "
            "(python -m services.signer key) into that file, or use --pin"
        )
    verifier = path.read_text().strip()
    parse_verifier_key(verifier)  # refuses a malformed key now, not after the read
    return verifier


def pin(url: str, token: str, path: Path) -> int:
    found = _get(url, token, "/v1/checkpoints/key")
    if found is None:
        print("error: the API has no log key yet (is its signer running?)", file=sys.stderr)
        return 2
    verifier = str(found["verifier_key"])
    parse_verifier_key(verifier)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verifier + "\n")
    print(f"pinned {verifier} into {path}; compare it with the one the operator publishes")
    return 0


def _answer(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    if args.answer:
        answer: dict[str, Any] = json.loads(args.answer.read_text())
        return answer
    if not args.purpose:
        parser.error("give --purpose (it is recorded with the read)")
    citizen_id = args.citizen_id or sys.stdin.readline().strip()
    if not citizen_id:
        parser.error("give the personal number on standard input")
    history = fetch(args.url, args.token, citizen_id, args.purpose)
    if args.save:
        args.save.write_text(json.dumps(history, ensure_ascii=False, indent=1))
    return history


if __name__ == "__main__":
    main()
