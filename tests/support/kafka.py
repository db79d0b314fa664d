"""Kafka in the tests: a registry's events published by the relay, a topic read back, a lag."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, TopicPartition

from services.registry.application import Registry
from services.relay.relay import Relay, RelayOptions
from services.settings import Settings
from tests.support.broker import as_admin
from tests.support.waiting import wait_until


def publish_all(
    settings: Settings, registry: Registry, batch_size: int = RelayOptions.batch_size
) -> int:
    """Run a relay until the store has nothing left to publish; how many events it published."""
    relay = Relay(settings, registry, RelayOptions(batch_size=batch_size))
    relay.start()
    try:
        while relay.step():
            pass
        return relay.published
    finally:
        relay.close()


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 60) -> list[Any]:
    """Every committed record of `topic`, once at least `expect` have arrived."""
    consumer = KafkaConsumer(
        **as_admin(bootstrap), isolation_level="read_committed", enable_auto_commit=False
    )
    try:
        found: Any = wait_until(lambda: consumer.partitions_for_topic(topic), timeout)
        consumer.assign([TopicPartition(topic, p) for p in found])
        consumer.seek_to_beginning()
        records: list[Any] = []

        def more() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            return len(records) >= expect

        wait_until(more, timeout, every=0)
        # Drain anything beyond `expect` (a duplicate would show up here).
        for _ in range(5):
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def projector_lag(bootstrap: str, settings: Settings) -> int:
    """Records on the topic beyond the projector group's committed offsets."""
    consumer = KafkaConsumer(
        **as_admin(bootstrap),
        group_id=settings.projector_group,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    try:
        tps = [
            TopicPartition(settings.kafka_topic, p)
            for p in consumer.partitions_for_topic(settings.kafka_topic) or ()
        ]
        ends = consumer.end_offsets(tps)
        return sum(ends[tp] - (consumer.committed(tp) or 0) for tp in tps)
    finally:
        consumer.close()
