"""Signed checkpoints of the Merkle log, in the C2SP formats (tlog-checkpoint in a signed-note).

A checkpoint says: the log named `origin` has `size` leaves and this root hash. It is signed
with Ed25519; whoever holds the verifier key (a one-line text the auditor pins in a file) can
check it without trusting the server, the database or the network it came through.

    project06.eid/citizen-events          <- origin
    1234                                  <- tree size
    Wl4mC...=                             <- base64 root hash
                                          <- blank line ends the body
    — project06.eid/citizen-events q2x...  <- em dash, key name, base64(key id || signature)

Only the signature needs `cryptography`; the format is the standard library's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from schemas.merkle import HASH_SIZE

ED25519 = b"\x01"  # the signed-note signature type of Ed25519
DASH = "\u2014"  # each signature line starts with an em dash and a space


class CheckpointError(ValueError):
    """A checkpoint or note that does not parse, is not signed by the pinned key, or lies."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        """The note text that is signed: origin, size, base64 root, one per line."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[0]:
            raise CheckpointError("a checkpoint is origin, size and root, one per line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not size.isdigit() or (size.startswith("0") and size != "0"):
            raise CheckpointError(f"tree size {size!r} is not a decimal number")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise CheckpointError("the root hash is not base64") from None
        if len(digest) != HASH_SIZE:
            raise CheckpointError("the root hash is not 32 bytes")
        return cls(origin, int(size), digest)


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key id of an Ed25519 note key: SHA-256(name || "\\n" || 0x01 || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """The one-line verifier key an auditor pins: name+hex(key id)+base64(0x01 || key)."""
    encoded = base64.b64encode(ED25519 + public_key).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


def parse_verifier_key(text: str) -> tuple[str, bytes]:
    """The key name and the 32-byte Ed25519 public key of a verifier key line."""
    name, _, rest = text.strip().partition("+")
    hex_id, _, encoded = rest.partition("+")
    try:
        raw = base64.b64decode(encoded, validate=True)
        wanted = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError):
        raise CheckpointError("the verifier key does not parse (name+keyid+key)") from None
    if not name or len(raw) != 33 or raw[:1] != ED25519:
        raise CheckpointError("the verifier key is not an Ed25519 note key")
    if key_id(name, raw[1:]) != wanted:
        raise CheckpointError("the verifier key's id does not match its key")
    return name, raw[1:]


def public_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(checkpoint: Checkpoint, name: str, private_key: Ed25519PrivateKey) -> str:
    """The signed note: the checkpoint body, a blank line, one signature line."""
    body = checkpoint.body()
    signature = private_key.sign(body.encode())
    stamp = base64.b64encode(key_id(name, public_bytes(private_key)) + signature).decode()
    return f"{body}\n{DASH} {name} {stamp}\n"


def open_note(note: str, verifier: str) -> Checkpoint:
    """The checkpoint in `note` if the pinned `verifier` key signed it; CheckpointError if the
    note does not parse, carries no signature by that key, or the signature does not verify."""
    name, public_key = parse_verifier_key(verifier)
    body, sep, signatures = note.partition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise CheckpointError("a signed note is a body, a blank line and signature lines")
    body += "\n"
    wanted = key_id(name, public_key)
    for line in signatures[:-1].split("\n"):
        dash, _, rest = line.partition(" ")
        signer, _, stamp = rest.partition(" ")
        if dash != DASH or not signer or not stamp:
            raise CheckpointError("a signature line is '— name base64'")
        try:
            raw = base64.b64decode(stamp, validate=True)
        except binascii.Error:
            raise CheckpointError("a signature is not base64") from None
        if signer != name or raw[:4] != wanted:
            continue  # another key's signature (a witness, say): not the one pinned
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(raw[4:], body.encode())
        except InvalidSignature:
            raise CheckpointError(f"the signature of {name} does not verify") from None
        return Checkpoint.parse(body)
    raise CheckpointError(f"the note is not signed by the pinned key {name}")
