"""What every route module shares: role requirements, the backbone, times in Vietnam."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import Depends, Request

from services.api.auth import require
from services.api.errors import ApiError
from services.settings import VIETNAM as VN

if TYPE_CHECKING:
    from services.api.bootstrap import Backbone

# The role matrix (README "Roles"); admin may call everything. Command endpoints are also
# rate-limited per principal (after authentication: the limiter counts the principal's calls),
# in the same dependency (`limited`: one FastAPI dependency per request, not three).
COMMANDS = Depends(require("station", limited=True))  # registrations, activations, sync
DECIDE = Depends(require("reviewer", limited=True))  # decisions
OFFICE = Depends(require("officer", limited=True))  # status changes
ADMIN = Depends(require("admin"))
AUDIT = Depends(require("auditor"))
READERS = ("viewer", "auditor", "station", "reviewer", "officer")
READ = Depends(require(*READERS))
# The live feed alone also takes `?token=`: EventSource cannot send an Authorization header.
FEED = Depends(require(*READERS, query_token=True))

__all__ = [
    "ADMIN",
    "AUDIT",
    "COMMANDS",
    "DECIDE",
    "OFFICE",
    "FEED",
    "READ",
    "VN",
    "backbone_of",
    "bounded",
    "gone",
    "vn",
]


def backbone_of(request: Request) -> Backbone:
    """The `Backbone` the app's lifespan built (registry, read models, feed)."""
    backbone: Backbone = request.app.state.backbone
    return backbone


def gone(replacement: str) -> ApiError:
    """410 for a retired endpoint that carried a personal number in its path; the message
    names the replacement and never the number (nothing of the path is validated or echoed)."""
    return ApiError(
        410,
        "gone",
        f"this endpoint is gone (no personal number in a URL): use {replacement} "
        "with citizen_id in the JSON body",
    )


# The instants the read models can hold (ClickHouse DateTime64: 1900-2299), a day inside.
EARLIEST = datetime(1900, 1, 2, tzinfo=UTC)
LATEST = datetime(2299, 12, 30, tzinfo=UTC)


def bounded(value: datetime) -> datetime:
    """An instant of a read's window in UTC, brought inside what the read models can hold:
    no event lies outside it, so a window reaching further reads the same events."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset
        return EARLIEST if value.year < 5000 else LATEST
    return min(max(utc, EARLIEST), LATEST)


def vn(value: datetime) -> str:
    return value.astimezone(VN).isoformat()
