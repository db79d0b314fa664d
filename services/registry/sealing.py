"""Personal fields sealed with a data key per citizen (AES-256-GCM), erasable by key destruction.

Data keys live in a small mutable key store beside the event store (SQLite by default), each
wrapped by the key-encryption key (KEK) held apart: a file (`KEK_FILE`, 0600) here, a KMS or
HSM in production. A sealed value is `sealed:v1:<base64url(nonce || ciphertext || tag)>`,
bound to its account by the associated data; once the account's data key is destroyed it can
never be opened again, wherever a copy of it went (store, topic, read models, backups).
"""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
import threading
from pathlib import Path
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "sealed:v1:"
ERASED = "[erased]"
_KEK_CHECK = b"project06-kek-check"


class KeyEncryptionKeyError(RuntimeError):
    """The key-encryption key is missing or is not the one the key store was made with."""


def load_kek(path: Path, key_store: Path, event_store: Path | None = None) -> bytes:
    """The KEK at `path`; made (0600) only on a fresh deployment, else its absence is refused."""
    if not path.exists():
        for existing in (key_store, event_store):
            if existing is not None and existing.exists() and existing.stat().st_size:
                raise KeyEncryptionKeyError(
                    f"the key-encryption key {path} is missing but {existing} exists: without "
                    "it no personal field and no stored event can be read; restore KEK_FILE"
                )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_once(path, secrets.token_bytes(32))
    kek = path.read_bytes()
    if len(kek) != 32:
        raise KeyEncryptionKeyError(f"the key-encryption key {path} must hold 32 bytes")
    return kek


def _create_once(path: Path, content: bytes) -> None:
    """Write `content` to a new file (0600) unless another process made it first; a reader
    never sees it half written (written beside it, then linked into place)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(temporary, path)  # fails if it exists: the first one made wins
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def store_cipher_env(kek: bytes) -> dict[str, str]:
    """The eventsourcing library's own at-rest encryption of stored event state, with a key
    derived from the KEK (one secret to hold)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"event-store").derive(kek)
    return {
        "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
        "CIPHER_KEY": base64.b64encode(key).decode(),
    }


class KeyStore:
    """account id -> wrapped data key, in its own SQLite file; deleted keys are overwritten."""

    def __init__(self, path: Path, kek: bytes) -> None:
        self._kek = AESGCM(kek)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA secure_delete = ON")  # a destroyed key leaves no bytes behind
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS data_keys (account_id TEXT PRIMARY KEY, wrapped BLOB)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB)")
        try:
            self._check_kek()
        except KeyEncryptionKeyError:
            self._db.close()
            raise

    def _check_kek(self) -> None:
        self._db.execute(  # the first process to open the store sets it; others check it
            "INSERT OR IGNORE INTO meta VALUES ('kek_check', ?)", (self._wrap(_KEK_CHECK),)
        )
        row = self._db.execute("SELECT value FROM meta WHERE name = 'kek_check'").fetchone()
        try:
            self._unwrap(row[0])
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
        """The account's data key; made when `create` and there is none; None once destroyed."""
        with self._lock:
            row = self._db.execute(
                "SELECT wrapped FROM data_keys WHERE account_id = ?", (str(account_id),)
            ).fetchone()
            if row is not None:
                return None if row[0] is None else self._unwrap(row[0])
            if not create:
                return None
            key = bytes(AESGCM.generate_key(bit_length=256))
            self._db.execute(
                "INSERT INTO data_keys VALUES (?, ?)", (str(account_id), self._wrap(key))
            )
            return key

    def destroy(self, account_id: UUID) -> None:
        """Crypto-shredding: the key is overwritten (a tombstone row says it existed)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO data_keys VALUES (?, NULL) "
                "ON CONFLICT(account_id) DO UPDATE SET wrapped = NULL",
                (str(account_id),),
            )
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no old page left in the WAL

    def close(self) -> None:
        self._db.close()


class Sealer:
    """Seals and opens one account's personal fields with its data key."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def seal(self, account_id: UUID, value: str) -> str:
        """`value` sealed for `account_id` ("" stays "": nothing to hide)."""
        if value == "":
            return ""
        key = self.keys.key(account_id, create=True)
        if key is None:
            raise ErasedError("this citizen's personal data was erased")
        nonce = secrets.token_bytes(12)
        sealed = nonce + AESGCM(key).encrypt(nonce, value.encode(), str(account_id).encode())
        return PREFIX + base64.urlsafe_b64encode(sealed).decode()

    def open(self, account_id: UUID, value: str) -> str:
        """The clear value, or ERASED once the account's key is destroyed."""
        if not value.startswith(PREFIX):
            return value  # empty, or not a personal field
        key = self.keys.key(account_id)
        if key is None:
            return ERASED
        raw = base64.urlsafe_b64decode(value[len(PREFIX) :])
        clear = AESGCM(key).decrypt(raw[:12], raw[12:], str(account_id).encode())
        return bytes(clear).decode()


class ErasedError(Exception):
    """A personal field cannot be sealed for a citizen whose data was erased."""
