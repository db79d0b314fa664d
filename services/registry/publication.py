"""Which topic this event store is published to: recorded in the store, checked on every start.

The record lets the relay tell a first publication (start from position 0) from a topic that
lost what was published to it (recreated, or records deleted): the second is refused.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


class TopicPublication(Aggregate):
    """This store's events go to `topic`, the one the broker identifies as `topic_id`."""

    @event("PublicationStarted")
    def __init__(self, topic: str, topic_id: str) -> None:
        self.topic = topic
        self.topic_id = topic_id

    @staticmethod
    def id_for(topic: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"eid:publication:{topic}")

    @classmethod
    def start(cls, topic: str, topic_id: UUID) -> TopicPublication:
        return cls._create(
            cls.PublicationStarted,  # type: ignore[attr-defined]
            id=cls.id_for(topic),
            topic=topic,
            topic_id=str(topic_id),
        )

    @event("TopicAdopted")
    def adopt(self, topic_id: str) -> None:
        """An operator declares a new topic id the right one (e.g. after a restore)."""
        self.topic_id = topic_id
