"""RFC 6962 tree hashing and proofs: known answers, a naive cross-check, properties.

The known answers are the Certificate Transparency reference vectors (the
eight leaves and the roots for sizes 0..8 that Go's transparency-dev/merkle
tests use, and its published inclusion and consistency proofs), plus values
derived here by hand from the RFC's definitions with nothing but hashlib.
"""

from __future__ import annotations

import hashlib
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.audit import merkle as M

LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, proof), published with the vectors above
INCLUSION = [
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
]
CONSISTENCY = [
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
]


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def reference_tree() -> M.MerkleTree:
    t = M.MerkleTree()
    for leaf in LEAVES:
        t.append(leaf)
    return t


def hashes_of(n: int, salt: int = 0) -> list[bytes]:
    return [M.leaf_hash(f"{salt}:{i}".encode()) for i in range(n)]


# -- known answers -----------------------------------------------------------


def test_empty_tree_is_sha256_of_nothing():
    assert M.EMPTY_ROOT.hex() == ROOTS[0] == hashlib.sha256(b"").hexdigest()
    assert M.MerkleTree().root() == M.EMPTY_ROOT
    assert M.root_from_leaf_hashes([]) == M.EMPTY_ROOT
    assert M.CompactRange().root() == M.EMPTY_ROOT


def test_roots_match_the_published_vectors_for_sizes_0_to_8():
    tree = reference_tree()
    for n in range(9):
        assert tree.root(n).hex() == ROOTS[n], n
        assert M.root_from_leaf_hashes([M.leaf_hash(x) for x in LEAVES[:n]]).hex() == ROOTS[n]


def test_hashes_derived_by_hand_from_the_definitions():
    # leaf = SHA-256(0x00 || d), node = SHA-256(0x01 || l || r), split at the largest power of two < n
    a, b, c, d, e = (sha(b"\x00" + x) for x in LEAVES[:5])
    assert M.leaf_hash(LEAVES[0]) == a == bytes.fromhex(ROOTS[1])
    ab = sha(b"\x01" + a + b)
    cd = sha(b"\x01" + c + d)
    assert M.node_hash(a, b) == ab and ab.hex() == ROOTS[2]
    assert sha(b"\x01" + ab + c).hex() == ROOTS[3]  # 3 leaves: (ab, c), not (a, bc)
    abcd = sha(b"\x01" + ab + cd)
    assert abcd.hex() == ROOTS[4]
    assert sha(b"\x01" + abcd + e).hex() == ROOTS[5]  # 5 leaves: split 4 + 1
    tree = reference_tree()
    # leaf 4 of 5: its path is just abcd; leaf 2 of 5: d, ab, e
    assert tree.inclusion_proof(4, 5) == [abcd]
    assert tree.inclusion_proof(2, 5) == [d, ab, e]
    # consistency 3 -> 4: c, d, ab  (3 is not a power of two: starts from c)
    assert tree.consistency_proof(3, 4) == [c, d, ab]
    assert tree.consistency_proof(4, 5) == [e]  # 4 is a power of two: old root is implied


@pytest.mark.parametrize("index,size,proof", INCLUSION)
def test_published_inclusion_proofs(index, size, proof):
    tree = reference_tree()
    got = tree.inclusion_proof(index, size)
    assert [h.hex() for h in got] == proof
    assert M.verify_inclusion(M.leaf_hash(LEAVES[index]), index, size, got, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize("old,new,proof", CONSISTENCY)
def test_published_consistency_proofs(old, new, proof):
    tree = reference_tree()
    got = tree.consistency_proof(old, new)
    assert [h.hex() for h in got] == proof
    assert M.verify_consistency(old, new, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]), got)


def test_trivial_consistency_cases():
    r = bytes.fromhex(ROOTS[3])
    assert M.verify_consistency(0, 0, M.EMPTY_ROOT, M.EMPTY_ROOT, [])
    assert M.verify_consistency(0, 3, M.EMPTY_ROOT, r, [])
    assert M.verify_consistency(3, 3, r, r, [])
    assert not M.verify_consistency(3, 3, r, M.EMPTY_ROOT, [])
    assert not M.verify_consistency(3, 3, r, r, [r])  # equal sizes need an empty proof
    assert not M.verify_consistency(1, 0, r, r, [])  # no time travel
    assert not M.verify_consistency(1, 2, r, r, [])  # a real step needs a proof


# -- the fast code against the RFC's recursive definitions --------------------


def test_everything_agrees_with_the_naive_definitions_up_to_64_leaves():
    hs = hashes_of(64)
    tree = M.MerkleTree()
    for n in range(65):
        if n:
            tree.append_leaf_hash(hs[n - 1])
        bulk = M.MerkleTree.from_leaf_hashes(hs[:n])
        want = M.naive_root(hs[:n])
        assert tree.root() == bulk.root() == M.root_from_leaf_hashes(hs[:n]) == want
        cr = M.CompactRange()
        for h in hs[:n]:
            cr.append_leaf_hash(h)
        assert cr.root() == want and cr.hashes == tree.compact_range(n)
        for m in range(n + 1):
            assert tree.root(m) == M.naive_root(hs[:m])
            p = tree.consistency_proof(m, n)
            assert p == bulk.consistency_proof(m, n) == M.naive_consistency_proof(m, hs[:n])
            assert len(p) == M.consistency_proof_length(m, n)
            assert M.verify_consistency(m, n, M.naive_root(hs[:m]), want, p)
            assert M.root_from_compact_range(m, tree.compact_range(m), hs[m:n]) == want
        for i in range(n):
            p = tree.inclusion_proof(i, n)
            assert p == bulk.inclusion_proof(i, n) == M.naive_inclusion_proof(i, hs[:n])
            assert len(p) == M.inclusion_proof_length(i, n) <= max(0, math.ceil(math.log2(n)))
            assert M.verify_inclusion(hs[i], i, n, p, want)


