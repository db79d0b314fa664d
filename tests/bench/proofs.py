"""The signed-log phase: the signer against the store it follows, checkpoint lag, proofs at scale.

- Signer throughput: fresh signers over the deployment's event store, only read (leaves/s),
  beside the store's own notification read rate in the same run, raw and decoded (the signer
  must decode each event to commit to its public record).
- Checkpoint lag: for every leaf the deployment's embedded signer signed during the live run,
  the time from the event's recording to the first checkpoint that covers it.
- Proofs at scale: tree stores of 100,000 and 1,000,000 synthetic leaves (the appending rate is
  measured too); for K random leaves, an inclusion proof read from the store and verified,
  p50 / p99; the proof's size in bytes.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from pathlib import Path
from typing import Any

from schemas.merkle import verify_inclusion
from services.registry.application import Registry
from services.relay.mapping import PUBLIC_TOPICS
from services.settings import Settings
from services.signer.signer import Signer, SignerOptions
from services.signer.tree import Leaf, TreeStore, open_tree_store
from tests.bench.deployment import Deadline, Deployment

SIZES = (100_000, 1_000_000)
PROOFS = 1000  # proofs timed per size
APPEND_BATCH = 10_000
ROUNDS = 3  # signer and store-read rounds, alternating; medians


def proofs_bench(dep: Deployment, deadline: Deadline) -> dict[str, Any]:
    live = Settings.from_env(dep.env)
    figures: dict[str, Any] = {"checkpoint_lag": checkpoint_lag(live)}
    figures["signer"] = signer_rate(dep, dep.dir / "proofs")
    figures["trees"] = {}
    for size in SIZES:
        if deadline.remaining() < 60:
            figures["trees"][str(size)] = {"skipped": "run timeout near"}
            continue
        figures["trees"][str(size)] = proofs_at(dep.dir / "proofs" / f"tree-{size}.sqlite", size)
    return figures


def checkpoint_lag(settings: Settings) -> dict[str, Any]:
    """Recording -> first covering checkpoint, over every leaf the live run's signer signed."""
    tree = open_tree_store(settings)
    try:
        checkpoints = tree.checkpoints_with_leaves()
    finally:
        tree.close()
    lags = [signed_at - ms / 1000 for _, signed_at, leaves in checkpoints for ms in leaves]
    return {"leaves": len(lags), "checkpoints": len(checkpoints), **_percentiles(lags)}


def signer_rate(dep: Deployment, work: Path) -> dict[str, Any]:
    """Fresh signers (each with a new tree store) over the deployment's event store, which is
    only read, and the store's own read rates, in alternating rounds."""
    work.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env(dep.env)
    registry = Registry(settings)
    reads: dict[bool, list[float]] = {False: [], True: []}
    signs: list[float] = []
    count = appended = 0
    try:
        for round_ in range(ROUNDS):  # alternating, so that a warm cache favours no one
            for decode in (False, True):
                seconds, count = _read_time(registry, decode)
                reads[decode].append(seconds)
            seconds, appended = _sign_time(settings, registry, work / f"merkle-{round_}.sqlite")
            signs.append(seconds)
    finally:
        registry.close()
    raw, decoded, signed = (statistics.median(v) for v in (reads[False], reads[True], signs))
    return {
        "leaves": appended,
        "rounds": ROUNDS,
        "leaves_per_s": appended / signed,
        "store_read_per_s": count / raw,
        "store_read_decoded_per_s": count / decoded,
        "ratio_to_read": raw / signed,
        "ratio_to_decoded_read": decoded / signed,
    }


def _sign_time(settings: Settings, registry: Registry, tree: Path) -> tuple[float, int]:
    """Seconds for a fresh signer to append and sign the whole store; leaves appended."""
    signer = Signer(settings, registry, SignerOptions(publish=False), TreeStore(tree))
    signer.start()
    began = time.perf_counter()
    while signer.step():
        pass
    seconds = time.perf_counter() - began
    signer.tree.close()
    return seconds, signer.appended


def _read_time(registry: Registry, decode: bool) -> tuple[float, int]:
    """Seconds to read every public notification (and decode each), and how many there are."""
    began, position, count = time.perf_counter(), 0, 0
    while batch := registry.recorder.select_notifications(
        start=position, limit=2000, topics=PUBLIC_TOPICS, inclusive_of_start=False
    ):
        if decode:
            for n in batch:
                registry.mapper.to_domain_event(n)
        position, count = batch[-1].id, count + len(batch)
    return time.perf_counter() - began, count


def proofs_at(path: Path, size: int) -> dict[str, Any]:
    """A tree store of `size` synthetic leaves; proofs of random leaves timed, read + verified."""
    path.unlink(missing_ok=True)
    tree = TreeStore(path)
    began = time.perf_counter()
    for start in range(0, size, APPEND_BATCH):
        with tree.appending():
            for i in range(start, min(size, start + APPEND_BATCH)):
                digest = hashlib.sha256(i.to_bytes(8, "big")).digest()
                tree.append(Leaf(i + 1, f"account-{i % 50_000}", "event", 0, digest))
    appended = time.perf_counter() - began
    root = tree.root(size)
    timings, sizes, failed = [], [], 0
    for index in random.sample(range(size), PROOFS):
        t0 = time.perf_counter()
        proof = tree.inclusion_proof(index, size)
        ok = verify_inclusion(hashlib.sha256(index.to_bytes(8, "big")).digest(), index, size,
                              proof, root)  # fmt: skip
        timings.append(time.perf_counter() - t0)
        sizes.append(32 * len(proof))
        failed += not ok
    tree.close()
    megabytes = path.stat().st_size / 1e6
    path.unlink()
    return {
        "leaves": size,
        "append_leaves_per_s": size / appended,
        "store_mb": megabytes,
        "proof_bytes_max": max(sizes),
        "proof_bytes_median": statistics.median(sizes),
        "failed": failed,
        **_percentiles(timings),
    }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_s": None, "p99_s": None}
    ordered = sorted(values)
    return {"p50_s": statistics.median(ordered),
            "p99_s": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}  # fmt: skip


def proofs_problems(figures: dict[str, Any]) -> list[str]:
    problems = [f"{t['failed']} proofs did not verify at {n} leaves"
                for n, t in figures.get("trees", {}).items() if t.get("failed")]  # fmt: skip
    if not figures.get("checkpoint_lag", {}).get("leaves"):
        problems.append("the live run's signer signed nothing")
    return problems
