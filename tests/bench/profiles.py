"""Where the time goes: cProfile of the pipeline's parts, in one process, on a fresh deployment.

`python -m tests.bench.profiles [-n 10000]` (the Kafka broker must answer): N registrations
are written straight through the registry (`handle_batch`, as the group-commit writer does),
then each part runs under cProfile, one after the other, single-threaded:

- `sync_prepare`: what `POST /v1/sync` does before the writer: the JSON body parsed and
  validated (`SyncIn`), each item validated and turned into a command (`sync.prepare`);
- `sync_apply`: the writer's share of one backlog of 5,000: `Registry.handle_batch`;
- `relay`: `Relay.step` until caught up (store read, mapping, Avro, Kafka transactions);
- `consume_decode`: a bare consumer reading the topic and decoding every record (Avro);
- `project`: `Projector.step` until it stored every record (poll, decode, rows, INSERT);
- `rebuild`: `projections.rebuild.rebuild`.

Each part's top functions (own time and cumulative) go to `--out`/<part>.txt; a summary is
printed. The figures are slower than the bench's (the profiler's own cost): read them as
shares, not rates.

First, on a deployment of its own, `api`: the API process (relay beside it) under wrk on
`POST /v1/registrations`, sampled by py-spy (`--gil`: only the thread holding the GIL, so the
shares are of the one core Python code can use), when py-spy is installed (`pip install
py-spy`; not a dependency of the project) and wrk is: each thread's share, and the functions
that hold most of the main (event loop) thread, in `--out`/api.txt.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.bench.ceiling import wrk_run
from tests.bench.deployment import broker_address, make_deployment, wait_healthy
from tests.bench.workload import registration
from tests.support.api import api_and_relay
from tests.support.factories import VN
from tests.support.processes import ROOT

SYNC_SIZE = 5000
BATCH = 256
TOP = 25


def profiled(name: str, out: Path, work: Callable[[], int]) -> dict[str, Any]:
    """Run `work` (returns how many events it handled) under cProfile; its stats to a file."""
    profile = cProfile.Profile()
    began = time.perf_counter()
    profile.enable()
    events = work()
    profile.disable()
    seconds = time.perf_counter() - began
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    text.write(f"{name}: {events} events in {seconds:.3f} s under cProfile\n")
    stats.sort_stats("tottime").print_stats(TOP)
    stats.sort_stats("cumulative").print_stats(TOP)
    (out / f"{name}.txt").write_text(text.getvalue())
    entries = stats.stats.items()  # type: ignore[attr-defined]
    top = sorted(entries, key=lambda kv: kv[1][2], reverse=True)[:8]
    shares = [(f"{Path(f).name}:{line}({fn})", round(own / seconds, 3))
              for (f, line, fn), (_, _, own, _, _) in top]  # fmt: skip
    print(
        f"{name}: {events} events, {seconds:.2f} s, {events / seconds:,.0f}/s profiled", flush=True
    )
    for where, share in shares:
        print(f"    {share:6.1%}  {where}", flush=True)
    return {"events": events, "seconds": seconds, "own_time_shares": shares}


def py_spy() -> str | None:
    """The py-spy binary: on PATH or beside this Python."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def api_profile(var_dir: Path, out: Path, seconds: int) -> dict[str, Any]:
    """The API under wrk for `seconds`, sampled by py-spy; shares per thread and function."""
    spy, wrk = py_spy(), shutil.which("wrk")
    if spy is None or wrk is None:
        print(f"api: skipped ({'py-spy' if spy is None else 'wrk'} not found)", flush=True)
        return {}
    dep = make_deployment(var_dir, {"EVENT_STORE": "sqlite"})
    raw = out / "api-samples.txt"
    url, token = f"{dep.base}/v1/registrations", dep.tokens["station"]
    with api_and_relay(dep.env, dep.dir) as procs, httpx.Client() as client:
        wait_healthy(client, dep, procs["api"], time.monotonic() + 120)
        wrk_run(url, token, 0, 2, 16, time.monotonic() + 60)  # warm-up
        command = [spy, "record", "--pid", str(procs["api"].pid), "--duration", str(seconds + 2),
                   "--rate", "100", "--nonblocking", "--gil", "--threads", "--format", "raw",
                   "-o", str(raw)]  # fmt: skip
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1)
        run = wrk_run(url, token, 1_000_000, seconds, 16, time.monotonic() + seconds + 60)
        try:
            sampler.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            sampler.kill()
    if not raw.exists():
        print("api: py-spy recorded nothing (ptrace not permitted?)", flush=True)
        return {"wrk_ok_per_s": run["ok_per_s"]}
    report = summarize_samples(raw)
    (out / "api.txt").write_text(f"wrk: {run['ok_per_s']:,.0f} registrations/s while sampled\n"
                                 + report)  # fmt: skip
    print(f"api: {run['ok_per_s']:,.0f} registrations/s under py-spy --gil", flush=True)
    print("\n".join(report.splitlines()[:12]), flush=True)
    return {"wrk_ok_per_s": run["ok_per_s"], "deployment": str(dep.dir)}


