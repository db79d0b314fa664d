"""The projector: a consumer on citizen-events that writes the ClickHouse read models.

Checkpoint order, kept on every batch: dead letters acknowledged -> rows stored (one INSERT)
-> offsets committed. On every partition assignment the consumer seeks to the offset after
the last row ClickHouse holds for that partition, so a crash anywhere neither loses nor
repeats a row. Before it stores anything it checks that it can: the topic keeps events for
ever, is the topic the read model was built from (its id), and still holds every offset
after the stored ones. A record written with a schema it does not know pauses its partition.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, OffsetOutOfRangeError
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata

from projections.audit import (
    ACCESS_TABLE,
    AuditTrail,
    ResumePoint,
    audit_trail,
    from_millis,
    to_columns,
)
from projections.clickhouse import LockedClient
from projections.dead_letters import DeadLetters
from schemas.codec import SerializationError, UnknownSchemaError, citizen_event_codec
from services import kafka as broker
from services.health import ComponentHealth, FatalError
from services.settings import Settings

log = logging.getLogger(__name__)
NO_TOPIC = UUID(int=0)  # rows stored before topic ids were recorded
LAG_EVERY_S = 1.0


@dataclass(frozen=True)
class ProjectorOptions:
    """The projector's tunables; where it reads and writes comes from `Settings`."""

    # Under a backlog, up to this many records per poll, hence per INSERT (fewer, larger
    # inserts); when it is quiet a poll still returns what came within fetch_max_wait_ms.
    max_poll_records: int = 20000
    partition_fetch_bytes: int = 8 * 1024 * 1024  # per partition and fetch (default 1 MiB)
    poll_timeout_ms: int = 100
    # A consumer group shares partitions among projectors (needs a ClickHouse server); a lone
    # projector, such as the one embedded beside chdb, takes every partition itself.
    group_mode: bool = True


class ReadModelAheadError(FatalError):
    """ClickHouse holds rows from offsets the topic does not have."""


class SchemaNotKnownError(FatalError):
    """A record written with a newer schema, met where the projector cannot pause (rebuild)."""


@dataclass
class _Batch:
    """One poll's decoded events, where each came from, and each partition's offset range."""

    events: list[dict[str, Any]] = field(default_factory=list)
    places: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)
    ranges: dict[int, list[int]] = field(default_factory=dict)  # partition -> [first, last]


