"""RFC 9162 / RFC 6962 Merkle log over SHA-256: tree hashes, inclusion and consistency proofs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}), the hash of the empty tree


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """k, the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (not data)."""
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]), the tree hash of the raw leaf data `leaves` (each is hashed with leaf_hash)."""
    return _mth([leaf_hash(data) for data in leaves])


# Proofs name the subtrees whose hashes they carry as leaf ranges [start, end), so that a log
# kept in memory (`inclusion_proof`) and a log kept as stored nodes (the signer's tree store)
# build the very same proofs from one piece of index arithmetic.
Range = tuple[int, int]


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose tree hashes make PATH(index, D[size]), leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    out: list[Range] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m = start + k, m - k
    out.reverse()
    return out


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The ranges whose tree hashes make PROOF(old_size, D[new_size]); empty if old_size is 0
    or new_size. ValueError unless 0 <= old_size <= new_size."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} is outside 0..{new_size}")
    if old_size in (0, new_size):
        return []
    out: list[Range] = []
    start, end, m, whole = 0, new_size, old_size, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        out.append((start, end))
    out.reverse()
    return out


def perfect_blocks(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as aligned perfect subtrees, left to right, each as (level, index): leaves
    index * 2**level ... (index + 1) * 2**level - 1.

    For the ranges proofs name (start a multiple of a power of two at least end - start), the
    blocks' hashes folded right to left (`fold`) are MTH(D[start:end]): one block, or, at the
    right edge of a tree, its binary decomposition largest first."""
    out = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while start + (1 << level) > end:
            level -= 1
        out.append((level, start >> level))
        start += 1 << level
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """The tree hash of consecutive perfect blocks given left to right (see perfect_blocks)."""
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) for the raw leaf data `leaves`; ValueError unless 0 <= index < n."""
    hashes = [leaf_hash(data) for data in leaves]
    return [_mth(hashes[a:b]) for a, b in inclusion_ranges(index, len(hashes))]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]) for the raw leaf data `leaves`; empty if old_size is 0 or n.

    ValueError unless 0 <= old_size <= n.
    """
    hashes = [leaf_hash(data) for data in leaves]
    return [_mth(hashes[a:b]) for a, b in consistency_ranges(old_size, len(hashes))]


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_proof(proof: object) -> bool:
    return isinstance(proof, Sequence) and all(_is_hash(p) for p in proof)


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shift_while_even(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift fn and sn together until fn is odd or 0."""
    while fn and not fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether `proof` shows the leaf with hash `leaf_hash` at `index` in the tree (size, root).

    RFC 9162 section 2.1.3.2; False, never an exception, for any malformed input.
    """
    if not (_is_size(index) and _is_size(size) and index < size):
        return False
    if not (_is_hash(leaf_hash) and _is_hash(root) and _is_proof(proof)):
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _shift_while_even(fn, sn)
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether `proof` shows the tree (new_size, new_root) extends the tree (old_size, old_root).

    RFC 9162 section 2.1.4.2. Equal sizes need equal roots and an empty proof; old size 0 needs
    old_root == EMPTY_ROOT and an empty proof. False, never an exception, for malformed input.
    """
    if not (_is_size(old_size) and _is_size(new_size) and old_size <= new_size):
        return False
    if not (_is_hash(old_root) and _is_hash(new_root) and _is_proof(proof)):
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else list(proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            fn, sn = _shift_while_even(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


class MerkleLog:
    """An append-only tree kept as its frontier: the roots of its perfect subtrees, largest first.

    append is O(log n) hashes; root() is MTH of all the data appended so far.
    """

    def __init__(self) -> None:
        self._frontier: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        """Add one leaf of raw data (hashed with leaf_hash)."""
        h, n = leaf_hash(data), self._size
        while n & 1:
            h = node_hash(self._frontier.pop(), h)
            n >>= 1
        self._frontier.append(h)
        self._size += 1

    def root(self) -> bytes:
        """MTH of the leaves so far, folding the frontier from the right."""
        if not self._frontier:
            return EMPTY_ROOT
        r = self._frontier[-1]
        for h in reversed(self._frontier[:-1]):
            r = node_hash(h, r)
        return r
