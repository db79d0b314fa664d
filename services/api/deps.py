"""What every route module shares: role requirements, the backbone, times in Vietnam."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import Depends, Request

from services.api.auth import require

COMMANDS = Depends(require("station"))
ADMIN = Depends(require("admin"))
AUDIT = Depends(require("auditor"))
READ = Depends(require("viewer", "auditor", "station"))

VN = timezone(timedelta(hours=7))


def backbone_of(request: Request) -> Any:
    """The `Backbone` the app's lifespan built (registry, read models, feed)."""
    return request.app.state.backbone


def aware(value: datetime) -> datetime:
    """A datetime with a zone; a naive one is read as Vietnam time."""
    return value if value.tzinfo else value.replace(tzinfo=VN)


def vn(value: datetime) -> str:
    return value.astimezone(VN).isoformat()