def test_subtrees_merge_into_the_same_root():
    hs = hashes_of(300)
    for start, height in [(0, 4), (16, 4), (32, 5), (256, 5)]:
        width = 1 << height
        cr = M.CompactRange()
        for h in hs[:start]:
            cr.append_leaf_hash(h)
        cr.append_subtree(height, M.naive_root(hs[start : start + width]))
        for h in hs[start + width :]:
            cr.append_leaf_hash(h)
        assert cr.root() == M.naive_root(hs)
    cr = M.CompactRange()
    cr.append_leaf_hash(hs[0])
    with pytest.raises(ValueError):
        cr.append_subtree(2, hs[1])


def test_bad_requests_are_refused():
    tree = M.MerkleTree.from_leaf_hashes(hashes_of(5))
    with pytest.raises(M.ProofError):
        tree.inclusion_proof(5, 5)
    with pytest.raises(M.ProofError):
        tree.consistency_proof(3, 6)
    with pytest.raises(M.ProofError):
        tree.root(6)
    with pytest.raises(ValueError):
        tree.append_leaf_hash(b"short")
    assert not M.verify_inclusion(hashes_of(1)[0], 0, 0, [], M.EMPTY_ROOT)
    assert not M.verify_inclusion(b"x", 0, 1, [], b"x")  # hashes are 32 bytes


# -- properties --------------------------------------------------------------


def _corrupt(proof: list[bytes], rng: random.Random) -> list[list[bytes]]:
    """The probes of transparency-dev's verifier tests: flip, drop, add, reorder."""
    out = []
    for i in range(len(proof)):
        p = list(proof)
        b = bytearray(p[i])
        b[rng.randrange(32)] ^= 1 << rng.randrange(8)
        p[i] = bytes(b)
        out.append(p)
    if proof:
        out.append(proof[:-1])
        out.append(proof[1:])
    out.append(proof + [proof[-1] if proof else M.EMPTY_ROOT])
    out.append([M.EMPTY_ROOT] + proof)
    if len(proof) > 1 and proof[0] != proof[1]:
        out.append([proof[1], proof[0]] + proof[2:])
    return out


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.integers(1, 300), st.data())
def test_every_inclusion_proof_verifies_and_no_tampered_one_does(n, data):
    hs = hashes_of(n, salt=n)
    tree = M.MerkleTree.from_leaf_hashes(hs)
    root = tree.root()
    i = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(i)
    assert M.verify_inclusion(hs[i], i, n, proof, root)
    rng = random.Random(n * 1000 + i)
    for bad in _corrupt(proof, rng):
        assert not M.verify_inclusion(hs[i], i, n, bad, root)
    assert not M.verify_inclusion(M.leaf_hash(b"other"), i, n, proof, root)
    if n > 1:  # another leaf's hash at this index
        assert not M.verify_inclusion(hs[(i + 1) % n], i, n, proof, root)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.integers(1, 300), st.data())
def test_every_consistency_proof_verifies_and_no_tampered_one_does(n, data):
    hs = hashes_of(n, salt=7 * n)
    tree = M.MerkleTree.from_leaf_hashes(hs)
    m = data.draw(st.integers(1, n))
    old, new = tree.root(m), tree.root(n)
    proof = tree.consistency_proof(m, n)
    assert M.verify_consistency(m, n, old, new, proof)
    if m == n:
        return
    rng = random.Random(n * 1000 + m)
    for bad in _corrupt(proof, rng):
        assert not M.verify_consistency(m, n, old, new, bad)
    assert not M.verify_consistency(m, n, new, old, proof)
    # a forked history: same size n, one leaf at or after m changed, cannot be shown consistent
    forked = list(hs)
    forked[data.draw(st.integers(0, m - 1))] = M.leaf_hash(b"rewritten")
    ftree = M.MerkleTree.from_leaf_hashes(forked)
    assert not M.verify_consistency(m, n, old, ftree.root(), ftree.consistency_proof(m, n))
    assert not M.verify_consistency(m, n, old, ftree.root(), proof)


def test_proof_sizes_stay_within_ceil_log2_n_hashes_at_a_million():
    n = 1_000_000
    bound = math.ceil(math.log2(n))
    for i in [0, 1, n // 2, n - 2, n - 1, 524_287, 524_288]:
        assert M.inclusion_proof_length(i, n) <= bound
    for m in [1, 2, 3, 999_999, 524_288, 524_289]:
        assert M.consistency_proof_length(m, n) <= bound + 1
