"""`python -m tests.bench`: the command line, the phases in their order, the report at the end."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.bench.catchup import projector_catchup, relay_catchup
from tests.bench.ceiling import ceiling_bench, ceiling_problems
from tests.bench.deployment import (
    BenchError,
    Deadline,
    Deployment,
    broker_address,
    make_deployment,
)
from tests.bench.history import history_problems
from tests.bench.live import live_problems, live_run
from tests.bench.pipeline import pipeline_bench, pipeline_problems
from tests.bench.proofs import proofs_bench, proofs_problems
from tests.bench.report import git_commit, load_average, machine, previous_run, save, table
from tests.bench.sealing import sealing_bench, sealing_problems
from tests.bench.stores import bench_store, store_env, stores_bench, stores_problems
from tests.support.broker import running_broker
from tests.support.factories import VN
from tests.support.postgres import Cluster
from tests.support.processes import ROOT

BROKER_TIMEOUT_S = 180.0  # for each infra/kafka/broker.sh start or stop


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
    parser.add_argument(
        "--sealing-n", type=_positive, default=3000, help="registrations per sealing round"
    )
    parser.add_argument(
        "--history-reads", type=_positive, default=200, help="auditor history reads"
    )
    parser.add_argument("--stores-n", type=_positive, default=2000, help="EVENT_STORE=postgres: "
                        "registrations per arm of the SQLite/PostgreSQL comparison")  # fmt: skip
    parser.add_argument("--stores-rounds", type=_positive, default=3, help="its rounds")
    parser.add_argument(
        "--rounds", type=_positive, default=3, help="rounds of each limit measurement (medians)"
    )
    parser.add_argument("--wrk-seconds", type=_positive, default=10, help="length of each wrk run")
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


def run_phases(
    dep: Deployment,
    args: argparse.Namespace,
    deadline: Deadline,
    results: dict[str, Any],
    problems: list[str],
) -> None:
    """The live run; then, if everything was counted, the relay and projector catch-ups."""
    print(f"deployment {dep.dir} (topic {dep.env['KAFKA_TOPIC']}, API :{dep.port})", flush=True)
    live = live_run(dep, args, deadline)
    results["live"] = live
    problems += live_problems(live, args.count)
    if "history_read" in live:
        results["history_read"] = live.pop("history_read")
        problems += history_problems(results["history_read"])
    if not live["counted"] or not live["accepted"]:
        return
    n = live["accepted"]
    catchup("relay", lambda: relay_catchup(dep, n, deadline), results, problems)
    catchup("projector", lambda: projector_catchup(dep, n, deadline), results, problems)
    print(
        f"pipeline limits: {args.rounds} rounds against the raw producer and consumer", flush=True
    )
    try:
        results["pipeline"] = pipeline_bench(dep, n, args.rounds, deadline)
        problems += pipeline_problems(results["pipeline"])
    except BenchError as exc:
        problems.append(str(exc))


def catchup(
    name: str, phase: Callable[[], dict[str, Any]], results: dict[str, Any], problems: list[str]
) -> None:
    print(f"{name} catch-up...", flush=True)
    try:
        results[name] = phase()
    except BenchError as exc:
        problems.append(str(exc))


def ceiling_phase(
    args: argparse.Namespace,
    cluster: Cluster | None,
    deadline: Deadline,
    results: dict[str, Any],
    problems: list[str],
) -> None:
    """wrk on a no-op endpoint and on registrations, freshness at half the maximum rate and
    device sync, on deployments of their own (removed again when nothing went wrong)."""
    print("HTTP ceiling: wrk, freshness at half the maximum rate, device sync", flush=True)
    fallback = float(results.get("live", {}).get("commands_per_s") or 100.0)

    def store(name: str) -> dict[str, str]:
        return store_env(cluster, f"bench_{os.getpid()}_{name}")

    try:
        found = ceiling_bench(args.var_dir, store, args, fallback, deadline)
    except (BenchError, httpx.HTTPError) as exc:
        problems.append(f"HTTP ceiling: {type(exc).__name__}: {exc}")
        return
    results["ceiling"] = found
    seen = ceiling_problems(found)
    problems += seen
    if not seen and not args.keep:
        for directory in (found["deployment"], found["paced"]["deployment"]):
            shutil.rmtree(directory, ignore_errors=True)


def sealing_phase(dep: Deployment, m: int, deadline: Deadline) -> tuple[dict[str, Any], list[str]]:
    """The registry's write path with encryption on and off (no services running by now):
    its figures and the problems seen."""
    print(f"sealing: {m} registrations per round, on/off alternating", flush=True)
    try:
        figures = sealing_bench(dep.dir / "sealing", m, deadline)
    except BenchError as exc:
        return {}, [str(exc)]
    return figures, sealing_problems(figures)


def run(args: argparse.Namespace, deadline: Deadline, results: dict[str, Any]) -> list[str]:
    """A deployment on the broker (started if none answers), its phases; the problems seen."""
    problems: list[str] = []
    host, port = broker_address()
    try:
        with (
            running_broker(args.var_dir, host, port, timeout=BROKER_TIMEOUT_S),
            bench_store(args.var_dir) as cluster,
        ):
            dep = make_deployment(args.var_dir, store_env(cluster, f"bench_{os.getpid()}"))
            results["deployment"] = str(dep.dir)
            run_phases(dep, args, deadline, results, problems)
            ceiling_phase(args, cluster, deadline, results, problems)
            sealing, found = sealing_phase(dep, args.sealing_n, deadline)
            results.update({"sealing": sealing} if sealing else {})
            problems += found
            print("signed log: signer rate, checkpoint lag, proofs at 100 k and 1 M", flush=True)
            results["proofs"] = proofs_bench(dep, deadline)
            problems += proofs_problems(results["proofs"])
            if cluster is not None:
                results["stores"] = stores_bench(dep, cluster, args, deadline)
                problems += stores_problems(results["stores"])
            if not problems and not args.keep:
                shutil.rmtree(dep.dir, ignore_errors=True)  # event store, chdb and logs
    except (BenchError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        problems.append("interrupted")
    return problems


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
    problems = run(args, deadline, results)
    results["problems"], results["ok"] = problems, not problems
    results["elapsed_s"] = args.timeout - deadline.remaining()
    results["load_end"] = load_average()
    history = args.var_dir / "bench-history.jsonl"
    print("\n" + table(results, previous_run(history)))
    save(results, args.out, history)
    print(f"\nwritten: {args.out}")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
