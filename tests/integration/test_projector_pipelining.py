"""The projector stores one batch while it reads and decodes the next: one INSERT at a time,
in poll order; a failed INSERT stops the batches after it; the group's offsets cover stored
rows only. Real broker, real engine; the INSERT is made to fail or wait by wrapping it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka import TopicPartition

from projections.audit import COLUMNS
from projections.runner import ProjectorOptions
from services.settings import Settings
from tests.support.factories import registry_with
from tests.support.kafka import publish_all
from tests.support.read_models import projector_for, run_until

SMALL = ProjectorOptions(max_poll_records=10)  # batches of at most 10 records
PARTITION, OFFSET = COLUMNS.index("kafka_partition"), COLUMNS.index("kafka_offset")


def rows_in(projector: Any) -> tuple[int, int]:
    sql = f"SELECT count(), uniqExact(event_id) FROM {projector.trail.table}"
    count, distinct = projector.trail.client.query_rows(sql)[0]
    return int(count), int(distinct)


def test_a_failed_insert_stops_the_batches_after_it_and_a_restart_stores_each_row_once(
    kafka_bootstrap, env_for, chdb_url
) -> None:
    settings = Settings.from_env(env_for())
    publish_all(settings, registry_with(settings, 30))
    projector = projector_for(settings, chdb_url, SMALL)
    store, calls = projector.trail.store, []

    def failing_second(columns: list[list[Any]], token: str | None = None) -> None:
        calls.append(len(columns[0]))
        if len(calls) == 2:
            raise RuntimeError("injected INSERT failure")
        store(columns, token)

    projector.trail.store = failing_second  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="injected"):
            for _ in range(200):
                projector.step()
        assert len(calls) == 2  # the batch read after the failed one was never sent
        assert rows_in(projector) == (calls[0], calls[0])
        projector.close()
        projector.trail.store = store  # type: ignore[method-assign]
        projector.start()  # resumes after the rows the engine holds
        run_until(projector, 30)
        projector.flush()
        assert rows_in(projector) == (30, 30)
    finally:
        projector.close()


def test_offsets_are_committed_once_the_rows_they_cover_are_stored(
    kafka_bootstrap, env_for, chdb_url
) -> None:
    settings = Settings.from_env(env_for())
    publish_all(settings, registry_with(settings, 30))
    projector = projector_for(settings, chdb_url, SMALL)
    store, release, held = projector.trail.store, threading.Event(), threading.Event()
    second: dict[int, list[int]] = {}  # partition -> offsets of the held batch

    def holding_second(columns: list[list[Any]], token: str | None = None) -> None:
        if not held.is_set() and projector.stored:  # the first batch is stored: hold this one
            for partition, offset in zip(columns[PARTITION], columns[OFFSET], strict=True):
                second.setdefault(partition, []).append(offset)
            held.set()
            assert release.wait(30)
        store(columns, token)

    projector.trail.store = holding_second  # type: ignore[method-assign]
    consumer = projector._consumer  # noqa: SLF001 - the group's committed offsets
    assert consumer is not None
    try:
        for _ in range(300):  # step until the second batch is held (no step after it: the
            if projector.step() and held.wait(1):  # next one would wait for it)
                break
        assert held.is_set()
        # the second batch waits on the insert thread while the consumer is free
        for partition, offsets in second.items():
            committed = consumer.committed(TopicPartition(settings.kafka_topic, partition))
            assert committed is None or committed <= min(offsets)
        release.set()
        projector.step()  # waits for the held batch, then commits its positions
        projector.flush()
        for partition, offsets in second.items():
            committed = consumer.committed(TopicPartition(settings.kafka_topic, partition))
            assert committed is not None and committed > max(offsets)
        run_until(projector, 30)
        projector.flush()
        assert rows_in(projector) == (30, 30)
    finally:
        release.set()
        projector.close()
