"""The per-account hash chain: each event's hash covers its content and the previous hash.

Standard library only, so the write side, the read models and any subscriber compute it alike.
The content is what the public record carries, minus the personal number, the store position
and the server's clock: account_id, sequence, event_type, occurred_at (UTC, milliseconds),
province_code, commune_code and the payload fields.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


def utc_millis(value: str | datetime) -> str:
    """An instant as `YYYY-MM-DDTHH:MM:SS.mmmZ` (milliseconds truncated)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def link_hash(previous: str, content: dict[str, Any]) -> str:
    """sha256 over the previous hash and the canonical JSON of the event's content."""
    canonical = json.dumps(
        {**content, "occurred_at": utc_millis(content["occurred_at"])},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    )  # fmt: skip
    return hashlib.sha256(f"{previous}\n{canonical}".encode()).hexdigest()


def content_of(
    account_id: str, sequence: int, event_type: str, occurred_at: str | datetime,
    province_code: str, commune_code: str, payload: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    return {
        "account_id": str(account_id), "sequence": int(sequence), "event_type": event_type,
        "occurred_at": occurred_at, "province_code": province_code,
        "commune_code": commune_code, "payload": payload,
    }  # fmt: skip


def first_broken_link(events: list[dict[str, Any]]) -> int | None:
    """Index of the first event whose hash or link does not verify, or None if all do.

    Each event dict holds `previous_hash`, `hash` and the fields of `content_of`.
    """
    previous = GENESIS
    for index, event in enumerate(events):
        content = content_of(
            event["account_id"], event["sequence"], event["event_type"], event["occurred_at"],
            event["province_code"], event["commune_code"], event["payload"],
        )  # fmt: skip
        if event["previous_hash"] != previous or link_hash(previous, content) != event["hash"]:
            return index
        previous = event["hash"]
    return None
