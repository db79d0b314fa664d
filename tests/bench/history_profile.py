"""The history read alone, before and after a change: where its time goes, and how long it takes.

`python -m tests.bench.history_profile [-n 2000] [-k 200] [--rounds 3] [--tree DIR ...]`
(the Kafka broker must answer): a fresh deployment's relay runs throughout; N registrations
go in through the API of the first tree, and once the last one reads `verified`, each round
starts the API of every tree in turn (same store, same read model, same signed log), warms it
up, has the auditor read K histories one by one over HTTP (as `make bench`'s history phase,
the client's JSON decoding included) and stops it. Each tree's p50 / p99 per round and the
median over rounds are printed: two trees (`git archive` of the commit before, and this one)
give alternating before/after rounds. `--deployment DIR` reuses a run's deployment.

`--paired OLD/audit_routes.py`: one API process (the first tree's) also serves that version's
history route at /v1/citizens/history-before, on the same backbone, and each read goes to
both in random order: the two versions compared request by request under the same load (the
way to see a millisecond on a shared, noisy machine).

`--timings` (implied by `--paired`): the API is served by `serve` below, which appends to
`--out`/timings.jsonl, per API process, p50 / p90 / p99 of: the whole request on the server
(`server`, `server-before`), the backbone calls a read makes (`rows`: the read-model query;
`account`; `record`: the access record's commit; `log.*`: the signed log's reads) and, for
the current route, its stages (queued and running in each executor, back on the event loop,
after). `--py-spy`: each tree's last round sampled by py-spy `--idle` (wall clock).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.bench.deployment import Deployment, make_deployment, wait_healthy
from tests.bench.history import read_one
from tests.bench.profiles import py_spy, summarize_samples
from tests.bench.workload import post_all, registrations
from tests.support.processes import ROOT, running, stop
from tests.support.waiting import wait_until


def started_api(
    dep: Deployment, tree: Path, log: Path, timings: Path | None = None, **more: str
) -> subprocess.Popen[str]:
    """`python -m services.api` of the code in `tree` (its own directory first on the path);
    with `timings`, the same app served by `serve` (this module, copied into `tree`)."""
    command = ["-m", "services.api"]
    env = {**os.environ, **dep.env, **more}
    if timings is not None:
        own = tree / "tests" / "bench" / Path(__file__).name
        if own.resolve() != Path(__file__).resolve():
            own.write_text(Path(__file__).read_text())
        command, env["HISTORY_TIMINGS"] = (
            ["-m", "tests.bench.history_profile", "--serve"],
            str(timings),
        )
    with log.open("a") as sink:
        return subprocess.Popen([sys.executable, *command], cwd=tree, env=env, text=True,
                                stdout=sink, stderr=sink)  # fmt: skip


def serve() -> None:
    """The API as `python -m services.api` runs it, timed on the server side: each history
    read from its request to its last byte (`server`), and the backbone calls it makes (the
    read model's rows, the account's store read, the access record's commit, the signed log's
    reads). On exit, each figure's p50 / p90 / p99 is appended to $HISTORY_TIMINGS as JSON."""
    import threading

    import uvicorn

    from services.api.app import create_app
    from services.settings import Settings

    settings = Settings.from_env()
    app = create_app(settings)
    if os.environ.get("HISTORY_BEFORE"):
        _add_before(app, Path(os.environ["HISTORY_BEFORE"]))
    taken: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()

    def timed(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                with lock:
                    taken[name].append(1000 * (time.perf_counter() - began))

        return run

    def patch() -> None:
        backbone = app.state.backbone
        trail, registry, tree = backbone.trail, backbone.registry, backbone.log
        trail.history_and_reads = timed("rows", trail.history_and_reads)
        registry.account_with_times = timed("account", registry.account_with_times)
        registry.record_access = timed("record", registry.record_access)
        if tree is not None:
            for name in ("latest_checkpoint", "indexes_of", "inclusion_proofs", "leaves_of"):
                setattr(tree, name, timed(f"log.{name}", getattr(tree, name)))

    def write() -> None:
        figures = {name: [round(p(values[20:] or values, q), 2) for q in (0.5, 0.9, 0.99)]
                   for name, values in taken.items()}  # fmt: skip
        with Path(os.environ["HISTORY_TIMINGS"]).open("a") as out:
            out.write(json.dumps({"tree": os.getcwd(), **figures}) + "\n")

    stages = _stages(taken, lock)

    async def timing(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # the figures written as the server shuts down

            async def received() -> Any:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    write()
                return message

            await app(scope, received, send)
            return
        if scope["type"] != "http" or not scope["path"].startswith("/v1/citizens/history"):
            await app(scope, receive, send)
            return
        if "rows" not in taken:
            patch()
        began = time.perf_counter()
        marks = {"began": began}
        token = stages.set(marks)

        async def sent(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                ended = time.perf_counter()
                with lock:
                    name = "server" + scope["path"].removeprefix("/v1/citizens/history")
                    taken[name].append(1000 * (ended - began))
                    _note_stages(taken, marks, ended)
            await send(message)

        try:
            await app(scope, receive, sent)
        finally:
            stages.reset(token)

    uvicorn.run(timing, host=settings.api_host, port=settings.api_port, log_level="warning")


def _stages(taken: dict[str, list[float]], lock: Any) -> Any:
    """The current request's marks (a contextvar), set by `audit_routes`' two executors and
    its call of `verify_signed_history` (patched here): when each task was queued, started and
    ended, and when the route resumed on the event loop."""
    import contextvars

    from services.api import audit_routes

    stages: contextvars.ContextVar[dict[str, float]] = contextvars.ContextVar("stages")

    class Marked:
        def __init__(self, name: str, pool: Any) -> None:
            self.name, self.pool = name, pool

        def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
            marks = stages.get({})
            marks[f"{self.name}.queued"] = time.perf_counter()

            def run() -> Any:
                marks[f"{self.name}.started"] = time.perf_counter()
                try:
                    return fn(*args)
                finally:
                    marks[f"{self.name}.ended"] = time.perf_counter()

            return self.pool.submit(run)

    for name in ("_QUERIES", "_RECORDS"):
        if hasattr(audit_routes, name):
            setattr(
                audit_routes, name, Marked(name.strip("_").lower(), getattr(audit_routes, name))
            )
    verify = audit_routes.verify_signed_history

    def resumed(*args: Any) -> Any:
        stages.get({})["resumed"] = time.perf_counter()
        return verify(*args)

    audit_routes.verify_signed_history = resumed  # type: ignore[assignment]
    return stages


def _note_stages(taken: dict[str, list[float]], marks: dict[str, float], ended: float) -> None:
    if "resumed" not in marks or "queries.ended" not in marks or "records.ended" not in marks:
        return
    ms = {k: 1000 * (v - marks["began"]) for k, v in marks.items()}
    spans = {
        "stage.before_submit": ms["queries.queued"],
        "stage.queries_queue": ms["queries.started"] - ms["queries.queued"],
        "stage.queries_run": ms["queries.ended"] - ms["queries.started"],
        "stage.records_queue": ms["records.started"] - ms["records.queued"],
        "stage.records_run": ms["records.ended"] - ms["records.started"],
        "stage.back_on_loop": ms["resumed"] - max(ms["queries.ended"], ms["records.ended"]),
        "stage.after": 1000 * (ended - marks["began"]) - ms["resumed"],
    }
    for name, value in spans.items():
        taken[name].append(value)


def _add_before(app: Any, module_file: Path) -> None:
    """Serve the history route of another version of `audit_routes.py` (on this tree's backbone)
    at /v1/citizens/history-before: two versions compared request by request, same process."""
    import importlib.util

    from fastapi.routing import APIRoute

    spec = importlib.util.spec_from_file_location("before_audit_routes", module_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    route = next(r for r in module.router.routes
                 if isinstance(r, APIRoute) and r.path == "/v1/citizens/history")  # fmt: skip
    app.add_api_route("/v1/citizens/history-before", route.endpoint, methods=["POST"],
                      dependencies=route.dependencies)  # fmt: skip


def reads(
    client: httpx.Client, dep: Deployment, sample: list[tuple[str, str]]
) -> tuple[list[float], Counter[str]]:
    """Read each history once, in order; the latencies and what failed."""
    url = f"{dep.base}/v1/citizens/history"
    latencies: list[float] = []
    problems: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for citizen_id, full_name in sample:
        began = time.perf_counter()
        error = read_one(client, url, citizen_id, full_name, statuses)
        latencies.append(1000 * (time.perf_counter() - began))
        if error is not None:
            problems[error] += 1
    problems.update({f"status {s}": n for s, n in statuses.items() if s != "verified"})
    return latencies, problems


def paired_reads(
    client: httpx.Client, dep: Deployment, sample: list[tuple[str, str]]
) -> tuple[dict[str, list[float]], Counter[str]]:
    """Each history read once by each version (`history-before`, then `history`, or the other
    way round, at random): their latencies, side by side under the same load."""
    paths = ("history-before", "history")
    latencies: dict[str, list[float]] = {path: [] for path in paths}
    problems: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for citizen_id, full_name in sample:
        for path in random.sample(paths, 2):
            began = time.perf_counter()
            url = f"{dep.base}/v1/citizens/{path}"
            error = read_one(client, url, citizen_id, full_name, statuses)
            latencies[path].append(1000 * (time.perf_counter() - began))
            if error is not None:
                problems[f"{path}: {error}"] += 1
    problems.update({f"status {s}": n for s, n in statuses.items() if s != "verified"})
    return latencies, problems


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def verified(client: httpx.Client, dep: Deployment, citizen: tuple[str, str]) -> bool:
    _, problems = reads(client, dep, [citizen])
    return not problems


def sampled(pid: int, raw: Path, seconds: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling `pid`'s threads, waits included, until it gets SIGINT (None: no py-spy;
    `python -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install py-spy` makes one)."""
    spy = py_spy() or "/tmp/pyspy/bin/py-spy"
    if not Path(spy).exists():
        return None
    command = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
               "--nonblocking", "--idle", "--threads", "--format", "raw",
               "-o", str(raw)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def paired(
    args: argparse.Namespace,
    dep: Deployment,
    client: httpx.Client,
    citizens: list[tuple[str, str]],
    tree: Path,
) -> None:
    """`--paired`: this tree's API also serving the other version's route; reads alternate."""
    figures: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for round_ in range(args.rounds):
        api = started_api(dep, tree, dep.dir / "api.log", args.out / "timings.jsonl",
                          HISTORY_BEFORE=str(args.paired.resolve()))  # fmt: skip
        wait_healthy(client, dep, api, time.monotonic() + 120)  # type: ignore[arg-type]
        wait_until(lambda: verified(client, dep, citizens[-1]), 120, every=0.5)
        paired_reads(client, dep, random.sample(citizens, 20))  # warm-up
        latencies, problems = paired_reads(client, dep, random.sample(citizens, args.reads))
        stop(api)  # type: ignore[arg-type]
        for path, values in latencies.items():
            figures[path].append((p(values, 0.5), p(values, 0.99)))
            print(f"round {round_ + 1} {path}: p50 {p(values, 0.5):.1f} ms, "
                  f"p99 {p(values, 0.99):.1f} ms", flush=True)  # fmt: skip
        if problems:
            print(f"problems: {dict(problems)}", flush=True)
    for path, pairs in figures.items():
        p50 = statistics.median(a for a, _ in pairs)
        p99 = statistics.median(b for _, b in pairs)
        print(f"{path}: median p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(pairs)} rounds")


def deployment(args: argparse.Namespace, store: dict[str, str]) -> Deployment:
    """`--deployment`'s (its settings saved in env.json), or a fresh one."""
    if args.deployment is not None:
        env = json.loads((args.deployment / "env.json").read_text())
        tokens = dict(item.split("=", 1) for item in env["AUTH_TOKENS"].split(","))
        return Deployment(args.deployment.resolve(), env, int(env["API_PORT"]), tokens)
    dep = make_deployment(Path(os.environ.get("VAR_DIR", str(ROOT / "var"))).resolve(), store)
    (dep.dir / "env.json").write_text(json.dumps(dep.env))
    return dep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.history_profile")
    parser.add_argument("-n", "--count", type=int, default=2000, help="registrations")
    parser.add_argument("-k", "--reads", type=int, default=200, help="reads per tree and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", type=Path, action="append", help="code trees (default: this)")
    parser.add_argument("--py-spy", action="store_true", help="sample each tree's last round")
    parser.add_argument("--store", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "history-profile")
    parser.add_argument("--timings", action="store_true", help="server-side timings to --out")
    parser.add_argument("--deployment", type=Path, help="reuse this run's deployment")
    parser.add_argument("--paired", type=Path, help="audit_routes.py of the version before")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    trees = [t.resolve() for t in args.tree or [ROOT]]
    args.out.mkdir(parents=True, exist_ok=True)
    store = {"EVENT_STORE": args.store}
    if args.store == "postgres":
        from tests.support.postgres import running_postgres

        cluster = running_postgres(ROOT / "var").__enter__()
        schema = cluster.fresh_schema().__enter__()
        store = {**cluster.env(), "POSTGRES_SCHEMA": schema, "EVENT_STORE": "postgres"}
    dep = deployment(args, store)
    print(f"deployment {dep.dir}", flush=True)
    figures: dict[str, list[tuple[float, float]]] = {str(t): [] for t in trees}
    with (
        running(["-m", "services.relay"], dep.env, dep.dir / "relay.log"),
        httpx.Client(timeout=30, headers=dep.headers("auditor")) as client,
    ):
        saved = dep.dir / "citizens.json"
        if not saved.exists():
            api = started_api(dep, trees[0], dep.dir / "api.log")
            wait_healthy(client, dep, api, time.monotonic() + 120)  # type: ignore[arg-type]
            posted = post_all(dep, registrations(args.count), 8, time.monotonic() + 600)
            print(f"posted {posted.ok} of {args.count}", flush=True)
            saved.write_text(json.dumps(posted.citizens))
            stop(api)  # type: ignore[arg-type]
        citizens = [(c, name) for c, name in json.loads(saved.read_text())]
        last = citizens[-1]
        if args.paired:
            paired(args, dep, client, citizens, trees[0])
            return 0
        for round_ in range(args.rounds):
            for tree in trees:
                timings = args.out / "timings.jsonl" if args.timings else None
                api = started_api(dep, tree, dep.dir / "api.log", timings)
                wait_healthy(client, dep, api, time.monotonic() + 120)  # type: ignore[arg-type]
                wait_until(lambda: verified(client, dep, last), 120, every=0.5)
                reads(client, dep, random.sample(citizens, 20))  # warm-up
                sampler = None
                raw = args.out / f"{tree.name}-samples.txt"
                if args.py_spy and round_ == args.rounds - 1:
                    sampler = sampled(api.pid, raw, 600)
                    time.sleep(0.5)
                latencies, problems = reads(client, dep, random.sample(citizens, args.reads))
                if sampler is not None:
                    sampler.send_signal(signal.SIGINT)  # py-spy writes what it has
                    sampler.wait()
                    (args.out / f"{tree.name}.txt").write_text(summarize_samples(raw, 60))
                stop(api)  # type: ignore[arg-type]
                figures[str(tree)].append((p(latencies, 0.5), p(latencies, 0.99)))
                print(f"round {round_ + 1} {tree}: p50 {p(latencies, 0.5):.1f} ms, p99 "
                      f"{p(latencies, 0.99):.1f} ms; problems {dict(problems)}",
                      flush=True)  # fmt: skip
    for tree, pairs in figures.items():
        p50 = statistics.median(a for a, _ in pairs)
        p99 = statistics.median(b for _, b in pairs)
        print(f"{tree}: median p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(pairs)} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
