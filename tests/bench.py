"""Benchmark: N registrations through the HTTP API, then relay and projector catch-up rates.

`python -m tests.bench --help`. Each run gets a fresh deployment under
`$VAR_DIR/bench/<timestamp>` (own event store, topic, consumer group, ClickHouse database,
API port), prints a table, writes the figures to `--out` and appends them to
`$VAR_DIR/bench-history.jsonl`. Exit code 1 when a command failed, a count disagrees or a
phase did not finish in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import httpx
from kafka import KafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
VN = timezone(timedelta(hours=7))
BIRTH_PROVINCES = ("056", "079", "001", "048")  # pre-2025 birth-province codes
COMMUNES = ("22420", "22453", "22528", "22408", "22432")  # current Khánh Hòa wards/communes
CHANNELS = ("station", "home_visit", "mobile_team")
PHONES = ("none", "basic", "smart")
FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Võ", "Đặng", "Bùi", "Đỗ", "Huỳnh")
MIDDLE = ("Văn", "Thị", "Hữu", "Minh", "Ngọc", "Thanh", "Quốc", "Thu")
GIVEN = ("An", "Bình", "Châu", "Dũng", "Hà", "Hải", "Lan", "Long", "Mai", "Nam", "Phúc", "Vy")
STOP_GRACE_S = 20.0
POLL_S = 0.2
PROGRESS_EVERY_S = 2.0
STALL_S = 60.0  # a phase whose count has not grown for this long has failed


class Deadline:
    """The time budget of the whole run; every wait asks it how long it may take."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def within(self, seconds: float) -> float:
        """A monotonic end time: `seconds` from now, but never past the run's deadline."""
        return time.monotonic() + min(seconds, self.remaining())


class BenchError(RuntimeError):
    """A phase that could not complete; the run reports it and exits with code 1."""


@dataclass
class Deployment:
    """One fresh set of services: its directory, environment and API address."""

    dir: Path
    env: dict[str, str]
    port: int
    tokens: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@dataclass
class PostResult:
    ok: int = 0
    failures: int = 0
    began: float = 0.0  # perf_counter
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)  # commune -> registrations


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    var_dir = Path(os.environ.get("VAR_DIR", str(ROOT / "var"))).resolve()
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="N registrations through a fresh deployment (API, relay, embedded "
        "projector), then relay and projector catch-up rates. Starts the Kafka broker if none "
        "answers at KAFKA_BOOTSTRAP (and stops it afterwards).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-n", "--count", type=_count, default=10000, help="registrations")
    parser.add_argument("--concurrency", type=_positive, default=16, help="parallel requests")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--out", type=Path, default=var_dir / "bench.json", help="JSON result")
    parser.add_argument(
        "--keep", action="store_true", help="keep the deployment directory (kept on failure)"
    )
    parser.set_defaults(var_dir=var_dir)
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _count(text: str) -> int:
    value = _positive(text)
    if value > 1_000_000:
        raise argparse.ArgumentTypeError("at most 1000000 (the serial part has 6 digits)")
    return value


# --- processes and the broker ------------------------------------------------------------------


def answers(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bootstrap() -> tuple[str, int]:
    host, _, port = (
        os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092").partition(",")[0].rpartition(":")
    )
    return host or "127.0.0.1", int(port)


def broker(action: str, var_dir: Path) -> None:
    env = {**os.environ, "VAR_DIR": str(var_dir)}
    subprocess.run(
        [str(ROOT / "infra/kafka/broker.sh"), action], cwd=ROOT, env=env, check=True, timeout=180
    )


@contextlib.contextmanager
def running_broker(var_dir: Path) -> Iterator[None]:
    """The broker that answers, or one started (and stopped again) for this run."""
    host, port = bootstrap()
    started = not answers(host, port)
    if started:
        print(f"no broker at {host}:{port}: starting infra/kafka/broker.sh", flush=True)
        broker("start", var_dir)
    try:
        yield
    finally:
        if started:
            broker("stop", var_dir)


def start(
    args: list[str], env: dict[str, str], log: Path, stdout: int | None = None
) -> subprocess.Popen[str]:
    """`python <args>` from the repository root; stderr (and stdout unless piped) to `log`."""
    with log.open("a") as sink:
        out: int | IO[str] = sink if stdout is None else stdout
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=sink,
            text=True,
        )


def stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM by PID, wait up to STOP_GRACE_S, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            print(f"pid {proc.pid} ignored SIGTERM for {STOP_GRACE_S:.0f} s: SIGKILL", flush=True)
            proc.kill()
    return proc.wait()


def stopped_on_exit(
    stack: contextlib.ExitStack, proc: subprocess.Popen[str]
) -> subprocess.Popen[str]:
    stack.callback(stop, proc)
    return proc


# --- deployment --------------------------------------------------------------------------------


def make_deployment(var_dir: Path) -> Deployment:
    stamp = datetime.now(VN).strftime("%Y%m%dT%H%M%S")
    root = var_dir / "bench" / f"{stamp}-{secrets.token_hex(2)}"
    root.mkdir(parents=True)
    tokens = {role: secrets.token_urlsafe(12) for role in ("station", "viewer", "admin", "auditor")}
    port = free_port()
    tag = secrets.token_hex(6)
    env = {
        "VAR_DIR": str(root / "var"),
        "KAFKA_BOOTSTRAP": os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        "KAFKA_TOPIC": f"bench-{tag}",
        "PROJECTOR_GROUP": f"bench-projector-{tag}",
        "CLICKHOUSE_DATABASE": "bench",
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "AUTH_TOKENS": ",".join(f"{r}={t}" for r, t in tokens.items()),
        "PSEUDONYM_SECRET": secrets.token_hex(16),
        "CAMPAIGN_START": "2023-01-01T00:00:00+07:00",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
    }
    return Deployment(root, env, port, tokens)


def wait_healthy(
    client: httpx.Client, dep: Deployment, api: subprocess.Popen[str], end: float
) -> dict[str, Any]:
    while time.monotonic() < end:
        if api.poll() is not None:
            raise BenchError(f"the API exited with code {api.returncode}; see {dep.dir}/api.log")
        with contextlib.suppress(httpx.TransportError):
            response = client.get(f"{dep.base}/healthz", timeout=2)
            if response.status_code == 200:
                return dict(response.json())
        time.sleep(POLL_S)
    raise BenchError("the API did not answer /healthz in time")


# --- registrations -----------------------------------------------------------------------------


def personal_number(province: str, born: date, sex: str, serial: int) -> str:
    century = (born.year - 1900) // 100
    digit = 2 * century + (1 if sex == "female" else 0)
    return f"{province}{digit}{born.year % 100:02d}{serial % 1_000_000:06d}"


