"""The signer's Ed25519 key: generated once under var/keys/ (0600), held apart from the read
model and the topic. In production it lives in a vault or HSM (see the README)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from schemas.checkpoint import public_bytes, verifier_key
from services.settings import write_once


class SigningKeyError(RuntimeError):
    """The key file exists but holds no Ed25519 private key."""


def load_signing_key(path: Path, create: bool = True) -> Ed25519PrivateKey:
    """The private key in `path` (PEM, PKCS #8); made there on first use when `create`."""
    if not path.exists():
        if not create:
            raise SigningKeyError(f"no checkpoint signing key at {path}")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        made = Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
        write_once(path, made)  # the first of several starting processes wins
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} does not hold an Ed25519 private key")
    return key


def verifier_of(origin: str, key: Ed25519PrivateKey) -> str:
    """The one-line verifier key of the log `origin` signed with `key`: what an auditor pins."""
    return verifier_key(origin, public_bytes(key))
