"""Progress against targets: cumulative received / activated per commune, rolled up to provinces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.types import ASGIApp, Receive, Scope, Send
from vietnam_provinces import Province, Ward

from projections.audit import AuditTrail
from services.api.deps import EARLIEST, READ, backbone_of, bounded, vn
from services.api.errors import ApiError
from services.api.models import Instant, WholeNumber
from services.api.responses import OrjsonResponse, errors
from services.registry.application import Registry
from services.registry.targets import Target

METRICS = ("received", "activated")


def commune_name(code: str) -> str:
    return Ward.from_code(int(code)).name  # type: ignore[arg-type]


def province_name(code: str) -> str:
    return Province.from_code(int(code)).name  # type: ignore[arg-type]


def communes_of(province_code: str) -> list[str]:
    wards = Ward.iter_by_province(int(province_code))  # type: ignore[arg-type]
    return sorted(f"{int(w.code):05d}" for w in wards)  # codes are five digits, zero-padded


def _against(counts: dict[str, int], targets: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in METRICS:
        target = targets.get(metric)
        out[metric] = {
            "count": counts.get(metric, 0),
            "target": target["target"] if target else None,
            "deadline": target["deadline"] if target else None,
            "percent": round(100 * counts.get(metric, 0) / target["target"], 1) if target else None,
        }
    return out


def _targets(book: dict[tuple[str, str], Target], commune: str) -> dict[str, Any]:
    found = {}
    for metric in METRICS:
        target = book.get((commune, metric))
        if target is not None:
            found[metric] = {"target": target.target, "deadline": target.deadline}
    return found


def progress(registry: Registry, trail: AuditTrail, level: str, code: str) -> dict[str, Any]:
    """Counts and targets for one commune, or for a province with each of its communes (the
    locality checked by `place`)."""
    counts = trail.cumulative(level, code)
    book = registry.targets()  # every commune's targets: one store query, not two per commune
    communes = [code] if level == "commune" else communes_of(code)
    rows = []
    totals = {m: 0 for m in METRICS}
    target_totals: dict[str, dict[str, Any]] = {}
    for commune in communes:
        targets = _targets(book, commune)
        commune_counts = counts.get(commune, {})
        if level == "province" and not targets and not commune_counts:
            continue
        rows.append(
            {
                "commune_code": commune,
                "name": commune_name(commune),
                **_against(commune_counts, targets),
            }
        )
        for metric in METRICS:
            totals[metric] += commune_counts.get(metric, 0)
            if metric in targets:
                agg = target_totals.setdefault(metric, {"target": 0, "deadline": None})
                agg["target"] += targets[metric]["target"]
                agg["deadline"] = max(filter(None, [agg["deadline"], targets[metric]["deadline"]]))
    name = commune_name(code) if level == "commune" else province_name(code)
    return {
        "level": level,
        "code": code,
        "name": name,
        **_against(totals, target_totals),
        "communes": rows,
    }


LEVEL_DIGITS = {"commune": 5, "province": 2}
Level = Annotated[
    Literal["commune", "province"],
    Query(description="`commune`, or `province` for all its communes"),
]
Code = Annotated[
    str,
    Query(
        pattern=r"^[0-9]{5}$|^[0-9]{2}$",
        description="The locality's current code: five digits with level=commune, two with "
        "level=province (else 422 `code_level_mismatch`); a code no current locality has: "
        "404 `unknown_locality`.",
    ),
]
Since = Annotated[
    Instant | None,
    Query(description="From this instant (RFC 3339, offset required); times before 1900 read "
          "as 1900 (no event is older)."),
]  # fmt: skip
Until = Annotated[
    Instant | None,
    Query(description="Up to this instant, excluded (default: an hour from now); must be after "
          "`since` when both are given (else 422 `invalid_window`)."),
]  # fmt: skip
LOCALITY_ERRORS = {404: ["unknown_locality"], 422: ["invalid_request", "code_level_mismatch"]}


def place(level: Level, code: Code) -> tuple[str, str]:
    """(level, code) of a current locality: 422 if the code does not fit the level, 404 if no
    current commune or province has it."""
    if len(code) != LEVEL_DIGITS[level]:
        raise ApiError(422, "code_level_mismatch", f"code does not fit level {level}",
                       {"code": f"a {level} code has {LEVEL_DIGITS[level]} digits"})  # fmt: skip
    try:
        commune_name(code) if level == "commune" else province_name(code)
    except (KeyError, ValueError):
        raise ApiError(404, "unknown_locality", f"no current {level} has this code") from None
    return level, code


Place = Annotated[tuple[str, str], Depends(place)]


def window(since: datetime | None, until: datetime | None, days: int) -> tuple[datetime, datetime]:
    """[start, end) in UTC: `until` defaults to an hour from now, `since` to `days` before the
    end; both brought inside what the read models hold (an empty window reads nothing)."""
    if since is not None and until is not None and since >= until:
        raise ApiError(422, "invalid_window", "since must be before until",
                       {"since": "must be before until"})  # fmt: skip
    end = bounded(until) if until else datetime.now(UTC) + timedelta(hours=1)
    start = bounded(since) if since else max(end - timedelta(days=days), EARLIEST)
    return start, max(start, end)


def whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The window widened to whole hours: the counts are kept per hour (hourly_totals)."""
    floor = start.replace(minute=0, second=0, microsecond=0)
    ceiling = end.replace(minute=0, second=0, microsecond=0)
    return floor, ceiling if ceiling == end else ceiling + timedelta(hours=1)


