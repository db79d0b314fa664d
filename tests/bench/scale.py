"""`python -m tests.bench.scale` (`make bench-scale`): the read side at national scale.

A fresh deployment (relay, API with its embedded projector and signer) gets K real
registrations through the API (real citizens, with histories in the store and proofs in the
log), then N synthetic events produced straight onto its topic with a plain Kafka producer,
which the projector then stores like any other. Why the producer and not the store: the
write path runs at a few thousand events/s here (`make bench` measures it), so 10 M events
through it would take hours; what this bench measures is the read models and queries at 10 M
rows, and the projector is the real one. The synthetic events follow the campaign's shape:
registrations in every commune of the country, most approved and many activated, several
devices per commune, over the campaign's days.

Then, over HTTP, p50 / p99 of: a citizen's history with verification, hourly by commune and by
province, progress by province, devices by province, freshness; and the peak RSS of the API
(projector included) and of the relay. Results in var/bench-scale.json, one line more in
var/bench-scale-history.jsonl, the previous run printed beside.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaProducer
from vietnam_provinces import Ward

from schemas import event_types as types
from schemas.codec import citizen_event_codec
from services.kafka import connect_as
from services.relay.mapping import NAMESPACE
from services.settings import Settings
from tests.bench.deployment import Deadline, Deployment, make_deployment, wait_healthy
from tests.bench.history import history_reads
from tests.bench.report import git_commit, machine
from tests.bench.workload import post_all, registrations
from tests.support.api import api_and_relay
from tests.support.processes import ROOT

K_CITIZENS = 200  # real registrations, whose histories are read
READS = 200  # requests per measured query
CAMPAIGN_DAYS = 30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    var_dir = Path(os.environ.get("VAR_DIR", str(ROOT / "var"))).resolve()
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.scale", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    parser.add_argument("-n", "--events", type=int, default=10_000_000, help="synthetic events")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds for the whole run")
    parser.add_argument("--out", type=Path, default=var_dir / "bench-scale.json")
    parser.set_defaults(var_dir=var_dir)
    return parser.parse_args(argv)


def synthetic(n: int, seed: int = 6) -> Iterator[dict[str, Any]]:
    """About `n` public records shaped like the campaign (per account: received, then mostly
    decided, then often activated)."""
    rng = random.Random(seed)
    communes = [(f"{int(w.code):05d}", f"{int(w.province_code):02d}") for w in Ward.iter_all()]
    start = datetime.now(UTC) - timedelta(days=CAMPAIGN_DAYS)  # the dashboards' windows see it
    made = 0
    while made < n:
        account, (commune, province) = str(uuid.uuid4()), rng.choice(communes)
        device = f"dev-{commune}-{rng.randrange(4)}"
        at = start + timedelta(seconds=rng.randrange(CAMPAIGN_DAYS * 86400))
        steps = [(types.REGISTRATION_RECEIVED, {
            "sealed_full_name": "sealed:v1:synthetic", "sealed_date_of_birth": "sealed:v1:s",
            "sealed_sex": "sealed:v1:s", "station_id": f"st-{commune}", "device_id": device,
            "operator_id": f"op-{rng.randrange(3)}", "attempt": 1,
            "channel": rng.choice(("station", "station", "home_visit", "mobile_team")),
            "phone": rng.choice(("smart", "smart", "basic", "none"))})]  # fmt: skip
        if rng.random() < 0.9:
            steps.append(
                (types.REGISTRATION_DECIDED, {"decision": "approved", "sealed_reason": ""})
            )
            if rng.random() < 0.75:
                steps.append((types.ACCOUNT_ACTIVATED, {"method": "vneid_app"}))
        for sequence, (event_type, payload) in enumerate(steps, start=1):
            at = min(at + timedelta(minutes=rng.randrange(5, 600)), datetime.now(UTC))
            yield {
                "event_id": str(uuid.uuid4()), "event_type": event_type, "account_id": account,
                "sequence": sequence, "position": 0, "sealed_citizen_id": "sealed:v1:synthetic",
                "occurred_at": at, "recorded_at": at, "province_code": province,
                "commune_code": commune, "previous_hash": "", "hash": "",
                "payload": (NAMESPACE + types.PAYLOAD_RECORDS[event_type], payload),
            }  # fmt: skip
            made += 1


def produce(dep: Deployment, n: int, end: float) -> dict[str, Any]:
    """N synthetic records onto the deployment's topic, keyed by account like the relay's."""
    codec = citizen_event_codec()
    producer = KafkaProducer(**connect_as(Settings.from_env(dep.env), "relay"), acks=1,
                             compression_type="lz4", linger_ms=20,
                             batch_size=1024 * 1024)  # fmt: skip
    began, sent = time.perf_counter(), 0
    try:
        for record in synthetic(n):
            if time.monotonic() > end:
                break
            producer.send(dep.env["KAFKA_TOPIC"], key=record["account_id"].encode(),
                          value=codec.encode(record))  # fmt: skip
            sent += 1
            if sent % 500_000 == 0:
                print(f"  produced {sent:,}", flush=True)
        producer.flush()
    finally:
        producer.close()
    return {"events": sent, "events_per_s": sent / (time.perf_counter() - began)}


def wait_stored(client: httpx.Client, dep: Deployment, total: int, end: float) -> dict[str, Any]:
    began, last = time.perf_counter(), -1
    while time.monotonic() < end:
        stored = int(client.get(f"{dep.base}/healthz").json().get("projected_events") or 0)
        if stored >= total:
            return {"stored": stored, "seconds": time.perf_counter() - began}
        if stored // 500_000 != last // 500_000:
            print(f"  projected {stored:,} of {total:,}", flush=True)
        last = stored
        time.sleep(2)
    raise TimeoutError(f"the projector stored {last} of {total} in time")


def timed(call: Callable[[], httpx.Response], k: int = READS) -> dict[str, Any]:
    latencies, failed = [], 0
    for _ in range(k):
        began = time.perf_counter()
        response = call()
        latencies.append(time.perf_counter() - began)
        failed += response.status_code != 200
    ordered = sorted(latencies)
    return {"p50_s": statistics.median(ordered), "p99_s": ordered[int(0.99 * (len(ordered) - 1))],
            "failed": failed}  # fmt: skip


def queries(dep: Deployment, citizens: list[tuple[str, str]]) -> dict[str, Any]:
    rng = random.Random(7)
    wards = list(Ward.iter_all())
    sizes: dict[int, int] = {}
    for ward in wards:
        sizes[int(ward.province_code)] = sizes.get(int(ward.province_code), 0) + 1
    big = max(sizes, key=lambda p: sizes[p])  # the province with the most communes
    province = f"{big:02d}"
    communes = [f"{int(w.code):05d}" for w in wards if int(w.province_code) == big]
    out: dict[str, Any] = {"province": province}
    with httpx.Client(base_url=dep.base, headers=dep.headers("viewer"), timeout=60) as c:

        def get(path: str, **params: Any) -> Callable[[], httpx.Response]:
            return lambda: c.get(path, params={k: v() if callable(v) else v
                                               for k, v in params.items()})  # fmt: skip

        # The dashboards' own windows (their defaults): hourly 2 days, devices 7 days.
        out["hourly_commune"] = timed(get("/v1/progress/hourly", level="commune",
                                          code=lambda: rng.choice(communes)))  # fmt: skip
        out["hourly_province"] = timed(get("/v1/progress/hourly", level="province",
                                           code=province))  # fmt: skip
        out["progress_province"] = timed(get("/v1/progress", level="province", code=province))
        out["devices_province"] = timed(get("/v1/progress/devices", level="province",
                                            code=province))  # fmt: skip
        out["devices_commune"] = timed(get("/v1/progress/devices", level="commune",
                                           code=lambda: rng.choice(communes)))  # fmt: skip
        out["freshness"] = timed(get("/v1/progress/freshness", minutes=60))
    reads = history_reads(dep, citizens, min(READS, len(citizens)), time.monotonic() + 600)
    out["history"] = {k: reads[k] for k in ("p50_s", "p99_s", "failed", "verification")}
    return out


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = Deadline(args.timeout)
    dep = make_deployment(args.var_dir)
    results: dict[str, Any] = {"n": args.events, "deployment": str(dep.dir)}
    print(f"deployment {dep.dir}", flush=True)
    with api_and_relay(dep.env, dep.dir) as procs, httpx.Client() as client:
        wait_healthy(client, dep, procs["api"], deadline.within(120))
        bodies = registrations(K_CITIZENS)
        posted = post_all(dep, bodies, 8, deadline.within(300))
        print(f"{posted.ok} real registrations; producing {args.events:,} events", flush=True)
        began = time.perf_counter()
        results["produce"] = produce(dep, args.events, deadline.end)
        total = results["produce"]["events"] + posted.ok
        results["projector"] = wait_stored(client, dep, total, deadline.end)
        # The projector stores while the events are produced: its rate is the whole load's.
        results["projector"]["events_per_s"] = total / (time.perf_counter() - began)
        print("measuring queries over HTTP", flush=True)
        time.sleep(3)  # the signer's next checkpoint covers the real citizens
        results["queries"] = queries(dep, posted.citizens)
        results["rss_mb"] = {name: peak_rss_mb(p.pid) for name, p in procs.items()}
    return results


def report(r: dict[str, Any], previous: dict[str, Any] | None) -> str:
    def ms(q: dict[str, Any] | None) -> str:
        return "-" if not q else f"{q['p50_s'] * 1000:.1f} / {q['p99_s'] * 1000:.1f}"

    rows = [("events (synthetic + real)", lambda x: f"{x['projector']['stored']:,}"),
            ("produced -> stored events/s", lambda x: f"{x['projector']['events_per_s']:,.0f}"),
            ("  stored after the last produced (s)",
             lambda x: f"{x['projector']['seconds']:.1f}")]  # fmt: skip
    for name in ("history", "hourly_commune", "hourly_province", "progress_province",
                 "devices_province", "devices_commune", "freshness"):  # fmt: skip
        rows.append((f"{name} p50 / p99 (ms)", lambda x, n=name: ms(x["queries"].get(n))))

    def rss(x: dict[str, Any]) -> str:
        found = x["rss_mb"]
        return " / ".join(f"{found[n]:.0f}" if found.get(n) else "-" for n in ("api", "relay"))

    rows.append(("peak RSS MB api / relay", rss))
    lines = [f"{'':<32}{'this run':>22}{'previous':>22}"]
    for label, value in rows:
        prev = "-"
        if previous:
            try:
                prev = value(previous)
            except (KeyError, TypeError, ZeroDivisionError):
                prev = "-"
        lines.append(f"{label:<32}{value(r):>22}{prev:>22}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    history = args.var_dir / "bench-scale-history.jsonl"
    previous = None
    if history.exists() and history.read_text().strip():
        previous = json.loads(history.read_text().strip().splitlines()[-1])
    results = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"),
               "commit": git_commit(), "machine": machine(), **run(args)}  # fmt: skip
    print("\n" + report(results, previous))
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    with history.open("a") as f:
        f.write(json.dumps(results, default=str) + "\n")
    failed = {k: v["failed"] for k, v in results["queries"].items()
              if isinstance(v, dict) and v.get("failed")}  # fmt: skip
    if failed:
        print(f"PROBLEM: failed requests {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
