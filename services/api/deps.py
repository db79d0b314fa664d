"""What every route module shares: role requirements, the backbone, times in Vietnam."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Path, Request

from services.api.auth import require
from services.settings import VIETNAM as VN

if TYPE_CHECKING:
    from services.api.bootstrap import Backbone

COMMANDS = Depends(require("station"))
ADMIN = Depends(require("admin"))
AUDIT = Depends(require("auditor"))
READ = Depends(require("viewer", "auditor", "station"))

PersonalNumberPath = Annotated[str, Path(pattern=r"^[0-9]{12}$")]

__all__ = [
    "ADMIN",
    "AUDIT",
    "COMMANDS",
    "READ",
    "PersonalNumberPath",
    "VN",
    "aware",
    "backbone_of",
    "vn",
]


def backbone_of(request: Request) -> Backbone:
    """The `Backbone` the app's lifespan built (registry, read models, feed)."""
    backbone: Backbone = request.app.state.backbone
    return backbone


def aware(value: datetime) -> datetime:
    """A datetime with a zone; a naive one is read as Vietnam time."""
    return value if value.tzinfo else value.replace(tzinfo=VN)


def vn(value: datetime) -> str:
    return value.astimezone(VN).isoformat()