class LegacyLocality:
    """The hourly and device reads' former `commune_code=` / `province_code=` (deprecated),
    still answered: rewritten to `level` + `code` before routing; one of them alone, else left
    as it is (and refused for lacking `level` and `code`)."""

    PATHS = frozenset({"/v1/progress/hourly", "/v1/progress/devices"})
    LEVELS = {b"commune_code": b"commune", b"province_code": b"province"}

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.PATHS:
            scope = {**scope, "query_string": self.rewritten(scope["query_string"])}
        await self.app(scope, receive, send)

    @classmethod
    def rewritten(cls, query: bytes) -> bytes:
        parts = query.split(b"&") if query else []
        names = [part.partition(b"=")[0] for part in parts]
        old = [name for name in names if name in cls.LEVELS]
        if len(old) != 1 or b"level" in names or b"code" in names:
            return query
        return b"&".join(
            b"level=%s&code=%s" % (cls.LEVELS[name], part.partition(b"=")[2])
            if name in cls.LEVELS
            else part
            for name, part in zip(names, parts, strict=True)
        )


# The progress-room reads: cumulative against targets, hourly, per device, freshness.
router = APIRouter()


@router.get("/v1/progress", dependencies=[READ], responses=errors(LOCALITY_ERRORS))
def cumulative(request: Request, place: Place) -> dict[str, Any]:
    """Cumulative accounts received (where first registered) and activated, against targets."""
    level, code = place
    backbone = backbone_of(request)
    return progress(backbone.registry, backbone.trail, level, code)


WINDOW_ERRORS = {**LOCALITY_ERRORS, 422: [*LOCALITY_ERRORS[422], "invalid_window"]}


@router.get("/v1/progress/hourly", dependencies=[READ], responses=errors(WINDOW_ERRORS))
def hourly(
    request: Request,
    place: Place,
    since: Since = None,
    until: Until = None,
    by: Literal["event_type", "channel", "phone", "device"] = "event_type",
) -> dict[str, Any]:
    """Counts by the hour events happened (device time), split by `by` (default: the last
    two days)."""
    level, code = place
    start, end = whole_hours(*window(since, until, days=2))
    hours: dict[datetime, dict[str, int]] = {}
    for hour, key, count in backbone_of(request).trail.hourly(level, code, start, end, by):
        hours.setdefault(hour, {})[key] = count
    return {
        "level": level, "code": code, "by": by, "since": start.isoformat(),
        "until": end.isoformat(),
        "hours": [{"hour": vn(hour), "counts": counts, "total": sum(counts.values())}
                  for hour, counts in sorted(hours.items())],
    }  # fmt: skip


@router.get(
    "/v1/progress/devices", dependencies=[READ], responses=errors(WINDOW_ERRORS),
    response_model=dict[str, Any], response_class=OrjsonResponse,
)  # fmt: skip
def devices(
    request: Request, place: Place, since: Since = None, until: Until = None
) -> OrjsonResponse:
    """Per-device daily throughput and idle hours (registrations received; default: the last
    seven days)."""
    level, code = place
    start, end = whole_hours(*window(since, until, days=7))
    days = backbone_of(request).trail.device_days(level, code, start, end)
    # Thousands of device-days for a province's week: rendered by orjson, not validated again.
    return OrjsonResponse({"level": level, "code": code, "days": days})


@router.get(
    "/v1/progress/freshness", dependencies=[READ], responses=errors({422: ["invalid_request"]})
)
def freshness(
    request: Request, minutes: Annotated[int, Query(ge=1, le=1440), WholeNumber] = 60
) -> dict[str, Any]:
    """How long recorded events took to become visible in the counts, over recent minutes."""
    return {"minutes": minutes, **backbone_of(request).trail.freshness(minutes)}
