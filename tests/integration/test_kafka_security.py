"""Who may do what on the real broker: SASL/SCRAM users and the deployment's ACLs
(infra/kafka/broker.sh, services/kafka_acl.py). Every refusal here is the broker's own."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)

from services.kafka import connect_as, read_credentials
from services.kafka_acl import grant, grants, held
from services.registry.application import Registry
from services.settings import Settings
from tests.support.broker import Broker, as_admin, credentials_file
from tests.support.environment import unique
from tests.support.factories import personal_number, register_command
from tests.support.kafka import publish_all
from tests.support.processes import ROOT

TOPIC_AUTHORIZATION_FAILED = 29
MIGRATION_PORT = int(os.environ.get("TEST_MIGRATION_KAFKA_PORT", "19492"))


@pytest.fixture
def published(settings: Settings) -> Settings:
    """A deployment whose relay published a registration and an access record, as `relay`."""
    registry = Registry(settings)
    try:
        citizen = personal_number()
        registry.handle(register_command(citizen))
        account = registry.account(citizen)
        assert account is not None
        registry.record_access(account, "auditor:abc", "auditor", "complaint 12", "history")
        assert publish_all(settings, registry) == 2
    finally:
        registry.close()
    return settings


def committed(connection: dict[str, Any], topic: str, seconds: float = 8) -> list[bytes]:
    """The committed values of every partition of `topic` this login is shown."""
    consumer = KafkaConsumer(**connection, isolation_level="read_committed")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:  # not shown to this login
            return []
        consumer.assign([TopicPartition(topic, p) for p in parts])
        consumer.seek_to_beginning()
        values: list[bytes] = []
        deadline = time.monotonic() + seconds
        while parts and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                values.extend(record.value for record in batch)
            if values and consumer.poll(timeout_ms=300) == {}:
                break
        return values
    finally:
        consumer.close()


def described(connection: dict[str, Any], topic: str) -> int:
    """The broker's error code when this login describes `topic` (0: allowed)."""
    admin = KafkaAdminClient(**connection)
    try:
        return int(admin.describe_topics([topic])[0]["error_code"])
    finally:
        admin.close()


def test_each_component_reads_and_writes_only_its_topics(published: Settings) -> None:
    s = published
    subscriber, projector = connect_as(s, "subscriber"), connect_as(s, "projector")
    # The public record: the subscriber and the projector read it.
    assert len(committed(subscriber, s.kafka_topic)) == 1
    assert len(committed(projector, s.kafka_topic)) == 1
    # Access records (who read whom): the projector reads them, a subscriber is not even
    # told the topic exists.
    assert len(committed(projector, s.access_topic)) == 1
    assert described(subscriber, s.access_topic) == TOPIC_AUTHORIZATION_FAILED
    assert committed(subscriber, s.access_topic, seconds=3) == []
    assert described(subscriber, s.kafka_topic) == 0


