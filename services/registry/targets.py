"""Every commune's targets, kept in memory from the event store's notification log.

A province's progress needs the targets of its hundreds of communes: read as aggregates, that
was two store reads per commune per request. The book reads the targets' events once and then,
on each use, only what was recorded since (one indexed query), so a request costs one query
whatever the number of communes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from eventsourcing.utils import get_topic

from services.registry.domain import CommuneTarget

TOPICS = [get_topic(CommuneTarget.TargetSet), get_topic(CommuneTarget.TargetRevised)]  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Target:
    target: int
    deadline: str


class TargetBook:
    """(commune code, metric) -> its current target, up to date on every `current()`."""

    def __init__(self, recorder: Any, mapper: Any, batch: int = 10_000) -> None:
        self._recorder, self._mapper, self._batch = recorder, mapper, batch
        self._lock = threading.Lock()
        self._position = 0
        self._keys: dict[Any, tuple[str, str]] = {}  # aggregate id -> (commune, metric)
        self._targets: dict[tuple[str, str], Target] = {}

    def current(self) -> dict[tuple[str, str], Target]:
        """Every target, after reading the target events recorded since the last call."""
        with self._lock:
            while True:
                found = self._recorder.select_notifications(
                    start=self._position, limit=self._batch, topics=TOPICS,
                    inclusive_of_start=False,
                )  # fmt: skip
                for notification in found:
                    self._apply(self._mapper.to_domain_event(notification))
                    self._position = notification.id
                if len(found) < self._batch:
                    return dict(self._targets)

    def _apply(self, event: Any) -> None:
        if isinstance(event, CommuneTarget.TargetSet):  # type: ignore[attr-defined]
            self._keys[event.originator_id] = (event.commune_code, event.metric)
        key = self._keys.get(event.originator_id)
        if key is not None:
            self._targets[key] = Target(int(event.target), str(event.deadline))