def registration(i: int, base: int, rng: random.Random, now: datetime) -> dict[str, Any]:
    sex = rng.choice(("male", "female"))
    born = date(1940, 1, 1) + timedelta(days=rng.randrange(68 * 365))
    commune = rng.choice(COMMUNES)
    captured = now - timedelta(seconds=rng.uniform(0, 6 * 3600))
    return {
        "command_id": f"bench-{base:06d}-{i}",
        "citizen_id": personal_number(rng.choice(BIRTH_PROVINCES), born, sex, base + i),
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
    rng = random.Random()
    base = rng.randrange(1_000_000)
    now = datetime.now(VN)
    return [registration(i, base, rng, now) for i in range(n)]


# --- posting -----------------------------------------------------------------------------------


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
        error = _post_one(client, url, body)
        took = time.perf_counter() - began
        with lock:
            result.latencies_s.append(took)
            if error is None:
                result.ok += 1
                result.accepted[body["commune_code"]] += 1
            else:
                result.errors[error] += 1


def _post_one(client: httpx.Client, url: str, body: dict[str, Any]) -> str | None:
    try:
        response = client.post(url, json=body)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    if response.status_code == 201:
        return None
    return f"{response.status_code}: {response.text[:200]}"


# --- waiting for the read model ----------------------------------------------------------------


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
            print(
                f"  waiting: store position {health.get('event_store_position')}, "
                f"projected {health.get('projected_events')}/{n}",
                flush=True,
            )
        time.sleep(POLL_S)
    return False, health


def check_alive(
    procs: dict[str, subprocess.Popen[str]], dep: Deployment, health: dict[str, Any]
) -> None:
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with code {proc.returncode}; see {dep.dir}/{name}.log")
    if health.get("projector_alive") is False:
        raise BenchError(f"the embedded projector thread died; see {dep.dir}/api.log")


def freshness(client: httpx.Client, dep: Deployment) -> dict[str, Any]:
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

    def listen() -> None:
        url = f"{dep.base}/v1/feed"
        with httpx.stream("GET", url, params={"token": dep.tokens["viewer"]},
                          timeout=httpx.Timeout(5, read=None)) as stream:  # fmt: skip
            for line in stream.iter_lines():
                if stop.is_set():
                    return
                if line == "event: counts":
                    events.put(time.perf_counter())

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)  # let the stream open
    latencies = []
    rng = random.Random(7)
    with httpx.Client(headers=dep.headers("station"), timeout=10) as client:
        for i in range(probes):
            if time.monotonic() > end:
                break
            while not events.empty():
                events.get_nowait()
            body = registration(i, 990_000 + rng.randrange(9_000), rng, datetime.now(VN))
            sent = time.perf_counter()
            if _post_one(client, f"{dep.base}/v1/registrations", body) is not None:
                continue
            try:
                latencies.append(events.get(timeout=10) - sent)
            except queue.Empty:
                continue
    stop.set()
    latencies.sort()
    return {
        "probes": probes, "received": len(latencies),
        "p50_s": statistics.median(latencies) if latencies else None,
        "max_s": latencies[-1] if latencies else None,
    }  # fmt: skip


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


# --- catch-up: relay ---------------------------------------------------------------------------


def wait_for_log(log: Path, text: str, proc: subprocess.Popen[str], end: float) -> float | None:
    """The monotonic time `text` was first seen in `log` (polled), or None."""
    while time.monotonic() < end and proc.poll() is None:
        if log.exists() and text in log.read_text(errors="replace"):
            return time.monotonic()
        time.sleep(0.05)
    return None


def count_committed(topic: str, n: int, end: float) -> tuple[int, float]:
    """Consume `topic` read_committed from the start until n records; (count, monotonic time)."""
    consumer = KafkaConsumer(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        isolation_level="read_committed",
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        fetch_max_wait_ms=50,
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            raise BenchError(f"topic {topic} has no partitions")
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        count, grown = 0, time.monotonic()
        while count < n and time.monotonic() < end and time.monotonic() - grown < STALL_S:
            batches = consumer.poll(timeout_ms=100, max_records=5000)
            polled = sum(len(records) for records in batches.values())
            count, grown = count + polled, time.monotonic() if polled else grown
        return count, time.monotonic()
    finally:
        consumer.close()


def relay_catchup(dep: Deployment, n: int, deadline: Deadline) -> dict[str, Any]:
    """A second relay on a new topic, against the same store: time until n records committed."""
    topic = f"{dep.env['KAFKA_TOPIC']}-catchup"
    log = dep.dir / "relay-catchup.log"
    env = {**dep.env, "KAFKA_TOPIC": topic}
    with contextlib.ExitStack() as stack:
        began = time.monotonic()
        relay = stopped_on_exit(stack, start(["-m", "services.relay"], env, log))
        ready = wait_for_log(log, "relay resumes after store position", relay, deadline.within(120))
        if ready is None:
            raise BenchError(f"the catch-up relay did not start; see {log}")
        count, done = count_committed(topic, n, deadline.within(600))
    if count < n:
        raise BenchError(f"the catch-up relay published {count}/{n}; {log}: {log_tail(log)}")
    return {
        "total_s": done - began,
        "startup_s": ready - began,
        "publish_s": done - ready,
        "events_per_s": n / (done - began),
        "events_per_s_after_startup": n / (done - ready),
    }


# --- catch-up: projector -----------------------------------------------------------------------


def log_tail(log: Path, size: int = 400) -> str:
    """The last two lines of a log file, for error messages."""
    with contextlib.suppress(OSError), log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - size))
        lines = f.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-2:])
    return ""


def read_progress(stream: IO[str], sink: queue.Queue[tuple[float, int]]) -> None:
    for line in stream:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            sink.put((time.monotonic(), int(json.loads(line)["stored"])))


