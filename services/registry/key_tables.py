"""Where the key store keeps its rows: a SQLite file (embedded default) or a PostgreSQL table.

Both hold `account id -> wrapped data key` (NULL once destroyed) and the KEK check value, with
the same semantics: a new key is inserted only if none exists (the loser of a race learns it),
and destroying a key overwrites it with NULL and leaves no old copy in the file or table.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol

from psycopg import sql

from services import pg
from services.settings import Settings


class KeyTable(Protocol):
    def set_kek_check(self, wrapped: bytes) -> bytes:
        """Store the KEK check value unless one is stored; return the stored one."""

    def wrapped(self, name: str) -> tuple[bytes | None] | None:
        """The account's row (its wrapped key, None once destroyed), or None if it has none."""

    def wrapped_many(self, names: list[str]) -> dict[str, bytes | None]:
        """The rows of those of `names` that have one (wrapped key, None once destroyed), from
        one query; a name without a row is left out."""

    def insert_new(self, made: dict[str, bytes]) -> set[str]:
        """Insert the keys of accounts that have none, in one transaction; return the accounts
        whose stored key is not the one given (another writer made theirs first)."""

    def destroy(self, name: str) -> None:
        """Overwrite the account's key with NULL (a row says it existed)."""

    def close(self) -> None: ...


class SqliteKeyTable:
    """The key store in its own SQLite file (`KEY_STORE`), apart from the event store."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA secure_delete = ON")  # a destroyed key leaves no bytes behind
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS data_keys (account_id TEXT PRIMARY KEY, wrapped BLOB)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB)")

    def set_kek_check(self, wrapped: bytes) -> bytes:
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('kek_check', ?)", (wrapped,))
        row = self._db.execute("SELECT value FROM meta WHERE name = 'kek_check'").fetchone()
        return bytes(row[0])

    def wrapped(self, name: str) -> tuple[bytes | None] | None:
        query = "SELECT wrapped FROM data_keys WHERE account_id = ?"
        row = self._db.execute(query, (name,)).fetchone()
        return None if row is None else (row[0],)

    def wrapped_many(self, names: list[str]) -> dict[str, bytes | None]:
        marks = ",".join("?" * len(names))
        query = f"SELECT account_id, wrapped FROM data_keys WHERE account_id IN ({marks})"
        return {name: wrapped for name, wrapped in self._db.execute(query, names).fetchall()}

    def insert_new(self, made: dict[str, bytes]) -> set[str]:
        with self._db:  # one transaction: BEGIN ... COMMIT
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO data_keys VALUES (?, ?)", made.items())
            marks = ",".join("?" * len(made))
            rows = self._db.execute(
                f"SELECT account_id, wrapped FROM data_keys WHERE account_id IN ({marks})",
                list(made),
            ).fetchall()
        return {name for name, wrapped in rows if wrapped != made[name]}

    def destroy(self, name: str) -> None:
        self._db.execute(
            "INSERT INTO data_keys VALUES (?, NULL) "
            "ON CONFLICT(account_id) DO UPDATE SET wrapped = NULL",
            (name,),
        )
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no old page left in the WAL

    def close(self) -> None:
        self._db.close()


class PostgresKeyTable:
    """The key store as tables `data_keys` and `data_keys_meta` in the event store's database
    and schema (EVENT_STORE=postgres): every API process and the relay share them."""

    def __init__(self, settings: Settings) -> None:
        with pg.setting_up(settings), pg.connect(settings) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS data_keys (account_id text PRIMARY KEY, wrapped bytea)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS data_keys_meta (name text PRIMARY KEY, value bytea)"
            )
        self._events = f"{settings.postgres_schema}.registry_events"
        self._pool = pg.pool(settings, "key-store")

    def in_use(self) -> bool:
        """Whether this deployment already stored anything (a KEK was made for it)."""
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM data_keys_meta), to_regclass(%s) IS NOT NULL",
                (self._events,),
            ).fetchone()
            assert row is not None
            return bool(row[0] or row[1])

    def set_kek_check(self, wrapped: bytes) -> bytes:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO data_keys_meta VALUES ('kek_check', %s) ON CONFLICT DO NOTHING",
                (wrapped,),
            )
            row = conn.execute("SELECT value FROM data_keys_meta WHERE name = 'kek_check'")
            return bytes(row.fetchone()[0])  # type: ignore[index]

    def wrapped(self, name: str) -> tuple[bytes | None] | None:
        with self._pool.connection() as conn:
            query = "SELECT wrapped FROM data_keys WHERE account_id = %s"
            row = conn.execute(query, (name,)).fetchone()
        return None if row is None else (None if row[0] is None else bytes(row[0]),)

    def wrapped_many(self, names: list[str]) -> dict[str, bytes | None]:
        with self._pool.connection() as conn:
            query = "SELECT account_id, wrapped FROM data_keys WHERE account_id = ANY(%s)"
            rows = conn.execute(query, (names,)).fetchall()
        return {name: None if wrapped is None else bytes(wrapped) for name, wrapped in rows}

    def insert_new(self, made: dict[str, bytes]) -> set[str]:
        # READ COMMITTED: an INSERT that meets another writer's uncommitted row for the same
        # account waits for it, then does nothing; the SELECT after it sees the winner's key.
        # In account order: two writers inserting overlapping batches wait for each other in
        # one order, never in a cycle (in arrival order they deadlocked; seen in CI).
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO data_keys VALUES (%s, %s) ON CONFLICT DO NOTHING",
                sorted(made.items()),
            )
            cur.execute(
                "SELECT account_id, wrapped FROM data_keys WHERE account_id = ANY(%s)",
                (list(made),),
            )
            rows = cur.fetchall()
        return {name for name, wrapped in rows if wrapped is None or bytes(wrapped) != made[name]}

    def destroy(self, name: str) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO data_keys VALUES (%s, NULL) "
                "ON CONFLICT (account_id) DO UPDATE SET wrapped = NULL",
                (name,),
            )
            # The old row version stays in the table's pages until vacuumed: prune it now.
            conn.execute(sql.SQL("VACUUM data_keys"))

    def close(self) -> None:
        self._pool.close()
