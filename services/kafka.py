"""Kafka adapter shared by the relay and the projector: topics that keep every event, their
identity, the broker wait, and the loop that starts over after transient faults."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeAlias
from uuid import UUID

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import AuthorizationError, TopicAlreadyExistsError

from services.health import ComponentHealth, FatalError
from services.settings import KAFKA_PRINCIPALS, Settings

log = logging.getLogger(__name__)
# kafka-python warns on every SCRAM login without TLS: plaintext is deliberate on loopback
# (infra/kafka/broker.sh); between hosts it is SASL_SSL (DEPLOYING.md).
logging.getLogger("kafka.net.sasl.scram").setLevel(logging.ERROR)

DEFAULT_PARTITIONS = 3
# A register's log is kept for ever: no time or size limit, never compacted.
KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}


class TopicRetentionError(FatalError):
    """The topic is configured to delete events."""


class TopicChangedError(FatalError):
    """The topic is not the one the store or read model was built with (deleted, recreated)."""


class EventsDeletedError(FatalError):
    """Records are gone from the topic (its log start offset is above what was read)."""


# The keyword arguments of a kafka-python client: where the broker is and who connects.
Connection = Mapping[str, Any]


class KafkaCredentialsError(FatalError):
    """No password for a Kafka principal: an operator must provide one."""


def connect_as(settings: Settings, principal: str) -> dict[str, Any]:
    """The client arguments that reach `settings`' broker as `principal` (SCRAM-SHA-512),
    or anonymously when the broker has no authentication (KAFKA_SECURITY_PROTOCOL=PLAINTEXT)."""
    if principal not in KAFKA_PRINCIPALS:
        raise ValueError(f"unknown Kafka principal {principal!r}; one of {KAFKA_PRINCIPALS}")
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {"bootstrap_servers": settings.kafka_bootstrap}
    password = settings.kafka_passwords.get(principal) or read_credentials(
        settings.kafka_credentials_file
    ).get(principal)
    if not password:
        raise KafkaCredentialsError(
            f"no Kafka password for principal {principal!r}: set KAFKA_PASSWORD_"
            f"{principal.upper()} or KAFKA_CREDENTIALS_FILE (now {settings.kafka_credentials_file}"
            ", written by infra/kafka/broker.sh when it formats its storage)"
        )
    return scram_login(settings.kafka_bootstrap, principal, password)


def scram_login(bootstrap: str, user: str, password: str) -> dict[str, Any]:
    """The client arguments of a SASL/SCRAM-SHA-512 login as `user` at `bootstrap`."""
    return {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }


def read_credentials(path: Path) -> dict[str, str]:
    """`principal=password` lines (the file broker.sh writes, mode 0600); {} if it is absent."""
    if not path.exists():
        return {}
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {name.strip(): secret.strip() for name, sep, secret in pairs if sep and name.strip()}


def _admin(connection: Connection) -> KafkaAdminClient:
    return KafkaAdminClient(**{"client_id": "eid-admin", **connection})


# What the topic helpers take: a login (they open an admin client and close it), or an admin
# client already open (shared, each new one is a connection and a SCRAM login).
Admin: TypeAlias = Connection | KafkaAdminClient


@contextlib.contextmanager
def _using(target: Admin) -> Iterator[KafkaAdminClient]:
    if isinstance(target, KafkaAdminClient):
        yield target
        return
    admin = _admin(target)
    try:
        yield admin
    finally:
        admin.close()


def prepare_topic(
    connection: Connection, topic: str, partitions: int = DEFAULT_PARTITIONS
) -> UUID | None:
    """`ensure_topic`, `check_keeps_events` and `topic_id` over one admin client: the topic
    made if missing, refused if it would delete events; its id."""
    with _using(connection) as admin:
        ensure_topic(admin, topic, partitions)
        check_keeps_events(admin, topic)
        return topic_id(admin, topic)


def ensure_topic(target: Admin, topic: str, partitions: int = DEFAULT_PARTITIONS) -> None:
    """Create `topic` (kept for ever) unless it exists; safe when producer and consumer race."""
    with _using(target) as admin:
        try:
            # This topic's metadata only (never created by the asking): listing every topic
            # of a broker that keeps thousands took half a second.
            described = admin.describe_topics([topic])
            if not any(t["name"] == topic and not t["error_code"] for t in described):
                admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=KEEP_FOREVER)])
                log.info("created topic %s with %d partitions, kept for ever", topic, partitions)
        except TopicAlreadyExistsError:
            pass


class TopicNotReadyError(RuntimeError):
    """The broker does not describe the topic yet (just created, metadata still propagating).
    Transient: the caller's restart loop tries again."""


