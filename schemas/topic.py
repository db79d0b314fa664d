"""The topic of the contract: created, when missing, with the partition count we promise."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

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
