"""What every route module shares: role requirements, the backbone, times in Vietnam."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import Depends, Request

from services.api.auth import require
from services.api.errors import ApiError
from services.settings import VIETNAM as VN

if TYPE_CHECKING:
    from services.api.bootstrap import Backbone

COMMANDS = Depends(require("station"))
ADMIN = Depends(require("admin"))
AUDIT = Depends(require("auditor"))
READ = Depends(require("viewer", "auditor", "station"))
# The live feed alone also takes `?token=`: EventSource cannot send an Authorization header.
FEED = Depends(require("viewer", "auditor", "station", query_token=True))

__all__ = [
    "ADMIN",
    "AUDIT",
    "COMMANDS",
    "FEED",
    "READ",
    "VN",
    "aware",
    "backbone_of",
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


def aware(value: datetime) -> datetime:
    """A datetime with a zone; a naive one is read as Vietnam time."""
    return value if value.tzinfo else value.replace(tzinfo=VN)


def vn(value: datetime) -> str:
    return value.astimezone(VN).isoformat()
