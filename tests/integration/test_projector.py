"""The projector against the real broker and the real ClickHouse engine (chdb)."""

from __future__ import annotations

import signal
import subprocess
from datetime import UTC, datetime

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from projections.rebuild import rebuild
from services.kafka import TopicChangedError, ensure_topic
from services.registry.application import Registry
from services.settings import Settings
from tests.support.broker import as_admin
from tests.support.environment import unique
from tests.support.factories import (
    approve_command,
    personal_number,
    register_command,
)
from tests.support.kafka import projector_lag, publish_all
from tests.support.processes import python_process
from tests.support.read_models import projected, projector_for, run_until
from tests.support.waiting import wait_until


def test_history_and_hourly_counts_come_from_the_stream(kafka_bootstrap, env_for, chdb_url) -> None:
    settings = Settings.from_env(env_for())
    registry = Registry(settings)
    citizens = [personal_number(serial=i) for i in range(6)]
    for i, cid in enumerate(citizens):
        commune = "22420" if i < 4 else "22453"
        registry.handle(register_command(cid, commune, "2023-06-27T09:15:00+07:00"))
    registry.handle(approve_command(citizens[0]))
    publish_all(settings, registry)

    projector = projector_for(settings, chdb_url)
    try:
        run_until(projector, 7)
        hour = datetime(2023, 6, 27, 2, tzinfo=UTC)  # 09:00 in Vietnam
        counts = projector.trail.hourly("commune", "22420", hour, datetime(2023, 6, 28))
        assert counts == [
            (hour, "registration_received", 4),
            (datetime(2023, 6, 27, 3, tzinfo=UTC), "registration_decided", 1),
        ]
        province = projector.trail.hourly("province", "56", hour, datetime(2023, 6, 28))
        assert (hour, "registration_received", 6) in province
        history = projector.trail.history(registry.account_id(citizens[0]))
        assert [e["event_type"] for e in history] == [
            "registration_received",
            "registration_decided",
        ]
        assert history[0]["device_id"] == "dev-1"
    finally:
        projector.close()


def test_undecodable_message_goes_to_dlq_and_consumption_goes_on(
    kafka_bootstrap, env_for, chdb_url
) -> None:
    settings = Settings.from_env(env_for())
    registry = Registry(settings)
    registry.handle(register_command())
    publish_all(settings, registry)
    producer = KafkaProducer(**as_admin(kafka_bootstrap))
    producer.send(settings.kafka_topic, key=b"x", value=b"not avro at all")
    producer.flush()
    producer.close()
    registry.handle(register_command())
    publish_all(settings, registry)

    projector = projector_for(settings, chdb_url)
    try:
        run_until(projector, 2)
        wait_until(
            lambda: projector.step() is not None and projector.dead_letters.sent == 1, 30, every=0
        )
    finally:
        projector.close()
    dlq = KafkaConsumer(
        settings.dlq_topic,
        **as_admin(kafka_bootstrap),
        auto_offset_reset="earliest",
        consumer_timeout_ms=10000,
    )
    letters = [r for r in dlq]
    dlq.close()
    assert len(letters) == 1
    assert letters[0].value == b"not avro at all"
    assert b"bad magic" in dict(letters[0].headers)["dlq_reason"]


