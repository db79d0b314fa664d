"""RFC 6962 / RFC 9162 Merkle log: published vectors, a brute-force reference, tampered proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.merkle import (
    EMPTY_ROOT,
    MerkleLog,
    consistency_proof,
    consistency_ranges,
    fold,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    perfect_blocks,
    root,
    verify_consistency,
    verify_inclusion,
)

# The RFC 6962 reference vectors of Certificate Transparency implementations, as data: the eight
# leaves, the roots of the trees of sizes 1..8, and known proofs (transparency-dev/merkle,
# proof/verify_test.go).
LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]  # fmt: skip
ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]  # fmt: skip
# (index, tree size, proof); the source numbers leaves from 1, these from 0.
INCLUSION = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip
OTHER = hashlib.sha256(b"another root").digest()


# --- The brute-force reference: RFC 6962 section 2.1 as plainly as it reads, over raw data. ---


def ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if len(d) == 0:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = ref_k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = ref_k(len(d))
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = ref_k(len(d))
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True) if 0 < m < len(d) else []


def flipped(proof: list[bytes], i: int) -> list[bytes]:
    """The proof with one bit of element i flipped."""
    element = bytearray(proof[i])
    element[i % len(element)] ^= 0x10
    return [*proof[:i], bytes(element), *proof[i + 1 :]]


# Unique leaves (the index first), so that no two leaves, and no two subtrees, hash alike.
trees = st.integers(0, 70).flatmap(
    lambda n: st.lists(st.binary(max_size=12), min_size=n, max_size=n).map(
        lambda data: [i.to_bytes(2, "big") + x for i, x in enumerate(data)]
    )
)


# --- Published vectors ---


def test_hashes_of_leaves_and_nodes() -> None:
    assert leaf_hash(b"") == ROOTS[0] == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"L", b"R") == hashlib.sha256(b"\x01LR").digest()
    assert (
        root([])
        == EMPTY_ROOT
        == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    )


@pytest.mark.parametrize("size", range(1, 9))
def test_published_roots(size: int) -> None:
    assert root(LEAVES[:size]) == ROOTS[size - 1]
    log = MerkleLog()
    for data in LEAVES[:size]:
        log.append(data)
    assert (log.size, log.root()) == (size, ROOTS[size - 1])


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    expected = [bytes.fromhex(h) for h in proof]
    assert inclusion_proof(LEAVES[:size], index) == expected
    assert verify_inclusion(leaf_hash(LEAVES[index]), index, size, expected, ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_published_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    expected = [bytes.fromhex(h) for h in proof]
    assert consistency_proof(LEAVES[:new], old) == expected
    assert verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], expected)


# --- Against the reference, on random trees ---


@settings(max_examples=100, deadline=None)
@given(trees)
def test_roots_and_the_incremental_log_match_the_reference(leaves: list[bytes]) -> None:
    log = MerkleLog()
    assert log.root() == ref_mth([])
    for n, data in enumerate(leaves, start=1):
        log.append(data)
        assert log.size == n
        assert log.root() == root(leaves[:n]) == ref_mth(leaves[:n])


@settings(max_examples=100, deadline=None)
@given(trees)
def test_every_inclusion_proof_verifies_and_tampering_fails(leaves: list[bytes]) -> None:
    n, top = len(leaves), ref_mth(leaves)
    for i, data in enumerate(leaves):
        proof, h = inclusion_proof(leaves, i), leaf_hash(data)
        assert proof == ref_path(i, leaves)
        assert verify_inclusion(h, i, n, proof, top)
        for j in range(len(proof)):
            assert not verify_inclusion(h, i, n, flipped(proof, j), top)
        for wrong in {i - 1, i + 1, i ^ 1, i ^ 2, n} - {i}:
            assert not verify_inclusion(h, wrong, n, proof, top)
        assert not verify_inclusion(h, i, n, proof, OTHER)
        assert not verify_inclusion(leaf_hash(data + b"!"), i, n, proof, top)
        assert not verify_inclusion(h, i, n, [*proof, top], top)
        if proof:
            assert not verify_inclusion(h, i, n, proof[:-1], top)
        # A wrong size, with the root a tree of that size really has (the RFC algorithm takes
        # the size on trust from the signed checkpoint, so it must be paired with its root).
        for size in {n - 1, n + 1, 2 * n, n // 2} - {n}:
            if i < size <= n:
                assert not verify_inclusion(h, i, size, proof, root(leaves[:size]))


@settings(max_examples=100, deadline=None)
@given(trees)
def test_every_consistency_proof_verifies_and_tampering_fails(leaves: list[bytes]) -> None:
    n = len(leaves)
    roots = [ref_mth(leaves[:m]) for m in range(n + 1)]
    for m in range(n + 1):
        proof = consistency_proof(leaves, m)
        assert proof == ref_proof(m, leaves)
        assert verify_consistency(m, n, roots[m], roots[n], proof)
        for j in range(len(proof)):
            assert not verify_consistency(m, n, roots[m], roots[n], flipped(proof, j))
        if m == n:
            continue
        assert not verify_consistency(m, n, roots[n], roots[m], proof)
        assert not verify_consistency(m, n, roots[m], roots[n], [*proof, roots[n]])
        assert not verify_consistency(n, m, roots[n], roots[m], proof)
        if m == 0:
            continue  # the empty tree is consistent with any tree, whatever its root
        assert not verify_consistency(m, n, roots[m], OTHER, proof)
        assert not verify_consistency(m, n, OTHER, roots[n], proof)
        assert not verify_consistency(m, n, roots[m], roots[n], proof[:-1])
        # Wrong sizes, each with the root a tree of that size really has (see above).
        for wrong in {m - 1, m + 1, m ^ 2, m // 2} - {m}:
            if 0 < wrong < n:
                assert not verify_consistency(wrong, n, roots[wrong], roots[n], proof)
        if m < n - 1:
            assert not verify_consistency(m, n - 1, roots[m], roots[n - 1], proof)


# --- Edge cases and malformed input: False, never an exception ---


def test_inclusion_edge_cases() -> None:
    h = leaf_hash(b"data")
    assert verify_inclusion(h, 0, 1, [], h)  # a one-leaf tree: its root is its leaf hash
    assert not verify_inclusion(h, 0, 0, [], EMPTY_ROOT)
    assert not verify_inclusion(h, 1, 1, [], h)
    assert not verify_inclusion(h, -1, 1, [], h)
    assert not verify_inclusion(h, 0, 1, [h], h)
    assert not verify_inclusion(b"", 0, 1, [], b"")  # not SHA-256 sized
    assert not verify_inclusion(h, 0, 2, [b"short"], h)
    bad: list[object] = [None, "0", 1.0, True]
    for junk in bad:
        assert not verify_inclusion(h, junk, 1, [], h)  # type: ignore[arg-type]
        assert not verify_inclusion(h, 0, junk, [], h)  # type: ignore[arg-type]
        assert not verify_inclusion(junk, 0, 1, [], h)  # type: ignore[arg-type]
        assert not verify_inclusion(h, 0, 2, junk, h)  # type: ignore[arg-type]
        assert not verify_inclusion(h, 0, 2, [junk], h)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        inclusion_proof([], 0)
    with pytest.raises(ValueError):
        inclusion_proof([b"a"], 1)
    with pytest.raises(ValueError):
        inclusion_proof([b"a"], -1)


def test_consistency_edge_cases() -> None:
    r1, r2 = ROOTS[0], ROOTS[1]
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, ROOTS[4], [])
    assert verify_consistency(3, 3, ROOTS[2], ROOTS[2], [])
    assert not verify_consistency(0, 5, OTHER, ROOTS[4], [])  # the empty tree has one root
    assert not verify_consistency(0, 5, EMPTY_ROOT, ROOTS[4], [r1])
    assert not verify_consistency(3, 3, ROOTS[2], ROOTS[3], [])
    assert not verify_consistency(3, 3, ROOTS[2], ROOTS[2], [r1])
    assert not verify_consistency(2, 1, r2, r1, [])
    assert not verify_consistency(1, 2, r1, r2, [])  # different sizes need a proof
    assert not verify_consistency(1, 2, r1, r2, [b"short"])
    assert not verify_consistency(-1, 2, r1, r2, [])
    bad: list[object] = [None, "1", 1.5, False]
    for junk in bad:
        assert not verify_consistency(junk, 2, r1, r2, [leaf_hash(LEAVES[1])])  # type: ignore[arg-type]
        assert not verify_consistency(1, junk, r1, r2, [leaf_hash(LEAVES[1])])  # type: ignore[arg-type]
        assert not verify_consistency(1, 2, junk, r2, [leaf_hash(LEAVES[1])])  # type: ignore[arg-type]
        assert not verify_consistency(1, 2, r1, r2, junk)  # type: ignore[arg-type]
    assert verify_consistency(1, 2, r1, r2, [leaf_hash(LEAVES[1])])
    assert consistency_proof(LEAVES, 0) == consistency_proof(LEAVES, 8) == []
    with pytest.raises(ValueError):
        consistency_proof(LEAVES, 9)
    with pytest.raises(ValueError):
        consistency_proof(LEAVES, -1)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100, 255])
def test_proof_ranges_are_aligned_perfect_blocks_whose_fold_is_their_tree_hash(size: int) -> None:
    # How the signer's store answers a proof from stored perfect subtrees only: every range a
    # proof names starts on a multiple of a power of two at least its length, so its greedy
    # decomposition into aligned blocks, folded right to left, is its RFC tree hash.
    data = [i.to_bytes(2, "big") for i in range(size)]
    ranges = {r for m in range(size) for r in inclusion_ranges(m, size)}
    ranges |= {r for m in range(size + 1) for r in consistency_ranges(m, size)}
    for start, end in sorted(ranges):
        blocks = perfect_blocks(start, end)
        covered = [x for lv, i in blocks for x in range(i << lv, (i + 1) << lv)]
        assert covered == list(range(start, end))  # exactly the range, in order, no overlap
        hashes = [ref_mth(data[i << lv : (i + 1) << lv]) for lv, i in blocks]
        assert fold(hashes) == ref_mth(data[start:end])
