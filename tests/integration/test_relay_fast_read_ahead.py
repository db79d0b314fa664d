"""The relay's direct path and its read-ahead on the real store and broker: every stored event
takes the direct path, what the relay publishes is what the long way encodes (on the partition
the default partitioner would choose), and a batch read ahead never skips or repeats an
event."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import pytest
from eventsourcing.utils import get_topic
from kafka.errors import KafkaError

from schemas.codec import citizen_event_codec
from services.registry.application import Registry
from services.registry.commands import ActivateAccount, ChangeStatus, EraseCitizen
from services.registry.domain import AccessRecord
from services.relay.direct import DirectEncoder
from services.relay.mapping import PUBLIC_TOPICS, outgoing
from services.relay.relay import Relay, RelayOptions, partition_of
from services.settings import Settings
from tests.support.factories import approve_command, personal_number, register_command
from tests.support.kafka import read_topic

AT = "2023-06-28T08:00:00.250+07:00"


def every_kind_of_event(registry: Registry, citizens: int) -> None:
    """Registrations, decisions, activations, status changes, erasures and history reads."""
    for i in range(citizens):
        cid = personal_number(serial=i)
        registry.handle(register_command(cid))
        registry.handle(approve_command(cid))
        if i % 3 == 0:
            registry.handle(ActivateAccount(f"act-{uuid.uuid4()}", cid, "assisted", AT))
        elif i % 3 == 1:
            registry.handle(ChangeStatus(f"st-{uuid.uuid4()}", cid, "revoked", "why", "op", AT))
            registry.handle(EraseCitizen(f"er-{uuid.uuid4()}", cid, "basis", "case-1", AT))
        account = registry.account(cid)
        assert account is not None
        registry.record_access(account, "auditor-1", "auditor", "complaint", "history")


def published(bootstrap: str, settings: Settings, stored: list[Any]) -> list[Any]:
    """Every record on the relay's two topics, once as many as `stored` have arrived."""
    reads = get_topic(AccessRecord.HistoryRead)  # type: ignore[attr-defined]
    access = sum(1 for n in stored if n.topic == reads)
    topics = (settings.kafka_topic, settings.access_topic)
    return [r for t, n in zip(topics, (len(stored) - access, access), strict=True)
            for r in read_topic(bootstrap, t, n)]  # fmt: skip


def stored_public(registry: Registry) -> list[Any]:
    return list(registry.recorder.select_notifications(start=1, limit=10**6, topics=PUBLIC_TOPICS))


def test_every_event_in_the_store_takes_the_direct_path(env_for) -> None:
    registry = Registry(Settings.from_env(env_for()))
    every_kind_of_event(registry, 6)
    direct = DirectEncoder(registry.mapper, citizen_event_codec())

    rows = stored_public(registry)

    assert len(rows) == 6 * 3 + 2 + 2 * 2  # 6 registered, decided, read; 2 activated; 2 erased
    assert all(direct.encode(row) is not None for row in rows)


def test_what_the_relay_publishes_is_what_the_long_way_encodes(kafka_bootstrap, env_for) -> None:
    settings = Settings.from_env(env_for())
    registry = Registry(settings)
    every_kind_of_event(registry, 12)
    stored = stored_public(registry)
    relay = Relay(settings, registry, RelayOptions(batch_size=8))
    relay.start()
    try:
        while relay.step():
            pass
    finally:
        relay.close()

    codec = citizen_event_codec()
    records = published(kafka_bootstrap, settings, stored)
    by_position = {codec.decode(r.value)["position"]: r for r in records}
    assert len(records) == len(by_position) == len(stored)
    for n in stored:
        expected, record = outgoing(registry.mapper, codec, n), by_position[n.id]
        topic = settings.access_topic if expected.access else settings.kafka_topic
        assert (record.topic, record.key, record.value) == (topic, expected.key, expected.value)
        assert record.partition == partition_of(record.key, [0, 1, 2])  # the default's choice
        assert [(k, bytes(v)) for k, v in record.headers] == expected.headers


def test_a_failed_commit_drops_the_batch_read_ahead_and_skips_nothing(
    kafka_bootstrap, env_for
) -> None:
    settings = Settings.from_env(env_for())
    registry = Registry(settings)
    every_kind_of_event(registry, 15)
    stored = stored_public(registry)
    relay = Relay(settings, registry, RelayOptions(batch_size=7))
    relay.start()
    assert relay._producer is not None
    commit, commits = relay._producer.commit_transaction, []

    def failing_third() -> None:
        commits.append(1)
        if len(commits) == 3:  # after its records were sent and the next batch read ahead
            raise KafkaError("broker went away")
        commit()

    relay._producer.commit_transaction = failing_third  # type: ignore[method-assign]
    try:
        relay.step()
        relay.step()
        before = relay.position
        with pytest.raises(KafkaError):
            relay.step()
        assert relay.position == before
        relay.close()  # as run_restarting does: close, start again
        relay.start()
        assert relay.position == before
        while relay.step():
            pass
    finally:
        relay.close()

    codec = citizen_event_codec()
    events = [codec.decode(r.value) for r in published(kafka_bootstrap, settings, stored)]
    assert sorted(e["position"] for e in events) == [n.id for n in stored]  # once each
    sequences: dict[str, list[int]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e["position"]):
        if event["sequence"]:
            sequences[event["account_id"]].append(event["sequence"])
    assert all(s == list(range(1, len(s) + 1)) for s in sequences.values())
