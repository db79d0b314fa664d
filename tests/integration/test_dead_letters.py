"""The dead-letter tools: `python -m projections dlq list` and `redrive`, on the real broker."""

from __future__ import annotations

import dataclasses
import subprocess

import orjson
from kafka import KafkaProducer

from projections.audit import audit_trail
from projections.dead_letters import redrive
from schemas.codec import citizen_event_codec
from services.kafka import ensure_topic
from services.settings import Settings
from tests.support.broker import as_admin
from tests.support.factories import registry_with
from tests.support.kafka import publish_all, read_topic
from tests.support.processes import python_process


def dead_letter(settings: Settings, value: bytes, source: str) -> None:
    """Put a message on the dead-letter topic as the projector would have."""
    ensure_topic(as_admin(settings.kafka_bootstrap), settings.dlq_topic)
    producer = KafkaProducer(**as_admin(settings.kafka_bootstrap))
    try:
        headers = [("dlq_reason", b"cannot decode body"), ("dlq_source", source.encode())]
        producer.send(settings.dlq_topic, value, key=b"k", headers=headers).get(timeout=30)
    finally:
        producer.close()


def test_redrive_stores_what_decodes_now_once_and_lists_what_does_not(
    kafka_bootstrap, env_for, chdb_url
) -> None:
    settings = dataclasses.replace(Settings.from_env(env_for()), clickhouse_url=chdb_url)
    publish_all(settings, registry_with(settings, 1))
    [record] = read_topic(kafka_bootstrap, settings.kafka_topic, 1)
    dead_letter(
        settings, record.value, f"{settings.kafka_topic}/{record.partition}/{record.offset}"
    )
    dead_letter(settings, b"garbage", f"{settings.kafka_topic}/0/99")
    trail = audit_trail(chdb_url, settings.clickhouse_database)

    first = redrive(settings, trail)
    again = redrive(settings, trail)

    assert first == {"redriven": 1, "already_stored": 0, "still_undecodable": 1, "other_topic": 0}
    assert again == {"redriven": 0, "already_stored": 1, "still_undecodable": 1, "other_topic": 0}
    event = citizen_event_codec().decode(record.value)
    assert trail.has_event(str(event["event_id"]))
    listed = python_process(["-m", "projections", "dlq", "list"], env_for(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    out, _ = listed.communicate(timeout=60)
    lines = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [line["source"].rsplit("/", 1)[-1] for line in lines] == [str(record.offset), "99"]
    assert all("value" not in line for line in lines)  # sizes and reasons, never the content
