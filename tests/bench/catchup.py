"""The catch-up phases: a second relay and a rebuilding projector over what the live run stored."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

from kafka import KafkaConsumer, TopicPartition

from services.kafka import connect_as
from services.settings import Settings
from tests.bench.deployment import STALL_S, BenchError, Deadline, Deployment
from tests.support.environment import granted
from tests.support.processes import running


def relay_catchup(dep: Deployment, n: int, deadline: Deadline) -> dict[str, Any]:
    """A second relay on a new topic, against the same store: time until n records committed."""
    topic = f"{dep.env['KAFKA_TOPIC']}-catchup"
    log = dep.dir / "relay-catchup.log"
    env = granted({**dep.env, "KAFKA_TOPIC": topic})
    began = time.monotonic()
    with running(["-m", "services.relay"], env, log) as relay:
        ready = wait_for_log(log, "relay resumes after store position", relay, deadline.within(120))
        if ready is None:
            raise BenchError(f"the catch-up relay did not start; see {log}")
        count, done = count_committed(env, topic, n, deadline.within(600))
    if count < n:
        raise BenchError(f"the catch-up relay published {count}/{n}; {log}: {log_tail(log)}")
    return {
        "total_s": done - began,
        "startup_s": ready - began,
        "publish_s": done - ready,
        "events_per_s": n / (done - began),
        "events_per_s_after_startup": n / (done - ready),
    }


def wait_for_log(log: Path, text: str, proc: subprocess.Popen[str], end: float) -> float | None:
    """The monotonic time `text` was first seen in `log` (polled), or None."""
    while time.monotonic() < end and proc.poll() is None:
        if log.exists() and text in log.read_text(errors="replace"):
            return time.monotonic()
        time.sleep(0.05)
    return None


def count_committed(env: dict[str, str], topic: str, n: int, end: float) -> tuple[int, float]:
    """Consume `topic` read_committed from the start until n records (as the projector of
    the deployment `env`); (count, monotonic time)."""
    consumer = KafkaConsumer(
        **connect_as(Settings.from_env(env), "projector"),
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


def projector_catchup(dep: Deployment, n: int, deadline: Deadline) -> dict[str, Any]:
    """`python -m projections run --progress` into a fresh database: time until n stored."""
    env = granted(
        {
            **dep.env,
            "CLICKHOUSE_DATABASE": "bench_rebuild",
            "PROJECTOR_GROUP": f"{dep.env['PROJECTOR_GROUP']}-rebuild",
        }
    )
    log = dep.dir / "projector-catchup.log"
    lines: queue.Queue[tuple[float, int]] = queue.Queue()
    began = time.monotonic()
    args = ["-m", "projections", "run", "--progress"]
    with running(args, env, log, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        threading.Thread(target=read_progress, args=(proc.stdout, lines), daemon=True).start()
        seen = _progress_until(lines, proc, n, deadline.within(600))
    if not seen or seen[-1][1] < n:
        raise BenchError(_projector_fell_short(seen, n, log))
    (t0, s0), (t1, s1) = seen[0], seen[-1]
    return {
        "total_s": t1 - began,
        "first_batch_s": t0 - began,
        "batches": len(seen),
        "events_per_s": n / (t1 - began),
        "events_per_s_between_batches": (s1 - s0) / (t1 - t0) if t1 > t0 else None,
    }


def _projector_fell_short(seen: list[tuple[float, int]], n: int, log: Path) -> str:
    got = seen[-1][1] if seen else 0
    dead = log.read_text(errors="replace").count("dead-lettered") if log.exists() else 0
    return f"the catch-up projector stored {got}/{n}, dead-lettered {dead}; {log}: {log_tail(log)}"


def read_progress(stream: IO[str], sink: queue.Queue[tuple[float, int]]) -> None:
    """Each `{"stored": k}` progress line of the projector, as (monotonic time, k)."""
    for line in stream:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            sink.put((time.monotonic(), int(json.loads(line)["stored"])))


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


def log_tail(log: Path, size: int = 400) -> str:
    """The last two lines of a log file, for error messages."""
    with contextlib.suppress(OSError), log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - size))
        lines = f.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-2:])
    return ""
