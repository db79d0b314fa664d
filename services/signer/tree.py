"""The signed log's store: the Merkle tree as its perfect subtrees, the leaves' index, the
checkpoints. One SQLite file beside the event store (`MERKLE_STORE`), apart from the read model.

Every perfect subtree (level, index) is stored once, when its last leaf arrives (about two rows
per leaf). Any proof then costs one indexed read of O(log n) rows: the ranges a proof names are
single perfect subtrees, or the right edge of a tree, folded from a few (`merkle.perfect_blocks`).

Writers (the signer; several signers of one deployment take turns) append under SQLite's write
lock (`BEGIN IMMEDIATE`) after re-reading the size, so two never interleave. Readers (the API)
use their own connections; WAL mode lets them read while the signer writes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from schemas.merkle import (
    EMPTY_ROOT,
    Range,
    consistency_ranges,
    fold,
    inclusion_ranges,
    node_hash,
    perfect_blocks,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leaves (
    idx INTEGER PRIMARY KEY, position INTEGER NOT NULL UNIQUE, account_id TEXT NOT NULL,
    kind TEXT NOT NULL, recorded_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leaves_by_account ON leaves (account_id, idx);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL,
    signed_at REAL NOT NULL, published INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class Leaf:
    """One leaf as the signer appends it: its store position, account, kind and leaf hash."""

    position: int
    account_id: str
    kind: str  # "event" (an account's history) or "access" (a read of it)
    recorded_ms: int
    hash: bytes


@dataclass(frozen=True)
class IndexedLeaf:
    index: int
    position: int
    kind: str
    recorded_ms: int


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    signed_at: float


class TreeStore:
    """The tree's nodes, its leaves' index and its checkpoints, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        # The writer's view: the size it appended up to and the frontier (the roots of the
        # perfect subtrees that make the whole tree, largest first) as (level, index, hash).
        self.size = 0
        self._frontier: list[tuple[int, int, bytes]] = []
        self._new_nodes: list[tuple[int, int, bytes]] = []
        self._new_leaves: list[tuple[int, int, str, str, int]] = []

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        yield db

    # --- the writer ---

    @contextmanager
    def appending(self) -> Iterator[TreeStore]:
        """One write transaction: the size is read again first (another signer may have gone
        on), and what was appended is committed at the end, or nothing on an error."""
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                stored = self.stored_size()
                if stored != self.size or len(self._frontier) != bin(stored).count("1"):
                    self._load_frontier(stored)
                yield self
                self.flush()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self.size, self._frontier = 0, []  # read again on the next append
                self._new_nodes, self._new_leaves = [], []
                raise

    def flush(self) -> None:
        """Write what was appended so far (inside `appending`; visible to this transaction,
        so that proofs over the new leaves can be read before the checkpoint is signed)."""
        with self._connection() as db:
            db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", self._new_nodes)
            db.executemany("INSERT INTO leaves VALUES (?, ?, ?, ?, ?)", self._new_leaves)
        self._new_nodes, self._new_leaves = [], []

    def _load_frontier(self, size: int) -> None:
        blocks = perfect_blocks(0, size)
        hashes = self._hashes(blocks)
        self._frontier = [(lv, i, hashes[(lv, i)]) for lv, i in blocks]
        self.size = size

    def append(self, leaf: Leaf) -> int:
        """Add one leaf (inside `appending`); returns its index."""
        index = self.size
        level, idx, h = 0, index, leaf.hash
        self._new_nodes.append((0, index, h))
        while self._frontier and self._frontier[-1][0] == level:
            _, _, left = self._frontier.pop()
            h, level, idx = node_hash(left, h), level + 1, idx >> 1
            self._new_nodes.append((level, idx, h))
        self._frontier.append((level, idx, h))
        self._new_leaves.append((index, leaf.position, leaf.account_id, leaf.kind,
                                 leaf.recorded_ms))  # fmt: skip
        self.size += 1
        return index

    def current_root(self) -> bytes:
        """The root of everything appended so far (inside `appending`)."""
        return fold([h for _, _, h in self._frontier]) if self._frontier else EMPTY_ROOT

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Store a signed checkpoint (inside `appending`, with the leaves it covers)."""
        with self._connection() as db:
            db.execute(
                "INSERT INTO checkpoints (size, root, note, signed_at) VALUES (?, ?, ?, ?)",
                (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.signed_at),
            )

    def mark_published(self, sizes: Sequence[int]) -> None:
        with self._connection() as db:
            db.executemany("UPDATE checkpoints SET published = 1 WHERE size = ?",
                           [(s,) for s in sizes])  # fmt: skip

    def set_meta(self, name: str, value: str) -> None:
        with self._connection() as db:
            db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                       "value = excluded.value", (name, value))  # fmt: skip

    # --- readers ---

    def meta(self, name: str) -> str | None:
        with self._connection() as db:
            row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def stored_size(self) -> int:
        with self._connection() as db:
            row = db.execute("SELECT max(idx) FROM leaves").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def last_leaf(self) -> IndexedLeaf | None:
        with self._connection() as db:
            row = db.execute(
                "SELECT idx, position, kind, recorded_ms FROM leaves ORDER BY idx DESC LIMIT 1"
            ).fetchone()
        return None if row is None else IndexedLeaf(*row)

    def leaf(self, index: int) -> IndexedLeaf | None:
        with self._connection() as db:
            row = db.execute(
                "SELECT idx, position, kind, recorded_ms FROM leaves WHERE idx = ?", (index,)
            ).fetchone()
        return None if row is None else IndexedLeaf(*row)

    def leaf_hash(self, index: int) -> bytes | None:
        found = self._hashes([(0, index)])
        return found.get((0, index))

    def _hashes(self, blocks: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        if not blocks:
            return {}
        wanted = sorted(set(blocks))
        by_level: dict[int, list[int]] = {}
        for level, idx in wanted:
            by_level.setdefault(level, []).append(idx)
        # One primary-key search per node: a term per level (at most 64), never a scan (a
        # row-value IN list would scan the table).
        terms = " OR ".join(
            f"(level = ? AND idx IN ({','.join('?' * len(ids))}))" for ids in by_level.values()
        )
        args = [x for level, ids in by_level.items() for x in (level, *ids)]
        with self._connection() as db:
            rows = db.execute(f"SELECT level, idx, hash FROM nodes WHERE {terms}", args).fetchall()
        found = {(lv, i): bytes(h) for lv, i, h in rows}
        if len(found) != len(wanted):
            missing = sorted(set(wanted) - set(found))[:3]
            raise LookupError(f"the tree store lacks nodes {missing}: it is damaged or behind")
        return found

    def _range_hashes(self, ranges: Sequence[Range]) -> list[bytes]:
        """MTH of each range, from stored perfect subtrees, in one read."""
        blocks = [perfect_blocks(a, b) for a, b in ranges]
        found = self._hashes([b for bs in blocks for b in bs])
        return [fold([found[b] for b in bs]) for bs in blocks]

    def root(self, size: int) -> bytes:
        return self._range_hashes([(0, size)])[0] if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self._range_hashes(inclusion_ranges(index, size))

    def inclusion_proofs(self, indexes: Sequence[int], size: int) -> dict[int, list[bytes]]:
        """Proofs of several leaves against one tree size, in one read."""
        ranges = {i: inclusion_ranges(i, size) for i in indexes}
        hashes = self._range_hashes([r for rs in ranges.values() for r in rs])
        out, at = {}, 0
        for i, rs in ranges.items():
            out[i], at = hashes[at : at + len(rs)], at + len(rs)
        return out

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self._range_hashes(consistency_ranges(old_size, new_size))

    def indexes_of(self, positions: Sequence[int]) -> dict[int, int]:
        """Store position -> leaf index, for those of `positions` that are in the log."""
        if not positions:
            return {}
        marks = ",".join("?" * len(positions))
        with self._connection() as db:
            rows = db.execute(
                f"SELECT position, idx FROM leaves WHERE position IN ({marks})", list(positions)
            ).fetchall()
        return dict(rows)

    def leaves_of(self, account_id: str) -> list[IndexedLeaf]:
        """Every leaf about one account (its events and the reads of it), in log order."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT idx, position, kind, recorded_ms FROM leaves WHERE account_id = ? "
                "ORDER BY idx",
                (account_id,),
            ).fetchall()
        return [IndexedLeaf(*row) for row in rows]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        return self._checkpoint("ORDER BY size DESC LIMIT 1", ())

    def checkpoint(self, size: int) -> StoredCheckpoint | None:
        return self._checkpoint("WHERE size = ?", (size,))

    def checkpoint_covering(self, size: int) -> StoredCheckpoint | None:
        """The smallest checkpoint whose tree holds `size` leaves or more."""
        return self._checkpoint("WHERE size >= ? ORDER BY size LIMIT 1", (size,))

    def unpublished(self) -> list[StoredCheckpoint]:
        with self._connection() as db:
            rows = db.execute(
                "SELECT size, root, note, signed_at FROM checkpoints WHERE published = 0 "
                "ORDER BY size"
            ).fetchall()
        return [StoredCheckpoint(s, bytes(r), n, t) for s, r, n, t in rows]

    def _checkpoint(self, where: str, args: tuple[int, ...]) -> StoredCheckpoint | None:
        with self._connection() as db:
            row = db.execute(
                f"SELECT size, root, note, signed_at FROM checkpoints {where}", args
            ).fetchone()
        return None if row is None else StoredCheckpoint(row[0], bytes(row[1]), row[2], row[3])

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