def test_projector_killed_mid_batch_neither_loses_nor_double_counts(
    kafka_bootstrap, env_for, tmp_path
) -> None:
    env = env_for(CLICKHOUSE_URL=f"chdb://{tmp_path / 'own-chdb'}")
    settings = Settings.from_env(env)
    registry = Registry(settings)
    total = 3000
    for i in range(total // 2):
        cid = personal_number(serial=i)
        registry.handle(register_command(cid))
        registry.handle(approve_command(cid))
    publish_all(settings, registry)

    args = ["-m", "projections", "run", "--max-poll-records", "100", "--progress"]
    for kills in range(3):
        projector = python_process(args, env, stdout=subprocess.PIPE)
        progress = [projector.stdout.readline() for _ in range(2 + kills)]  # type: ignore[union-attr]
        assert all(line.startswith("{") for line in progress), progress
        projector.send_signal(signal.SIGKILL)
        projector.wait(10)
        projector.stdout.close()  # type: ignore[union-attr]
    projector = python_process(args, env, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: projector_lag(kafka_bootstrap, settings) == 0, 120, every=0.5)
    finally:
        projector.send_signal(signal.SIGTERM)
        projector.wait(30)
    stats = python_process(["-m", "projections", "stats"], env, stdout=subprocess.PIPE)
    out, _ = stats.communicate(timeout=60)
    figures = orjson.loads(out.strip().splitlines()[-1])
    assert figures["rows"] == total
    assert figures["unique_events"] == total
    assert figures["by_type"] == {
        "registration_received": total // 2,
        "registration_decided": total // 2,
    }


def test_rebuild_replaces_a_damaged_read_model_with_the_full_replay(
    kafka_bootstrap, env_for, chdb_url
) -> None:
    settings = Settings.from_env(env_for())
    registry, live = projected(settings, chdb_url, 30)
    counted = live.trail.totals()
    live.trail.client.command(
        f"ALTER TABLE {live.trail.table} DELETE WHERE kafka_offset % 2 = 0 "
        f"SETTINGS mutations_sync = 1"
    )
    damaged = live.trail.totals()

    report = rebuild(live.settings, show_progress=False)

    assert damaged != counted == {"registration_received": 30}
    assert report == {"stored": 30, "access_records": 0, "before": damaged, "after": counted,
                      "complete": True, "missing_offsets": 0}  # fmt: skip
    assert live.trail.totals() == counted


def test_rebuild_command_replays_from_zero_and_matches_the_live_counts(
    kafka_bootstrap, env_for, tmp_path
) -> None:
    env = env_for(CLICKHOUSE_URL=f"chdb://{tmp_path / 'own-chdb'}")
    settings = Settings.from_env(env)
    registry = Registry(settings)
    for i in range(200):
        cid = personal_number(serial=i)
        registry.handle(register_command(cid, commune="22453" if i % 3 else "22420"))
        if i % 2:
            registry.handle(approve_command(cid))
    publish_all(settings, registry)
    live = python_process(["-m", "projections", "run"], env)
    try:
        wait_until(lambda: projector_lag(kafka_bootstrap, settings) == 0, 120, every=0.5)
    finally:
        live.send_signal(signal.SIGTERM)
        live.wait(30)

    done = python_process(
        ["-m", "projections", "rebuild"], env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = done.communicate(timeout=120)
    report = orjson.loads(out.strip().splitlines()[-1])
    assert done.returncode == 0
    assert "300/300" in err.replace(" ", "") or "100%" in err  # the progress bar was shown
    assert report["stored"] == 300
    assert (
        report["after"]
        == report["before"]
        == {"registration_received": 200, "registration_decided": 100}
    )


def test_a_read_model_from_a_shorter_recreated_topic_is_refused(
    kafka_bootstrap, env_for, chdb_url
) -> None:
    settings = Settings.from_env(env_for())
    registry, first = projected(settings, chdb_url, 5)
    # The same read models, now fed from a recreated (here: another, shorter) topic.
    other = Settings.from_env(env_for(CLICKHOUSE_DATABASE=settings.clickhouse_database,
                                      KAFKA_TOPIC=unique("recreated"),
                                      PROJECTOR_GROUP=unique("projector")))  # fmt: skip
    ensure_topic(as_admin(kafka_bootstrap), other.kafka_topic)
    producer = KafkaProducer(**as_admin(kafka_bootstrap))
    producer.send(other.kafka_topic, b"x", partition=0)
    producer.flush()
    producer.close()
    second = projector_for(other, chdb_url)
    try:
        with pytest.raises(TopicChangedError, match="rebuild"):
            wait_until(lambda: second.step() is None, 30, every=0)
    finally:
        second.close()
