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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from schemas.codec import SerializationError, citizen_event_codec
from services.health import ComponentHealth, FatalError
from services.kafka import (
    EventsDeletedError,
    TopicChangedError,
    connect_as,
    prepare_topic,
    run_restarting,
)
from services.registry.application import Registry, collector_paused
from services.registry.publication import TopicPublication
from services.relay.direct import DirectEncoder
from services.relay.mapping import PUBLIC_TOPICS, Outgoing, outgoing
from services.settings import Settings

log = logging.getLogger(__name__)


class StoreBehindTopicError(FatalError):
    """The topic already holds positions the event store does not have."""


class UnpublishableEventError(FatalError):
    """An event in the store cannot be turned into a public record."""


class _Batch(NamedTuple):
    """Stored events read after a position, their records up to the first that cannot be
    published (each with its topic and partition), and its error."""

    notifications: Sequence[Any]
    records: list[tuple[str, int, Outgoing]]
    error: UnpublishableEventError | None


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition kafka-python's default partitioner gives `key` among `partitions` (its
    murmur2, as the Java client's): the relay passes it to send() itself."""
    index: int = murmur2(key) & 0x7FFFFFFF
    return partitions[index % len(partitions)]


@dataclass(frozen=True)
class RelayOptions:
    batch_size: int = 500
    idle_sleep: float = 0.02
    partitions: int = 3


def committed_position(settings: Settings, window: int = 64) -> int:
    """The highest store position already committed on the relay's topics (0 if none).

    Refuses (EventsDeletedError) when records were deleted from any partition: what was
    published can then no longer be read back, and resuming from 0 would publish it twice.
    """
    return max(_committed_on(settings, topic, window) for topic in relay_topics(settings))


def relay_topics(settings: Settings) -> tuple[str, str]:
    """The public topic, and the restricted one that carries access records."""
    return settings.kafka_topic, settings.access_topic


