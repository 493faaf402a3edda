"""FastCDC content-defined chunking: the C kernel if compiled, else a NumPy twin.

FastCDC (Xia et al., USENIX ATC 2016) finds chunk boundaries from the
content itself, so an edit moves only the chunks around it: a Gear rolling
hash, no hashing below the minimum size, and normalized chunking (level 2)
so sizes cluster around the average. The exact rule, which both
implementations follow to the byte (a hypothesis test compares them):

* the gear table is 256 64-bit words from splitmix64 seeded with
  :data:`GEAR_SEED`; ``H(p) = sum_{j=0..63} gear[data[p-j]] << j (mod 2^64)``,
  the Gear hash of the 64 bytes ending at ``p``;
* with ``bits = round(log2(avg))``, ``mask_s`` is the top ``bits+2`` bits and
  ``mask_l`` the top ``bits-2`` bits (the top bits of a Gear hash mix the
  whole 64-byte window; the low bits only the last few bytes);
* a chunk at ``s`` with ``r`` bytes left: if ``r <= min`` it is the rest;
  else with ``end = min(r, max)`` and ``normal = min(avg, end)`` its length is
  the first ``L`` in ``[min, end)`` with
  ``H(s+L-1) & (mask_s if L < normal else mask_l) == 0``, or ``end``.

Unlike the paper's loop, the hash is the fixed 64-byte window hash (the C
loop warms up over the 64 bytes before the first checked position), so a cut
depends only on local content and the distance from the previous cut; that
is what lets the NumPy twin compute all hashes at once (a doubling scan:
``H_2w(p) = H_w(p) + H_w(p-w) << w``). ``min >= 64`` keeps every window
inside its chunk.

Knowingly left out: the 2020 paper's two-bytes-per-iteration loop (it checks
only every other position, a different rule); the C loop at one byte per
step already passes 1 GB/s.

``IMPLEMENTATION`` is ``"native"`` or ``"fallback"``; ``ARCNET_NATIVE=0``
forces the fallback (see :mod:`arcnet.native`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from . import FORCE_FALLBACK

__all__ = [
    "GEAR",
    "GEAR_SEED",
    "IMPLEMENTATION",
    "Params",
    "cut_points",
    "cut_points_fallback",
    "cut_points_native",
    "iter_cuts",
]

GEAR_SEED = 0x4152434E45540001  # "ARCNET" 0 1: changing it changes every chunk id
_M64 = (1 << 64) - 1


def _gear_table(seed: int) -> tuple[int, ...]:
    """256 words of splitmix64 (Steele, Lea, Flood 2014) from ``seed``."""
    out = []
    x = seed & _M64
    for _ in range(256):
        x = (x + 0x9E3779B97F4A7C15) & _M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out.append(z ^ (z >> 31))
    return tuple(out)


GEAR: tuple[int, ...] = _gear_table(GEAR_SEED)
_GEAR_NP = np.array(GEAR, dtype=np.uint64)

WINDOW_BYTES = 64  # the Gear hash window; min_size may not be smaller
SIZE_MAX_BYTES = 1 << 30  # a bound on every size parameter


@dataclass(frozen=True)
class Params:
    """Chunk size bounds in bytes: ``64 <= min <= avg <= max <= 1 GiB``."""

    min_size: int
    avg_size: int
    max_size: int

    def __post_init__(self) -> None:
        for name in ("min_size", "avg_size", "max_size"):
            v = getattr(self, name)
            if type(v) is not int:
                raise ValueError(f"FastCDC {name} must be an int, got {type(v).__name__}")
        if not WINDOW_BYTES <= self.min_size <= self.avg_size <= self.max_size <= SIZE_MAX_BYTES:
            raise ValueError(
                f"FastCDC sizes need 64 <= min <= avg <= max <= 1 GiB, got "
                f"min={self.min_size} avg={self.avg_size} max={self.max_size}"
            )

    @property
    def bits(self) -> int:
        return max(2, round(np.log2(self.avg_size)))

    @property
    def mask_s(self) -> int:
        k = min(64, self.bits + 2)
        return ((1 << k) - 1) << (64 - k)

    @property
    def mask_l(self) -> int:
        k = self.bits - 2
        return ((1 << k) - 1) << (64 - k)


# --------------------------------------------------------------------------
# native


def _load_native() -> Any:
    if FORCE_FALLBACK:
        return None
    try:
        from . import _fastcdc  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _fastcdc


_native = _load_native()
IMPLEMENTATION = "native" if _native is not None else "fallback"

if _native is not None:
    _ffi, _lib = _native.ffi, _native.lib
    _GEAR_C = _ffi.new("uint64_t[256]", list(GEAR))


def _cap(n: int, p: Params) -> int:
    return n // p.min_size + 2


def cut_points_native(data: Any, params: Params, eof: bool = True) -> list[int]:
    """Chunk end offsets in ``data`` (bytes-like) by the C kernel; GIL released."""
    if _native is None:
        raise RuntimeError("the native FastCDC kernel is not built (pip install -e . compiles it)")
    mv = memoryview(data).cast("B")
    n = len(mv)
    if n == 0:
        return []
    cap = _cap(n, params)
    cuts = _ffi.new("uint64_t[]", cap)
    buf = _ffi.from_buffer("uint8_t[]", mv)
    count = _lib.arc_fastcdc_cuts(
        buf, n, 1 if eof else 0,
        params.min_size, params.avg_size, params.max_size,
        params.mask_s, params.mask_l, _GEAR_C, cuts, cap,
    )  # fmt: skip
    assert count < cap, "cut buffer too small"  # cap bounds the count: every chunk but the last is >= min
    return list(_ffi.unpack(cuts, count))


# --------------------------------------------------------------------------
# fallback: the same rule with NumPy

_BLOCK_BYTES = 64 << 10  # hashes per NumPy pass: 64 KiB of input is 512 KiB of uint64 (fits L2)


class _Scanner:
    """Finds the first position whose window hash meets a mask, block by block.

    Like the C loop it hashes only positions that can be checked (from
    ``min - 1`` of each chunk on) and stops at the first hit; reusable
    buffers keep NumPy from allocating per block.
    """

    def __init__(self, arr: np.ndarray):
        self.arr = arr
        size = _BLOCK_BYTES + WINDOW_BYTES
        self._idx = np.empty(size, dtype=np.intp)
        self._h = np.empty(size, dtype=np.uint64)
        self._tmp = np.empty(size, dtype=np.uint64)

    def first_hit(self, lo: int, hi: int, mask: int, block: int) -> int:
        """Least p in [lo, hi) with H(p) & mask == 0, else -1 (needs lo >= 63).

        Blocks start at ``block`` bytes and double up to 64 KiB: a hit
        expected early costs a small block, a long scan few NumPy calls.
        """
        m = np.uint64(mask)
        arr, idx, h, tmp = self.arr, self._idx, self._h, self._tmp
        ctx = WINDOW_BYTES - 1
        b0 = lo
        block = max(256, min(block, _BLOCK_BYTES))
        while b0 < hi:
            b1 = min(hi, b0 + block)
            block = min(2 * block, _BLOCK_BYTES)
            n = b1 - b0 + ctx
            ii, hh = idx[:n], h[:n]
            ii[...] = arr[b0 - ctx : b1]
            np.take(_GEAR_NP, ii, out=hh)
            w = 1
            while w < WINDOW_BYTES:  # doubling: H_2w(p) = H_w(p) + H_w(p-w) << w
                np.left_shift(hh[:-w], np.uint64(w), out=tmp[: n - w])
                np.add(hh[w:], tmp[: n - w], out=hh[w:])  # uint64 wraps: mod 2^64, as in C
                w *= 2
            np.bitwise_and(hh[ctx:], m, out=tmp[: n - ctx])
            hit = np.flatnonzero(tmp[: n - ctx] == 0)
            if hit.size:
                return b0 + int(hit[0])
            b0 = b1
        return -1


def cut_points_fallback(data: Any, params: Params, eof: bool = True) -> list[int]:
    """Chunk end offsets in ``data`` by the NumPy twin: the same cuts as the C kernel."""
    arr = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = int(arr.size)
    lo_p, hi_p = params.min_size, params.max_size
    mask_s, mask_l = params.mask_s, params.mask_l
    scan = _Scanner(arr)
    cuts: list[int] = []
    start = 0
    while start < n:
        r = n - start
        if not eof and r < hi_p:
            break
        if r <= lo_p:
            length = r
        else:
            end = min(r, hi_p)
            normal = min(params.avg_size, end)
            # min >= 64: every checked window lies inside the chunk
            p = scan.first_hit(start + lo_p - 1, start + normal - 1, mask_s, normal - lo_p)
            if p < 0:
                p = scan.first_hit(start + normal - 1, start + end - 1, mask_l, 1 << max(8, params.bits - 2))
            length = end if p < 0 else p - start + 1
        start += length
        cuts.append(start)
    return cuts


def cut_points(data: Any, params: Params, eof: bool = True) -> list[int]:
    """Chunk end offsets (exclusive) of ``data``; with ``eof=False`` only the decided ones.

    A chunk is decided once ``max_size`` bytes follow its start (or at EOF);
    a streaming caller keeps ``data[cuts[-1]:]`` and appends more.
    """
    if _native is not None:
        return cut_points_native(data, params, eof)
    return cut_points_fallback(data, params, eof)


def iter_cuts(read: Any, params: Params, read_bytes: int = 8 << 20) -> Iterator[bytes]:
    """Chunks of a stream: ``read(n)`` returns up to n bytes, b"" at the end.

    Holds at most ``read_bytes + max_size`` bytes at a time.
    """
    if read_bytes < 1:
        raise ValueError("read_bytes must be positive")
    tail = b""
    eof = False
    while not eof:
        block = read(read_bytes)
        if not block:
            eof = True
            buf = tail
        else:
            buf = tail + bytes(block) if tail else bytes(block)
            if len(buf) < params.max_size:
                tail = buf
                continue
        cuts = cut_points(buf, params, eof=eof)
        mv = memoryview(buf)
        prev = 0
        for c in cuts:
            yield bytes(mv[prev:c])
            prev = c
        tail = buf[prev:]
    assert not tail, "every byte ends up in a chunk at EOF"
