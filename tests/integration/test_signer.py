"""The signer on the real event store (and broker, for the published copies): the log it builds,
the checkpoints it signs, and what it refuses."""

from __future__ import annotations

import dataclasses
import shutil
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from schemas.checkpoint import Checkpoint, CheckpointError, open_note, sign
from schemas.leaf import leaf_bytes
from schemas.merkle import (
    MerkleLog,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from schemas.proofs import check_items, proof_json
from services.registry.application import Registry
from services.relay.mapping import PUBLIC_TOPICS, to_record
from services.settings import Settings
from services.signer.keys import load_signing_key
from services.signer.signer import (
    InconsistentLogError,
    RolledBackStoreError,
    Signer,
    SignerOptions,
)
from services.signer.tree import TreeStore, open_tree_store
from tests.support.broker import as_admin
from tests.support.factories import register_command, registry_with

QUIET = SignerOptions(publish=False)


def signed_up(signer: Signer) -> None:
    """Step until everything in the store is appended and signed (bounded)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        signer.step()
        latest = signer.tree.latest_checkpoint()
        stored = signer.registry.recorder.max_notification_id() or 0
        last = signer.tree.last_leaf()
        if (
            latest
            and last
            and latest.size == signer.tree.stored_size()
            and (last.position >= _last_public(signer.registry, stored))
        ):
            return
        time.sleep(0.05)
    raise AssertionError("the signer did not catch up within 30 s")


def _last_public(registry: Registry, stored: int) -> int:
    found = registry.recorder.select_notifications(0, stored + 1, topics=PUBLIC_TOPICS)
    return found[-1].id if found else 0


def records(registry: Registry) -> list[dict[str, object]]:
    found = registry.recorder.select_notifications(0, 100_000, topics=PUBLIC_TOPICS)
    return [to_record(registry.mapper.to_domain_event(n), n.id) for n in found]


def test_the_log_is_every_public_event_in_store_order_and_its_checkpoints_verify(
    settings: Settings,
) -> None:
    registry = registry_with(settings, 5)
    signer = Signer(settings, registry, QUIET)
    signer.start()
    signed_up(signer)
    first = signer.tree.latest_checkpoint()
    registry.handle(register_command())
    registry.record_access_to(registry.account_id("012345678901"), {
        "commune_code": "", "province_code": ""}, "auditor:test", "auditor", "a test read",
        "history")  # fmt: skip
    time.sleep(settings.checkpoint_seconds)
    signed_up(signer)
    latest = signer.tree.latest_checkpoint()
    assert first is not None and latest is not None

    # The same tree, built in memory from the public records the relay would publish.
    expected = MerkleLog()
    for record in records(registry):
        expected.append(leaf_bytes(record))
    assert latest.size == expected.size == 7  # five registrations, one more, one read
    assert latest.root == expected.root()
    checkpoint = open_note(latest.note, signer.verifier)
    assert checkpoint == Checkpoint(settings.checkpoint_origin, latest.size, latest.root)

    for index, record in enumerate(records(registry)):
        proof = signer.tree.inclusion_proof(index, latest.size)
        assert verify_inclusion(leaf_hash(leaf_bytes(record)), index, latest.size, proof,
                                latest.root)  # fmt: skip
    proof = signer.tree.consistency_proof(first.size, latest.size)
    assert verify_consistency(first.size, latest.size, first.root, latest.root, proof)
    kinds = [leaf.kind for leaf in signer.tree.leaves_of(str(registry.account_id("012345678901")))]
    assert kinds == ["access"]


def test_checkpoints_wait_for_the_cadence_then_cover_what_came(settings: Settings) -> None:
    settings = dataclasses.replace(settings, checkpoint_seconds=3600, checkpoint_every=4)
    registry = registry_with(settings, 1)
    signer = Signer(settings, registry, QUIET)
    signer.start()
    signer.step()
    assert signer.tree.latest_checkpoint().size == 1  # type: ignore[union-attr]  # the first at once
    registry.handle(register_command())
    registry.handle(register_command())
    signer.step()
    assert signer.tree.latest_checkpoint().size == 1  # type: ignore[union-attr]  # 2 wait < 4
    registry.handle(register_command())
    registry.handle(register_command())
    signer.step()
    assert signer.tree.latest_checkpoint().size == 5  # type: ignore[union-attr]  # 4 waited


# A copy of the SQLite file stands for a restored backup; the signer reads the store the same
# way on PostgreSQL (the same recorder calls), so the file-based cases run on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("store", ["sqlite"])


@SQLITE_ONLY
def test_the_signer_refuses_a_store_rolled_back_to_an_earlier_copy(settings: Settings) -> None:
    registry = registry_with(settings, 3)
    copy = settings.sqlite_path.with_name("copy.sqlite")
    registry.close()
    shutil.copy(settings.sqlite_path, copy)
    registry = registry_with(settings, 3)  # three more, signed
    signer = Signer(settings, registry, QUIET)
    signer.start()
    signed_up(signer)
    registry.close()
    signer.tree.close()

    shutil.copy(copy, settings.sqlite_path)  # the earlier copy restored ...
    for suffix in ("-wal", "-shm"):
        settings.sqlite_path.with_name(settings.sqlite_path.name + suffix).unlink(missing_ok=True)
    restored = registry_with(settings, 1)  # ... and it goes on: position 4 is another event
    again = Signer(settings, restored, QUIET)
    with pytest.raises(RolledBackStoreError, match="rolled back"):
        again.start()
    restored.handle(register_command())
    restored.handle(register_command())
    restored.handle(register_command())  # now longer than what was signed, still not it
    with pytest.raises(RolledBackStoreError, match="is not the one the log signed"):
        Signer(settings, restored, QUIET).start()


@SQLITE_ONLY
def test_the_signer_refuses_to_fork_a_checkpoint_published_on_the_topic(
    kafka_bootstrap: str, settings: Settings
) -> None:
    registry = registry_with(settings, 4)
    signer = Signer(settings, registry, SignerOptions())
    signer.start()
    signed_up(signer)
    signer.close()
    published = read_notes(settings)
    assert published and open_note(published[-1], signer.verifier).size == 4

    # The tree store lost and the store replaced by another one with as many events: the
    # rebuilt tree would sign another root at a size already published.
    signer.tree.close()
    settings.merkle_store.unlink()
    other = dataclasses.replace(settings, sqlite_path=settings.sqlite_path.with_name("o.sqlite"))
    other_registry = registry_with(other, 4)
    other_signer = Signer(other, other_registry, SignerOptions())
    other_signer.start()  # behind the topic: it catches up, then must not sign size 4
    with pytest.raises(InconsistentLogError, match="fork"):
        signed_up(other_signer)
    other_signer.close()


def test_a_note_signed_by_another_key_or_altered_is_refused(settings: Settings) -> None:
    key = load_signing_key(settings.checkpoint_key_file)
    other = load_signing_key(settings.checkpoint_key_file.with_name("other.key"))
    checkpoint = Checkpoint(settings.checkpoint_origin, 3, b"\x07" * 32)
    note = sign(checkpoint, settings.checkpoint_origin, key)
    registry = Registry(settings)
    verifier = Signer(settings, registry, QUIET).verifier
    assert open_note(note, verifier) == checkpoint
    with pytest.raises(CheckpointError, match="not signed by the pinned key"):
        open_note(sign(checkpoint, settings.checkpoint_origin, other), verifier)
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(note.replace("\n3\n", "\n4\n"), verifier)


def read_notes(settings: Settings) -> list[str]:
    consumer = KafkaConsumer(**as_admin(settings.kafka_bootstrap),
                             consumer_timeout_ms=3000)  # fmt: skip
    try:
        tp = TopicPartition(settings.checkpoint_topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        return [record.value.decode() for record in consumer]
    finally:
        consumer.close()


def test_tree_store_proofs_match_the_in_memory_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from services.signer.tree import Leaf

    tree = TreeStore(tmp_path / "t.sqlite")
    log = MerkleLog()
    data = [f"leaf {i}".encode() for i in range(77)]
    for chunk in (data[:1], data[1:33], data[33:77]):
        with tree.appending():
            for d in chunk:
                tree.append(Leaf(tree.size + 1, "a", "event", 0, leaf_hash(d)))
                log.append(d)
        assert tree.root(tree.stored_size()) == log.root()
    for size in (1, 2, 33, 64, 77):
        for index in range(0, size, 5):
            proof = tree.inclusion_proof(index, size)
            top = tree.root(size)
            assert verify_inclusion(leaf_hash(data[index]), index, size, proof, top)
        for old in range(0, size + 1, 7):
            proof = tree.consistency_proof(old, size)
            assert verify_consistency(old, size, tree.root(old), tree.root(size), proof)


def test_two_signers_on_one_tree_store_extend_one_log(settings: Settings) -> None:
    # Two API processes each embed a signer: they take turns on the store's lock and re-read
    # its size, so that the deployment has one tree, whose checkpoints all agree.
    import threading

    settings = dataclasses.replace(settings, checkpoint_seconds=0.0)
    registry = registry_with(settings, 2)
    signers = [Signer(settings, registry, QUIET, open_tree_store(settings)) for _ in range(2)]
    for signer in signers:
        signer.start()
    for signer in (*signers, *signers):  # taking turns: each goes on from where the other was
        registry.handle(register_command())
        assert signer.step() >= 1
    stop = threading.Event()

    def sign(signer: Signer) -> None:
        while not stop.is_set():
            signer.step()

    threads = [threading.Thread(target=sign, args=(s,)) for s in signers]
    for thread in threads:
        thread.start()
    try:
        for _ in range(40):
            registry.handle(register_command())
    finally:
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    signed_up(signers[0])
    tree = signers[0].tree
    expected = MerkleLog()
    for record in records(registry):
        expected.append(leaf_bytes(record))
    latest = tree.latest_checkpoint()
    assert latest is not None and (latest.size, latest.root) == (46, expected.root())
    sizes = [c for c, _, _ in tree.checkpoints_with_leaves()]
    for old in sizes:
        older = tree.checkpoint(old)
        assert older is not None
        proof = tree.consistency_proof(old, latest.size)
        assert verify_consistency(old, latest.size, older.root, latest.root, proof)


def test_a_log_signed_before_schema_v3_is_kept_and_proves_all_but_the_actor(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events recorded with an actor and signed by a signer before v3 (leaves without it): the
    signer of v3 starts on that log, signs new events with their actor, and a history check
    proves the old ones but their actor (actor_unsigned), the new ones with it."""
    registry = Registry(settings)
    for i in range(3):
        registry.handle(dataclasses.replace(register_command(), actor=f"dev-before-{i}"))
    before_v3 = lambda event, position: {**to_record(event, position), "actor": None}  # noqa: E731
    monkeypatch.setattr("services.signer.signer.to_record", before_v3)
    old = Signer(settings, registry, QUIET)
    old.start()
    signed_up(old)
    old.tree.close()
    monkeypatch.undo()

    everything = dataclasses.replace(QUIET, samples=10)  # every old leaf checked at start
    signer = Signer(settings, registry, everything)
    signer.start()  # not refused: the store still holds what was signed
    registry.handle(dataclasses.replace(register_command(), actor="dev-after"))
    signed_up(signer)

    shown = records(registry)
    assert [r["actor"] for r in shown] == [*(f"dev-before-{i}" for i in range(3)), "dev-after"]
    latest = signer.tree.latest_checkpoint()
    assert latest is not None
    index = signer.tree.indexes_of([int(r["position"]) for r in shown])  # type: ignore[call-overload]
    proofs = signer.tree.inclusion_proofs(sorted(index.values()), latest.size)
    for record in shown:
        at = index[int(record["position"])]  # type: ignore[call-overload]
        record["proof"] = proof_json(at, latest.size, proofs[at])
    checkpoint = Checkpoint(settings.checkpoint_origin, latest.size, latest.root)
    report = check_items(shown, "event", checkpoint)
    assert report.failed == [] and report.proved == 4
    assert [f.position for f in report.actor_unsigned] == [r["position"] for r in shown[:3]]
    # The new leaf commits to its actor: another one, or none, fails.
    for actor in ("dev-someone-else", None):
        tampered = check_items([{**shown[3], "actor": actor}], "event", checkpoint)
        assert len(tampered.failed) == 1 and tampered.actor_unsigned == []
    registry.close()
    signer.tree.close()
