"""Principals and their credentials: who a bearer token belongs to, its role and its scope; and
the per-principal command buckets (rate limits) every API process of a deployment shares.

Two stores with the same semantics, picked by `open_credential_store(settings)`: a SQLite file
(`CREDENTIALS_STORE`, the embedded default) or, with `EVENT_STORE=postgres`, tables in the event
store's database and schema (`principals`, `command_tokens`), so that every API process and the
credentials tool on any host see one set of principals and one limit per principal.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from services import pg
from services.settings import ROLES, Settings

__all__ = [
    "KINDS",
    "ROLES",
    "CredentialStore",
    "PostgresCredentialStore",
    "Principal",
    "SqliteCredentialStore",
    "open_credential_store",
    "token_hash",
]
KINDS = ("operator", "device", "service")
TOKEN_BYTES = 24  # 192 random bits
RETRY_WITHOUT_RATE = 3600.0  # seconds to wait when the refill rate is 0 (nothing refills)


@dataclass(frozen=True)
class Principal:
    """Whoever holds one credential: an operator, a device or a service, with a role and a
    scope. Empty scope fields mean no restriction (an officer or auditor of the nation)."""

    id: str
    role: str
    kind: str = "service"
    station_id: str = ""
    communes: tuple[str, ...] = ()
    province: str = ""

    def serves(self, commune_code: str, province_code: str) -> bool:
        """Whether a command about this place is within the principal's scope."""
        if self.communes and commune_code not in self.communes:
            return False
        return not self.province or province_code == self.province


def token_hash(token: str) -> str:
    """What is stored of a token: its SHA-256 (the token itself is shown once, never kept)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


Listing = list[tuple[Principal, float, float | None]]


class CredentialStore(Protocol):
    """Where principals, their token hashes and their command buckets live."""

    def add(self, principal: Principal) -> str:
        """Store `principal` under a new random token; return the token (shown once)."""

    def lookup(self, token: str) -> Principal | None:
        """The live (not revoked) principal holding `token`, or None. Read on every call (no
        cache): a revocation by the tool, in another process, refuses the very next request."""

    def list(self) -> Listing:
        """Every principal with its creation and revocation times (never a token or hash)."""

    def revoke(self, principal_id: str) -> bool:
        """Revoke the principal's credential; False if it has none that is live."""

    def rotate(self, principal_id: str) -> str:
        """A new token for a live principal; the old one stops working at once."""

    def take(self, principal_id: str, rate: float, burst: int) -> float:
        """Take one command from the principal's token bucket (`burst` at most, refilled at
        `rate` per second), in one atomic statement shared by every process on this store:
        0 if it may send a command now (and it is counted), else the seconds to wait."""

    def lease(self, principal_id: str, rate: float, burst: int, n: int) -> tuple[int, float]:
        """Take up to `n` whole tokens at once (a lease an API process spends from memory):
        (how many were taken, 0 or the seconds to wait when none was)."""

    def close(self) -> None: ...


def open_credential_store(settings: Settings) -> CredentialStore:
    """The deployment's credential store: PostgreSQL tables beside the event store with
    `EVENT_STORE=postgres`, else the SQLite file `CREDENTIALS_STORE`."""
    if settings.event_store == "postgres":
        return PostgresCredentialStore(settings)
    return SqliteCredentialStore(settings.credentials_store)


def take_one(store: CredentialStore, principal_id: str, rate: float, burst: int) -> float:
    """`CredentialStore.take` through its lease of one."""
    return store.lease(principal_id, rate, burst, 1)[1]


def _wait(tokens: float, taken: int, rate: float) -> float:
    if taken:
        return 0.0
    return (1 - tokens) / rate if rate > 0 else RETRY_WITHOUT_RATE


def _first(burst: int, n: int) -> dict[str, float]:
    """A new bucket after its first lease: full, less the up to `n` whole tokens taken."""
    taken = float(min(n, max(burst, 0)))
    return {"first": float(burst) - taken, "taken": taken}


def _row(principal: Principal, token: str, now: float) -> tuple[Any, ...]:
    _check(principal)
    p = principal
    return (p.id, p.role, p.kind, p.station_id, ",".join(p.communes), p.province,
            token_hash(token), now)  # fmt: skip


SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS principals (
    id TEXT PRIMARY KEY, role TEXT NOT NULL, kind TEXT NOT NULL, station_id TEXT NOT NULL,
    communes TEXT NOT NULL, province TEXT NOT NULL, token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL, revoked_at REAL)""",
    # Bucket state is ephemeral (a lost bucket starts full): the table of an older layout,
    # one token per statement, is simply replaced.
    "DROP TABLE IF EXISTS command_buckets",
    """CREATE TABLE IF NOT EXISTS command_tokens (
    principal_id TEXT PRIMARY KEY, tokens REAL NOT NULL, at REAL NOT NULL,
    taken INTEGER NOT NULL)""",
)

# One statement per lease: the bucket refilled since its last use (capped at the burst, a
# clock that went back refills nothing), then up to :n whole tokens taken. The SET expressions
# all read the row as it was; `taken` says how many this statement got (0: none left).
_REFILLED = "min(:burst, tokens + max(0.0, excluded.at - at) * :rate)"
SQLITE_TAKE = f"""INSERT INTO command_tokens VALUES (:id, :first, :now, :taken)
ON CONFLICT (principal_id) DO UPDATE SET
    tokens = {_REFILLED} - min(:n, CAST({_REFILLED} AS INTEGER)),
    taken = min(:n, CAST({_REFILLED} AS INTEGER)),
    at = excluded.at
