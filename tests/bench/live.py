"""The live phase: N registrations through the running API, counted and checked in ClickHouse."""

from __future__ import annotations

import argparse
import contextlib
import queue
import random
import statistics
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.bench.deployment import (
    POLL_S,
    STALL_S,
    Deadline,
    Deployment,
    check_alive,
    wait_healthy,
)
from tests.bench.history import history_reads
from tests.bench.workload import PostResult, post_all, post_one, registration, registrations
from tests.support.api import api_and_relay
from tests.support.factories import VN

PROGRESS_EVERY_S = 2.0


def live_run(dep: Deployment, args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    """Relay + API (embedded projector) up; N posted, counted and checked; both stopped again."""
    with api_and_relay(dep.env, dep.dir) as procs, httpx.Client() as client:
        wait_healthy(client, dep, procs["api"], deadline.within(120))
        posted = post_workload(dep, args, deadline)
        counted, health = wait_counted(client, dep, posted.ok, procs, deadline.end)
        until_counted = time.perf_counter() - posted.began
        figures = {**_post_figures(posted), "counted": counted, "health": health}
        if counted:
            figures["until_counted_s"] = until_counted
            figures["drain_after_posting_s"] = until_counted - posted.elapsed_s
            figures.update(read_model_checks(client, dep, posted, deadline))
            print(f"history reads ({args.history_reads}, auditor)...", flush=True)
            end = deadline.within(300)
            figures["history_read"] = history_reads(dep, posted.citizens, args.history_reads, end)
    return figures


def post_workload(dep: Deployment, args: argparse.Namespace, deadline: Deadline) -> PostResult:
    """`args.count` fresh registrations posted by `args.concurrency` threads; prints how it went."""
    bodies = registrations(args.count)
    print(f"posting {args.count} registrations, concurrency {args.concurrency}", flush=True)
    posted = post_all(dep, bodies, args.concurrency, deadline.end)
    print(
        f"  {posted.ok} accepted, {posted.failures} failed in {posted.elapsed_s:.1f} s "
        f"({posted.ok / posted.elapsed_s:.0f}/s)",
        flush=True,
    )
    return posted


def read_model_checks(
    client: httpx.Client, dep: Deployment, posted: PostResult, deadline: Deadline
) -> dict[str, Any]:
    """Once everything is counted: freshness, hourly counts per commune, live-feed latency."""
    figures = {
        "freshness": freshness(client, dep),
        "hourly_mismatches": hourly_mismatches(client, dep, posted.accepted),
    }
    print("feed latency probes...", flush=True)
    figures["feed"] = feed_latency(dep, 20, min(deadline.end, time.monotonic() + 120))
    return figures


def wait_counted(
    client: httpx.Client,
    dep: Deployment,
    n: int,
    procs: dict[str, subprocess.Popen[str]],
    end: float,
) -> tuple[bool, dict[str, Any]]:
    """Poll /healthz until `projected_events` >= n; prints progress at most every 2 s."""
    health: dict[str, Any] = {}
    shown, grown, last = 0.0, time.monotonic(), -1
    while time.monotonic() < end and time.monotonic() - grown < STALL_S:
        check_alive(procs, dep, health)
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = dict(client.get(f"{dep.base}/healthz", timeout=5).json())
        projected = health.get("projected_events") or 0
        if projected >= n:
            return True, health
        if projected > last:
            grown, last = time.monotonic(), projected
        if time.monotonic() - shown >= PROGRESS_EVERY_S:
            shown = time.monotonic()
            _show_waiting(health, n)
        time.sleep(POLL_S)
    return False, health


def _show_waiting(health: dict[str, Any], n: int) -> None:
    print(
        f"  waiting: store position {health.get('event_store_position')}, "
        f"projected {health.get('projected_events')}/{n}",
        flush=True,
    )


def freshness(client: httpx.Client, dep: Deployment) -> dict[str, Any]:
    """The API's freshness figures over the last hour."""
    response = client.get(
        f"{dep.base}/v1/progress/freshness",
        params={"minutes": 60},
        headers=dep.headers("viewer"),
        timeout=30,
    )
    response.raise_for_status()
    return dict(response.json())


def feed_latency(dep: Deployment, probes: int, end: float) -> dict[str, Any]:
    """Seconds from posting one registration (idle system) to its `counts` event on the feed."""
    events: queue.Queue[float] = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=_listen, args=(dep, events, stop), daemon=True).start()
    time.sleep(0.5)  # let the stream open
    latencies = []
    rng = random.Random(7)
    with httpx.Client(headers=dep.headers("station"), timeout=10) as client:
        for i in range(probes):
            if time.monotonic() > end:
                break
            latency = _probe(client, dep, i, rng, events)
            if latency is not None:
                latencies.append(latency)
    stop.set()
    latencies.sort()
    return {
        "probes": probes, "received": len(latencies),
        "p50_s": statistics.median(latencies) if latencies else None,
        "max_s": latencies[-1] if latencies else None,
    }  # fmt: skip


