"""RFC 6962 Merkle trees: tree heads, inclusion and consistency proofs, compact ranges.

Every peer's audit log is the list of leaves of one Merkle tree, hashed exactly
as Certificate Transparency hashes its log (RFC 6962 section 2.1, kept
unchanged in RFC 9162 section 2.1)::

    leaf hash  = SHA-256(0x00 || entry bytes)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")                         (the empty tree)
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n]))      k = largest power of two < n

so any RFC 6962 implementation (Go's ``transparency-dev/merkle``, Trillian,
sigsum) agrees with ours on every root and proof; the tests check the
published vectors.

What is here:

* :func:`leaf_hash`, :func:`node_hash`, :func:`root_from_leaf_hashes` (bulk,
  level by level: the fast path for verifying a million leaves).
* :class:`MerkleTree`: the log's in-memory tree. It keeps every complete
  subtree hash, level by level (level 0 = leaf hashes), in flat bytearrays:
  64 bytes per leaf in all. Append is O(1) amortised and O(log n) worst case;
  the root of *any* past size, and inclusion and consistency proofs between
  any sizes, cost O(log n) hashes (a right-edge subtree is folded from at
  most log n stored hashes).
* :class:`CompactRange`: only the right frontier (one hash per set bit of the
  size, at most 64), for a verifier that appends leaves and wants the root:
  the structure of "compact ranges" in transparency-dev/merkle.
* :func:`verify_inclusion` and :func:`verify_consistency`: the verification
  algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2, including their rule
  that every proof element is used (a proof with extra or missing hashes
  fails).
* :func:`naive_root`, :func:`naive_inclusion_proof`,
  :func:`naive_consistency_proof`: the RFC's recursive definitions written
  out literally, O(n) per call. Tests cross-check the fast code against them.

Knowingly left out: persistent tiles (c2sp.org/tlog-tiles). The tree is
rebuilt from the entry file on start (a few seconds per million entries), and
holds 64 bytes per entry in memory: 64 MiB at a million entries. A peer that
outgrows that should move the upper levels to disk as tiles.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_LEN",
    "CompactRange",
    "MerkleTree",
    "ProofError",
    "consistency_proof_length",
    "inclusion_proof_length",
    "leaf_hash",
    "leaf_hashes",
    "naive_consistency_proof",
    "naive_inclusion_proof",
    "naive_root",
    "node_hash",
    "root_from_compact_range",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "split_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_LEN = 32
_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()  # e3b0c442...b855: MTH of the empty tree
_LEAF = b"\x00"
_NODE = b"\x01"
MAX_TREE_SIZE = (1 << 63) - 1  # sizes travel as u64; keep one bit spare for arithmetic


class ProofError(ValueError):
    """A proof request that cannot be answered (sizes out of range)."""


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry): the RFC 6962 leaf hash."""
    return _sha256(_LEAF + entry).digest()


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """Leaf hashes of many entries (a list comprehension: ~1 us per entry)."""
    sha = _sha256
    return [sha(b"\x00" + e).digest() for e in entries]


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the RFC 6962 interior node hash."""
    return _sha256(_NODE + left + right).digest()


def _largest_pow2_below(n: int) -> int:
    """k such that k < n <= 2k (n >= 2): RFC 6962's split point."""
    return 1 << ((n - 1).bit_length() - 1)


def split_hashes(blob: bytes, what: str = "hash list") -> list[bytes]:
    """Cut a concatenation of 32-byte hashes into a list; ValueError if ragged."""
    if len(blob) % HASH_LEN:
        raise ValueError(f"{what}: {len(blob)} bytes is not a multiple of {HASH_LEN}")
    return [blob[i : i + HASH_LEN] for i in range(0, len(blob), HASH_LEN)]


