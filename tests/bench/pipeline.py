"""The pipeline beside its parts' limits: the relay against the raw kafka-python producer, the
projector and a full rebuild against the raw consumer, on the same broker and the same records.

Every figure is taken the same way: one fresh process per measurement (`python -m
tests.bench.pipeline MODE`, run one after the other, nothing else of the bench running), its
start-up (imports, connections, `init_transactions`, topic checks) outside the clock, then
the clock runs from the first send or poll to the last commit or the last record. The rebuild
is timed whole (`projections.rebuild.rebuild`): that is what an operator waits for.

- `relay`: `services.relay.Relay` publishes the deployment's store to a new topic, step by
  step until caught up.
- `produce`: the same records (the relay's own mapping and Avro encoding, its keys, headers
  and topics, encoded before the clock starts) sent by a bare producer with the relay's
  settings (transactional, hence idempotent with acks=all; lz4, linger, batch size, request
  size), one transaction per `RelayOptions.batch_size` records as the relay does.
- `consume`: a bare consumer (read_committed, the projector's fetch settings) reads the live
  topic from offset 0 to its end; `decode`: the same, decoding every record (Avro, the
  projector's codec): not a goal, it tells the decoding from the storing in the projector's gap.
- `project`: `projections.runner.Projector` (as embedded in the API: every partition, no group
  rebalance) stores the live topic into a new database, step by step until it holds them all.
- `rebuild`: `rebuild(settings, show_progress=False)` of the deployment's read models.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from tests.bench.catchup import log_tail
from tests.bench.deployment import BenchError, Deadline, Deployment
from tests.support.environment import granted
from tests.support.processes import python_process

MODES = ("relay", "produce", "consume", "decode", "project", "rebuild")
GOAL = 0.8  # each of the project's figures against its raw baseline (issue 13)
RESULT = "RESULT "  # the prefix of the tool's one result line on stdout
# The producer settings the raw baseline must share with the relay (compared on every run).
PRODUCER_KEYS = ("acks", "enable_idempotence", "compression_type", "linger_ms", "batch_size",
                 "max_request_size", "max_in_flight_requests_per_connection")  # fmt: skip
STEP_LIMIT_S = 300.0  # no single measurement runs longer


# -- the bench side: rounds of the five measurements, medians and ratios ----------------------


def pipeline_bench(dep: Deployment, n: int, rounds: int, deadline: Deadline) -> dict[str, Any]:
    """`rounds` rounds of relay, produce, consume, project, rebuild on the deployment's store
    and live topic (which holds `n` records); medians, ratios to the baselines, goals."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for round_no in range(rounds):
        for mode in MODES:
            if deadline.remaining() < 30:
                raise BenchError(f"pipeline: no time left for round {round_no + 1} ({mode})")
            print(f"pipeline: round {round_no + 1}/{rounds}, {mode}", flush=True)
            # the projector stores what the raw consumer read (the live topic holds n and more)
            seen = runs["consume"][-1]["events"] if mode == "project" else n
            env = granted({**dep.env, **overrides(dep, mode, round_no)})
            runs[mode].append(run_tool(dep, env, mode, seen, deadline))
    return summarize(runs, n)


def overrides(dep: Deployment, mode: str, round_no: int) -> dict[str, str]:
    """A new topic for each publishing run, a new database and group for each projector run;
    the consumer and the rebuild read the live topic, the rebuild into the live database."""
    topic, group = dep.env["KAFKA_TOPIC"], dep.env["PROJECTOR_GROUP"]
    if mode in ("relay", "produce"):
        return {"KAFKA_TOPIC": f"{topic}-{mode}-r{round_no}"}
    if mode == "project":
        return {"CLICKHOUSE_DATABASE": f"bench_project_r{round_no}",
                "PROJECTOR_GROUP": f"{group}-project-r{round_no}"}  # fmt: skip
    return {}


