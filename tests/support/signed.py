"""Waiting for the signed log: a history reads `verified` only once a checkpoint covers it."""

from __future__ import annotations

from typing import Any

from services.relay.mapping import PUBLIC_TOPICS
from tests.support.waiting import wait_until


def signed_up(backbone: Any, timeout: float = 30) -> None:
    """Wait until the backbone's signed log has a checkpoint over every public event the store
    holds now (the embedded signer signs at most CHECKPOINT_SECONDS after the last one)."""
    registry, log = backbone.registry, backbone.log
    stored = registry.recorder.max_notification_id() or 0
    found = registry.recorder.select_notifications(
        start=max(0, stored - 1000), limit=1001, topics=PUBLIC_TOPICS
    )
    newest = found[-1].id if found else 0

    def covered() -> bool:
        latest, last = log.latest_checkpoint(), log.last_leaf()
        if newest == 0:
            return True
        if latest is None or last is None or last.position < newest:
            return False
        index = log.indexes_of([newest]).get(newest)
        return index is not None and index < latest.size

    wait_until(covered, timeout, every=0.05)