# ---------------------------------------------------------------------------
# bulk roots


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes, computed level by level.

    Carrying an odd last node up unchanged gives exactly RFC 6962's split at
    the largest power of two (the carried node is always the right edge).
    """
    level = list(hashes)
    if not level:
        return EMPTY_ROOT
    sha = _sha256
    while len(level) > 1:
        n = len(level)
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, n - 1, 2)]
        if n & 1:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def root_from_compact_range(start: int, prefix: Sequence[bytes], hashes: Sequence[bytes]) -> bytes:
    """Root of the tree of size ``start + len(hashes)``.

    ``prefix`` is the compact range of the first ``start`` leaves (one
    complete-subtree hash per set bit of ``start``, largest first: what
    :meth:`MerkleTree.compact_range` returns) and ``hashes`` the leaf hashes
    of leaves ``start ..``. Level by level like :func:`root_from_leaf_hashes`:
    at level k the nodes start at index ``start >> k``; when that index is
    odd, its left sibling is the prefix subtree of height k.
    """
    if start < 0:
        raise ValueError("start must be >= 0")
    if len(prefix) != bin(start).count("1"):
        raise ValueError(f"a compact range of size {start} has {bin(start).count('1')} hashes, got {len(prefix)}")
    if start == 0:
        return root_from_leaf_hashes(hashes)
    if not hashes:
        return _fold_frontier(list(prefix))
    # the prefix, smallest subtree first, indexed by height
    by_height: dict[int, bytes] = {}
    rest = list(prefix)
    for k in range(start.bit_length() - 1, -1, -1):
        if start >> k & 1:
            by_height[k] = rest.pop(0)
    sha = _sha256
    level = list(hashes)
    k = 0
    s = start  # index of level[0] at height k
    while True:
        if s & 1:
            level.insert(0, by_height[k])
            s -= 1
        n = len(level)
        if n == 1 and s == 0:
            return level[0]
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, n - 1, 2)]
        if n & 1:
            nxt.append(level[-1])
        level = nxt
        s >>= 1
        k += 1


def _fold_frontier(frontier: list[bytes]) -> bytes:
    """Root from a compact range (largest subtree first): fold from the right."""
    if not frontier:
        return EMPTY_ROOT
    acc = frontier[-1]
    for h in reversed(frontier[:-1]):
        acc = _sha256(_NODE + h + acc).digest()
    return acc


# ---------------------------------------------------------------------------
# the incremental tree


class MerkleTree:
    """An append-only RFC 6962 tree that keeps every complete subtree hash.

    ``levels[k]`` holds the hashes of the complete subtrees of height k, in
    order, concatenated (32 bytes each): the subtree with index j covers
    leaves ``[j * 2**k, (j + 1) * 2**k)``. Appending a leaf appends to
    level 0 and, while the new node completes a pair, one parent per level.
    Not thread-safe: the owner (the audit log) holds its lock around calls.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    @classmethod
    def from_leaf_hashes(cls, hashes: Iterable[bytes]) -> "MerkleTree":
        """Build a tree from leaf hashes in bulk, level by level (about 1 us per leaf)."""
        level = list(hashes)
        if any(len(h) != HASH_LEN for h in level):
            raise ValueError(f"leaf hashes are {HASH_LEN} bytes each")
        tree = cls()
        tree._size = len(level)
        tree._levels = [bytearray(b"".join(level))]
        sha = _sha256
        while len(level) >= 2:  # level k+1 holds the parents of complete pairs only
            level = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
            tree._levels.append(bytearray(b"".join(level)))
        return tree

    def __len__(self) -> int:
        return self._size

    @property
    def size(self) -> int:
        return self._size

    def append(self, entry: bytes) -> int:
        """Append an entry's leaf; returns its index."""
        return self.append_leaf_hash(_sha256(_LEAF + entry).digest())

    def append_leaf_hash(self, h: bytes) -> int:
        if len(h) != HASH_LEN:
            raise ValueError(f"a leaf hash is {HASH_LEN} bytes, got {len(h)}")
        index = self._size
        if index >= MAX_TREE_SIZE:
            raise OverflowError("tree is full")
        levels = self._levels
        levels[0] += h
        i, k = index, 0
        while i & 1:  # the new node is a right child: its parent is complete now
            lv = levels[k]
            off = (i - 1) * HASH_LEN
            parent = _sha256(_NODE + lv[off : off + 2 * HASH_LEN]).digest()
            k += 1
            if k == len(levels):
                levels.append(bytearray())
            levels[k] += parent
            i >>= 1
        self._size = index + 1
        return index

    def extend(self, hashes: Iterable[bytes]) -> None:
        for h in hashes:
            self.append_leaf_hash(h)

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise IndexError(f"leaf {index} out of range for a tree of size {self._size}")
        off = index * HASH_LEN
        return bytes(self._levels[0][off : off + HASH_LEN])

    def _node(self, k: int, j: int) -> bytes:
        off = j * HASH_LEN
        return bytes(self._levels[k][off : off + HASH_LEN])

    def subtree_hash(self, start: int, end: int) -> bytes:
        """MTH of leaves ``[start, end)`` (must be a subtree RFC 6962 proofs use:
        ``start`` a multiple of the largest power of two <= ``end - start``)."""
        if not 0 <= start < end <= self._size:
            raise ProofError(f"subtree [{start}, {end}) outside a tree of size {self._size}")
        n = end - start
        k = n.bit_length() - 1
        if n == 1 << k:
            if start & (n - 1):
                raise ProofError(f"subtree [{start}, {end}) is not aligned")
            return self._node(k, start >> k)
        # a right-edge subtree: a complete left part, then the rest
        left = 1 << k
        return node_hash(self.subtree_hash(start, start + left), self.subtree_hash(start + left, end))

    def root(self, size: int | None = None) -> bytes:
        """The tree head at ``size`` leaves (default: now): O(log n)."""
        if size is None:
            size = self._size
        if not 0 <= size <= self._size:
            raise ProofError(f"size {size} outside 0..{self._size}")
        return _fold_frontier(self.compact_range(size))

    def compact_range(self, size: int | None = None) -> list[bytes]:
        """Hashes of the complete subtrees that cover leaves ``[0, size)``,
        largest first: one per set bit of ``size``."""
        if size is None:
            size = self._size
        if not 0 <= size <= self._size:
            raise ProofError(f"size {size} outside 0..{self._size}")
        out = []
        for k in range(size.bit_length() - 1, -1, -1):
            if size >> k & 1:
                out.append(self._node(k, (size >> k) - 1))
        return out

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:size])."""
        if size is None:
            size = self._size
        if not 0 <= index < size <= self._size:
            raise ProofError(f"no inclusion proof for leaf {index} in a tree of size {size} (have {self._size})")
        return self._path(index, 0, size)

    def _path(self, m: int, start: int, end: int) -> list[bytes]:
        # iterative PATH: descend from the root, collect siblings, return leaf-first
        out = []
        while end - start > 1:
            k = _largest_pow2_below(end - start)
            if m < k:
                out.append(self.subtree_hash(start + k, end))
                end = start + k
            else:
                out.append(self.subtree_hash(start, start + k))
                start += k
                m -= k
        out.reverse()
        return out

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 6962 PROOF(old_size, D[0:new_size]); empty when old_size is 0 or equal."""
        if new_size is None:
            new_size = self._size
        if not 0 <= old_size <= new_size <= self._size:
            raise ProofError(f"no consistency proof from {old_size} to {new_size} (have {self._size})")
        if old_size == 0 or old_size == new_size:
            return []
        out: list[bytes] = []
        m, start, end, complete = old_size, 0, new_size, True
        while True:
            n = end - start
            if m == n:
                if not complete:
                    out.append(self.subtree_hash(start, end))
                break
            k = _largest_pow2_below(n)
            if m <= k:
                out.append(self.subtree_hash(start + k, end))
                end = start + k
            else:
                out.append(self.subtree_hash(start, start + k))
                start += k
                m -= k
                complete = False
        out.reverse()
        return out

    def statistics(self) -> dict[str, int]:
        return {"size": self._size, "levels": len(self._levels), "bytes": sum(len(lv) for lv in self._levels)}


