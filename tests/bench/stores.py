"""The event stores side by side (EVENT_STORE=postgres): commands/s through one API process on
SQLite, one on PostgreSQL and two on one PostgreSQL store, in alternating rounds of the same
run; then the relay's catch-up rate on the PostgreSQL store."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from tests.bench.catchup import relay_catchup
from tests.bench.deployment import BenchError, Deadline, Deployment, wait_healthy
from tests.bench.workload import PostResult, post_all, registrations
from tests.support.postgres import Cluster, running_postgres
from tests.support.processes import free_port, running

ARMS = ("sqlite_1_api", "postgres_1_api", "postgres_2_apis")


@contextmanager
def bench_store(var_dir: Path) -> Iterator[Cluster | None]:
    """The local PostgreSQL cluster when EVENT_STORE=postgres (started, and stopped again, if it
    accepts no logins), else None: the bench stays on SQLite."""
    if os.environ.get("EVENT_STORE", "sqlite") != "postgres":
        yield None
        return
    with running_postgres(var_dir) as cluster:
        yield cluster


def store_env(cluster: Cluster | None, schema: str) -> dict[str, str]:
    """The settings that put a deployment on SQLite (no cluster) or on `schema` of `cluster`."""
    if cluster is None:
        return {"EVENT_STORE": "sqlite"}
    return {**cluster.env(), "POSTGRES_SCHEMA": schema}


def stores_bench(
    dep: Deployment, cluster: Cluster, args: argparse.Namespace, deadline: Deadline
) -> dict[str, Any]:
    """`args.stores_rounds` rounds of the three arms, `args.stores_n` registrations each."""
    rates: dict[str, list[float]] = {arm: [] for arm in ARMS}
    last: dict[str, Deployment] = {}
    for round_no in range(args.stores_rounds):
        for arm in ARMS:
            print(f"stores: round {round_no + 1}, {arm}", flush=True)
            arm_dep = _arm_deployment(dep, cluster, arm, round_no)
            posted = run_arm(arm_dep, arm, args.stores_n, args.concurrency, deadline)
            if posted.failures:
                raise BenchError(f"{arm}: {posted.failures} commands failed: {dict(posted.errors)}")
            rates[arm].append(posted.ok / posted.elapsed_s)
            last[arm] = arm_dep
    print("stores: relay catch-up on PostgreSQL", flush=True)
    relay = relay_catchup(last["postgres_2_apis"], args.stores_n, deadline)
    if not args.keep:  # the arms' stores and the run's own (the last phase is this one)
        for arm_dep in [dep, *last.values()]:
            if arm_dep.env.get("POSTGRES_SCHEMA"):
                with contextlib.suppress(Exception):
                    cluster.drop(arm_dep.env["POSTGRES_SCHEMA"])
    return {
        "n": args.stores_n,
        "rounds": args.stores_rounds,
        "commands_per_s": {arm: statistics.median(r) for arm, r in rates.items()},
        "commands_per_s_rounds": rates,
        "relay_postgres": relay,
    }


def _arm_deployment(dep: Deployment, cluster: Cluster, arm: str, round_no: int) -> Deployment:
    """A fresh store and topic for one arm of one round, the run's tokens and secrets."""
    tag = f"{arm}_{round_no}"
    directory = dep.dir / "stores" / tag
    directory.mkdir(parents=True)
    schema = f"bench_{dep.env['KAFKA_TOPIC'].rpartition('-')[2]}_{tag}"
    topic = f"{dep.env['KAFKA_TOPIC']}-{tag}"
    env = {**dep.env, "VAR_DIR": str(directory / "var"), "KAFKA_TOPIC": topic,
           "RELAY_METRICS_PORT": "0", "KEK_FILE": str(directory / "kek"),
           **store_env(None if arm.startswith("sqlite") else cluster, schema)}  # fmt: skip
    return replace(dep, dir=directory, env=env)


def run_arm(dep: Deployment, arm: str, n: int, concurrency: int, deadline: Deadline) -> PostResult:
    """The relay and one or two API processes (no projector) on the arm's store; n
    registrations posted, split over the API processes."""
    apis = 2 if arm.endswith("2_apis") else 1
    bodies = registrations(n)
    with ExitStack() as stack:
        stack.enter_context(running(["-m", "services.relay"], dep.env, dep.dir / "relay.log"))
        deps = [_start_api(stack, dep, i, deadline) for i in range(apis)]
        end = deadline.within(600)
        with ThreadPoolExecutor(apis) as pool:
            shares = [bodies[i::apis] for i in range(apis)]
            began = time.perf_counter()
            parts = list(
                pool.map(lambda d, b: post_all(d, b, concurrency // apis, end), deps, shares)
            )
            elapsed = time.perf_counter() - began
    total = PostResult(elapsed_s=elapsed)
    for part in parts:
        total.ok += part.ok
        total.failures += part.failures
        total.errors.update(part.errors)
    return total


def _start_api(stack: ExitStack, dep: Deployment, i: int, deadline: Deadline) -> Deployment:
    """API process number `i` of an arm: its own port and chdb, the arm's store."""
    port = free_port()
    chdb = f"chdb://{dep.dir / f'chdb{i}'}"
    own = replace(dep, port=port, env={**dep.env, "API_PORT": str(port), "CLICKHOUSE_URL": chdb})
    api: subprocess.Popen[str] = stack.enter_context(
        running(["-m", "services.api", "--no-projector"], own.env, dep.dir / f"api{i}.log")
    )
    with httpx.Client() as client:
        wait_healthy(client, own, api, deadline.within(120))
    return own


def stores_problems(figures: dict[str, Any]) -> list[str]:
    rates = figures.get("commands_per_s", {})
    return [f"stores: no rate for {arm}" for arm in ARMS if not rates.get(arm)]
