"""Progress against targets: cumulative received / activated per commune, rolled up to provinces."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from vietnam_provinces import Province, Ward

from projections.audit import AuditTrail
from services.api.deps import READ, VN, aware, backbone_of, vn
from services.api.errors import ApiError
from services.registry.application import Registry

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


def _targets(registry: Registry, commune: str) -> dict[str, Any]:
    found = {}
    for metric in METRICS:
        target = registry.target(commune, metric)
        if target is not None:
            found[metric] = {"target": target.target, "deadline": target.deadline}
    return found


def progress(registry: Registry, trail: AuditTrail, level: str, code: str) -> dict[str, Any]:
    """Counts and targets for one commune, or for a province with each of its communes."""
    counts = trail.cumulative(level, code)
    communes = [code] if level == "commune" else communes_of(code)
    rows = []
    totals = {m: 0 for m in METRICS}
    target_totals: dict[str, dict[str, Any]] = {}
    for commune in communes:
        targets = _targets(registry, commune)
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


def device_days(rows: list[tuple[str, str, datetime, int]]) -> list[dict[str, Any]]:
    """Per device and local day: registrations, working span, and idle hours inside the span.

    An idle hour is a clock hour between the device's first and last registration of the day
    in which it took none: "the machine waits for people".
    """
    days: dict[tuple[str, date], dict[datetime, int]] = defaultdict(dict)
    stations: dict[str, str] = {}
    for device, station, hour, n in rows:
        local = hour.astimezone(VN)
        days[(device, local.date())][local] = n
        stations[device] = station
    out = []
    for (device, day), hours in sorted(days.items()):
        first, last = min(hours), max(hours)
        span = int((last - first) / timedelta(hours=1)) + 1
        out.append({
            "device_id": device, "station_id": stations[device], "date": day.isoformat(),
            "registrations": sum(hours.values()), "first_hour": first.isoformat(),
            "last_hour": last.isoformat(), "active_hours": len(hours),
            "idle_hours": span - len(hours), "peak_per_hour": max(hours.values()),
        })  # fmt: skip
    return out


Commune = Annotated[str | None, Query(pattern=r"^[0-9]{5}$")]
ProvinceCode = Annotated[str | None, Query(pattern=r"^[0-9]{2}$")]


def _locality(commune_code: Commune = None, province_code: ProvinceCode = None) -> tuple[str, str]:
    """(level, code) from exactly one of the two query parameters."""
    if (commune_code is None) == (province_code is None):
        raise ApiError(
            422,
            "invalid_request",
            "give exactly one of commune_code, province_code",
            {"commune_code": "exactly one of commune_code, province_code"},
        )
    return ("commune", commune_code) if commune_code else ("province", province_code)  # type: ignore[return-value]


Locality = Annotated[tuple[str, str], Depends(_locality)]


def _window(since: datetime | None, until: datetime | None, days: int) -> tuple[datetime, datetime]:
    end = aware(until) if until else datetime.now(UTC) + timedelta(hours=1)
    start = aware(since) if since else end - timedelta(days=days)
    if start >= end:
        raise ApiError(
            422, "invalid_request", "since must be before until", {"since": "must be before until"}
        )
    return start, end


# The progress-room reads: cumulative against targets, hourly, per device, freshness.
router = APIRouter()


@router.get("/v1/progress", dependencies=[READ])
def cumulative(
    request: Request,
    level: Literal["commune", "province"],
    code: Annotated[str, Query(pattern=r"^[0-9]{2}$|^[0-9]{5}$")],
) -> dict[str, Any]:
    """Cumulative received and activated (distinct accounts) against targets, in percent."""
    if len(code) != (5 if level == "commune" else 2):
        raise ApiError(
            422,
            "invalid_request",
            f"code does not fit level {level}",
            {"code": f"a {level} code"},
        )
    backbone = backbone_of(request)
    try:
        return progress(backbone.registry, backbone.trail, level, code)
    except (KeyError, ValueError):
        raise ApiError(404, "unknown_locality", f"no current {level} has this code") from None


@router.get("/v1/progress/hourly", dependencies=[READ])
def hourly(
    request: Request,
    place: Locality,
    since: datetime | None = None,
    until: datetime | None = None,
    by: Literal["event_type", "channel", "phone", "device"] = "event_type",
) -> dict[str, Any]:
    """Counts by the hour events happened (device time), split by `by`."""
    level, code = place
    start, end = _window(since, until, days=2)
    hours: dict[datetime, dict[str, int]] = {}
    for hour, key, count in backbone_of(request).trail.hourly(level, code, start, end, by):
        hours.setdefault(hour, {})[key] = count
    return {
        "level": level, "code": code, "by": by, "since": start.isoformat(),
        "until": end.isoformat(),
        "hours": [{"hour": vn(hour), "counts": counts, "total": sum(counts.values())}
                  for hour, counts in sorted(hours.items())],
    }  # fmt: skip


@router.get("/v1/progress/devices", dependencies=[READ])
def devices(
    request: Request,
    place: Locality,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Per-device daily throughput and idle hours (registrations received)."""
    level, code = place
    start, end = _window(since, until, days=7)
    rows = backbone_of(request).trail.device_hours(level, code, start, end)
    return {"level": level, "code": code, "days": device_days(rows)}


@router.get("/v1/progress/freshness", dependencies=[READ])
def freshness(
    request: Request, minutes: Annotated[int, Query(ge=1, le=1440)] = 60
) -> dict[str, Any]:
    """How long recorded events took to become visible in the counts, over recent minutes."""
    return {"minutes": minutes, **backbone_of(request).trail.freshness(minutes)}