class _ResumeFromReadModel(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    def on_partitions_revoked(self, revoked: Any) -> None:
        # Rows still being written would land after the next owner read where to resume.
        self.projector.settle()
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
        name: str = "projector",
    ) -> None:
        self.settings = settings
        self.options = options
        self.trail = trail
        self.on_batch = on_batch
        self.codec = citizen_event_codec()
        self.stored = 0
        self.health = ComponentHealth(name)
        self.dead_letters = DeadLetters(settings)
        self.topic_id = NO_TOPIC
        self.paused: dict[int, str] = {}  # partition -> why it waits for an upgrade
        self.consumed: dict[int, datetime] = {}  # partition -> newest recording time read
        self.partition_count = 0
        self._consumer: KafkaConsumer | None = None
        self._unchecked: tuple[dict[int, ResumePoint], dict[TopicPartition, int]] | None
        self._unchecked = None
        self._committed: dict[TopicPartition, int] = {}
        self._lag_at = 0.0
        self._inserter: ThreadPoolExecutor | None = None  # one INSERT at a time, in order
        self._in_flight: Future[None] | None = None
        self._to_commit: dict[TopicPartition, int] | None = None

    def start(self) -> None:
        s, topic = self.settings, self.settings.kafka_topic
        connection = broker.connect_as(s, "projector")
        self._consumer = KafkaConsumer(
            **connection,
            group_id=s.projector_group,
            enable_auto_commit=False,
            auto_offset_reset="none",  # never jump over a gap: an offset out of range is a fault
            isolation_level="read_committed",
            max_poll_records=self.options.max_poll_records,
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(500, s.kafka_session_timeout_ms // 3),
            fetch_min_bytes=32 * 1024,  # fewer, larger inserts under load...
            max_partition_fetch_bytes=self.options.partition_fetch_bytes,
            fetch_max_wait_ms=150,  # ...at most 150 ms later when it is quiet
            metadata_max_age_ms=10_000,  # notice new partitions within seconds, not minutes
        )
        # A group that joins before its topic's partitions are known is assigned nothing and
        # only rejoins at the next metadata refresh: make the topic and see its partitions first.
        self.topic_id = broker.prepare_topic(connection, topic) or NO_TOPIC
        self.paused = {}
        deadline = time.monotonic() + 30
        while not (partitions := self._consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partitions known for topic {topic}")
            time.sleep(0.1)
        self.partition_count = len(partitions)
        if self.options.group_mode:
            self._consumer.subscribe([topic], listener=_ResumeFromReadModel(self))
        else:
            everything = [TopicPartition(topic, p) for p in sorted(partitions)]
            self._consumer.assign(everything)
            self.resume(everything)

    def resume(self, assigned: list[TopicPartition]) -> None:
        """Seek each partition to the offset after its last stored row; the checks that this
        is safe run in `step`, before anything is stored (a rebalance listener runs on the
        consumer's network thread and may not block on the broker)."""
        assert self._consumer is not None
        self.settle()  # where to resume is read once the rows in flight are stored
        points = self.trail.resume_points()
        starts = {tp: points[tp.partition].offset + 1 if tp.partition in points else 0
                  for tp in assigned}  # fmt: skip
        for tp in assigned:
            if tp.partition in points:
                self._saw(tp.partition, points[tp.partition].newest)
        for tp, offset in starts.items():
            self._consumer.seek(tp, offset)
        self._unchecked = (points, starts)
        log.info("assigned %s, resuming at offsets %s", sorted(tp.partition for tp in assigned),
                 {tp.partition: o for tp, o in starts.items()})  # fmt: skip

    def _check_resume(self) -> None:
        """Refuse to store anything after a resume that would skip, repeat or mix events."""
        if self._unchecked is None:
            return
        points, starts = self._unchecked
        self._check_same_topic(points)
        self._check_nothing_deleted(starts)
        self._check_not_ahead({tp: points[tp.partition].offset for tp in starts
                               if tp.partition in points})  # fmt: skip
        self._unchecked = None

    def _check_same_topic(self, points: dict[int, ResumePoint]) -> None:
        """Refuse a read model built from another topic of the same name (recreated)."""
        recorded = {point.topic_id for point in points.values()} - {NO_TOPIC}
        if recorded and recorded != {self.topic_id}:
            raise broker.TopicChangedError(
                f"the read models were built from topic id {sorted(map(str, recorded))}, but "
                f"{self.settings.kafka_topic} now has id {self.topic_id}: the topic was "
                "recreated; rebuild them with `python -m projections rebuild`"
            )

    def _check_nothing_deleted(self, starts: dict[TopicPartition, int]) -> None:
        """Refuse to jump over offsets the topic no longer holds."""
        assert self._consumer is not None
        if not starts:
            return
        begins = self._consumer.beginning_offsets(list(starts))
        gone = {tp.partition: begins[tp] - start for tp, start in starts.items()
                if start < begins[tp]}  # fmt: skip
        if gone:
            raise broker.EventsDeletedError(
                f"topic {self.settings.kafka_topic} no longer holds offsets the read models "
                f"have not stored (partition: offsets missing {gone}); they cannot be "
                "completed: restore the topic, or rebuild with --accept-loss"
            )

    def step(self) -> int:
        """One poll -> decode -> store cycle; returns the number of events sent to be stored.
        The INSERT runs while the next poll is read and decoded (`submit_batch`); the group's
        offsets are committed once the rows they cover are stored."""
        assert self._consumer is not None, "start() first"
        try:
            polled = self._consumer.poll(timeout_ms=self.options.poll_timeout_ms)
        except OffsetOutOfRangeError:  # records deleted under a running projector
            self.resume(list(self._consumer.assignment()))
            polled = {}
        self._check_resume()  # after a new assignment, before anything is stored
        positions = {tp: self._consumer.position(tp) for tp in self._consumer.assignment()}
        if polled:
            sent = self.submit_batch(polled, positions=positions)
        else:
            sent = 0
            self.flush()
            self._commit(positions)  # a poll that only stepped over transaction markers
        self._measure_lag()
        return sent

    def _commit(self, positions: dict[TopicPartition, int]) -> None:
        """Commit `positions` unless they are committed already (only stored rows are covered:
        else the group would claim rows not yet written; markers alone also move them)."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()  # a rebalance since: not the partitions it lost
        positions = {tp: offset for tp, offset in positions.items() if tp in assigned}
        if positions and positions != self._committed:
            self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1)
                                   for tp, offset in positions.items()})  # fmt: skip
            self._committed = positions

    def _measure_lag(self) -> None:
        """Offsets not yet consumed (end offsets minus positions), about once a second."""
        assert self._consumer is not None
        if time.monotonic() - self._lag_at < LAG_EVERY_S:
            return
        self._lag_at = time.monotonic()
        assigned = list(self._consumer.assignment())
        ends = self._consumer.end_offsets(assigned) if assigned else {}
        self.health.lag = sum(max(0, ends[tp] - self._consumer.position(tp)) for tp in assigned)

    def _check_not_ahead(self, stored: dict[TopicPartition, int]) -> None:
        """Refuse read models holding offsets the topic does not have (recreated topic)."""
        assert self._consumer is not None
        if not stored:
            return
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
        left out), after every dead letter of the poll is acknowledged; returns when stored."""
        sent = self.submit_batch(polled, limit)
        self.flush()
        return sent

    def submit_batch(
        self,
        polled: dict[TopicPartition, list[Any]],
        limit: dict[TopicPartition, int] | None = None,
        positions: dict[TopicPartition, int] | None = None,
    ) -> int:
        """`store_batch`, but the INSERT runs on the insert thread while the caller polls and
        decodes the next batch (the engine works without the GIL). One INSERT at a time, in
        poll order: this waits for the one before and raises its error, if any, before it
        submits. `positions` are committed to the group once these rows are stored."""
        batch = self._decoded(polled, limit)
        self.flush()  # the batch before is stored (or its error raised) before this one goes
        self.dead_letters.wait_acknowledged()
        if not batch.events:
            if positions is not None:
                self._commit(positions)
            return 0
        if self._inserter is None:
            self._inserter = ThreadPoolExecutor(1, thread_name_prefix=f"{self.health.name}-insert")
        self._in_flight = self._inserter.submit(self._store, batch)
        self._to_commit = positions
        return len(batch.events)

    def flush(self) -> None:
        """Wait for the INSERT in flight: raise its error, or commit its positions."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        in_flight.result()
        if self._to_commit is not None:
            self._commit(self._to_commit)
            self._to_commit = None

    def settle(self) -> None:
        """Wait for the INSERT in flight, leaving its error for `flush` (a rebalance must not
        hand partitions on, nor read where to resume, while rows are still being written)."""
        if self._in_flight is not None:
            futures.wait([self._in_flight])

    def _decoded(
        self, polled: dict[TopicPartition, list[Any]], limit: dict[TopicPartition, int] | None
    ) -> _Batch:
        """The poll's records decoded (plainly: ids as strings, times in epoch ms); dead letters
        sent (not yet acknowledged); a record of an unknown schema pauses its partition."""
        batch = _Batch()
        decode = self.codec.decode_plain
        events, places, ranges = batch.events, batch.places, batch.ranges
        for tp, records in polled.items():
            partition = tp.partition
            end = limit[tp] if limit is not None else None
            for record in records:
                offset = record.offset
                if end is not None and offset >= end:
                    continue
                span = ranges.setdefault(partition, [offset, offset])
                span[1] = offset
                try:
                    event = decode(record.value)
                except UnknownSchemaError as exc:
                    self._pause(tp, offset, exc)
                    break  # nothing after it in this partition, until the upgrade
                except SerializationError as exc:
                    self.dead_letters.send(record, str(exc))
                    continue
                events.append(event)
                places.append((partition, offset))
        return batch

    def _store(self, batch: _Batch) -> None:
        """One INSERT of the batch; then the watermarks, the count and `on_batch`."""
        events = batch.events
        columns = to_columns(events, batch.places, self.topic_id)
        self.trail.store(columns, batch_token(self.topic_id, batch.ranges))
        # The watermark moves only once the rows are stored: a reader that sees it must find
        # every row up to it (the API reads through another client, side by side).
        newest: dict[int, int] = {}
        for event, (partition, _) in zip(events, batch.places, strict=True):
            at = event["recorded_at"]
            if at > newest.get(partition, -1):
                newest[partition] = at
        for partition, at in newest.items():
            self._saw(partition, from_millis(at))
        self.stored += len(events)
        if self.on_batch and events:
            self.on_batch(events)

    def _saw(self, partition: int, recorded_at: datetime) -> None:
        newest = self.consumed.get(partition)
        if newest is None or recorded_at > newest:
            self.consumed[partition] = recorded_at

    def watermark(self, account_id: str) -> datetime | None:
        """The newest recording time this projector has read from the partition that holds
        `account_id`'s events (the producer's key hash): an event of that account recorded
        later is pending, one recorded earlier should be in the read model. Kept in memory,
        from the topic, so an edit of the read model cannot move it."""
        if not self.partition_count:
            return None
        index = (murmur2(account_id.encode()) & 0x7FFFFFFF) % self.partition_count
        return self.consumed.get(index)

    def _pause(self, tp: TopicPartition, offset: int, exc: Exception) -> None:
        """Hold `tp` at `offset`: its record needs a newer schema, it is not garbage."""
        reason = (
            f"partition {tp.partition} offset {offset}: {exc}; this projector needs the newer "
            "schemas/ (upgrade it, then restart); the partition waits"
        )
        if self._consumer is None:
            raise SchemaNotKnownError(reason)
        self._consumer.seek(tp, offset)
        self._consumer.pause(tp)
        if tp.partition not in self.paused:
            log.error("paused %s", reason)
        self.paused[tp.partition] = reason
        self.health.paused(reason)

    def run(self, stop: threading.Event) -> None:
        """Project until `stop`; after a fault start over (resuming, as always, after the rows
        ClickHouse holds); a fatal error stops it and is raised."""
        broker.run_restarting(self.health, self.start, self.step, self.close, stop)

    def close(self) -> None:
        """Wait for the INSERT in flight (its error was or will be logged by the restart loop
        or is lost with the process: the next start resumes after what was stored), then
        close the consumer and the dead-letter producer."""
        self.settle()
        self._in_flight = self._to_commit = None
        if self._inserter is not None:
            self._inserter.shutdown(wait=True)
            self._inserter = None
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError):  # a broken consumer still closes
                self._consumer.close(autocommit=False)
            self._consumer = None
        with contextlib.suppress(KafkaError, OSError):
            self.dead_letters.close()


def batch_token(topic_id: UUID, ranges: dict[int, list[int]]) -> str:
    """The deduplication token of one batch: the topic and each partition's offset range. The
    same records inserted again (a retry after a crash, a second projector that lost its
    partitions late) are dropped by ClickHouse, rows and counts alike."""
    spans = ",".join(f"{p}:{a}-{b}" for p, (a, b) in sorted(ranges.items()))
    return f"{topic_id}/{spans}"


def access_projector(
    settings: Settings, options: ProjectorOptions, client: LockedClient | None = None
) -> Projector:
    """The projector of the restricted access topic into its own table (ACCESS_TABLE), in the
    same database, under its own consumer group (sharing `client` when given)."""
    access = dataclasses.replace(
        settings,
        kafka_topic=settings.access_topic,
        projector_group=f"{settings.projector_group}.access",
    )
    database = settings.clickhouse_database
    trail = (
        AuditTrail(client, database, ACCESS_TABLE)
        if client is not None
        else audit_trail(settings.clickhouse_url, database, ACCESS_TABLE)
    )
    return Projector(access, trail, options, name="access-projector")
