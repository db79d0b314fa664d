"""The history-read phase: the auditor reads K histories, personal fields decrypted, one by one."""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from typing import Any

import httpx

from tests.bench.deployment import Deployment

PURPOSE = "bench"
UNVERIFIED: list[dict[str, Any]] = []  # the first few verifications that were not `verified`


def history_reads(
    dep: Deployment, citizens: list[tuple[str, str]], k: int, end: float
) -> dict[str, Any]:
    """POST /v1/citizens/history for K of the accepted (citizen_id, full_name), sequentially."""
    sample = random.sample(citizens, min(k, len(citizens)))
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    url = f"{dep.base}/v1/citizens/history"
    with httpx.Client(headers=dep.headers("auditor"), timeout=30) as client:
        for citizen_id, full_name in sample:
            if time.monotonic() > end:
                errors["not sent: run timeout"] += 1
                continue
            began = time.perf_counter()
            error = read_one(client, url, citizen_id, full_name, statuses)
            latencies.append(time.perf_counter() - began)
            if error is not None:
                errors[error] += 1
    return _figures(len(sample), latencies, errors, statuses)


def read_one(
    client: httpx.Client, url: str, citizen_id: str, full_name: str, statuses: Counter[str]
) -> str | None:
    """One history read: None when answered 200 with the posted name in clear, else what failed."""
    try:
        response = client.post(url, json={"citizen_id": citizen_id, "purpose": PURPOSE})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    if response.status_code != 200:
        return f"{response.status_code}: {response.text[:200]}"
    answer = response.json()
    verification = answer.get("verification", {})
    statuses[str(verification.get("status"))] += 1
    if verification.get("status") != "verified" and len(UNVERIFIED) < 5:
        UNVERIFIED.append(verification)  # what was not verified, for the report
    events = answer.get("events") or [{}]
    shown = events[0].get("payload", {}).get("full_name")
    if shown != full_name:
        return f"registration payload full_name is {shown!r}, not the posted name in clear"
    return None


def _figures(
    k: int, latencies: list[float], errors: Counter[str], statuses: Counter[str]
) -> dict[str, Any]:
    ordered = sorted(latencies) or [0.0]
    return {
        "reads": k,
        "failed": sum(errors.values()),
        "errors": dict(errors.most_common(5)),
        "verification": dict(statuses),
        "unverified_examples": UNVERIFIED[:5],
        "p50_s": statistics.median(ordered) if latencies else None,
        "p99_s": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if latencies else None,
    }


def history_problems(figures: dict[str, Any]) -> list[str]:
    """Reads that failed, did not show the personal fields decrypted, or were not verified."""
    problems = []
    if figures.get("failed"):
        problems.append(
            f"{figures['failed']} of {figures['reads']} history reads failed: {figures['errors']}"
        )
    unverified = {s: n for s, n in figures.get("verification", {}).items() if s != "verified"}
    if unverified:
        problems.append(f"history reads not verified: {unverified}")
    return problems
