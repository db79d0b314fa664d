"""The signer: follows the event store like the relay, appends every public event to the Merkle
log and signs checkpoints of it.

- Leaves are the public events in store order, account events and access records alike
  (`schemas.leaf.leaf_bytes` of the record the relay publishes for them).
- A checkpoint is signed when `checkpoint_every` leaves wait, or `checkpoint_seconds` after the
  last one (an idle log gets its next event signed at once), and stored with the leaves it
  covers, in one transaction; then it is published on `<topic>.checkpoints` so that copies
  live outside this host.
- It never signs two inconsistent checkpoints: each new one is checked against the previous
  one with a consistency proof from the store before it is signed, and against the newest
  checkpoint found on the topic (which survives the loss of the tree store).
- It refuses to start when the event store no longer holds what the log signed (a store rolled
  back to a copy, or replaced), and says so.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from schemas import event_types as types
from schemas.checkpoint import Checkpoint, CheckpointError, open_note, sign
from schemas.leaf import LEAF_VERSION, leaf_fields, utc_millis
from schemas.merkle import leaf_hash, verify_consistency
from services.health import ComponentHealth, FatalError
from services.kafka import connect_as, prepare_topic, run_restarting
from services.registry.application import Registry
from services.relay.mapping import PUBLIC_TOPICS, to_record
from services.settings import Settings
from services.signer.keys import load_signing_key, verifier_of
from services.signer.tree import Leaf, StoredCheckpoint, TreeStore, open_tree_store

log = logging.getLogger(__name__)
VERIFIER_KEY = "verifier_key"  # the tree store's meta entry: the public key, for the API


class RolledBackStoreError(FatalError):
    """The event store no longer holds the events the log signed."""


class InconsistentLogError(FatalError):
    """Signing would contradict a checkpoint already signed."""


@dataclass(frozen=True)
class SignerOptions:
    batch_size: int = 2000
    idle_sleep: float = 0.05
    samples: int = 8  # signed leaves checked against the store at start, beside the newest
    publish: bool = True  # publish checkpoints on <topic>.checkpoints


class Signer:
    """Appends the store's public events to the log and signs checkpoints."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        options: SignerOptions = SignerOptions(),
        tree: TreeStore | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.options = options
        self.tree = tree or open_tree_store(settings)
        self.key = load_signing_key(settings.checkpoint_key_file)
        self.origin = settings.checkpoint_origin
        self.verifier = verifier_of(self.origin, self.key)
        self.health = ComponentHealth("signer")
        self.signed = 0  # checkpoints signed by this signer
        self.appended = 0  # leaves appended by this signer
        self._published_check: Checkpoint | None = None  # a topic copy beyond our tree
        self._producer: KafkaProducer | None = None

    # --- start: refuse what cannot be signed honestly ---

    def start(self) -> None:
        self.tree.set_meta(VERIFIER_KEY, self.verifier)
        self.check_store_extends_log()
        if self.options.publish:
            self._start_publishing()
        latest = self.tree.latest_checkpoint()
        log.info("signer resumes at %d leaves (latest checkpoint %s)", self.tree.stored_size(),
                 latest.size if latest else "none")  # fmt: skip

    def check_store_extends_log(self) -> None:
        """The store must still hold, at the same positions, the events already signed."""
        last = self.tree.last_leaf()
        if last is None:
            return
        stored = self.registry.recorder.max_notification_id() or 0
        if stored < last.position:
            raise RolledBackStoreError(
                f"the event store ends at position {stored} but the signed log holds events up "
                f"to position {last.position}: the store was rolled back or replaced; restore "
                "the store that was signed (or start a new log with a new MERKLE_STORE and key)"
            )
        count = last.index + 1
        picks = {last.index, *random.sample(range(count), min(self.options.samples, count))}
        for index in sorted(picks):
            leaf = self.tree.leaf(index)
            signed = self.tree.leaf_hash(index)
            assert leaf is not None and signed is not None
            found = self.registry.recorder.select_notifications(
                start=leaf.position, limit=1, topics=PUBLIC_TOPICS
            )
            now = self._leaf(found[0]).hash if found and found[0].id == leaf.position else None
            if now != signed and now is not None:
                now = self._leaf(found[0], committed_actor=False).hash  # signed before v3
            if now != signed:
                raise RolledBackStoreError(
                    f"the event at store position {leaf.position} (leaf {index}) is not the one "
                    "the log signed: the store was rolled back or replaced; restore the store "
                    "that was signed"
                )

    def _start_publishing(self) -> None:
        topic, connection = self.settings.checkpoint_topic, connect_as(self.settings, "signer")
        prepare_topic(connection, topic, partitions=1)
        self._producer = KafkaProducer(**connection, acks="all", max_block_ms=5000, linger_ms=0)
        newest = newest_published(self.settings, self.verifier)
        if newest is None:
            return
        size = self.tree.stored_size()
        if newest.size <= size:
            self._check_against(newest)
        else:
            self._published_check = newest  # checked once the tree reaches it
            log.warning("the topic holds a checkpoint at %d leaves, the tree store %d: "
                        "catching up from the event store", newest.size, size)  # fmt: skip

    def _check_against(self, published: Checkpoint) -> None:
        if self.tree.root(published.size) != published.root:
            raise InconsistentLogError(
                f"the checkpoint published at size {published.size} has another root than this "
                "log at that size: the event store or the tree store was replaced; signing "
                "on would fork the log"
            )

    # --- the loop ---

    def step(self) -> int:
        """Append the next batch of events and sign a checkpoint when one is due; returns how
        many events were appended."""
        with self.tree.appending() as tree:
            last = tree.last_leaf()
            notifications = self.registry.recorder.select_notifications(
                start=last.position if last else 0,
                limit=self.options.batch_size,
                topics=PUBLIC_TOPICS,
                inclusive_of_start=False,
            )
            for n in notifications:
                tree.append(self._leaf(n))
            tree.flush()
            if self._due(tree.latest_checkpoint(), tree.size):
                self._sign(tree)
        self.appended += len(notifications)
        self.health.lag = 0 if len(notifications) < self.options.batch_size else 1
        self._publish()
        return len(notifications)

    def _leaf(self, notification: Any, committed_actor: bool = True) -> Leaf:
        """The leaf of one stored event; without `committed_actor`, as a signer before schema
        v3 made it (no actor)."""
        record = to_record(self.registry.mapper.to_domain_event(notification), notification.id)
        if not committed_actor:
            record["actor"] = None
        return Leaf(
            position=notification.id,
            account_id=str(record["account_id"]),
            kind="access" if record["event_type"] == types.HISTORY_READ else "event",
            recorded_ms=utc_millis(record["recorded_at"]),
            hash=leaf_hash(fast_leaf_bytes(record)),
        )

    def _due(self, latest: StoredCheckpoint | None, size: int) -> bool:
        waiting = size - (latest.size if latest else 0)
        if waiting <= 0:
            return False
        if latest is None or waiting >= self.settings.checkpoint_every:
            return True
        return time.time() - latest.signed_at >= self.settings.checkpoint_seconds

    def _sign(self, tree: TreeStore) -> None:
        size, root = tree.size, tree.current_root()
        latest = tree.latest_checkpoint()
        if latest is not None:
            proof = tree.consistency_proof(latest.size, size)
            if not verify_consistency(latest.size, size, latest.root, root, proof):
                raise InconsistentLogError(
                    f"the tree at {size} leaves does not extend the checkpoint at {latest.size}: "
                    "the tree store is damaged; not signing"
                )
        if self._published_check is not None and self._published_check.size <= size:
            self._check_against(self._published_check)
            self._published_check = None
        note = sign(Checkpoint(self.origin, size, root), self.origin, self.key)
        tree.add_checkpoint(StoredCheckpoint(size, root, note, time.time()))
        self.signed += 1

    def _publish(self) -> None:
        """Copies of the new checkpoints on the topic; a broker outage delays them, it does not
        stop the signing (they stay marked unpublished until it is back)."""
        if self._producer is None:
            return
        waiting = self.tree.unpublished()
        if not waiting:
            return
        try:
            for checkpoint in waiting:
                self._producer.send(
                    self.settings.checkpoint_topic,
                    key=self.origin.encode(),
                    value=checkpoint.note.encode(),
                )
            self._producer.flush(timeout=10)
        except KafkaError as exc:
            log.warning("checkpoints not published yet (%s); will retry", type(exc).__name__)
            return
        self.tree.mark_published([c.size for c in waiting])

    def run(self, stop: threading.Event) -> None:
        """Sign until `stop`; start over after transient faults, stop on a fatal one."""
        run_restarting(
            self.health, self.start, self.step, self.close, stop, self.options.idle_sleep
        )

    def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                self._producer.close(timeout=10)
            self._producer = None


