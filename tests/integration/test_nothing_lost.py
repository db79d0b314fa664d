"""Nothing is lost silently: retention, deleted records and recreated topics are refused.

Each test moves the real broker into the state a careless week or operator would leave it in
(records deleted with `delete_records`, a topic recreated, a retention limit), then checks
that the relay, the projector and the rebuild refuse to carry on instead of skipping events
or publishing them twice.
"""

from __future__ import annotations

import dataclasses

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from projections.rebuild import rebuild
from services.health import FatalError
from services.kafka import (
    KEEP_FOREVER,
    EventsDeletedError,
    TopicChangedError,
    TopicNotReadyError,
    TopicRetentionError,
    ensure_topic,
    topic_config,
)
from services.relay.relay import Relay
from services.settings import Settings
from tests.support.broker import as_admin
from tests.support.factories import register_command, registry_with
from tests.support.kafka import publish_all, read_topic
from tests.support.read_models import projected, projector_for, run_until
from tests.support.stores import another_store
from tests.support.waiting import wait_until


def admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(**as_admin(bootstrap))


def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(**as_admin(bootstrap))
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return consumer.end_offsets([TopicPartition(topic, p) for p in parts])  # type: ignore[no-any-return]
    finally:
        consumer.close()


def delete_records(bootstrap: str, upto: dict[TopicPartition, int]) -> None:
    """Move each partition's log start offset up to `upto` (what retention would have done)."""
    client = admin(bootstrap)
    try:
        client.delete_records({tp: o for tp, o in upto.items() if o > 0})
    finally:
        client.close()


def delete_topic(bootstrap: str, topic: str) -> None:
    client = admin(bootstrap)
    try:
        client.delete_topics([topic])
    finally:
        client.close()
    wait_until(lambda: topic not in _topics(bootstrap), 30, every=0.2)


def _topics(bootstrap: str) -> list[str]:
    client = admin(bootstrap)
    try:
        return list(client.list_topics())
    finally:
        client.close()


def test_topics_are_made_to_keep_every_event_for_ever(kafka_bootstrap, settings) -> None:
    publish_all(settings, registry_with(settings, 2))

    config = topic_config(as_admin(kafka_bootstrap), settings.kafka_topic)

    assert config["retention.ms"] == "-1"
    assert config["retention.bytes"] == "-1"
    assert config["cleanup.policy"] == "delete"


def test_a_topic_the_broker_cannot_describe_is_not_taken_for_a_wrong_one(
    kafka_bootstrap, settings
) -> None:
    # The broker answers an unknown (or just created, not yet propagated) topic with no
    # configuration at all: that is "not ready, try again", never "retention=None, refuse".
    with pytest.raises(TopicNotReadyError):
        topic_config(as_admin(kafka_bootstrap), settings.kafka_topic, wait=0.5)
    assert not issubclass(TopicNotReadyError, FatalError)


@pytest.mark.parametrize(
    ("setting", "value"), [("retention.ms", "604800000"), ("cleanup.policy", "compact")]
)
def test_relay_and_projector_refuse_a_topic_that_would_delete_events(
    kafka_bootstrap, settings, chdb_url, setting, value
) -> None:
    client = admin(kafka_bootstrap)
    try:
        configs = {**KEEP_FOREVER, setting: value}  # only this one setting is wrong
        client.create_topics([NewTopic(settings.kafka_topic, 3, 1, topic_configs=configs)])
    finally:
        client.close()
    relay = Relay(settings, registry_with(settings, 1))

    with pytest.raises(TopicRetentionError, match=setting):
        relay.start()
    relay.close()
    with pytest.raises(TopicRetentionError, match=setting):
        projector_for(settings, chdb_url)


def test_relay_refuses_to_resume_once_records_were_deleted(kafka_bootstrap, settings) -> None:
    registry = registry_with(settings, 6)
    publish_all(settings, registry)
    ends = end_offsets(kafka_bootstrap, settings.kafka_topic)
    delete_records(kafka_bootstrap, ends)
    registry.handle(register_command())
    relay = Relay(settings, registry)

    with pytest.raises(EventsDeletedError, match="deleted"):
        relay.start()
    relay.close()
    assert end_offsets(kafka_bootstrap, settings.kafka_topic) == ends  # nothing republished


def test_relay_refuses_a_recreated_topic(kafka_bootstrap, settings) -> None:
    registry = registry_with(settings, 4)
    publish_all(settings, registry)
    delete_topic(kafka_bootstrap, settings.kafka_topic)
    ensure_topic(as_admin(kafka_bootstrap), settings.kafka_topic)
    relay = Relay(settings, registry)

    with pytest.raises(TopicChangedError, match="recreated"):
        relay.start()
    relay.close()
    assert sum(end_offsets(kafka_bootstrap, settings.kafka_topic).values()) == 0


def test_relay_publishes_a_store_for_the_first_time_from_its_start(
    kafka_bootstrap, settings
) -> None:
    registry = registry_with(settings, 5)

    published = publish_all(settings, registry)

    assert published == 5
    assert len(read_topic(kafka_bootstrap, settings.kafka_topic, 5)) == 5
    assert registry.publication(settings.kafka_topic) is not None


def test_projector_refuses_to_jump_over_deleted_events(kafka_bootstrap, settings, chdb_url) -> None:
    registry, first = projected(settings, chdb_url, 8)
    for _ in range(8):
        registry.handle(register_command())
    publish_all(settings, registry)
    delete_records(kafka_bootstrap, end_offsets(kafka_bootstrap, settings.kafka_topic))
    second = projector_for(settings, chdb_url)

    with pytest.raises(EventsDeletedError, match="rebuild with --accept-loss"):
        run_until(second, 1, timeout=30)
    second.close()
    assert sum(second.trail.totals().values()) == 8


def test_projector_refuses_a_longer_recreated_topic(kafka_bootstrap, settings, chdb_url) -> None:
    projected(settings, chdb_url, 3)
    delete_topic(kafka_bootstrap, settings.kafka_topic)
    # Another store fills the recreated topic with more records than the old one had.
    other = another_store(settings)
    publish_all(other, registry_with(other, 40))
    second = projector_for(settings, chdb_url)

    with pytest.raises(TopicChangedError, match="recreated"):
        run_until(second, 1, timeout=30)
    second.close()
    assert sum(second.trail.totals().values()) == 3


def test_rebuild_refuses_a_topic_missing_its_first_events_unless_the_loss_is_accepted(
    kafka_bootstrap, env_for, chdb_url
) -> None:
    settings = dataclasses.replace(Settings.from_env(env_for()), clickhouse_url=chdb_url)
    _, live = projected(settings, chdb_url, 12)
    ends = end_offsets(kafka_bootstrap, settings.kafka_topic)
    cut = {tp: 1 for tp, end in ends.items() if end > 0}  # the first record of each partition
    delete_records(kafka_bootstrap, cut)

    with pytest.raises(EventsDeletedError, match=f"{len(cut)} offsets"):
        rebuild(settings, show_progress=False)
    assert sum(live.trail.totals().values()) == 12  # the live read models are untouched
    report = rebuild(settings, show_progress=False, accept_loss=True)

    assert report["complete"] is False
    assert report["missing_offsets"] == len(cut)
    assert report["stored"] == 12 - len(cut)
    assert live.trail.completeness()["complete"] is False
