"""Progress against targets: cumulative received / activated per commune, rolled up to provinces."""

from __future__ import annotations

from typing import Any

from vietnam_provinces import Province, Ward

from projections.audit import AuditTrail
from services.registry.application import Registry

METRICS = ("received", "activated")


def commune_name(code: str) -> str:
    return Ward.from_code(int(code)).name  # type: ignore[arg-type]


def province_name(code: str) -> str:
    return Province.from_code(int(code)).name  # type: ignore[arg-type]


def communes_of(province_code: str) -> list[str]:
    return sorted(f"{int(w.code)}" for w in Ward.iter_by_province(int(province_code)))  # type: ignore[arg-type]


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
        rows.append({"commune_code": commune, "name": commune_name(commune),
                     **_against(commune_counts, targets)})
        for metric in METRICS:
            totals[metric] += commune_counts.get(metric, 0)
            if metric in targets:
                agg = target_totals.setdefault(metric, {"target": 0, "deadline": None})
                agg["target"] += targets[metric]["target"]
                agg["deadline"] = max(filter(None, [agg["deadline"], targets[metric]["deadline"]]))
    name = commune_name(code) if level == "commune" else province_name(code)
    return {"level": level, "code": code, "name": name, **_against(totals, target_totals),
            "communes": rows}
