"""Faults that last a while: each component retries, says why, and resumes exactly.

Real broker, real event store, real ClickHouse engine; a fault is made by changing the real
component under the running loop (a table renamed away, a dead-letter broker unreachable),
except the store's read failure, which is raised from the recorder's read for a while.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from projections.dead_letters import DeadLetters, read_dead_letters
from projections.runner import Projector
from schemas.codec import AvroCodec, citizen_event_codec, load_schema, schema_versions
from services.health import ComponentHealth
from services.kafka import ensure_topic
from services.registry.application import Registry
from services.registry.domain import AccessRecord
from services.relay.relay import Relay, UnpublishableEventError
from services.settings import Settings
from tests.support.broker import as_admin
from tests.support.factories import register_command, registry_with
from tests.support.kafka import publish_all, read_topic
from tests.support.processes import free_port
from tests.support.read_models import projector_for, run_until
from tests.support.waiting import wait_until


@contextmanager
def running(loop: Any) -> Iterator[threading.Thread]:
    """`loop.run(stop)` in a thread for the block; a fatal error is kept on the thread."""
    stop = threading.Event()
    thread = threading.Thread(target=_run, args=(loop, stop), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(30)


def _run(loop: Any, stop: threading.Event) -> None:
    try:
        loop.run(stop)
    except Exception as exc:  # noqa: BLE001 - the test reads it from the thread
        threading.current_thread().error = exc  # type: ignore[attr-defined]


def row_counts(projector: Projector) -> tuple[int, int]:
    rows = projector.trail.client.query_rows(
        f"SELECT count(), uniqExact(event_id) FROM {projector.trail.table}"
    )
    return int(rows[0][0]), int(rows[0][1])


def state_of(health: ComponentHealth) -> str:
    return str(health.as_dict()["state"])


def test_projector_retries_while_its_table_is_gone_then_stores_every_event_once(
    kafka_bootstrap, settings, chdb_url
) -> None:
    registry = registry_with(settings, 20)
    publish_all(settings, registry)
    projector = projector_for(settings, chdb_url)
    projector.close()
    table = projector.trail.table
    with running(projector):
        wait_until(lambda: projector.stored >= 20, 60)
        projector.trail.client.command(f"RENAME TABLE {table} TO {table}_away")
        for _ in range(30):
            registry.handle(register_command())
        publish_all(settings, registry)
        wait_until(lambda: state_of(projector.health) == "retrying", 60)
        assert "audit_events" in str(projector.health.as_dict()["last_error"])
        projector.trail.client.command(f"RENAME TABLE {table}_away TO {table}")
        wait_until(lambda: row_counts(projector) == (50, 50), 90, every=0.5)
        assert state_of(projector.health) == "running"
        assert projector.health.restarts >= 1


def test_relay_retries_while_its_store_cannot_be_read_then_resumes_exactly(
    kafka_bootstrap, settings
) -> None:
    registry = registry_with(settings, 10)
    relay = Relay(settings, registry)
    read = registry.recorder.select_notifications
    failures = {"left": 3}

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return read(*args, **kwargs)

    with running(relay):
        wait_until(lambda: relay.published >= 10, 60)
        registry.recorder.select_notifications = unreadable  # type: ignore[method-assign]
        for _ in range(10):
            registry.handle(register_command())
        wait_until(lambda: relay.published >= 20, 60)
    assert failures["left"] == 0
    assert relay.health.restarts >= 1
    assert "disk I/O error" in str(relay.health.as_dict()["last_error"])
    positions = [citizen_event_codec().decode(r.value)["position"]
                 for r in read_topic(kafka_bootstrap, settings.kafka_topic, 20)]  # fmt: skip
    assert len(positions) == len(set(positions)) == 20


def test_an_event_that_cannot_be_published_stops_the_relay_loudly(
    kafka_bootstrap, settings
) -> None:
    registry = registry_with(settings, 3)
    broken = AccessRecord(account_id="x", subject={}, actor="a", role="auditor", purpose="p",
                          scope="history", occurred_at=datetime.now(UTC).isoformat())  # fmt: skip
    registry.save(broken)
    for _ in range(2):
        registry.handle(register_command())
    relay = Relay(settings, registry)

    with running(relay) as thread:
        thread.join(60)
    assert isinstance(getattr(thread, "error", None), UnpublishableEventError)
    assert state_of(relay.health) == "failed"
    assert relay.published == 3  # everything before it, nothing after it
    assert len(read_topic(kafka_bootstrap, settings.kafka_topic, 3)) == 3


def test_an_unacknowledged_dead_letter_stores_and_commits_nothing(
    kafka_bootstrap, settings, chdb_url
) -> None:
    ensure_topic(as_admin(kafka_bootstrap), settings.kafka_topic, partitions=1)
    publish_all(settings, registry_with(settings, 2))
    [garbage] = produce(kafka_bootstrap, settings.kafka_topic, [b"garbage"])
    registry = Registry(settings)
    registry.handle(register_command())
    publish_all(settings, registry)
    projector = projector_for(settings, chdb_url)
    unreachable = dataclasses.replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    projector.dead_letters = DeadLetters(unreachable)

    with pytest.raises(KafkaError):
        run_until(projector, 3, timeout=30)
    projector.close()
    assert (committed(kafka_bootstrap, settings) or 0) <= garbage  # not past the dead letter
    assert row_counts(projector) == (0, 0)  # the batch waits for its dead letter
    again = projector_for(settings, chdb_url)
    run_until(again, 3)
    again.close()
    letters = list(read_dead_letters(settings))
    assert [letter["reason"] for letter in letters] == [
        "not Avro single-object encoding (bad magic)"
    ]
    assert row_counts(again) == (3, 3)


def test_a_record_of_a_newer_schema_pauses_its_partition_until_the_upgrade(
    kafka_bootstrap, settings, chdb_url
) -> None:
    ensure_topic(as_admin(kafka_bootstrap), settings.kafka_topic, partitions=1)
    registry = registry_with(settings, 2)
    publish_all(settings, registry)
    newer = newer_codec()
    sample = citizen_event_codec().decode(
        read_topic(kafka_bootstrap, settings.kafka_topic, 2)[0].value
    )
    produce(
        kafka_bootstrap,
        settings.kafka_topic,
        [newer.encode({**sample, "event_id": str(uuid.uuid4())})],
    )
    registry.handle(register_command())
    publish_all(settings, registry)
    projector = projector_for(settings, chdb_url)

    wait_until(
        lambda: projector.step() is not None and state_of(projector.health) == "paused", 30, 0
    )
    for _ in range(10):
        projector.step()
    projector.close()
    assert projector.stored == 2
    assert "newer schemas" in str(projector.health.as_dict()["detail"])
    assert list(read_dead_letters(settings)) == []
    upgraded = projector_for(settings, chdb_url)
    upgraded.codec = newer
    run_until(upgraded, 2)
    upgraded.close()
    assert row_counts(upgraded) == (4, 4)


def newer_codec() -> AvroCodec:
    """A codec that writes a v2 of the schema (one optional field more) and reads both."""
    current = json.loads(schema_versions()[-1].read_text())
    current["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    writer = fastavro.parse_schema(current)
    return AvroCodec(writer=writer, known=[load_schema(p) for p in schema_versions()])


def produce(bootstrap: str, topic: str, values: list[bytes]) -> list[int]:
    """Write raw `values` to partition 0, outside any transaction; their offsets."""
    producer = KafkaProducer(**as_admin(bootstrap))
    try:
        return [producer.send(topic, value, key=b"k", partition=0).get(timeout=30).offset
                for value in values]  # fmt: skip
    finally:
        producer.close()


def committed(bootstrap: str, settings: Settings) -> int | None:
    consumer = KafkaConsumer(**as_admin(bootstrap), group_id=settings.projector_group,
                             enable_auto_commit=False)  # fmt: skip
    try:
        return consumer.committed(TopicPartition(settings.kafka_topic, 0))  # type: ignore[no-any-return]
    finally:
        consumer.close()
