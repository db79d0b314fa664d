"""Personal fields sealed with a data key per citizen (AES-256-GCM), erasable by key destruction.

Data keys live in a small mutable key store beside the event store (a SQLite file by default, a
table in the event store's database on PostgreSQL: `key_tables.py`), each wrapped by the
key-encryption key (KEK) held apart: a file (`KEK_FILE`, 0600) here, a KMS or
HSM in production. A sealed value is `sealed:v1:<base64url(nonce || ciphertext || tag)>`,
bound to its account by the associated data; once the account's data key is destroyed it can
never be opened again, wherever a copy of it went (store, topic, read models, backups).
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eventsourcing.persistence import IntegrityError

from services.registry.key_tables import KeyTable, PostgresKeyTable, SqliteKeyTable
from services.settings import Settings, write_once

PREFIX = "sealed:v1:"
# Unwrapped data keys are kept in memory for a short while: another process's erasure is
# seen within CACHE_SECONDS (this process's own at once).
CACHE_SECONDS = 30.0
CACHE_SIZE = 4096
PRELOAD_CHUNK = 500  # account ids per key-store query of `KeyStore.preloaded`
ERASED = "[erased]"
_KEK_CHECK = b"project06-kek-check"


class KeyEncryptionKeyError(RuntimeError):
    """The key-encryption key is missing or is not the one the key store was made with."""


def load_kek(
    path: Path, key_store: Path, event_store: Path | None = None, in_use: str = ""
) -> bytes:
    """The KEK at `path`; made (0600) only on a fresh deployment, else its absence is refused.
    `in_use` names a store that already holds data (a PostgreSQL one), if any."""
    if not path.exists():
        for existing in (key_store, event_store):
            if existing is not None and existing.exists() and existing.stat().st_size:
                in_use = in_use or str(existing)
        if in_use:
            raise KeyEncryptionKeyError(
                f"the key-encryption key {path} is missing but {in_use} exists: without "
                "it no personal field and no stored event can be read; restore KEK_FILE"
            )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_once(path, secrets.token_bytes(32))
    kek = path.read_bytes()
    if len(kek) != 32:
        raise KeyEncryptionKeyError(f"the key-encryption key {path} must hold 32 bytes")
    return kek


def store_cipher_env(kek: bytes) -> dict[str, str]:
    """The eventsourcing library's own at-rest encryption of stored event state, with a key
    derived from the KEK (one secret to hold)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"event-store").derive(kek)
    return {
        "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
        "CIPHER_KEY": base64.b64encode(key).decode(),
    }


def open_key_store(settings: Settings) -> tuple[bytes, KeyStore]:
    """The KEK (a missing or wrong one refused) and the key store of the settings' event store:
    a SQLite file (`KEY_STORE`) beside a SQLite store, a table beside a PostgreSQL one."""
    if settings.event_store != "postgres":
        kek = load_kek(settings.kek_file, settings.key_store, settings.sqlite_path)
        return kek, KeyStore(settings.key_store, kek)
    table = PostgresKeyTable(settings)
    try:
        where = f"the PostgreSQL store (schema {settings.postgres_schema})"
        kek = load_kek(
            settings.kek_file, settings.key_store, in_use=where if table.in_use() else ""
        )
    except KeyEncryptionKeyError:
        table.close()
        raise
    return kek, KeyStore(table, kek)


