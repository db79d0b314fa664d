"""The signed log's store: the Merkle tree as its perfect subtrees, the leaves' index, the
checkpoints, apart from the read model. One SQLite file beside a SQLite event store
(`MERKLE_STORE`); tables `merkle_*` in the same database and schema as a PostgreSQL event store
(`open_tree_store`), so that every API process of a deployment proves against one log.

Every perfect subtree (level, index) is stored once, when its last leaf arrives (about two rows
per leaf). Any proof then costs one indexed read of O(log n) rows: the ranges a proof names are
single perfect subtrees, or the right edge of a tree, folded from a few (`merkle.perfect_blocks`).

Writers (the signer; several signers of one deployment take turns) append under the store's
write lock (SQLite's `BEGIN IMMEDIATE`; on PostgreSQL a transaction-scoped advisory lock) after
re-reading the size, so two never interleave. Readers (the API) use their own connections (WAL
mode on SQLite, MVCC on PostgreSQL): they read while the signer writes.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.merkle import (
    EMPTY_ROOT,
    Range,
    consistency_ranges,
    fold,
    inclusion_ranges,
    node_hash,
    perfect_blocks,
)
from services.settings import Settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS merkle_nodes (
    level INTEGER NOT NULL, idx BIGINT NOT NULL, hash {blob} NOT NULL,
    PRIMARY KEY (level, idx)
){without_rowid};
CREATE TABLE IF NOT EXISTS merkle_leaves (
    idx BIGINT PRIMARY KEY, position BIGINT NOT NULL UNIQUE, account_id TEXT NOT NULL,
    kind TEXT NOT NULL, recorded_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS merkle_leaves_by_account ON merkle_leaves (account_id, idx);
CREATE TABLE IF NOT EXISTS merkle_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS merkle_checkpoints (
    size BIGINT PRIMARY KEY, root {blob} NOT NULL, note TEXT NOT NULL,
    signed_at DOUBLE PRECISION NOT NULL, published INTEGER NOT NULL DEFAULT 0
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


class _SQLite:
    """One SQLite file; a connection per thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        db = self._conn()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA.format(blob="BLOB", without_rowid=" WITHOUT ROWID"))

    def _conn(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def all(self, query: str, args: Sequence[Any] = ()) -> list[Any]:
        return self._conn().execute(query, args).fetchall()

    def many(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._conn().executemany(query, rows)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _Postgres:
    """Tables in the PostgreSQL event store's database and schema; a small connection pool.
    Inside `exclusive` the thread keeps one connection and one transaction."""

    def __init__(self, settings: Settings) -> None:
        from services import pg  # psycopg is needed only with a PostgreSQL store

        with pg.setting_up(settings), pg.connect(settings) as conn:
            for statement in SCHEMA.format(blob="BYTEA", without_rowid="").split(";"):
                if statement.strip():
                    conn.execute(statement)
        self._pool = pg.pool(settings, "merkle", max_size=4)
        self._local = threading.local()
        self._lock_key = zlib.crc32(f"eid-merkle/{settings.postgres_schema}".encode()) - 2**31

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        held = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        with self._pool.connection() as conn:
            yield conn

    def all(self, query: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._conn() as conn:
            cursor = conn.execute(query.replace("?", "%s"), list(args))
            return cursor.fetchall() if cursor.description else []

    def many(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._conn() as conn, conn.cursor() as cursor:
                cursor.executemany(query.replace("?", "%s"), rows)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def close(self) -> None:
        self._pool.close()


def open_tree_store(settings: Settings) -> TreeStore:
    """The deployment's tree store: beside its event store (PostgreSQL tables, or the SQLite
    file `MERKLE_STORE`)."""
    if settings.event_store == "postgres":
        return TreeStore(_Postgres(settings))
    return TreeStore(settings.merkle_store)


class TreeStore:
    """The tree's nodes, its leaves' index and its checkpoints (a SQLite file at `store`, or
    the PostgreSQL tables `open_tree_store` opens)."""

    def __init__(self, store: Path | _Postgres) -> None:
        self._db: _SQLite | _Postgres = _SQLite(store) if isinstance(store, Path) else store
        # The writer's view: the size it appended up to and the frontier (the roots of the
        # perfect subtrees that make the whole tree, largest first) as (level, index, hash).
        self.size = 0
        self._frontier: list[tuple[int, int, bytes]] = []
        self._new_nodes: list[tuple[int, int, bytes]] = []
        self._new_leaves: list[tuple[int, int, str, str, int]] = []

    def _one(self, query: str, args: Sequence[Any] = ()) -> Any:
        rows = self._db.all(query, args)
        return rows[0] if rows else None

    # --- the writer ---

    @contextmanager
    def appending(self) -> Iterator[TreeStore]:
        """One write transaction: the size is read again first (another signer may have gone
        on), and what was appended is committed at the end, or nothing on an error."""
        try:
            with self._db.exclusive():
                stored = self.stored_size()
                if stored != self.size or len(self._frontier) != bin(stored).count("1"):
                    self._load_frontier(stored)
                yield self
                self.flush()
        except BaseException:
            self.size, self._frontier = 0, []  # read again on the next append
            self._new_nodes, self._new_leaves = [], []
            raise

    def flush(self) -> None:
        """Write what was appended so far (inside `appending`; visible to this transaction,
        so that proofs over the new leaves can be read before the checkpoint is signed)."""
        self._db.many("INSERT INTO merkle_nodes VALUES (?, ?, ?)", self._new_nodes)
        self._db.many("INSERT INTO merkle_leaves VALUES (?, ?, ?, ?, ?)", self._new_leaves)
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
        self._db.all(
            "INSERT INTO merkle_checkpoints (size, root, note, signed_at) VALUES (?, ?, ?, ?)",
            (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.signed_at),
        )

    def mark_published(self, sizes: Sequence[int]) -> None:
        self._db.many("UPDATE merkle_checkpoints SET published = 1 WHERE size = ?",
                      [(s,) for s in sizes])  # fmt: skip

    def set_meta(self, name: str, value: str) -> None:
        self._db.all("INSERT INTO merkle_meta VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                     "SET value = excluded.value", (name, value))  # fmt: skip

    # --- readers ---

    def meta(self, name: str) -> str | None:
        row = self._one("SELECT value FROM merkle_meta WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    def stored_size(self) -> int:
        row = self._one("SELECT max(idx) FROM merkle_leaves")
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def last_leaf(self) -> IndexedLeaf | None:
        row = self._one("SELECT idx, position, kind, recorded_ms FROM merkle_leaves "
                        "ORDER BY idx DESC LIMIT 1")  # fmt: skip
        return None if row is None else IndexedLeaf(*row)

    def leaf(self, index: int) -> IndexedLeaf | None:
        row = self._one("SELECT idx, position, kind, recorded_ms FROM merkle_leaves "
                        "WHERE idx = ?", (index,))  # fmt: skip
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
        # row-value IN list would scan the table on SQLite).
        terms = " OR ".join(
            f"(level = ? AND idx IN ({','.join('?' * len(ids))}))" for ids in by_level.values()
        )
        args = [x for level, ids in by_level.items() for x in (level, *ids)]
        rows = self._db.all(f"SELECT level, idx, hash FROM merkle_nodes WHERE {terms}", args)
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
        rows = self._db.all(
            f"SELECT position, idx FROM merkle_leaves WHERE position IN ({marks})",
            list(positions),
        )
        return {int(p): int(i) for p, i in rows}

    def leaves_of(self, account_id: str) -> list[IndexedLeaf]:
        """Every leaf about one account (its events and the reads of it), in log order."""
        rows = self._db.all(
            "SELECT idx, position, kind, recorded_ms FROM merkle_leaves WHERE account_id = ? "
            "ORDER BY idx",
            (account_id,),
        )
        return [IndexedLeaf(*row) for row in rows]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        return self._checkpoint("ORDER BY size DESC LIMIT 1", ())

    def checkpoint(self, size: int) -> StoredCheckpoint | None:
        return self._checkpoint("WHERE size = ?", (size,))

    def unpublished(self) -> list[StoredCheckpoint]:
        rows = self._db.all("SELECT size, root, note, signed_at FROM merkle_checkpoints "
                            "WHERE published = 0 ORDER BY size")  # fmt: skip
        return [StoredCheckpoint(s, bytes(r), n, t) for s, r, n, t in rows]

    def _checkpoint(self, where: str, args: tuple[int, ...]) -> StoredCheckpoint | None:
        row = self._one(f"SELECT size, root, note, signed_at FROM merkle_checkpoints {where}", args)
        return None if row is None else StoredCheckpoint(row[0], bytes(row[1]), row[2], row[3])

    def checkpoints_with_leaves(self) -> list[tuple[int, float, list[int]]]:
        """Every checkpoint (size, signing time) with the recording times (ms) of the leaves it
        was the first to cover: how long each leaf waited to be signed."""
        out, previous = [], 0
        for size, signed_at in self._db.all(
            "SELECT size, signed_at FROM merkle_checkpoints ORDER BY size"
        ):
            rows = self._db.all("SELECT recorded_ms FROM merkle_leaves WHERE idx >= ? AND idx < ?",
                                (previous, size))  # fmt: skip
            out.append((int(size), float(signed_at), [int(ms) for (ms,) in rows]))
            previous = size
        return out

    def close(self) -> None:
        self._db.close()