@pytest.mark.parametrize("principal", ["subscriber", "projector", "signer"])
def test_only_the_relay_writes_the_public_topic(published: Settings, principal: str) -> None:
    producer = KafkaProducer(**connect_as(published, principal), max_block_ms=10_000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(published.kafka_topic, b"forged", key=b"k").get(timeout=20)
    finally:
        producer.close(timeout=5)
    assert len(committed(as_admin(published.kafka_bootstrap), published.kafka_topic)) == 1


def test_the_relay_writes_only_under_its_transactional_id(published: Settings) -> None:
    relay = connect_as(published, "relay")
    other = KafkaProducer(**relay, transactional_id="relay-someone-else", max_block_ms=10_000)
    try:
        with pytest.raises(TransactionalIdAuthorizationFailedError):
            other.init_transactions()
    finally:
        other.close(timeout=5)
    own = KafkaProducer(**relay, transactional_id=published.relay_transactional_id)
    try:
        own.init_transactions()  # its own id is allowed (and fences nobody still running)
    finally:
        own.close(timeout=5)


def test_only_the_signer_writes_checkpoints(published: Settings) -> None:
    for principal, allowed in (("relay", False), ("subscriber", False), ("signer", True)):
        producer = KafkaProducer(**connect_as(published, principal), max_block_ms=10_000)
        try:
            sent = producer.send(published.checkpoint_topic, b"note", partition=0)
            if allowed:
                sent.get(timeout=20)
            else:
                with pytest.raises(TopicAuthorizationFailedError):
                    sent.get(timeout=20)
        finally:
            producer.close(timeout=5)


def refused(connection: dict[str, Any], topic: str) -> bool:
    """True when the broker lets this login send nothing to `topic` (it cannot even connect:
    the listener answers only SASL/SCRAM logins of known users)."""
    try:
        producer = KafkaProducer(**connection, max_block_ms=4000, request_timeout_ms=4000,
                                 api_version=(3, 0))  # fmt: skip
        try:
            producer.send(topic, b"forged").get(timeout=8)
        finally:
            producer.close(timeout=2)
    except KafkaError:
        return True
    return False


@pytest.mark.parametrize("login", ["anonymous", "wrong password", "unknown user"])
def test_a_client_without_valid_credentials_gets_nothing(kafka_bootstrap: str, login: str) -> None:
    admin = as_admin(kafka_bootstrap)
    connection = {
        "anonymous": {"bootstrap_servers": kafka_bootstrap},
        "wrong password": {**admin, "sasl_plain_password": "not-the-password"},
        "unknown user": {**admin, "sasl_plain_username": "mallory"},
    }[login]
    assert refused(connection, "anything")
    assert not refused(admin, unique("allowed"))  # the right login on the same listener works


def test_grants_are_idempotent_and_exactly_the_listed_ones(settings: Settings) -> None:
    names = {g.name for g in grants(settings)}

    def mine() -> set[tuple[str, str, str, str, str]]:  # other deployments grant meanwhile
        return {row for row in held(settings) if row[3] in names}

    first = mine()
    grant(settings)  # a second `make run` (deployment_env granted once already)
    assert mine() == first
    wanted = {
        (f"User:{g.principal}", g.resource.name, g.pattern.name, g.name, op.name)
        for g in grants(settings)
        for op in g.operations
    }
    assert first == wanted
    # the subscriber holds nothing on the access topic or the dead-letter topics
    subscriber_names = {name for who, _, _, name, _ in first if who == "User:subscriber"}
    assert settings.access_topic not in subscriber_names
    assert settings.dlq_topic not in subscriber_names


def test_the_credentials_file_is_private() -> None:
    path = credentials_file(f"127.0.0.1:{int(os.environ.get('TEST_KAFKA_PORT', '9092'))}")
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o077 == 0, oct(mode)
    assert set(read_credentials(path)) == {"admin", "relay", "projector", "signer", "subscriber"}


def test_an_older_unsecured_broker_is_migrated_and_keeps_its_events(tmp_path: Path) -> None:
    """A var/kafka formatted before authentication (KAFKA_AUTH=off reproduces it) gets its
    SCRAM users at the next start: its records stay, and anonymous clients are refused."""
    var_dir = tmp_path / "old"
    bootstrap = f"127.0.0.1:{MIGRATION_PORT}"
    old = Broker(var_dir, MIGRATION_PORT, timeout=180)
    old.env["KAFKA_AUTH"] = "off"
    old.start()
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send("kept-topic", b"history", partition=0).get(timeout=30)
        producer.close()
    finally:
        old.stop()
    assert not (var_dir / "kafka" / "credentials").exists()

    secured = Broker(var_dir, MIGRATION_PORT, timeout=240)
    secured.start()
    try:
        assert (var_dir / "kafka" / "credentials").exists()
        assert committed(as_admin(bootstrap), "kept-topic") == [b"history"]
        assert refused({"bootstrap_servers": bootstrap}, "kept-topic")
    finally:
        secured.stop()


def test_the_acl_tool_explains_itself() -> None:
    done = subprocess.run([sys.executable, "-m", "services.kafka_acl", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0
    assert "grant" in done.stdout and "users" in done.stdout and "show" in done.stdout