def summarize_samples(raw: Path, top: int = 40) -> str:
    """py-spy's raw stacks: each thread's share of the samples, then for the three busiest
    threads the functions found in most of their samples (inclusive)."""
    threads: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        name = frames[0].split(":", 1)[-1].strip() if frames else "?"
        n = int(count)
        total += n
        threads[name] += n
        for function in {frame.split(" (")[0] + " (" + frame.rsplit(" (", 1)[-1].split(":")[0]
                         + ")" for frame in frames[1:]}:  # fmt: skip
            inclusive[name][function] += n
    lines = [f"{total} samples holding the GIL"]
    lines += [f"{n / total:6.1%}  thread {name}" for name, n in threads.most_common(8)]
    for name, n in threads.most_common(3):
        lines.append(f"\nthread {name}: functions by share of its samples (inclusive)")
        lines += [f"  {k / n:6.1%}  {fn}" for fn, k in inclusive[name].most_common(top)]
    return "\n".join(lines) + "\n"


def backlog_body(device: str, first: int) -> bytes:
    rng, now = random.Random(), datetime.now(VN)
    items = [{**registration(i, first, rng, now), "device_id": device, "type": "registration"}
             for i in range(SYNC_SIZE)]  # fmt: skip
    return json.dumps({"device_id": device, "commands": items}).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profiles")
    parser.add_argument("-n", "--count", type=int, default=10000, help="registrations")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-profiles")
    parser.add_argument("--api-seconds", type=int, default=10, help="0: no API profile")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    var_dir = Path(os.environ.get("VAR_DIR", str(ROOT / "var"))).resolve()
    host, port = broker_address()
    print(f"broker {host}:{port}", flush=True)
    api = api_profile(var_dir, args.out, args.api_seconds) if args.api_seconds else {}
    dep = make_deployment(var_dir, {"EVENT_STORE": "sqlite"})
    os.environ.update(dep.env)

    # imported once the environment is the deployment's
    from kafka import KafkaConsumer, TopicPartition

    from projections.audit import audit_trail
    from projections.rebuild import rebuild
    from projections.runner import Projector, ProjectorOptions
    from schemas.codec import citizen_event_codec
    from services.api import sync
    from services.credentials import Principal
    from services.kafka import connect_as
    from services.registry.application import Registry
    from services.relay.relay import Relay
    from services.settings import Settings

    settings = Settings.from_env()
    registry = Registry(settings)
    principal = Principal(id="bench", role="station")
    results: dict[str, Any] = {"deployment": str(dep.dir), "n": args.count, "api": api}
    first = random.randrange(1_000_000 - args.count - 2 * SYNC_SIZE)

    def prepare(body: bytes) -> list[Any]:
        parsed = sync.SyncIn.model_validate_json(body)
        return sync.commands_of(sync.prepare(parsed, settings, principal))

    body = backlog_body("dev-profile", first)
    prepared: list[Any] = []

    def prepare_one() -> int:
        prepared.extend(prepare(body))
        return len(prepared)

    results["sync_prepare"] = profiled("sync_prepare", args.out, prepare_one)
    results["sync_apply"] = profiled(
        "sync_apply", args.out, lambda: len(registry.handle_batch(prepared))
    )
    more = args.count - SYNC_SIZE  # the rest of the N, through the writer's batches
    rest = [c for k in (1, 2) for c in prepare(backlog_body("dev-profile", first + k * SYNC_SIZE))]
    for i in range(0, min(len(rest), more), BATCH):
        registry.handle_batch(rest[i : min(i + BATCH, more)])

    relay = Relay(settings, registry)
    relay.start()

    def publish() -> int:
        end = time.monotonic() + 300
        while relay.step() and time.monotonic() < end:
            pass
        return relay.published

    results["relay"] = profiled("relay", args.out, publish)
    relay.close()
    registry.close()

    def consume_decode() -> int:
        codec = citizen_event_codec()
        consumer = KafkaConsumer(
            **connect_as(settings, "projector"),
            isolation_level="read_committed",
            enable_auto_commit=False,
            max_poll_records=5000,
        )
        parts = [TopicPartition(settings.kafka_topic, p) for p in range(3)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends, count = consumer.end_offsets(parts), 0
        end = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < end:
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    codec.decode(record.value)
                    count += 1
        consumer.close()
        return count

    results["consume_decode"] = profiled("consume_decode", args.out, consume_decode)
    total = results["consume_decode"]["events"]
    trail = audit_trail(settings.clickhouse_url, settings.clickhouse_database)
    projector = Projector(settings, trail, ProjectorOptions(group_mode=False))
    projector.start()

    def project() -> int:
        end = time.monotonic() + 300
        while projector.stored < total and time.monotonic() < end:
            projector.step()
        return projector.stored

    results["project"] = profiled("project", args.out, project)
    projector.close()
    results["rebuild"] = profiled(
        "rebuild", args.out, lambda: int(rebuild(settings, show_progress=False)["stored"])
    )
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    for directory in (dep.dir, api.get("deployment")):
        if directory:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"profiles in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