class KeyStore:
    """account id -> wrapped data key, in its own table (`key_tables`); destroyed keys are
    overwritten. `store` is a SQLite file's path or an open table."""

    def __init__(self, store: Path | KeyTable, kek: bytes) -> None:
        self._kek = AESGCM(kek)
        self._lock = threading.Lock()
        self._unflushed: dict[str, bytes] = {}  # made, not yet durable: see `flush`
        self._cache: OrderedDict[str, tuple[bytes | None, float]] = OrderedDict()
        # Rows read ahead for a batch (`preloaded`): name -> its row as `wrapped` gives it.
        self._preloaded: dict[str, tuple[bytes | None] | None] = {}
        self._db = SqliteKeyTable(store) if isinstance(store, Path) else store
        try:
            self._check_kek()
        except KeyEncryptionKeyError:
            self._db.close()
            raise

    def _check_kek(self) -> None:
        # the first process to open the store sets it; others check it
        stored = self._db.set_kek_check(self._wrap(_KEK_CHECK))
        try:
            self._unwrap(stored)
        except InvalidTag:
            raise KeyEncryptionKeyError(
                "the key-encryption key does not open this key store: wrong KEK_FILE"
            ) from None

    def _wrap(self, key: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + bytes(self._kek.encrypt(nonce, key, b"data-key"))

    def _unwrap(self, wrapped: bytes) -> bytes:
        return bytes(self._kek.decrypt(wrapped[:12], wrapped[12:], b"data-key"))

    def key(self, account_id: UUID, create: bool = False) -> bytes | None:
        """The account's data key; made when `create` and there is none; None once destroyed.

        A key made here is held until `flush`: the registry flushes before it saves the events
        sealed with it, so a batch's new keys cost one key-store commit, not one each.
        """
        name = str(account_id)
        with self._lock:
            if name in self._unflushed:
                return self._unflushed[name]
            cached = self._cache.get(name)
            if cached is not None and time.monotonic() - cached[1] < CACHE_SECONDS:
                return cached[0]
            if create and name in self._preloaded:
                row = self._preloaded.pop(name)
            else:
                row = self._db.wrapped(name)
            key = None if row is None or row[0] is None else self._unwrap(row[0])
            if row is None and create:
                key = self._unflushed[name] = bytes(AESGCM.generate_key(bit_length=256))
            elif row is not None:
                self._remember(name, key)
            return key

    @contextmanager
    def preloaded(self, account_ids: Iterable[UUID]) -> Iterator[None]:
        """Within the block, `key(..., create=True)` of these accounts takes the row read here
        (a few queries for them all) instead of one query each: the rows of a batch's accounts,
        read just before its commands. A key made from a row read here as absent is inserted
        by `flush` like any other (a writer that made it in between is told apart there). A
        row is used once; the rest are dropped when the block ends."""
        names = list(dict.fromkeys(str(account_id) for account_id in account_ids))
        with self._lock:
            now = time.monotonic()
            wanted = [
                name
                for name in names
                if name not in self._unflushed
                and (name not in self._cache or now - self._cache[name][1] >= CACHE_SECONDS)
            ]
            for start in range(0, len(wanted), PRELOAD_CHUNK):
                chunk = wanted[start : start + PRELOAD_CHUNK]
                rows = self._db.wrapped_many(chunk)
                for name in chunk:
                    self._preloaded[name] = (rows[name],) if name in rows else None
        try:
            yield
        finally:
            with self._lock:
                self._preloaded.clear()

    def _remember(self, name: str, key: bytes | None) -> None:
        self._cache[name] = (key, time.monotonic())
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def flush(self) -> None:
        """Make the keys made since the last flush durable, in one transaction."""
        with self._lock:
            if not self._unflushed:
                return
            made = {name: self._wrap(key) for name, key in self._unflushed.items()}
            lost = self._db.insert_new(made)  # one transaction
            for name, key in self._unflushed.items():
                if name not in lost:
                    self._remember(name, key)
            self._unflushed.clear()
        if lost:  # another writer made these accounts' keys first: redo with theirs
            raise KeyRaceError(f"{len(lost)} data keys were made by another writer first")

    def destroy(self, account_id: UUID) -> None:
        """Crypto-shredding: the key is overwritten (a tombstone row says it existed)."""
        name = str(account_id)
        with self._lock:
            self._unflushed.pop(name, None)
            self._cache.pop(name, None)
            self._preloaded.pop(name, None)
            self._db.destroy(name)

    def close(self) -> None:
        self._db.close()


@lru_cache(maxsize=1024)
def _cipher(key: bytes) -> AESGCM:
    """One AES-GCM object per data key in use (a registration seals four fields with one)."""
    return AESGCM(key)


class Sealer:
    """Seals and opens one account's personal fields with its data key."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def seal(self, account_id: UUID, value: str) -> str:
        """`value` sealed for `account_id` ("" stays "": nothing to hide)."""
        return self.for_account(account_id)(value)

    def for_account(self, account_id: UUID) -> Callable[[str], str]:
        """A sealer of one account's fields that looks its key up once, on first use."""
        found: list[AESGCM] = []

        def seal(value: str) -> str:
            if value == "":
                return ""
            if not found:
                key = self.keys.key(account_id, create=True)
                if key is None:
                    raise ErasedError("this citizen's personal data was erased")
                found.append(_cipher(key))
            nonce = os.urandom(12)
            sealed = nonce + found[0].encrypt(nonce, value.encode(), account_id.bytes)
            return PREFIX + base64.urlsafe_b64encode(sealed).decode()

        return seal

    def open(self, account_id: UUID, value: str) -> str:
        """The clear value, or ERASED once the account's key is destroyed."""
        if not value.startswith(PREFIX):
            return value  # empty, or not a personal field
        key = self.keys.key(account_id)
        if key is None:
            return ERASED
        raw = base64.urlsafe_b64decode(value[len(PREFIX) :])
        clear = _cipher(key).decrypt(raw[:12], raw[12:], account_id.bytes)
        return bytes(clear).decode()


class KeyRaceError(IntegrityError):
    """Two writers made a new account's data key at once; the loser redoes its command (the
    registry retries on IntegrityError, as for any optimistic-concurrency conflict)."""


class ErasedError(Exception):
    """A personal field cannot be sealed for a citizen whose data was erased."""
