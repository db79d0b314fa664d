"""Principals and their credentials: who a bearer token belongs to, its role and its scope."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.settings import ROLES

__all__ = ["KINDS", "ROLES", "CredentialStore", "Principal", "token_hash"]
KINDS = ("operator", "device", "service")
TOKEN_BYTES = 24  # 192 random bits


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


SCHEMA = """CREATE TABLE IF NOT EXISTS principals (
    id TEXT PRIMARY KEY, role TEXT NOT NULL, kind TEXT NOT NULL, station_id TEXT NOT NULL,
    communes TEXT NOT NULL, province TEXT NOT NULL, token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL, revoked_at REAL)"""


class CredentialStore:
    """Principals in a SQLite file beside the event store (VAR_DIR/credentials.sqlite).

    Each lookup opens the file afresh and reads the row: a revocation (by the tool, in another
    process) refuses the very next request, with no cache to wait out.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.execute(SCHEMA)
            yield db

    def add(self, principal: Principal) -> str:
        """Store `principal` under a new random token; return the token (shown once)."""
        _check(principal)
        token = new_token()
        p = principal
        communes = ",".join(p.communes)
        row = (
            p.id,
            p.role,
            p.kind,
            p.station_id,
            communes,
            p.province,
            token_hash(token),
            time.time(),
        )
        with self._db() as db:
            try:
                db.execute("INSERT INTO principals VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)", row)
            except sqlite3.IntegrityError:
                raise ValueError(f"principal {principal.id!r} exists") from None
        return token

    def lookup(self, token: str) -> Principal | None:
        """The live (not revoked) principal holding `token`, or None."""
        if not self.path.exists():
            return None
        query = (
            "SELECT id, role, kind, station_id, communes, province FROM principals "
            "WHERE token_sha256 = ? AND revoked_at IS NULL"
        )
        with self._db() as db:
            row = db.execute(query, (token_hash(token),)).fetchone()
        return None if row is None else _principal(row)

    def list(self) -> list[tuple[Principal, float, float | None]]:
        """Every principal with its creation and revocation times (never a token or hash)."""
        query = (
            "SELECT id, role, kind, station_id, communes, province, created_at, revoked_at "
            "FROM principals ORDER BY id"
        )
        with self._db() as db:
            return [(_principal(r[:6]), r[6], r[7]) for r in db.execute(query).fetchall()]

    def revoke(self, principal_id: str) -> bool:
        """Revoke the principal's credential; False if it has none that is live."""
        query = "UPDATE principals SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        with self._db() as db:
            return db.execute(query, (time.time(), principal_id)).rowcount == 1

    def rotate(self, principal_id: str) -> str:
        """A new token for a live principal; the old one stops working at once."""
        token = new_token()
        query = "UPDATE principals SET token_sha256 = ? WHERE id = ? AND revoked_at IS NULL"
        with self._db() as db:
            if db.execute(query, (token_hash(token), principal_id)).rowcount != 1:
                raise LookupError(f"no live principal {principal_id!r}")
        return token


def _principal(row: tuple[str, ...]) -> Principal:
    pid, role, kind, station, communes, province = row
    return Principal(pid, role, kind, station, tuple(c for c in communes.split(",") if c), province)


def _check(principal: Principal) -> None:
    if principal.role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if principal.kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if principal.role == "station" and not principal.station_id:
        raise ValueError("a station principal needs --station")