RETURNING tokens, taken"""


class SqliteCredentialStore:
    """Principals and command buckets in a SQLite file beside the event store
    (VAR_DIR/credentials.sqlite): every API process on this host shares it.

    Each thread keeps its connections open (closing the last one of a WAL file checkpoints it,
    about a millisecond each time); every statement still reads the file as it is then: a
    revocation (by the tool, in another process) refuses the very next request, with no cache
    to wait out. A bucket update goes through a connection that does not sync each commit to
    disk (WAL, synchronous NORMAL: a power cut may forget the last commands' tokens); changes
    to principals are synced.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock  # wall-clock seconds: every process on the host reads the same
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._ready = False

    def _connect(self, synced: bool) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        with self._lock:
            self._opened.append(db)
            if not self._ready:
                db.execute("PRAGMA journal_mode = WAL")
                for statement in SQLITE_SCHEMA:
                    db.execute(statement)
                self._ready = True
        db.execute(f"PRAGMA synchronous = {'FULL' if synced else 'NORMAL'}")
        return db

    @contextmanager
    def _db(self, synced: bool = True) -> Iterator[sqlite3.Connection]:
        name = "synced" if synced else "buckets"
        db = getattr(self._local, name, None)
        if db is None:
            db = self._connect(synced)
            setattr(self._local, name, db)
        yield db

    def add(self, principal: Principal) -> str:
        token = new_token()
        row = _row(principal, token, time.time())
        with self._db() as db:
            try:
                db.execute("INSERT INTO principals VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)", row)
            except sqlite3.IntegrityError:
                raise ValueError(f"principal {principal.id!r} exists") from None
        return token

    def lookup(self, token: str) -> Principal | None:
        if not self.path.exists():
            return None
        query = (
            "SELECT id, role, kind, station_id, communes, province FROM principals "
            "WHERE token_sha256 = ? AND revoked_at IS NULL"
        )
        with self._db() as db:
            row = db.execute(query, (token_hash(token),)).fetchone()
        return None if row is None else _principal(row)

    def list(self) -> Listing:
        query = (
            "SELECT id, role, kind, station_id, communes, province, created_at, revoked_at "
            "FROM principals ORDER BY id"
        )
        with self._db() as db:
            return [(_principal(r[:6]), r[6], r[7]) for r in db.execute(query).fetchall()]

    def revoke(self, principal_id: str) -> bool:
        query = "UPDATE principals SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        with self._db() as db:
            return db.execute(query, (time.time(), principal_id)).rowcount == 1

    def rotate(self, principal_id: str) -> str:
        token = new_token()
        query = "UPDATE principals SET token_sha256 = ? WHERE id = ? AND revoked_at IS NULL"
        with self._db() as db:
            if db.execute(query, (token_hash(token), principal_id)).rowcount != 1:
                raise LookupError(f"no live principal {principal_id!r}")
        return token

    def take(self, principal_id: str, rate: float, burst: int) -> float:
        return take_one(self, principal_id, rate, burst)

    def lease(self, principal_id: str, rate: float, burst: int, n: int) -> tuple[int, float]:
        values = {"id": principal_id, "now": self.clock(), "rate": float(rate),
                  "burst": float(burst), "n": n, **_first(burst, n)}  # fmt: skip
        with self._db(synced=False) as db:
            tokens, taken = db.execute(SQLITE_TAKE, values).fetchone()
        return int(taken), _wait(float(tokens), int(taken), rate)

    def close(self) -> None:
        with self._lock:
            for db in self._opened:
                db.close()
            self._opened.clear()
        self._local = threading.local()


POSTGRES_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS principals (
    id text PRIMARY KEY, role text NOT NULL, kind text NOT NULL, station_id text NOT NULL,
    communes text NOT NULL, province text NOT NULL, token_sha256 text NOT NULL UNIQUE,
    created_at double precision NOT NULL, revoked_at double precision)""",
    # Unlogged: a bucket update writes no WAL (no commit waits for a disk flush, and it is not
    # copied to a standby); after a crash or a failover the buckets start full again.
    "DROP TABLE IF EXISTS command_buckets",  # an older layout; bucket state is ephemeral
    """CREATE UNLOGGED TABLE IF NOT EXISTS command_tokens (
    principal_id text PRIMARY KEY, tokens double precision NOT NULL,
    at double precision NOT NULL, taken integer NOT NULL)""",
)
# The server's clock: every API process, on any host, measures the refill by the same one.
_PG_REFILLED = "least(%(burst)s, b.tokens + greatest(0.0, excluded.at - b.at) * %(rate)s)"
POSTGRES_TAKE = f"""INSERT INTO command_tokens AS b
VALUES (%(id)s, %(first)s, extract(epoch FROM clock_timestamp()), %(taken)s)
ON CONFLICT (principal_id) DO UPDATE SET
    tokens = {_PG_REFILLED} - least(%(n)s, floor({_PG_REFILLED})),
    taken = least(%(n)s, floor({_PG_REFILLED})),
    at = excluded.at
RETURNING tokens, taken"""


class PostgresCredentialStore:
    """Principals and command buckets as tables `principals` and `command_tokens` in the event
    store's database and schema (EVENT_STORE=postgres): every API process and the tool share
    them. Read on every call through a small pool (no cache)."""

    def __init__(self, settings: Settings) -> None:
        with pg.setting_up(settings), pg.connect(settings) as conn:
            for statement in POSTGRES_SCHEMA:
                conn.execute(statement)
        self._pool: ConnectionPool = pg.pool(settings, "credentials", max_size=4)

    def add(self, principal: Principal) -> str:
        token = new_token()
        row = _row(principal, token, time.time())
        with self._pool.connection() as conn:
            try:
                conn.execute(
                    "INSERT INTO principals VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL)", row
                )
            except pg_errors.UniqueViolation:
                raise ValueError(f"principal {principal.id!r} exists") from None
        return token

    def lookup(self, token: str) -> Principal | None:
        query = (
            "SELECT id, role, kind, station_id, communes, province FROM principals "
            "WHERE token_sha256 = %s AND revoked_at IS NULL"
        )
        with self._pool.connection() as conn:
            row = conn.execute(query, (token_hash(token),)).fetchone()
        return None if row is None else _principal(row)

    def list(self) -> Listing:
        query = (
            "SELECT id, role, kind, station_id, communes, province, created_at, revoked_at "
            "FROM principals ORDER BY id"
        )
        with self._pool.connection() as conn:
            rows = conn.execute(query).fetchall()
        return [(_principal(r[:6]), float(r[6]), None if r[7] is None else float(r[7]))
                for r in rows]  # fmt: skip

    def revoke(self, principal_id: str) -> bool:
        query = "UPDATE principals SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"
        with self._pool.connection() as conn:
            return conn.execute(query, (time.time(), principal_id)).rowcount == 1

    def rotate(self, principal_id: str) -> str:
        token = new_token()
        query = "UPDATE principals SET token_sha256 = %s WHERE id = %s AND revoked_at IS NULL"
        with self._pool.connection() as conn:
            if conn.execute(query, (token_hash(token), principal_id)).rowcount != 1:
                raise LookupError(f"no live principal {principal_id!r}")
        return token

    def take(self, principal_id: str, rate: float, burst: int) -> float:
        return take_one(self, principal_id, rate, burst)

    def lease(self, principal_id: str, rate: float, burst: int, n: int) -> tuple[int, float]:
        values = {"id": principal_id, "rate": float(rate), "burst": float(burst), "n": n,
                  **_first(burst, n)}  # fmt: skip
        with self._pool.connection() as conn:
            row = conn.execute(POSTGRES_TAKE, values).fetchone()
        assert row is not None
        return int(row[1]), _wait(float(row[0]), int(row[1]), rate)

    def close(self) -> None:
        self._pool.close()


def _principal(row: tuple[Any, ...]) -> Principal:
    pid, role, kind, station, communes, province = row
    return Principal(pid, role, kind, station, tuple(c for c in communes.split(",") if c), province)


def _check(principal: Principal) -> None:
    if principal.role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if principal.kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if principal.role == "station" and not principal.station_id:
        raise ValueError("a station principal needs --station")