def projector_catchup(dep: Deployment, n: int, deadline: Deadline) -> dict[str, Any]:
    """`python -m projections run --progress` into a fresh database: time until n stored."""
    env = {
        **dep.env,
        "CLICKHOUSE_DATABASE": "bench_rebuild",
        "PROJECTOR_GROUP": f"{dep.env['PROJECTOR_GROUP']}-rebuild",
    }
    log = dep.dir / "projector-catchup.log"
    lines: queue.Queue[tuple[float, int]] = queue.Queue()
    with contextlib.ExitStack() as stack:
        began = time.monotonic()
        proc = stopped_on_exit(
            stack,
            start(["-m", "projections", "run", "--progress"], env, log, stdout=subprocess.PIPE),
        )
        assert proc.stdout is not None
        threading.Thread(target=read_progress, args=(proc.stdout, lines), daemon=True).start()
        seen = _progress_until(lines, proc, n, deadline.within(600))
    if not seen or seen[-1][1] < n:
        got = seen[-1][1] if seen else 0
        dead = log.read_text(errors="replace").count("dead-lettered") if log.exists() else 0
        raise BenchError(
            f"the catch-up projector stored {got}/{n}, dead-lettered {dead}; {log}: {log_tail(log)}"
        )
    (t0, s0), (t1, s1) = seen[0], seen[-1]
    return {
        "total_s": t1 - began,
        "first_batch_s": t0 - began,
        "batches": len(seen),
        "events_per_s": n / (t1 - began),
        "events_per_s_between_batches": (s1 - s0) / (t1 - t0) if t1 > t0 else None,
    }


def _progress_until(
    lines: queue.Queue[tuple[float, int]], proc: subprocess.Popen[str], n: int, end: float
) -> list[tuple[float, int]]:
    seen: list[tuple[float, int]] = []
    began = time.monotonic()
    while time.monotonic() < end and not (seen and seen[-1][1] >= n):
        if time.monotonic() - (seen[-1][0] if seen else began) > STALL_S:
            break
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            if proc.poll() is not None:
                break
    return seen


# --- the live run ------------------------------------------------------------------------------


