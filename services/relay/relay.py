"""The relay: follows the event store's notification log in order and publishes it to Kafka.

Exactly once: each batch is one Kafka transaction under a stable transactional id, and the
position reached is read back from the topic itself (the highest `position` committed), so
a relay killed at any instant resumes after the last committed batch; the new producer's
`init_transactions()` fences the dead one and aborts whatever it left open.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from schemas.codec import SerializationError, citizen_event_codec
from services.kafka import ensure_topic, run_restarting
from services.registry.application import Registry
from services.relay.mapping import PUBLIC_TOPICS, to_record
from services.settings import Settings

log = logging.getLogger(__name__)


class StoreBehindTopicError(RuntimeError):
    """The topic already holds positions the event store does not have."""


@dataclass(frozen=True)
class RelayOptions:
    batch_size: int = 500
    idle_sleep: float = 0.02
    partitions: int = 3


def committed_position(settings: Settings, window: int = 64) -> int:
    """The highest store position already committed on the topic (0 if none)."""
    codec = citizen_event_codec()
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    try:
        parts = [
            TopicPartition(settings.kafka_topic, p)
            for p in consumer.partitions_for_topic(settings.kafka_topic) or ()
        ]
        best = 0
        for tp in parts:
            best = max(best, _last_position(consumer, codec, tp, window))
        return best
    finally:
        consumer.close()


def _last_position(consumer: KafkaConsumer, codec, tp: TopicPartition, window: int) -> int:  # type: ignore[no-untyped-def]
    """Walk back from the end of one partition until a committed record is found."""
    consumer.assign([tp])
    begin = consumer.beginning_offsets([tp])[tp]
    end = consumer.end_offsets([tp])[tp]  # the last stable offset under read_committed
    start = end
    deadline = time.monotonic() + 60
    while start > begin:
        start = max(begin, start - window)
        consumer.seek(tp, start)
        best = 0
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the tail of {tp}")
            batch = consumer.poll(timeout_ms=500, max_records=window)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    break
                try:
                    best = max(best, codec.decode(record.value)["position"])
                except SerializationError:
                    continue
        if best:
            return best
        window *= 4
    return 0


class Relay:
    """Publishes every public event of the registry, in store order, exactly once."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        options: RelayOptions = RelayOptions(),
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.options = options
        self.on_batch = on_batch
        self.codec = citizen_event_codec()
        self.position = 0
        self.published = 0
        self._producer: KafkaProducer | None = None

    def start(self) -> None:
        ensure_topic(self.settings.kafka_bootstrap, self.settings.kafka_topic,
                     self.options.partitions)  # fmt: skip
        self._producer = KafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            transactional_id=f"relay-{self.settings.kafka_topic}",
            compression_type="lz4",
            linger_ms=5,
            batch_size=256 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        self._producer.init_transactions()  # fences and aborts any earlier relay's transaction
        self.position = committed_position(self.settings)
        stored = self.registry.recorder.max_notification_id() or 0
        if self.position > stored:
            raise StoreBehindTopicError(
                f"topic {self.settings.kafka_topic} holds events up to store position "
                f"{self.position} but the event store ends at {stored}: the store was replaced "
                "or reset; publish it to a new topic (KAFKA_TOPIC) instead"
            )
        log.info("relay resumes after store position %d", self.position)

    def step(self) -> int:
        """Publish the next batch in one transaction; returns how many events it held."""
        assert self._producer is not None, "start() first"
        notifications = self.registry.recorder.select_notifications(
            start=self.position,
            limit=self.options.batch_size,
            topics=PUBLIC_TOPICS,
            inclusive_of_start=False,
        )
        if not notifications:
            return 0
        self._producer.begin_transaction()
        for n in notifications:
            record = to_record(self.registry.mapper.to_domain_event(n), n.id)
            self._producer.send(
                self.settings.kafka_topic,
                key=record["account_id"].encode(),
                value=self.codec.encode(record),
                headers=[
                    ("event_type", record["event_type"].encode()),
                    ("event_id", record["event_id"].encode()),
                ],
            )
        self._producer.commit_transaction()
        self.position = notifications[-1].id
        self.published += len(notifications)
        if self.on_batch:
            self.on_batch(len(notifications), self.position)
        return len(notifications)

    def run(self, stop: threading.Event) -> None:
        """Publish until `stop`; when the broker goes away, start over once it is back.

        Starting over is safe at any point: the new producer fences the old transactional id
        and the position is read again from what the topic holds.
        """
        run_restarting("relay", self.start, self.step, self.close, stop, self.options.idle_sleep)

    def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):  # a broken producer still closes
                self._producer.close(timeout=10)
            self._producer = None
