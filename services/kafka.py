"""Kafka adapter shared by the relay and the projector: topic set-up, broker wait, restart loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 3


def ensure_topic(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS) -> None:
    """Create `topic` unless it exists (idempotent, safe when producer and consumer race)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="eid-admin")
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, partitions, 1)])
            log.info("created topic %s with %d partitions", topic, partitions)
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def run_restarting(
    name: str,
    start: Callable[[], None],
    step: Callable[[], int],
    close: Callable[[], None],
    stop: threading.Event,
    idle_sleep: float = 0.0,
) -> None:
    """Call `step` until `stop`; when the broker goes away, close, back off and start over.

    Starting over must be safe at any point: the relay and the projector both read where to
    resume from durable state (the topic, the read models), never from memory.
    """
    backoff = 0.5
    while not stop.is_set():
        try:
            start()
            backoff = 0.5
            while not stop.is_set():
                if step() == 0 and idle_sleep:
                    stop.wait(idle_sleep)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("%s lost the broker (%s); starting over in %.1f s",
                        name, type(exc).__name__, backoff)  # fmt: skip
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
        finally:
            close()


def wait_for_broker(bootstrap: str, timeout: float = 60.0) -> None:
    """Block until the broker answers metadata requests, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        except Exception as exc:  # broker not up yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka at {bootstrap} did not answer") from exc
            time.sleep(0.5)
        else:
            admin.close()
            return
