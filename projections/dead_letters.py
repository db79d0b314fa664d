"""The dead-letter topic: undecodable messages kept with their reason, listed and redriven.

A dead letter counts as handled only once the broker acknowledged it: the projector waits
for every acknowledgement before it stores the batch's rows and commits the batch's offsets.
Dead letters are at-least-once (a batch retried after a fault sends them again); the header
`dlq_source` (topic/partition/offset) identifies the original message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from projections.audit import AuditTrail, to_columns
from schemas.codec import SerializationError, citizen_event_codec
from services.kafka import connect_as, prepare_topic, topic_id
from services.settings import Settings

log = logging.getLogger(__name__)
ACK_TIMEOUT_S = 30.0


class DeadLetters:
    """Sends undecodable records to `<topic>.dlq` and waits for the broker's acknowledgements."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent = 0
        self._producer: KafkaProducer | None = None
        self._pending: list[Any] = []  # kafka-python FutureRecordMetadata

    def send(self, record: Any, reason: str) -> None:
        if self._producer is None:
            connection = connect_as(self.settings, "projector")
            prepare_topic(connection, self.settings.dlq_topic)
            self._producer = KafkaProducer(**connection)
        source = f"{record.topic}/{record.partition}/{record.offset}"
        headers = list(record.headers or []) + [
            ("dlq_reason", reason.encode()),
            ("dlq_source", source.encode()),
        ]
        self._pending.append(
            self._producer.send(
                self.settings.dlq_topic, key=record.key, value=record.value, headers=headers
            )
        )
        log.warning("dead letter from %s: %s", source, reason)

    def wait_acknowledged(self) -> None:
        """Block until the broker has every dead letter sent so far; raise if one failed."""
        if not self._pending:
            return
        assert self._producer is not None
        self._producer.flush(timeout=ACK_TIMEOUT_S)
        pending, self._pending = self._pending, []
        for future in pending:
            future.get(timeout=ACK_TIMEOUT_S)  # raises the KafkaError that lost it
        self.sent += len(pending)

    def close(self) -> None:
        self._pending = []
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None


def read_dead_letters(settings: Settings, timeout_s: float = 5.0) -> Iterator[dict[str, Any]]:
    """Every message on the dead-letter topic, oldest first, with its headers decoded."""
    consumer = KafkaConsumer(
        **connect_as(settings, "projector"),
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        parts = consumer.partitions_for_topic(settings.dlq_topic) or set()
        tps = [TopicPartition(settings.dlq_topic, p) for p in sorted(parts)]
        if not tps:
            return
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning()
        remaining = {tp for tp in tps if consumer.position(tp) < ends[tp]}
        while remaining:
            batch = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield _described(record)
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()


def _source(text: str) -> tuple[str, int, int]:
    """topic, partition, offset of a `dlq_source` header (a topic name may hold slashes)."""
    topic, partition, offset = text.rsplit("/", 2) if text.count("/") >= 2 else ("", "0", "0")
    return topic, int(partition), int(offset)


def _described(record: Any) -> dict[str, Any]:
    headers = {k: v.decode(errors="replace") for k, v in record.headers or []}
    return {
        "dlq_offset": f"{record.partition}/{record.offset}",
        "source": headers.get("dlq_source", ""),
        "reason": headers.get("dlq_reason", ""),
        "event_type": headers.get("event_type", ""),
        "event_id": headers.get("event_id", ""),
        "bytes": len(record.value or b""),
        "value": record.value,
    }


def redrive(settings: Settings, trail: AuditTrail) -> dict[str, int]:
    """Store every dead letter that decodes now (e.g. after an upgrade) at its original
    partition and offset, unless its event is already in the read model; report the counts."""
    codec = citizen_event_codec()
    counts = {"redriven": 0, "already_stored": 0, "still_undecodable": 0, "other_topic": 0}
    tid = topic_id(connect_as(settings, "projector"), settings.kafka_topic) or UUID(int=0)
    for letter in read_dead_letters(settings):
        topic, partition, offset = _source(letter["source"])
        if topic != settings.kafka_topic:
            counts["other_topic"] += 1
            continue
        try:
            event = codec.decode_plain(letter["value"])
        except SerializationError:
            counts["still_undecodable"] += 1
            continue
        if trail.has_event(event["event_id"]):
            counts["already_stored"] += 1
            continue
        trail.store(to_columns([event], [(partition, offset)], tid))
        counts["redriven"] += 1
    return counts
