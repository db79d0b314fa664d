"""The registrations a bench posts, and posting them from many threads over one connection pool."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import httpx

from tests.bench.deployment import Deployment
from tests.support.factories import VN, personal_number

BIRTH_PROVINCES = ("056", "079", "001", "048")  # pre-2025 birth-province codes
COMMUNES = ("22420", "22453", "22528", "22408", "22432")  # current Khánh Hòa wards/communes
CHANNELS = ("station", "home_visit", "mobile_team")
PHONES = ("none", "basic", "smart")
FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Võ", "Đặng", "Bùi", "Đỗ", "Huỳnh")
MIDDLE = ("Văn", "Thị", "Hữu", "Minh", "Ngọc", "Thanh", "Quốc", "Thu")
GIVEN = ("An", "Bình", "Châu", "Dũng", "Hà", "Hải", "Lan", "Long", "Mai", "Nam", "Phúc", "Vy")


@dataclass
class PostResult:
    """What posting a workload gave: counts, timings and the errors seen."""

    ok: int = 0
    failures: int = 0
    began: float = 0.0  # perf_counter
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)  # commune -> registrations
    citizens: list[tuple[str, str]] = field(default_factory=list)  # accepted (number, name)


def registration(i: int, base: int, rng: random.Random, now: datetime) -> dict[str, Any]:
    """Registration number `i` of a run: serial `base + i`, the rest drawn from `rng`."""
    sex = rng.choice(("male", "female"))
    born = date(1940, 1, 1) + timedelta(days=rng.randrange(68 * 365))
    commune = rng.choice(COMMUNES)
    captured = now - timedelta(seconds=rng.uniform(0, 6 * 3600))
    return {
        "command_id": f"bench-{base:06d}-{i}",
        "citizen_id": personal_number(
            province=rng.choice(BIRTH_PROVINCES),
            year=born.year,
            female=sex == "female",
            serial=base + i,
        ),  # fmt: skip
        "full_name": f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}",
        "date_of_birth": born.isoformat(),
        "sex": sex,
        "commune_code": commune,
        "station_id": f"st-{commune}",
        "device_id": f"dev-{rng.randrange(1, 21):02d}",
        "operator_id": f"op-{rng.randrange(1, 41):02d}",
        "channel": rng.choice(CHANNELS),
        "phone": rng.choice(PHONES),
        "captured_at": captured.astimezone(VN).isoformat(timespec="milliseconds"),
    }


def registrations(n: int) -> list[dict[str, Any]]:
    """`n` registrations with consecutive serials from a random start, captured in the last 6 h."""
    rng = random.Random()
    base = rng.randrange(1_000_000)
    now = datetime.now(VN)
    return [registration(i, base, rng, now) for i in range(n)]


def post_all(
    dep: Deployment, bodies: list[dict[str, Any]], concurrency: int, end: float
) -> PostResult:
    """POST every body with `concurrency` threads sharing one connection pool."""
    result = PostResult()
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits, headers=dep.headers("station"), timeout=60) as client:
        url = f"{dep.base}/v1/registrations"
        workers = [
            threading.Thread(
                target=_post_share,
                args=(client, url, bodies[k::concurrency], end, result, lock),
                daemon=True,
            )
            for k in range(concurrency)
        ]
        result.began = time.perf_counter()
        for worker in workers:
            worker.start()
        join_end = end + 70  # a request in flight at `end` has 60 s more to finish
        for worker in workers:
            worker.join(max(0.0, join_end - time.monotonic()))
        result.elapsed_s = time.perf_counter() - result.began
    result.failures = len(bodies) - result.ok  # anything not answered 201, timeouts included
    return result


def _post_share(
    client: httpx.Client,
    url: str,
    bodies: list[dict[str, Any]],
    end: float,
    result: PostResult,
    lock: threading.Lock,
) -> None:
    for body in bodies:
        if time.monotonic() > end:
            with lock:
                result.errors["not sent: run timeout"] += 1
            continue
        began = time.perf_counter()
        error = post_one(client, url, body)
        took = time.perf_counter() - began
        with lock:
            result.latencies_s.append(took)
            if error is None:
                result.ok += 1
                result.accepted[body["commune_code"]] += 1
                result.citizens.append((body["citizen_id"], body["full_name"]))
            else:
                result.errors[error] += 1


def post_one(client: httpx.Client, url: str, body: dict[str, Any]) -> str | None:
    """POST one body: None when answered 201, else a short description of what went wrong."""
    try:
        response = client.post(url, json=body)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    if response.status_code == 201:
        return None
    return f"{response.status_code}: {response.text[:200]}"