def topic_config(target: Admin, topic: str, wait: float = 15.0) -> dict[str, str]:
    """Every configuration value of `topic` (defaults included), by name.

    Right after a topic is created, a broker may not have applied the new metadata yet and
    answers with no configuration at all (the error code is dropped by the client): wait for
    it up to `wait` seconds, then raise `TopicNotReadyError`, never guess a value.
    """
    resource = ConfigResource(ConfigResourceType.TOPIC, topic)
    deadline = time.monotonic() + wait
    while True:
        with _using(target) as admin:
            found = admin.describe_configs([resource], config_filter="all")
        configs = found.get("topic", {}).get(topic) or {}
        if configs:
            return {name: str(item.get("value")) for name, item in configs.items()}
        if time.monotonic() > deadline:
            raise TopicNotReadyError(f"broker does not describe topic {topic} yet")
        time.sleep(0.2)


def check_keeps_events(target: Admin, topic: str) -> None:
    """Refuse a topic whose retention or cleanup policy would delete events, naming the setting."""
    found = topic_config(target, topic)
    for name, wanted in KEEP_FOREVER.items():
        value = found.get(name)
        if value != wanted:
            raise TopicRetentionError(
                f"topic {topic} has {name}={value}: it would delete events; set {name}={wanted} "
                f"(kafka-configs --alter --entity-type topics --entity-name {topic} "
                f"--add-config {name}={wanted}) before starting"
            )


def topic_id(target: Admin, topic: str) -> UUID | None:
    """The broker's id of `topic` (a recreated topic gets a new one), or None if it is absent."""
    with _using(target) as admin:
        described = admin.describe_topics([topic])
    for item in described:
        if item["name"] == topic and not item["error_code"] and item.get("topic_id"):
            return UUID(str(item["topic_id"]))
    return None


def wait_for_broker(connection: Connection, timeout: float = 60.0) -> None:
    """Block until the broker answers metadata requests, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(**connection)
        except Exception as exc:  # broker not up yet
            if time.monotonic() > deadline:
                where, user = (
                    connection.get("bootstrap_servers"),
                    connection.get("sasl_plain_username"),
                )
                login = (
                    f" or refused the login of {user} (its password: KAFKA_PASSWORD_{user.upper()}"
                    " or KAFKA_CREDENTIALS_FILE)"
                    if user
                    else ""
                )
                raise TimeoutError(f"Kafka at {where} did not answer{login}") from exc
            time.sleep(0.5)
        else:
            admin.close()
            return


def run_restarting(
    health: ComponentHealth,
    start: Callable[[], None],
    step: Callable[[], int],
    close: Callable[[], None],
    stop: threading.Event,
    idle_sleep: float = 0.0,
) -> None:
    """Call `step` until `stop`. On any fault (broker gone, store locked, ClickHouse down), close,
    back off and start over; on a `FatalError`, close and raise it: it needs an operator.

    Starting over must be safe at any point: the relay and the projector both read where to
    resume from durable state (the topic, the read models), never from memory.
    """
    backoff = 0.5
    while not stop.is_set():
        try:
            start()
            health.running()
            backoff = 0.5
            _step_until(stop, step, health, idle_sleep)
        except FatalError as exc:
            health.failed(exc)
            log.error("%s stopped: %s", health.name, exc)
            raise
        except AuthorizationError as exc:  # healed by an operator granting, without a restart
            health.retrying(exc)
            log.error("%s is not allowed to do this on the broker (%s): grant this "
                      "deployment's ACLs (python -m services.kafka_acl grant); retrying in %.1f s",
                      health.name, type(exc).__name__, backoff)  # fmt: skip
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
        except Exception as exc:
            health.retrying(exc)
            log.warning("%s failed (%s); starting over in %.1f s", health.name, health.detail,
                        backoff)  # fmt: skip
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
        finally:
            close()
    health.stopped()


def _step_until(
    stop: threading.Event, step: Callable[[], int], health: ComponentHealth, idle_sleep: float
) -> None:
    """Call `step` until `stop`, resting `idle_sleep` after a step that moved nothing."""
    while not stop.is_set():
        moved = step()
        health.progressed()
        if moved == 0 and idle_sleep:
            stop.wait(idle_sleep)