def _committed_on(settings: Settings, topic: str, window: int) -> int:
    codec = citizen_event_codec()
    consumer = KafkaConsumer(
        **connect_as(settings, "relay"),
        isolation_level="read_committed",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        deleted = {tp.partition: o for tp, o in consumer.beginning_offsets(parts).items() if o}
        if deleted:
            raise EventsDeletedError(
                f"records were deleted from topic {topic} (log start offsets "
                f"{deleted}): the relay cannot tell what it published; it will not resume"
            )
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
        self.health = ComponentHealth("relay")
        self._producer: KafkaProducer | None = None
        self._direct = DirectEncoder(registry.mapper, self.codec)
        self._reader: ThreadPoolExecutor | None = None
        self._ahead: tuple[int, Future[_Batch]] | None = None  # (read after, the batch)

    def start(self) -> None:
        topic, connection = self.settings.kafka_topic, connect_as(self.settings, "relay")
        ids = {name: prepare_topic(connection, name, self.options.partitions)
               for name in relay_topics(self.settings)}  # fmt: skip
        self._producer = KafkaProducer(
            **connection,
            transactional_id=self.settings.relay_transactional_id,
            compression_type="lz4",
            linger_ms=5,
            batch_size=256 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="relay-read-ahead")
        self._producer.init_transactions()  # fences and aborts any earlier relay's transaction
        self.position = committed_position(self.settings)
        stored = self.registry.recorder.max_notification_id() or 0
        if self.position > stored:
            raise StoreBehindTopicError(
                f"topic {topic} holds events up to store position "
                f"{self.position} but the event store ends at {stored}: the store was replaced "
                "or reset; publish it to a new topic (KAFKA_TOPIC) instead"
            )
        for name, current in ids.items():
            self._check_same_topic(name, current)
        log.info("relay resumes after store position %d", self.position)

    def _check_same_topic(self, topic: str, current: UUID | None) -> None:
        """The topic (of id `current`) must be the one this store was published to; the first
        time, record it."""
        if current is None:
            raise TopicChangedError(f"topic {topic} has no id: it vanished while starting")
        record = self.registry.publication(topic)
        if record is None:
            self.registry.save(TopicPublication.start(topic, current))
            log.info("store published to topic %s (id %s) from now on", topic, current)
        elif record.topic_id != str(current):
            raise TopicChangedError(
                f"topic {topic} is not the one this store was published to (id {current}, "
                f"recorded {record.topic_id}): it was deleted and recreated; restore it, or "
                "publish to a new topic (KAFKA_TOPIC) and rebuild the read models from it"
            )

    def step(self) -> int:
        """Publish the next batch in one transaction; returns how many events it held.

        While the broker commits it, the batch after it is read and encoded in the background
        (`_read_ahead`): only read, never published before this one is committed, and thrown
        away unless the position reached is the one it was read after.

        The cyclic garbage collector is paused meanwhile, as for the registry's batches: a
        batch's records, states and futures are freed by reference counting once it is
        committed, and a collector walking them every few dozen events cost a sixth of the
        relay's time."""
        assert self._producer is not None, "start() first"
        with collector_paused():
            return self._step()

    def _step(self) -> int:
        assert self._producer is not None
        batch = self._batch_after(self.position)
        if not batch.notifications:
            self.health.lag = 0
            return 0
        if batch.records:
            full = len(batch.notifications) == self.options.batch_size
            ahead = batch.notifications[-1].id if full and batch.error is None else None
            self._publish(batch.records, ahead)
            self.position = batch.notifications[len(batch.records) - 1].id
            self.published += len(batch.records)
            self.health.lag = self._lag(len(batch.notifications))
            if self.on_batch:
                self.on_batch(len(batch.records), self.position)
        if batch.error is not None:
            raise batch.error  # after what came before it, never past it
        return len(batch.records)

    def _batch_after(self, position: int) -> _Batch:
        """The batch after `position`: the one read ahead if it was read after it, else read
        now. A failure to read it is raised here, as if it had been read here."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == position:
            return ahead[1].result()
        return self._read(position)

    def _read(self, position: int) -> _Batch:
        notifications = self.registry.recorder.select_notifications(
            start=position,
            limit=self.options.batch_size,
            topics=PUBLIC_TOPICS,
            inclusive_of_start=False,
        )
        records, unpublishable = self._records(notifications)
        return _Batch(notifications, self._placed(records), unpublishable)

    def _placed(self, records: list[Outgoing]) -> list[tuple[str, int, Outgoing]]:
        """Each record with its topic and the partition the default partitioner would choose
        for its key: found here, off the sending thread when read ahead, and each topic's
        partitions looked up once a batch (send() looks them up, sorted, for every record)."""
        assert self._producer is not None
        topics = (self.settings.kafka_topic, self.settings.access_topic)
        partitions = [sorted(self._producer.partitions_for(topic)) for topic in topics]
        return [(topics[r.access], partition_of(r.key, partitions[r.access]), r) for r in records]

    def _read_ahead(self, position: int) -> None:
        assert self._reader is not None
        self._ahead = (position, self._reader.submit(self._read, position))

    def _records(
        self, notifications: Sequence[Any]
    ) -> tuple[list[Outgoing], UnpublishableEventError | None]:
        """The encoded records up to the first event that cannot be published, and its error."""
        records: list[Outgoing] = []
        direct = self._direct.encode
        for n in notifications:
            outgoing = direct(n)
            if outgoing is None:
                try:
                    outgoing = self._record(n)
                except UnpublishableEventError as exc:
                    return records, exc
            records.append(outgoing)
        return records, None

    def _publish(self, records: list[tuple[str, int, Outgoing]], ahead: int | None = None) -> None:
        """One Kafka transaction: all of `records` become visible, or none. `ahead`: the
        position after which to read the next batch while the broker commits this one."""
        assert self._producer is not None
        send = self._producer.send
        self._producer.begin_transaction()
        for topic, partition, (_, key, value, headers) in records:
            send(topic, key=key, value=value, headers=headers, partition=partition)
        if ahead is not None:
            self._read_ahead(ahead)
        self._producer.commit_transaction()

    def _lag(self, published: int) -> int:
        """Store positions not yet published: 0 once a batch came back short (caught up)."""
        if published < self.options.batch_size:
            return 0
        return max(0, (self.registry.recorder.max_notification_id() or 0) - self.position)

    def _record(self, notification: Any) -> Outgoing:
        """The public record of one stored event the long way (domain event, mapping, codec);
        never skipped: a failure stops the relay (a fatal error) with the position, and no
        personal data, in its message."""
        try:
            return outgoing(self.registry.mapper, self.codec, notification)
        except Exception as exc:
            raise UnpublishableEventError(
                f"the event at store position {notification.id} cannot be published "
                f"({type(exc).__name__}); the relay stops here rather than skip it"
            ) from exc

    def run(self, stop: threading.Event) -> None:
        """Publish until `stop`; when the broker goes away, start over once it is back.

        Starting over is safe at any point: the new producer fences the old transactional id
        and the position is read again from what the topic holds.
        """
        run_restarting(
            self.health, self.start, self.step, self.close, stop, self.options.idle_sleep
        )

    def close(self) -> None:
        self._ahead = None
        if self._reader is not None:  # a read under way finishes; what it read is dropped
            self._reader.shutdown(wait=True, cancel_futures=True)
            self._reader = None
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):  # a broken producer still closes
                self._producer.close(timeout=10)
            self._producer = None