def fast_leaf_bytes(record: dict[str, Any]) -> bytes:
    """`schemas.leaf.leaf_bytes`, byte for byte (tests/unit/test_leaf.py), with orjson: sorted
    keys, no spaces, UTF-8 unescaped, as the standard library's canonical form."""
    return LEAF_VERSION + orjson.dumps(leaf_fields(record), option=orjson.OPT_SORT_KEYS)


def newest_published(settings: Settings, verifier: str) -> Checkpoint | None:
    """The newest checkpoint on `<topic>.checkpoints` signed by `verifier` (None if none)."""
    consumer = KafkaConsumer(
        **connect_as(settings, "signer"), enable_auto_commit=False, consumer_timeout_ms=2000
    )
    try:
        tp = TopicPartition(settings.checkpoint_topic, 0)
        consumer.assign([tp])
        begin, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
        best: Checkpoint | None = None
        start = end
        while best is None and start > begin:
            start = max(begin, start - 16)
            consumer.seek(tp, start)
            deadline = time.monotonic() + 30
            while consumer.position(tp) < end and time.monotonic() < deadline:
                for record in consumer.poll(timeout_ms=500).get(tp, []):
                    with contextlib.suppress(CheckpointError, UnicodeDecodeError):
                        found = open_note(record.value.decode(), verifier)
                        if best is None or found.size > best.size:
                            best = found
        return best
    finally:
        consumer.close()
