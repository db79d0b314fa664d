"""The projector: a consumer group on citizen-events that writes the ClickHouse read models.

Checkpoint order, kept on every batch: store rows (one INSERT) -> flush dead letters ->
commit offsets. On every partition assignment the consumer seeks to the offset after the
last row ClickHouse holds for that partition, so a crash between storing and committing
neither loses nor repeats a row, and an emptied read model is rebuilt from offset zero.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from projections.audit import AuditTrail, to_row
from schemas.codec import SerializationError, citizen_event_codec
from services.kafka import ensure_topic, run_restarting
from services.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectorOptions:
    """The projector's tunables; where it reads and writes comes from `Settings`."""

    max_poll_records: int = 5000
    poll_timeout_ms: int = 100
    # A consumer group shares partitions among projectors (needs a ClickHouse server); a lone
    # projector, such as the one embedded beside chdb, takes every partition itself.
    group_mode: bool = True


class ReadModelAheadError(RuntimeError):
    """ClickHouse holds rows from offsets the topic does not have."""


class _ResumeFromReadModel(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.projector.resume(list(assigned))


class Projector:
    """Consumes, decodes, stores, then commits; undecodable messages go to the DLQ."""

    def __init__(
        self,
        settings: Settings,
        trail: AuditTrail,
        options: ProjectorOptions = ProjectorOptions(),
        on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.trail = trail
        self.on_batch = on_batch
        self.codec = citizen_event_codec()
        self.stored = 0
        self.dead_letters = 0
        self._consumer: KafkaConsumer | None = None
        self._unchecked: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int | None] = {}
        self._dlq: KafkaProducer | None = None

    def start(self) -> None:
        s, topic = self.settings, self.settings.kafka_topic
        self._consumer = KafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.projector_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.options.max_poll_records,
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(500, s.kafka_session_timeout_ms // 3),
            fetch_min_bytes=32 * 1024,  # fewer, larger inserts under load...
            fetch_max_wait_ms=150,  # ...at most 150 ms later when it is quiet
            metadata_max_age_ms=10_000,  # notice new partitions within seconds, not minutes
        )
        # A group that joins before its topic's partitions are known is assigned nothing and
        # only rejoins at the next metadata refresh: make the topic and see its partitions first.
        ensure_topic(s.kafka_bootstrap, topic)
        deadline = time.monotonic() + 30
        while not (partitions := self._consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partitions known for topic {topic}")
            time.sleep(0.1)
        if self.options.group_mode:
            self._consumer.subscribe([topic], listener=_ResumeFromReadModel(self))
        else:
            everything = [TopicPartition(topic, p) for p in sorted(partitions)]
            self._consumer.assign(everything)
            self.resume(everything)

    def resume(self, assigned: list[TopicPartition]) -> None:
        assert self._consumer is not None
        stored = self.trail.stored_offsets()
        self._unchecked = {tp: stored[tp.partition] for tp in assigned if tp.partition in stored}
        for tp in assigned:
            if tp.partition in stored:
                self._consumer.seek(tp, stored[tp.partition] + 1)
            else:
                self._consumer.seek_to_beginning(tp)
        log.info(
            "assigned %s, resuming after stored offsets %s",
            sorted(tp.partition for tp in assigned),
            stored,
        )

    def step(self) -> int:
        """One poll -> store -> commit cycle; returns the number of events stored."""
        assert self._consumer is not None, "start() first"
        polled = self._consumer.poll(timeout_ms=self.options.poll_timeout_ms)
        if self._unchecked:  # after a new assignment, before anything is stored
            self._check_not_ahead(self._unchecked)
            self._unchecked = {}
        stored = self.store_batch(polled) if polled else 0
        self._commit_if_moved()
        return stored

    def _commit_if_moved(self) -> None:
        """Commit the positions once they moved: after stored rows, and also after a poll that
        only stepped over transaction markers (else the group would lag by one forever)."""
        assert self._consumer is not None
        positions = {tp: self._consumer.position(tp) for tp in self._consumer.assignment()}
        if positions != self._committed:
            self._consumer.commit()
            self._committed = positions

    def _check_not_ahead(self, stored: dict[TopicPartition, int]) -> None:
        """Refuse read models holding offsets the topic does not have (recreated topic)."""
        assert self._consumer is not None
        ends = self._consumer.end_offsets(list(stored))
        ahead = sorted(tp.partition for tp, offset in stored.items() if offset >= ends[tp])
        if ahead:
            raise ReadModelAheadError(
                f"the read models hold offsets beyond the end of {self.settings.kafka_topic} "
                f"(partitions {ahead}): the topic was recreated or is another one; "
                "rebuild them with `python -m projections rebuild`"
            )

    def store_batch(
        self,
        polled: dict[TopicPartition, list[Any]],
        limit: dict[TopicPartition, int] | None = None,
    ) -> int:
        """Decode and store one poll's records in one INSERT (records at or past `limit` are
        left out); dead letters are flushed before returning."""
        rows, events = [], []
        for tp, records in polled.items():
            for record in records:
                if limit is not None and record.offset >= limit[tp]:
                    continue
                try:
                    event = self.codec.decode(record.value)
                except SerializationError as exc:
                    self._dead_letter(record, str(exc))
                    continue
                rows.append(to_row(event, tp.partition, record.offset))
                events.append(event)
        self.trail.store(rows)
        if self._dlq is not None:
            self._dlq.flush()
        self.stored += len(rows)
        if self.on_batch and events:
            self.on_batch(events)
        return len(rows)

    def _dead_letter(self, record: Any, reason: str) -> None:
        if self._dlq is None:
            self._dlq = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap)
        headers = list(record.headers or []) + [
            ("dlq_reason", reason.encode()),
            ("dlq_source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        self._dlq.send(self.settings.dlq_topic, key=record.key, value=record.value, headers=headers)
        self.dead_letters += 1
        log.warning(
            "dead-lettered %s/%d/%d: %s", record.topic, record.partition, record.offset, reason
        )

    def run(self, stop: threading.Event) -> None:
        """Project until `stop`; when the broker goes away, start over once it is back
        (resuming, as always, after the rows ClickHouse holds)."""
        run_restarting("projector", self.start, self.step, self.close, stop)

    def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError):  # a broken consumer still closes
                self._consumer.close(autocommit=False)
            self._consumer = None
        if self._dlq is not None:
            self._dlq.close(timeout=10)
            self._dlq = None