def live_run(dep: Deployment, args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    """Relay + API (embedded projector) up; N posted, counted and checked; both stopped again."""
    with contextlib.ExitStack() as stack, httpx.Client() as client:
        relay = stopped_on_exit(
            stack, start(["-m", "services.relay"], dep.env, dep.dir / "relay.log")
        )
        api = stopped_on_exit(stack, start(["-m", "services.api"], dep.env, dep.dir / "api.log"))
        wait_healthy(client, dep, api, deadline.within(120))
        bodies = registrations(args.count)
        print(f"posting {args.count} registrations, concurrency {args.concurrency}", flush=True)
        posted = post_all(dep, bodies, args.concurrency, deadline.end)
        print(
            f"  {posted.ok} accepted, {posted.failures} failed in {posted.elapsed_s:.1f} s "
            f"({posted.ok / posted.elapsed_s:.0f}/s)",
            flush=True,
        )
        procs = {"relay": relay, "api": api}
        counted, health = wait_counted(client, dep, posted.ok, procs, deadline.end)
        until_counted = time.perf_counter() - posted.began
        figures = {**_post_figures(posted), "counted": counted, "health": health}
        if counted:
            figures["until_counted_s"] = until_counted
            figures["drain_after_posting_s"] = until_counted - posted.elapsed_s
            figures["freshness"] = freshness(client, dep)
            figures["hourly_mismatches"] = hourly_mismatches(client, dep, posted.accepted)
            print("feed latency probes...", flush=True)
            figures["feed"] = feed_latency(dep, 20, min(deadline.end, time.monotonic() + 120))
    return figures


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


def catchup(
    name: str, phase: Callable[[], dict[str, Any]], results: dict[str, Any], problems: list[str]
) -> None:
    print(f"{name} catch-up...", flush=True)
    try:
        results[name] = phase()
    except BenchError as exc:
        problems.append(str(exc))


def run_phases(
    dep: Deployment,
    args: argparse.Namespace,
    deadline: Deadline,
    results: dict[str, Any],
    problems: list[str],
) -> None:
    print(f"deployment {dep.dir} (topic {dep.env['KAFKA_TOPIC']}, API :{dep.port})", flush=True)
    live = live_run(dep, args, deadline)
    results["live"] = live
    problems += live_problems(live, args.count)
    if not live["counted"] or not live["accepted"]:
        return
    n = live["accepted"]
    catchup("relay", lambda: relay_catchup(dep, n, deadline), results, problems)
    catchup("projector", lambda: projector_catchup(dep, n, deadline), results, problems)


# --- report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "cpu": cpu,
        "kernel": platform.release(),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def table_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    live, fresh = r.get("live", {}), r.get("live", {}).get("freshness", {})
    relay, proj, m = r.get("relay", {}), r.get("projector", {}), r["machine"]
    feed = r.get("live", {}).get("feed", {})
    batches = _fmt(proj.get("events_per_s_between_batches"))
    return [
        ("registrations (N)", _fmt(r["n"])),
        ("concurrency", _fmt(r["concurrency"])),
        ("accepted / failed", f"{_fmt(live.get('accepted'))} / {_fmt(live.get('failed'))}"),
        ("commands/s (POST phase)", _fmt(live.get("commands_per_s"))),
        (
            "POST latency p50 / p99 (ms)",
            f"{_ms(live.get('post_latency_p50_s'))} / {_ms(live.get('post_latency_p99_s'))}",
        ),
        ("time until all counted (s)", _fmt(live.get("until_counted_s"), 2)),
        ("  of which after last POST (s)", _fmt(live.get("drain_after_posting_s"), 2)),
        (
            "freshness p50 / p99 (s)",
            f"{_fmt(fresh.get('p50_s'), 3)} / {_fmt(fresh.get('p99_s'), 3)}",
        ),
        (
            "POST -> live feed p50 / max (s), idle",
            f"{_fmt(feed.get('p50_s'), 3)} / {_fmt(feed.get('max_s'), 3)}",
        ),
        ("relay events/s (catch-up)", _fmt(relay.get("events_per_s"))),
        (
            "  after start-up / start-up (s)",
            f"{_fmt(relay.get('events_per_s_after_startup'))} / {_fmt(relay.get('startup_s'), 2)}",
        ),
        ("projector events/s (catch-up)", _fmt(proj.get("events_per_s"))),
        (
            "  first..last batch / first batch (s)",
            f"{batches} / {_fmt(proj.get('first_batch_s'), 2)}",
        ),
        ("machine", f"nproc {m['nproc']}, Python {m['python']}"),
        ("result", "OK" if r["ok"] else "FAILED"),
    ]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def table(r: dict[str, Any]) -> str:
    rows = table_rows(r)
    width = max(len(label) for label, _ in rows)
    value_width = max(len(value) for _, value in rows)
    return "\n".join(f"{label:<{width}}  {value:>{value_width}}" for label, value in rows)


def save(r: dict[str, Any], out: Path, history: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2, default=str) + "\n")
    history.parent.mkdir(parents=True, exist_ok=True)
    with history.open("a") as f:
        f.write(json.dumps(r, default=str) + "\n")


# --- main --------------------------------------------------------------------------------------


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)  # so that every `finally` stops its processes
    deadline = Deadline(args.timeout)
    results: dict[str, Any] = {
        "started_at": datetime.now(VN).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "n": args.count,
        "concurrency": args.concurrency,
        "machine": machine(),
    }
    problems: list[str] = []
    try:
        with running_broker(args.var_dir):
            dep = make_deployment(args.var_dir)
            results["deployment"] = str(dep.dir)
            run_phases(dep, args, deadline, results, problems)
            if not problems and not args.keep:
                shutil.rmtree(dep.dir, ignore_errors=True)  # event store, chdb and logs
    except (BenchError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        problems.append("interrupted")
    results["problems"], results["ok"] = problems, not problems
    results["elapsed_s"] = args.timeout - deadline.remaining()
    print("\n" + table(results))
    save(results, args.out, args.var_dir / "bench-history.jsonl")
    print(f"\nwritten: {args.out}")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