# ---------------------------------------------------------------------------
# the right frontier alone


class CompactRange:
    """The compact range ``[0, size)``: the right frontier of the tree.

    One hash per set bit of ``size`` (at most 63), smallest subtree last.
    Enough to append leaves and to compute the root: what a verifier or a
    witness that does not keep the leaves needs.
    """

    __slots__ = ("_frontier", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise ValueError(f"a compact range of size {size} has {bin(max(size, 0)).count('1')} hashes")
        if any(len(h) != HASH_LEN for h in hashes):
            raise ValueError("compact range hashes are 32 bytes each")
        self._frontier = [bytes(h) for h in hashes]  # largest subtree first
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        return list(self._frontier)

    def append_leaf_hash(self, h: bytes) -> None:
        if len(h) != HASH_LEN:
            raise ValueError(f"a leaf hash is {HASH_LEN} bytes, got {len(h)}")
        fr = self._frontier
        i = self._size
        while i & 1:  # merge with the smallest subtrees while they pair up
            h = _sha256(_NODE + fr.pop() + h).digest()
            i >>= 1
        fr.append(h)
        self._size += 1

    def append(self, entry: bytes) -> None:
        self.append_leaf_hash(_sha256(_LEAF + entry).digest())

    def append_subtree(self, height: int, h: bytes) -> None:
        """Append a complete subtree of ``2**height`` leaves with root ``h``.

        The range must end on a multiple of its size (``size % 2**height == 0``),
        so the subtree is a node of the final tree: how a verifier merges
        subtree roots computed in parallel.
        """
        width = 1 << height
        if self._size % width:
            raise ValueError(f"a subtree of {width} leaves cannot start at leaf {self._size}")
        if len(h) != HASH_LEN:
            raise ValueError(f"a subtree hash is {HASH_LEN} bytes")
        fr = self._frontier
        i = self._size >> height
        while i & 1:
            h = _sha256(_NODE + fr.pop() + h).digest()
            i >>= 1
        fr.append(h)
        self._size += width

    def root(self) -> bytes:
        return _fold_frontier(self._frontier)


# ---------------------------------------------------------------------------
# verification (RFC 9162 2.1.3.2 and 2.1.4.2)


def inclusion_proof_length(index: int, size: int) -> int:
    """Number of hashes in the inclusion proof of ``index`` in a tree of ``size``."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} not in a tree of size {size}")
    # bits of the path in the perfect part, plus one per right-edge step
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner + border


def consistency_proof_length(old_size: int, new_size: int) -> int:
    if not 0 <= old_size <= new_size:
        raise ValueError("need 0 <= old_size <= new_size")
    if old_size == 0 or old_size == new_size:
        return 0
    # inner path below the point where old and new tree paths diverge
    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    border = bin((old_size - 1) >> inner).count("1")
    shift = (old_size & -old_size).bit_length() - 1  # trailing zeros of old_size
    n = inner + border - shift
    if old_size != 1 << shift:  # old_size not a power of two: its own root is needed
        n += 1
    return n


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """The root ``proof`` leads to from ``leaf`` at ``index``, or None if the
    proof has the wrong shape (RFC 9162 2.1.3.2 steps 1-5)."""
    if not 0 <= index < size or len(leaf) != HASH_LEN:
        return None
    fn, sn, r = index, size - 1, leaf
    sha = _sha256
    for p in proof:
        if sn == 0 or len(p) != HASH_LEN:
            return None
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True if ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``root`` of ``size``."""
    got = root_from_inclusion_proof(leaf, index, size, proof)
    return got is not None and got == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """True if ``proof`` shows the tree (new_size, new_root) extends (old_size, old_root)."""
    if not 0 <= old_size <= new_size:
        return False
    if any(len(p) != HASH_LEN for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    sha = _sha256
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = sha(b"\x01" + c + fr).digest()
            sr = sha(b"\x01" + c + sr).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = sha(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


# ---------------------------------------------------------------------------
# the RFC's definitions, literally (for cross-checking; O(n) per call)


def naive_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf *hashes*, by the recursive definition of RFC 6962 2.1."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _largest_pow2_below(n)
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def naive_inclusion_proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 2.1.1, recursively."""
    n = len(leaves)
    if n <= 1:
        return []
    k = _largest_pow2_below(n)
    if m < k:
        return naive_inclusion_proof(m, leaves[:k]) + [naive_root(leaves[k:])]
    return naive_inclusion_proof(m - k, leaves[k:]) + [naive_root(leaves[:k])]


def naive_consistency_proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 2.1.2, recursively (empty for m = 0 or m = n)."""

    def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [naive_root(d)]
        k = _largest_pow2_below(n)
        if m <= k:
            return subproof(m, d[:k], b) + [naive_root(d[k:])]
        return subproof(m - k, d[k:], False) + [naive_root(d[:k])]

    if m == 0 or m == len(leaves):
        return []
    return subproof(m, leaves, True)
