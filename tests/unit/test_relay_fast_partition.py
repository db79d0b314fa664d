"""The relay chooses the partition kafka-python's default partitioner would: events of one
account stay on one partition whoever picks it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kafka import KafkaProducer
from kafka.partitioner.default import DefaultPartitioner

from services.relay.relay import partition_of


class OneTopic:
    """The cluster metadata the default partitioner reads, for one topic."""

    def __init__(self, partitions: set[int]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


@given(key=st.binary(max_size=80), partitions=st.sets(st.integers(0, 200), min_size=1))
def test_a_key_goes_where_the_default_partitioner_sends_it(
    key: bytes, partitions: set[int]
) -> None:
    cluster = OneTopic(partitions)

    chosen = partition_of(key, sorted(partitions))

    assert chosen == DefaultPartitioner().partition("t", key, key, b"v", b"v", cluster)


def test_the_relays_producer_partitions_by_default() -> None:
    assert isinstance(KafkaProducer.DEFAULT_CONFIG["partitioner"], DefaultPartitioner)
