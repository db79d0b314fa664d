"""The read model's part of a history read (`audit_routes._shown`): its order, and that it
opens personal fields only for a read whose access record was committed."""

from __future__ import annotations

import uuid
from concurrent.futures import Future
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from services.api.audit_routes import _shown

MARK = datetime(2026, 1, 1, tzinfo=UTC)


def backbone(calls: list[str]) -> Any:
    """A backbone whose parts note in `calls` what they were asked, in order."""
    event = {"sequence": 1, "position": 7, "payload": {"sealed_full_name": "sealed:abc"}}

    def watermark(account_id: str) -> datetime:
        calls.append("watermark")
        return MARK

    def rows(account_id: uuid.UUID) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        calls.append("rows")
        return [dict(event)], []

    def reveal(account_id: uuid.UUID, sealed: str) -> str:
        calls.append("reveal")
        return "Nguyễn Văn A"

    return SimpleNamespace(
        projector=SimpleNamespace(watermark=watermark),
        access_projector=SimpleNamespace(watermark=watermark),
        trail=SimpleNamespace(history_and_reads=rows),
        log=None,
        registry=SimpleNamespace(reveal=reveal),
    )


def recorded(error: Exception | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if error is None:
        future.set_result(("account", {}))
    else:
        future.set_exception(error)
    return future


def test_the_watermarks_are_read_before_the_rows_and_fields_opened_last() -> None:
    calls: list[str] = []

    shown = _shown(backbone(calls), uuid.uuid4(), recorded())

    assert calls == ["watermark", "watermark", "rows", "reveal"]
    assert shown.watermark == shown.reads_watermark == MARK
    assert shown.clear is not None
    assert shown.clear[0]["payload"]["full_name"] == "Nguyễn Văn A"
    assert "full_name" not in shown.events[0]["payload"]  # the rows stay as stored


def test_a_read_whose_record_failed_opens_nothing() -> None:
    calls: list[str] = []

    shown = _shown(backbone(calls), uuid.uuid4(), recorded(OSError("disk full")))

    assert "reveal" not in calls
    assert shown.clear is None
    assert shown.events  # the rows were read (the route answers with the record's error)
