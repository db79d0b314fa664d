"""The HTTP side near its limits, under a compiled load generator (`wrk`).

- the ceiling: `POST /v1/noop` of `tests.bench.noop_app` (the API's server stack, a route that
  does nothing) under wrk;
- the maximum command rate: `POST /v1/registrations` of a fresh deployment (relay and API with
  its embedded projector and signer running, as in `make run`) under the same wrk command and
  script (`registrations.lua`: a distinct command id and personal number per request); its
  ratio to the ceiling (goal >= 0.5);
- freshness at half that rate: another fresh deployment, registrations sent at half the
  maximum rate (open loop: request i leaves at i / rate), then the API's own freshness figures
  (recorded -> stored in the read model; every event of that deployment is one of them);
  goal p99 <= 500 ms;
- device sync: backlogs of 5,000 registrations in one `POST /v1/sync` each, on the first
  deployment; commands/s per backlog (goal >= 10,000/s).

Every wrk run is bounded in time (`--seconds`) and in count (requests per thread); every other
loop by count and by the run's deadline. Medians of `--rounds` runs; runs of one kind follow
each other (the no-op server runs alone, before the deployment starts).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.bench.deployment import BenchError, Deadline, Deployment, make_deployment, wait_healthy
from tests.bench.live import freshness, wait_counted
from tests.bench.workload import PostResult, post_one, registration, registrations
from tests.support.api import api_and_relay
from tests.support.factories import VN
from tests.support.processes import answers, free_port, running

SCRIPT = Path(__file__).with_name("registrations.lua")
THREADS = 2  # wrk threads (the machine's two cores are shared with the server anyway)
WARMUP_S = 2
PER_THREAD_CAP = 200_000  # requests per wrk thread and run, far above what a run can send
GOALS = {"commands_to_noop": 0.5, "freshness_p99_s": 0.5, "sync_commands_per_s": 10_000}
SYNC_SIZE = 5000
PACED_SECONDS = 20.0
PACED_MAX = 10_000
PACED_WORKERS = 32
WARMUP_COMMANDS = 3  # before the paced ones, each waited for until projected


def ceiling_bench(
    var_dir: Path,
    store: Callable[[str], dict[str, str]],
    args: argparse.Namespace,
    fallback_rate: float,
    deadline: Deadline,
) -> dict[str, Any]:
    """The four figures, on two fresh deployments (`store(name)`: the event store settings of
    each). Without wrk the two that need it are skipped (and said so), and the maximum rate
    is `fallback_rate` (the bench's own client)."""
    wrk = shutil.which("wrk")
    found: dict[str, Any] = {"goals": GOALS, "wrk": wrk, "seconds": args.wrk_seconds,
                             "connections": args.concurrency, "threads": THREADS}  # fmt: skip
    if wrk is None:
        print("wrk not found (make bench installs it with apt-get when it can): the no-op "
              "ceiling and the wrk command rate are skipped", flush=True)  # fmt: skip
    else:
        found["noop"] = noop_ceiling(var_dir, args, deadline)
    dep = make_deployment(var_dir, store("http"))
    found["deployment"] = str(dep.dir)
    with api_and_relay(dep.env, dep.dir) as procs, httpx.Client() as client:
        wait_healthy(client, dep, procs["api"], deadline.within(120))
        if wrk is not None:
            found["commands"] = command_rate(dep, args, deadline)
            # the relay and the projector catch up first: the sync does not pay for the load
            n = found["commands"]["ok_total"]
            found["commands"]["counted"] = wait_counted(
                client, dep, n, procs, deadline.within(300)
            )[0]
        found["sync"] = sync_backlogs(dep, args.rounds, deadline)
    found["max_rate"], found["max_rate_from"] = _max_rate(found, fallback_rate)
    found["paced"] = paced_freshness(var_dir, store("paced"), found["max_rate"] / 2, deadline)
    found["ratio"] = _ratio(found)
    found["met"] = _met(found)
    return found


# -- wrk ----------------------------------------------------------------------------------------


def wrk_run(
    url: str, token: str, first: int, seconds: float, conns: int, end: float
) -> dict[str, Any]:
    """One wrk run of `registrations.lua` against `url`; its counts, rate and latencies."""
    seconds = max(1.0, min(seconds, end - time.monotonic() - 5))
    captured = (datetime.now(VN) - timedelta(minutes=1)).isoformat(timespec="milliseconds")
    tag = f"{os.getpid()}-{first}"
    command = ["wrk", f"-t{THREADS}", f"-c{conns}", f"-d{seconds:.0f}s", "--timeout", "10s",
               "-s", str(SCRIPT), url, "--", str(first), str(PER_THREAD_CAP), tag, token,
               captured, str(THREADS)]  # fmt: skip
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not end: {' '.join(command[:6])}") from exc
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise BenchError(f"wrk gave no result (exit {out.returncode}): {out.stderr[-300:]}")
    r = json.loads(line[4:])
    duration = r["duration_us"] / 1e6
    socket_errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    ok = r["requests"] - r["status_errors"]
    return {
        **r,
        "ok": ok,
        "ok_per_s": ok / duration,
        "socket_errors": socket_errors,
        "capped": r["requests"] >= PER_THREAD_CAP * THREADS,  # the rate would then be low
    }


def noop_ceiling(var_dir: Path, args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    """`--rounds` wrk runs against the no-op endpoint, after a warm-up run."""
    port = free_port()
    log = var_dir / "bench" / "noop.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with running(["-m", "tests.bench.noop_app", "--port", str(port)], {}, log) as server:
        end = deadline.within(30)
        while not answers("127.0.0.1", port):
            if server.poll() is not None or time.monotonic() > end:
                raise BenchError(f"the no-op server did not start; see {log}")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/v1/noop"
        return _runs("no-op", url, "none", args, deadline)


def command_rate(dep: Deployment, args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    """`--rounds` wrk runs of distinct registrations against the running deployment."""
    url = f"{dep.base}/v1/registrations"
    return _runs("registrations", url, dep.tokens["station"], args, deadline)


def _runs(
    name: str, url: str, token: str, args: argparse.Namespace, deadline: Deadline
) -> dict[str, Any]:
    """A warm-up run (not counted), then `args.rounds` runs; each run its own index block."""
    print(f"wrk: {name}, warm-up {WARMUP_S} s", flush=True)
    warmup = wrk_run(url, token, 0, WARMUP_S, args.concurrency, deadline.end)
    runs = []
    for k in range(1, args.rounds + 1):
        run = wrk_run(url, token, k * 1_000_000, args.wrk_seconds, args.concurrency, deadline.end)
        refused, lost = run["status_errors"], run["socket_errors"]
        print(f"wrk: {name}, run {k}: {run['ok_per_s']:,.0f}/s accepted, {refused} refused, "
              f"{lost} socket errors", flush=True)  # fmt: skip
        runs.append(run)
    return {
        "runs": runs,
        "ok_per_s": statistics.median(r["ok_per_s"] for r in runs),
        "p50_ms": statistics.median(r["p50_us"] for r in runs) / 1000,
        "p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
        "refused": sum(r["status_errors"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "capped": any(r["capped"] for r in runs),
        "ok_total": warmup["ok"] + sum(r["ok"] for r in runs),
    }


# -- device sync --------------------------------------------------------------------------------


def sync_backlogs(dep: Deployment, rounds: int, deadline: Deadline) -> dict[str, Any]:
    """`rounds` backlogs of SYNC_SIZE registrations, one device each, one POST /v1/sync each
    (the body encoded before the clock starts); commands/s of each."""
    rng = random.Random()
    first = rng.randrange(1_000_000 - SYNC_SIZE * rounds)
    runs = []
    with httpx.Client(headers=dep.headers("station"), timeout=120) as client:
        for k in range(rounds):
            if deadline.remaining() < 150:
                break
            device = f"dev-sync-{os.getpid()}-{k}"
            body = _backlog(device, first + k * SYNC_SIZE, rng)
            began = time.perf_counter()
            try:
                response = client.post(f"{dep.base}/v1/sync", content=body,
                                       headers={"Content-Type": "application/json"})  # fmt: skip
            except httpx.HTTPError as exc:  # counted as not created; the next backlog is tried
                failed = f"{type(exc).__name__}: {exc}"[:200]
                took = time.perf_counter() - began
                print(f"sync: backlog {k + 1} failed after {took:.1f} s: {failed}", flush=True)
                runs.append({"status": failed, "summary": {}, "seconds": took,
                             "commands_per_s": 0.0})  # fmt: skip
                continue
            seconds = time.perf_counter() - began
            summary = response.json().get("summary", {}) if response.status_code == 200 else {}
            created = int(summary.get("created", 0))
            print(f"sync: backlog {k + 1}, {created} created in {seconds:.2f} s "
                  f"({created / seconds:,.0f}/s)", flush=True)  # fmt: skip
            runs.append({"status": response.status_code, "summary": summary,
                         "seconds": seconds, "commands_per_s": created / seconds})  # fmt: skip
    rates = [r["commands_per_s"] for r in runs]
    return {
        "size": SYNC_SIZE,
        "runs": runs,
        "commands_per_s": statistics.median(rates) if rates else None,
        "not_created": sum(SYNC_SIZE - int(r["summary"].get("created", 0)) for r in runs),
    }


def _backlog(device: str, first: int, rng: random.Random) -> bytes:
    now = datetime.now(VN)
    items = [{**registration(i, first, rng, now), "device_id": device, "type": "registration"}
             for i in range(SYNC_SIZE)]  # fmt: skip
    return json.dumps({"device_id": device, "commands": items}).encode()


# -- freshness at half the maximum rate ---------------------------------------------------------


def paced_freshness(
    var_dir: Path, store: dict[str, str], rate: float, deadline: Deadline
) -> dict[str, Any]:
    """A fresh deployment; registrations at `rate`/s for PACED_SECONDS (at most PACED_MAX);
    once all are projected, the API's freshness over them."""
    count = max(1, min(PACED_MAX, int(rate * PACED_SECONDS)))
    dep = make_deployment(var_dir, store)
    print(f"paced: {count} registrations at {rate:,.0f}/s (half the maximum)", flush=True)
    bodies = registrations(count + WARMUP_COMMANDS)
    with api_and_relay(dep.env, dep.dir) as procs, httpx.Client() as client:
        wait_healthy(client, dep, procs["api"], deadline.within(120))
        warm = warm_up(client, dep, bodies[:WARMUP_COMMANDS], procs, deadline)
        posted = post_paced(dep, bodies[WARMUP_COMMANDS:], rate, deadline.within(PACED_SECONDS * 3))
        counted, _ = wait_counted(client, dep, warm + posted.ok, procs, deadline.within(180))
        fresh = freshness(client, dep) if counted else {}
    achieved = posted.ok / posted.elapsed_s if posted.elapsed_s else 0.0
    latencies = sorted(posted.latencies_s) or [0.0]
    print(f"paced: {posted.ok} accepted at {achieved:,.0f}/s; freshness p50 "
          f"{fresh.get('p50_s')} s, p99 {fresh.get('p99_s')} s", flush=True)  # fmt: skip
    return {
        "deployment": str(dep.dir),
        "offered_per_s": rate,
        "achieved_per_s": achieved,
        "sent": count,
        "accepted": posted.ok,
        "warm_up": warm,
        "errors": dict(posted.errors.most_common(5)),
        "counted": counted,
        "post_latency_p50_s": statistics.median(latencies),
        "post_latency_p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "freshness": fresh,
    }


def warm_up(
    client: httpx.Client,
    dep: Deployment,
    bodies: list[dict[str, Any]],
    procs: dict[str, subprocess.Popen[str]],
    deadline: Deadline,
) -> int:
    """A few registrations one at a time, each waited for until projected: the first INSERT
    and the first transactions pay for imports and connections once, not the paced ones.
    They stay in the freshness window (it counts whole minutes), a few among thousands."""
    done = 0
    with httpx.Client(headers=dep.headers("station"), timeout=30) as station:
        for body in bodies:
            if post_one(station, f"{dep.base}/v1/registrations", body) is None:
                done += 1
            wait_counted(client, dep, done, procs, deadline.within(60))
    return done


def post_paced(
    dep: Deployment, bodies: list[dict[str, Any]], rate: float, end: float
) -> PostResult:
    """Open loop: body i is posted at `i / rate` s after the start (or as soon as a worker is
    free, if all are busy), by PACED_WORKERS threads sharing one connection pool."""
    result = PostResult()
    lock = threading.Lock()
    order = itertools.count()
    limits = httpx.Limits(max_connections=PACED_WORKERS, max_keepalive_connections=PACED_WORKERS)
    with httpx.Client(limits=limits, headers=dep.headers("station"), timeout=30) as client:
        url = f"{dep.base}/v1/registrations"
        result.began = time.perf_counter()

        def work() -> None:
            while (i := next(order)) < len(bodies) and time.monotonic() < end:
                wait = result.began + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                began = time.perf_counter()
                error = post_one(client, url, bodies[i])
                with lock:
                    result.latencies_s.append(time.perf_counter() - began)
                    if error is None:
                        result.ok += 1
                    else:
                        result.errors[error] += 1

        workers = [threading.Thread(target=work, daemon=True) for _ in range(PACED_WORKERS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(max(0.0, end + 40 - time.monotonic()))
        result.elapsed_s = time.perf_counter() - result.began
    result.failures = len(bodies) - result.ok
    return result


# -- figures -----------------------------------------------------------------------------------


def _max_rate(found: dict[str, Any], fallback_rate: float) -> tuple[float, str]:
    if "commands" in found:
        return float(found["commands"]["ok_per_s"]), "wrk"
    return fallback_rate, "max from the bench's client, no wrk"


def _ratio(found: dict[str, Any]) -> float | None:
    if "noop" not in found or "commands" not in found or not found["noop"]["ok_per_s"]:
        return None
    return float(found["commands"]["ok_per_s"] / found["noop"]["ok_per_s"])


def _met(found: dict[str, Any]) -> dict[str, bool | None]:
    p99 = found["paced"].get("freshness", {}).get("p99_s")
    sync = found["sync"].get("commands_per_s")
    ratio = found["ratio"]
    return {
        "commands_to_noop": None if ratio is None else ratio >= GOALS["commands_to_noop"],
        "freshness_p99_s": None if p99 is None else p99 <= GOALS["freshness_p99_s"],
        "sync_commands_per_s": None if sync is None else sync >= GOALS["sync_commands_per_s"],
    }


def ceiling_problems(found: dict[str, Any]) -> list[str]:
    """Requests refused or lost, counts that do not add up (a goal not met is not a problem
    of the run: it is reported as such)."""
    problems = []
    for name in ("noop", "commands"):
        figures = found.get(name, {})
        if figures.get("refused") or figures.get("socket_errors"):
            problems.append(f"wrk {name}: {figures['refused']} refused, "
                            f"{figures['socket_errors']} socket errors")  # fmt: skip
        if figures.get("capped"):
            problems.append(f"wrk {name}: a run reached its request cap; its rate is too low")
    if found.get("commands", {}).get("counted") is False:
        problems.append("wrk registrations: not every accepted command was projected in time")
    if found["sync"].get("not_created"):
        problems.append(f"sync: {found['sync']['not_created']} commands not created: "
                        f"{[r['summary'] for r in found['sync']['runs']]}")  # fmt: skip
    paced = found["paced"]
    if paced["accepted"] != paced["sent"]:
        problems.append(f"paced: {paced['sent'] - paced['accepted']} of {paced['sent']} not "
                        f"accepted: {paced['errors']}")  # fmt: skip
    if not paced["counted"]:
        problems.append("paced: not every registration was projected in time")
    events = paced.get("freshness", {}).get("events")
    if events is not None and events != paced["accepted"] + paced["warm_up"]:
        problems.append(f"paced: freshness saw {events} events, {paced['accepted']} accepted "
                        f"and {paced['warm_up']} warm-up")  # fmt: skip
    return problems