def _listen(dep: Deployment, events: queue.Queue[float], stop: threading.Event) -> None:
    """Put the time of every `counts` event of the live feed into `events`, until `stop`."""
    url = f"{dep.base}/v1/feed"
    with httpx.stream("GET", url, params={"token": dep.tokens["viewer"]},
                      timeout=httpx.Timeout(5, read=None)) as stream:  # fmt: skip
        for line in stream.iter_lines():
            if stop.is_set():
                return
            if line == "event: counts":
                events.put(time.perf_counter())


def _probe(
    client: httpx.Client, dep: Deployment, i: int, rng: random.Random, events: queue.Queue[float]
) -> float | None:
    """Post one registration; seconds until the next `counts` event (None: refused or no event)."""
    while not events.empty():
        events.get_nowait()
    body = registration(i, 990_000 + rng.randrange(9_000), rng, datetime.now(VN))
    sent = time.perf_counter()
    if post_one(client, f"{dep.base}/v1/registrations", body) is not None:
        return None
    try:
        return events.get(timeout=10) - sent
    except queue.Empty:
        return None


def hourly_mismatches(client: httpx.Client, dep: Deployment, posted: Counter[str]) -> list[str]:
    """Per commune: registrations accepted vs the sum of `registration_received` hourly counts."""
    now = datetime.now(VN)
    window = {
        "since": (now - timedelta(hours=8)).isoformat(),
        "until": (now + timedelta(hours=1)).isoformat(),
    }
    problems = []
    for commune, expected in sorted(posted.items()):
        response = client.get(
            f"{dep.base}/v1/progress/hourly",
            headers=dep.headers("viewer"),
            params={"commune_code": commune, **window},
            timeout=30,
        )
        response.raise_for_status()
        counted = sum(h["counts"].get("registration_received", 0) for h in response.json()["hours"])
        if counted != expected:
            problems.append(f"commune {commune}: posted {expected}, hourly counts {counted}")
    return problems


def _post_figures(posted: PostResult) -> dict[str, Any]:
    latencies = sorted(posted.latencies_s) or [0.0]
    return {
        "accepted": posted.ok,
        "failed": posted.failures,
        "errors": dict(posted.errors.most_common(5)),
        "post_s": posted.elapsed_s,
        "commands_per_s": posted.ok / posted.elapsed_s if posted.elapsed_s else 0.0,
        "post_latency_p50_s": statistics.median(latencies),
        "post_latency_p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def live_problems(live: dict[str, Any], n: int) -> list[str]:
    """What the live phase got wrong: refused commands, a stalled projection, counts that differ."""
    problems = []
    if live["failed"]:
        problems.append(
            f"{live['failed']} of {n} registrations were not accepted: {live['errors']}"
        )
    if not live["counted"]:
        problems.append(f"projection stalled or timed out: {live['health']}")
    problems += live.get("hourly_mismatches", [])
    events = live.get("freshness", {}).get("events")
    if events is not None and events != live["accepted"]:
        problems.append(f"freshness saw {events} events, {live['accepted']} were accepted")
    return problems
