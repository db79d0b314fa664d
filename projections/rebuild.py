"""Rebuild every read model from offset zero, beside the live one, then swap them in.

The rebuild reads the topic from the beginning up to the end offsets it sees when it starts,
into a scratch database; then each table is exchanged with the live one in one step, so
readers see either the old read model or the complete new one. Stop the projector first
(with the embedded engine that means stopping the API: one process per data directory).
A topic that no longer starts at offset 0 (events deleted) is refused unless the loss is
accepted explicitly; the result is then recorded as incomplete.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

from kafka import KafkaConsumer, TopicPartition
from tqdm import tqdm

from projections.audit import ACCESS_TABLE, READ_MODEL_TABLES, AuditTrail, audit_trail
from projections.runner import NO_TOPIC, Projector, ProjectorOptions
from services.kafka import (
    EventsDeletedError,
    connect_as,
    prepare_topic,
)
from services.settings import Settings

# Records per INSERT in a rebuild: small enough that storing one batch overlaps reading and
# decoding the next even when the whole topic arrives in one fetch, large enough for few parts.
REBUILD_BATCH = 5000


def end_offsets(consumer: KafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    parts = consumer.partitions_for_topic(topic) or set()
    return consumer.end_offsets([TopicPartition(topic, p) for p in sorted(parts)])  # type: ignore[no-any-return]


def _consumer(settings: Settings, options: ProjectorOptions) -> KafkaConsumer:
    return KafkaConsumer(
        **connect_as(settings, "projector"), isolation_level="read_committed",
        enable_auto_commit=False, max_poll_records=options.max_poll_records,
        max_partition_fetch_bytes=options.partition_fetch_bytes,
    )  # fmt: skip


def missing_offsets(settings: Settings) -> int:
    """How many offsets were deleted from the start of the topic's partitions (0: none)."""
    consumer = _consumer(settings, ProjectorOptions())
    try:
        return _missing(consumer, end_offsets(consumer, settings.kafka_topic))
    finally:
        consumer.close()


def _missing(consumer: KafkaConsumer, ends: dict[TopicPartition, int]) -> int:
    return sum(consumer.beginning_offsets(list(ends)).values()) if ends else 0


def _replay(
    settings: Settings,
    consumer: KafkaConsumer,
    ends: dict[TopicPartition, int],
    trail: AuditTrail,
    tid: UUID,
    show: bool,
) -> int:
    """Store the topic from its first offset up to `ends` (today's end) into `trail`; returns
    events."""
    projector = Projector(settings, trail, ProjectorOptions())
    projector.topic_id = tid
    try:
        consumer.assign(list(ends))
        if ends:
            consumer.seek_to_beginning(*ends)
        remaining = {tp: end for tp, end in ends.items() if consumer.position(tp) < end}
        with tqdm(total=sum(remaining.values()), unit="offset", disable=not show) as bar:
            while remaining:
                before = {tp: consumer.position(tp) for tp in remaining}
                # stored while the next poll is read and decoded (one INSERT at a time)
                polled = consumer.poll(timeout_ms=500, max_records=REBUILD_BATCH)
                projector.submit_batch(polled, limit=ends)
                for tp in list(remaining):
                    position = consumer.position(tp)
                    bar.update(min(position, ends[tp]) - min(before[tp], ends[tp]))
                    if position >= ends[tp]:
                        del remaining[tp]
        projector.flush()
        return projector.stored
    finally:
        projector.close()


def rebuild(
    settings: Settings, show_progress: bool = True, accept_loss: bool = False
) -> dict[str, Any]:
    """Rebuild into `<database>_rebuild`, swap it in, and report old and new totals.

    Both tables are rebuilt: the audit trail from the topic, the access records from the
    restricted access topic. One ClickHouse client and one consumer serve the whole rebuild;
    the topics are checked while the live database is made ready.
    """
    access = dataclasses.replace(settings, kafka_topic=settings.access_topic)
    sources = ((settings, "audit_events"), (access, ACCESS_TABLE))
    consumer = _consumer(settings, ProjectorOptions())
    try:
        with ThreadPoolExecutor(len(sources)) as pool:
            checks = [pool.submit(_check_topic, source) for source, _ in sources]
            live = audit_trail(settings.clickhouse_url, settings.clickhouse_database)
            ids = [check.result() for check in checks]
        ends = [end_offsets(consumer, source.kafka_topic) for source, _ in sources]
        missing = sum(
            _missing_or_refuse(source.kafka_topic, _missing(consumer, upto), accept_loss)
            for (source, _), upto in zip(sources, ends, strict=True)
        )
        before = live.totals()
        scratch_name = f"{settings.clickhouse_database}_rebuild"
        live.client.command(f"DROP DATABASE IF EXISTS {scratch_name}")
        live.client.make_read_models(scratch_name)
        stored = {}
        for (source, table), upto, tid in zip(sources, ends, ids, strict=True):
            scratch = AuditTrail(live.client, scratch_name, table)
            stored[table] = _replay(source, consumer, upto, scratch, tid, show_progress)
    finally:
        consumer.close()
    # The rows and every table derived from them (views.sql), swapped in together: the live
    # views now read the new rows' tables by name and count into the new counts.
    for table in READ_MODEL_TABLES:
        live.client.command(
            f"EXCHANGE TABLES {settings.clickhouse_database}.{table} AND {scratch_name}.{table}"
        )
    live.client.command(f"DROP DATABASE {scratch_name}")
    live.mark_rebuild(ids[0], missing)
    return {
        "stored": stored["audit_events"],
        "access_records": stored[ACCESS_TABLE],
        "before": before,
        "after": live.totals(),
        "complete": missing == 0,
        "missing_offsets": missing,
    }


def _check_topic(settings: Settings) -> UUID:
    """Make the topic if missing, refuse one that would delete events; its id."""
    connection = connect_as(settings, "projector")
    return prepare_topic(connection, settings.kafka_topic) or NO_TOPIC


def _missing_or_refuse(topic: str, missing: int, accept_loss: bool) -> int:
    """Offsets deleted from the start of the topic; refused unless the loss is accepted."""
    if missing and not accept_loss:
        raise EventsDeletedError(
            f"topic {topic} no longer starts at offset 0: {missing} offsets "
            "(events and transaction markers) were deleted; a rebuild would be incomplete. "
            "Restore the topic, or accept the loss with --accept-loss (the read models are "
            "then marked incomplete)"
        )
    return missing