def run_tool(
    dep: Deployment, env: dict[str, str], mode: str, n: int, deadline: Deadline
) -> dict[str, Any]:
    """One measurement in its own process; its result, or BenchError with the log's tail."""
    log = dep.dir / f"pipeline-{mode}.log"
    args = ["-m", "tests.bench.pipeline", mode, "--events", str(n)]
    with log.open("a") as sink:
        proc = python_process(args, env, stdout=subprocess.PIPE, stderr=sink)
        try:
            out, _ = proc.communicate(timeout=min(STEP_LIMIT_S + 120, deadline.remaining()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BenchError(f"pipeline {mode} did not finish in time; see {log}") from None
    for line in out.splitlines():
        if line.startswith(RESULT):
            return dict(json.loads(line[len(RESULT) :]))
    raise BenchError(f"pipeline {mode} exited {proc.returncode} without a result; {log}: "
                     f"{log_tail(log)}")  # fmt: skip


def summarize(runs: dict[str, list[dict[str, Any]]], n: int) -> dict[str, Any]:
    """Median events/s per measurement, the three ratios, whether each meets the goal, and
    whether the raw producer really had the relay's settings."""
    medians = {mode: _median([r["events_per_s"] for r in found]) for mode, found in runs.items()}
    ratios = {
        "relay_to_raw_producer": _ratio(medians["relay"], medians["produce"]),
        "projector_to_raw_consumer": _ratio(medians["project"], medians["consume"]),
        "rebuild_to_raw_consumer": _ratio(medians["rebuild"], medians["consume"]),
    }
    relay_cfg = next((r.get("producer") for r in runs["relay"] if r.get("producer")), None)
    raw_cfg = next((r.get("producer") for r in runs["produce"] if r.get("producer")), None)
    return {
        "n": n,
        "rounds": len(runs["relay"]),
        "events_per_s": medians,
        "runs": runs,
        "ratios": ratios,
        "goal": GOAL,
        "met": {name: (r is not None and r >= GOAL) for name, r in ratios.items()},
        "producer_settings_match": relay_cfg == raw_cfg if relay_cfg and raw_cfg else None,
        "producer_settings": {"relay": relay_cfg, "raw": raw_cfg},
    }


def pipeline_problems(figures: dict[str, Any]) -> list[str]:
    """Measurements that did not see every event, or a raw producer unlike the relay's.
    (A ratio below its goal is reported as not met, not as a failure of the run.)"""
    problems = []
    for mode, found in figures.get("runs", {}).items():
        for r in found:
            if r.get("short"):
                problems.append(f"pipeline {mode}: {r['short']}")
    if figures.get("producer_settings_match") is False:
        problems.append(f"raw producer settings differ from the relay's: "
                        f"{figures['producer_settings']}")  # fmt: skip
    return problems


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# -- the tool: one measurement per process ----------------------------------------------------


def _settings() -> Any:
    from services.settings import Settings

    return Settings.from_env()


def _producer_config(producer: Any) -> dict[str, Any]:
    return {key: producer.config.get(key) for key in PRODUCER_KEYS}


def preload() -> None:
    """Imports the ClickHouse client makes lazily (pandas on its first INSERT, 0.3-0.4 s here;
    the chdb backend on its first client, 0.3-0.9 s): start-up of the process, not work of the
    batch, so outside the clock like every other import."""
    for module in ("pandas", "clickhouse_connect.driver._chdbclient"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def measure_relay(end: float) -> dict[str, Any]:
    """The relay, started (outside the clock) on a new topic, stepped until caught up."""
    from services.registry.application import Registry
    from services.relay.relay import Relay

    settings = _settings()
    registry = Registry(settings)
    relay = Relay(settings, registry)
    try:
        relay.start()
        began = time.perf_counter()
        while relay.step() and time.monotonic() < end:
            pass
        seconds = time.perf_counter() - began
        config = _producer_config(relay._producer)  # noqa: SLF001 - what the relay really uses
        stored = registry.recorder.max_notification_id() or 0
        short = None if time.monotonic() < end else f"timed out at position {relay.position}"
        return {"events": relay.published, "seconds": seconds, "producer": config,
                "store_position": stored, "short": short}  # fmt: skip
    finally:
        relay.close()
        registry.close()


def public_records(settings: Any) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """Every public event of the store as the relay sends it: (topic, key, value, headers),
    mapped and encoded by the relay's own functions."""
    from schemas import event_types as types
    from schemas.codec import citizen_event_codec
    from services.registry.application import Registry
    from services.relay.mapping import PUBLIC_TOPICS, to_record

    registry = Registry(settings)
    codec = citizen_event_codec()
    found, position = [], 0
    try:
        while page := registry.recorder.select_notifications(
            start=position, limit=5000, topics=PUBLIC_TOPICS, inclusive_of_start=False
        ):
            for item in page:
                record = to_record(registry.mapper.to_domain_event(item), item.id)
                access = record["event_type"] == types.HISTORY_READ
                topic = settings.access_topic if access else settings.kafka_topic
                headers = [("event_type", record["event_type"].encode()),
                           ("event_id", record["event_id"].encode())]  # fmt: skip
                found.append((topic, record["account_id"].encode(), codec.encode(record), headers))
            position = page[-1].id
    finally:
        registry.close()
    return found


def measure_produce(end: float) -> dict[str, Any]:
    """The relay's records, encoded beforehand, sent by a bare producer with its settings."""
    from kafka import KafkaProducer

    from services.kafka import connect_as, ensure_topic
    from services.relay.relay import RelayOptions

    settings = _settings()
    records = public_records(settings)
    for topic in (settings.kafka_topic, settings.access_topic):
        ensure_topic(connect_as(settings, "relay"), topic, RelayOptions().partitions)
    producer = KafkaProducer(
        **connect_as(settings, "relay"),
        transactional_id=settings.relay_transactional_id,  # the id its ACL allows
        compression_type="lz4",
        linger_ms=5,
        batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    try:
        producer.init_transactions()
        size, sent = RelayOptions().batch_size, 0
        began = time.perf_counter()
        while sent < len(records) and time.monotonic() < end:
            producer.begin_transaction()
            for topic, key, value, headers in records[sent : sent + size]:
                producer.send(topic, key=key, value=value, headers=headers)
            producer.commit_transaction()
            sent += len(records[sent : sent + size])
        seconds = time.perf_counter() - began
        short = None if sent == len(records) else f"sent {sent}/{len(records)} in time"
        return {"events": sent, "seconds": seconds, "producer": _producer_config(producer),
                "short": short}  # fmt: skip
    finally:
        producer.close(timeout=10)


def measure_consume(n: int, end: float, decode: bool = False) -> dict[str, Any]:
    """A bare read_committed consumer over the live topic, offset 0 to the end (`decode`:
    each record decoded as the projector does)."""
    from kafka import KafkaConsumer, TopicPartition

    from schemas.codec import citizen_event_codec
    from services.kafka import connect_as

    codec = citizen_event_codec()
    settings = _settings()
    topic = settings.kafka_topic
    consumer = KafkaConsumer(
        **connect_as(settings, "projector"),
        isolation_level="read_committed",
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_min_bytes=32 * 1024,  # the projector's fetch settings
        fetch_max_wait_ms=150,
    )
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        count = 0
        began = time.perf_counter()
        remaining = {tp for tp in parts if ends[tp] > 0}
        while remaining and time.monotonic() < end:
            for records in consumer.poll(timeout_ms=100, max_records=5000).values():
                count += len(records)
                if decode:
                    for record in records:
                        codec.decode(record.value)
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
        seconds = time.perf_counter() - began
        short = None if count >= n else f"read {count}/{n} records"
        return {"events": count, "seconds": seconds, "short": short}
    finally:
        consumer.close()


def measure_project(n: int, end: float) -> dict[str, Any]:
    """The projector as the API embeds it, into a new database, stepped until it holds n."""
    from projections.audit import audit_trail
    from projections.runner import Projector, ProjectorOptions

    settings = _settings()
    preload()
    trail = audit_trail(settings.clickhouse_url, settings.clickhouse_database)
    projector = Projector(settings, trail, ProjectorOptions(group_mode=False))
    try:
        projector.start()
        began = time.perf_counter()
        while projector.stored < n and time.monotonic() < end:
            projector.step()
        seconds = time.perf_counter() - began
        short = None if projector.stored >= n else f"stored {projector.stored}/{n} in time"
        return {"events": projector.stored, "seconds": seconds, "short": short}
    finally:
        projector.close()
        trail.client.command(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")


def measure_rebuild(n: int) -> dict[str, Any]:
    """The whole `rebuild()` of the deployment's read models (both topics)."""
    from projections.rebuild import rebuild

    settings = _settings()
    preload()
    began = time.perf_counter()
    done = rebuild(settings, show_progress=False)
    seconds = time.perf_counter() - began
    events = int(done["stored"]) + int(done["access_records"])
    short = None if done["stored"] >= n else f"rebuilt {done['stored']}/{n} events"
    return {"events": events, "seconds": seconds, "audit_events": done["stored"],
            "access_records": done["access_records"], "short": short}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.pipeline")
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--events", type=int, required=True, help="records on the live topic")
    args = parser.parse_args(argv)
    end = time.monotonic() + STEP_LIMIT_S
    if args.mode == "relay":
        result = measure_relay(end)
    elif args.mode == "produce":
        result = measure_produce(end)
    elif args.mode in ("consume", "decode"):
        result = measure_consume(args.events, end, decode=args.mode == "decode")
    elif args.mode == "project":
        result = measure_project(args.events, end)
    else:
        result = measure_rebuild(args.events)
    result["events_per_s"] = result["events"] / result["seconds"] if result["seconds"] else None
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
