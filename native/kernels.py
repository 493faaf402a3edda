"""Pre/post-processing kernels for the job runners: the C kernel if compiled, else a NumPy twin.

The runners normalise features before a model and pick classes after it;
the fine-tune and transfer paths convert tensors to 16-bit floats. Each
kernel is defined here by its result, to the bit, and both implementations
follow the definition (hypothesis tests compare them, and the fp16 and bf16
narrowing against NumPy's and ml_dtypes' own casts):

* :func:`normalize` -- ``(x - mean) / std`` per column, float32 subtraction
  then float32 division, each rounded once (no fused multiply-add).
  ``std`` must be finite and non-zero: a constant feature should be given a
  std of 1.0 by whoever fitted the statistics.
* :func:`argmax` and :func:`topk` -- per row (the last axis), by a total
  order on float32: -0.0 equals +0.0, every NaN equals every other NaN and
  ranks above +inf (NumPy's argmax rule: the first NaN wins), ties go to the
  lower index. ``topk`` returns indices and values, best first.
* :func:`f32_to_f16`, :func:`f32_to_bf16` -- round to nearest, ties to even;
  overflow gives inf; a NaN stays a NaN with its sign and top payload bits
  and the quiet bit set (what x86's conversion instructions do).
* :func:`f16_to_f32`, :func:`bf16_to_f32` -- exact; a NaN's payload is kept
  as it is (not quieted).

bfloat16 values travel as ``uint16`` arrays (NumPy has no bfloat16 dtype);
float16 values as ``float16`` arrays (``uint16`` bit patterns are accepted).
Inputs of any shape are accepted; row kernels work on the last axis.

The C kernels release the GIL (cffi does, around every call), so two
threads normalise or convert at once; :func:`concurrency_max` reports the
most threads seen inside the C kernels at the same time, which is how the
tests prove it. ``IMPLEMENTATION`` is ``"native"`` or ``"fallback"``;
``ARCNET_NATIVE=0`` forces the fallback (see :mod:`arcnet.native`), and run
manifests record which one ran.

Knowingly left out: SIMD intrinsics (F16C, AVX-512 BF16). The portable C
loops are written without branches so the compiler vectorises them (and
compiled twice, for AVX2 and the baseline), which already beats NumPy's
scalar float16 cast by several times. NumPy's own argmax is vectorised, so
:func:`argmax` hands long rows to it (see :data:`ARGMAX_NATIVE_COLS_MAX`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import FORCE_FALLBACK

__all__ = [
    "ARGMAX_NATIVE_COLS_MAX",
    "IMPLEMENTATION",
    "KernelError",
    "argmax",
    "argmax_fallback",
    "argmax_native",
    "bf16_to_f32",
    "bf16_to_f32_fallback",
    "bf16_to_f32_native",
    "concurrency_max",
    "concurrency_reset",
    "f16_to_f32",
    "f16_to_f32_fallback",
    "f16_to_f32_native",
    "f32_to_bf16",
    "f32_to_bf16_fallback",
    "f32_to_bf16_native",
    "f32_to_f16",
    "f32_to_f16_fallback",
    "f32_to_f16_native",
    "normalize",
    "normalize_fallback",
    "normalize_native",
    "topk",
    "topk_fallback",
    "topk_native",
]

_INT32_MAX = np.int32(2**31 - 1)


class KernelError(ValueError):
    """Input a kernel cannot take; the message says what is wrong."""


# --------------------------------------------------------------------------
# native


def _load_native() -> Any:
    if FORCE_FALLBACK:
        return None
    try:
        from . import _kernels  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _kernels


_native = _load_native()
IMPLEMENTATION = "native" if _native is not None else "fallback"

if _native is not None:
    _ffi, _lib = _native.ffi, _native.lib


def _require_native() -> None:
    if _native is None:
        raise KernelError(
            "the native kernels are not available (not compiled, or ARCNET_NATIVE=0); "
            "reinstall with a C compiler (`pip install -e .`) or use the fallback"
        )


# --------------------------------------------------------------------------
# argument checks shared by both implementations


def _as_f32(x: Any, what: str = "x") -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 0:
        raise KernelError(f"{what} must have at least one axis, got a scalar")
    return np.ascontiguousarray(a)


def _rows(x: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """x as a 2-D C-contiguous float32 array (rows, last axis) and its leading shape."""
    a = _as_f32(x)
    lead = a.shape[:-1]
    return a.reshape(int(np.prod(lead, dtype=np.int64)), a.shape[-1]), lead


def _stats(a: np.ndarray, mean: Any, std: Any) -> tuple[np.ndarray, np.ndarray]:
    cols = a.shape[-1]
    m = np.ascontiguousarray(mean, dtype=np.float32)
    s = np.ascontiguousarray(std, dtype=np.float32)
    if m.shape != (cols,) or s.shape != (cols,):
        raise KernelError(
            f"mean and std must have shape ({cols},) to match x's last axis, got {m.shape} and {s.shape}"
        )
    if not (np.all(np.isfinite(s)) and np.all(s != 0) and np.all(np.isfinite(m))):
        raise KernelError("mean must be finite and std finite and non-zero (give constant features a std of 1.0)")
    return m, s


def _out_like(a: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.empty_like(a)
    if out.dtype != np.float32 or out.shape != a.shape or not out.flags.c_contiguous or not out.flags.writeable:
        raise KernelError(f"out must be a writable C-contiguous float32 array of shape {a.shape}")
    return out


def _check_k(k: int, cols: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise KernelError(f"k must be an int, got {type(k).__name__}")
    k = int(k)
    if not 0 <= k <= cols:
        raise KernelError(f"k must be between 0 and the row length {cols}, got {k}")
    return k


def _half_bits(h: Any, what: str) -> np.ndarray:
    a = np.asarray(h)
    if a.dtype.itemsize != 2 or a.dtype.kind not in "fuV":
        raise KernelError(f"{what} must be a 16-bit array (float16 or uint16 bit patterns), got {a.dtype}")
    return np.ascontiguousarray(a).view(np.uint16)


# --------------------------------------------------------------------------
# normalisation


def normalize_fallback(x: Any, mean: Any, std: Any, out: np.ndarray | None = None) -> np.ndarray:
    a = _as_f32(x)
    m, s = _stats(a, mean, std)
    o = _out_like(a, out)
    with np.errstate(all="ignore"):  # inf - inf and overflow give NaN and inf, as in C, silently
        np.subtract(a, m, out=o)
        np.divide(o, s, out=o)
    return o


def normalize_native(x: Any, mean: Any, std: Any, out: np.ndarray | None = None) -> np.ndarray:
    _require_native()
    a = _as_f32(x)
    m, s = _stats(a, mean, std)
    o = _out_like(a, out)
    if a.size == 0:
        return o
    cols = a.shape[-1]
    rc = _lib.arc_normalize_f32(
        _ffi.from_buffer("float[]", a),
        _ffi.from_buffer("float[]", o, require_writable=True),
        a.size // cols,
        cols,
        _ffi.from_buffer("float[]", m),
        _ffi.from_buffer("float[]", s),
    )
    assert rc == 0, rc
    return o


def normalize(x: Any, mean: Any, std: Any, out: np.ndarray | None = None) -> np.ndarray:
    """``(x - mean) / std`` over the last axis, in float32; ``out`` may be ``x`` itself."""
    if _native is not None:
        return normalize_native(x, mean, std, out)
    return normalize_fallback(x, mean, std, out)


# --------------------------------------------------------------------------
# argmax and top-k


def _keys(a: np.ndarray) -> np.ndarray:
    """The int32 sort key of every float32 in ``a`` (see ``arc_key`` in kernels.c)."""
    u = a.view(np.uint32)
    mag = u & np.uint32(0x7FFFFFFF)
    i = u.view(np.int32)
    keys = np.where(i >= 0, i, (u ^ np.uint32(0x7FFFFFFF)).view(np.int32))
    keys[mag == 0] = 0
    keys[mag > 0x7F800000] = _INT32_MAX
    return keys


def argmax_fallback(x: Any) -> np.ndarray:
    a, lead = _rows(x)
    if a.shape[1] == 0:
        raise KernelError("argmax of an empty row")
    # NumPy's argmax follows the same order: first NaN wins, -0.0 == +0.0,
    # first of equal maxima (a hypothesis test holds the two together).
    return np.argmax(a, axis=1).astype(np.int64).reshape(lead)


def argmax_native(x: Any) -> np.ndarray:
    _require_native()
    a, lead = _rows(x)
    rows, cols = a.shape
    if cols == 0:
        raise KernelError("argmax of an empty row")
    idx = np.empty(rows, dtype=np.int64)
    if rows:
        rc = _lib.arc_argmax_f32(
            _ffi.from_buffer("float[]", a), rows, cols, _ffi.from_buffer("int64_t[]", idx, require_writable=True)
        )
        assert rc == 0, rc
    return idx.reshape(lead)


# Rows at least this long go to NumPy's argmax even when the C kernel is
# built: NumPy dispatches a vectorised loop (AVX-512 where the CPU has it)
# that beats the portable C loop on long rows; the C loop wins on the short
# rows of classifier heads (measured crossover: ~64 columns). Same result.
ARGMAX_NATIVE_COLS_MAX = 64


def argmax(x: Any) -> np.ndarray:
    """Index of the largest value along the last axis (int64, shape ``x.shape[:-1]``)."""
    a = _as_f32(x)
    if _native is not None and a.shape[-1] < ARGMAX_NATIVE_COLS_MAX:
        return argmax_native(a)
    return argmax_fallback(a)


def topk_fallback(x: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    a, lead = _rows(x)
    k = _check_k(k, a.shape[1])
    # A stable sort on the negated key: best first, ties to the lower index.
    order = np.argsort(-_keys(a).astype(np.int64), axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(a, order, axis=1)
    return order.astype(np.int64).reshape(lead + (k,)), vals.reshape(lead + (k,))


def topk_native(x: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    _require_native()
    a, lead = _rows(x)
    rows, cols = a.shape
    k = _check_k(k, cols)
    idx = np.empty((rows, k), dtype=np.int64)
    vals = np.empty((rows, k), dtype=np.float32)
    if rows and k:
        rc = _lib.arc_topk_f32(
            _ffi.from_buffer("float[]", a),
            rows,
            cols,
            k,
            _ffi.from_buffer("int64_t[]", idx, require_writable=True),
            _ffi.from_buffer("float[]", vals, require_writable=True),
        )
        assert rc == 0, rc
    return idx.reshape(lead + (k,)), vals.reshape(lead + (k,))


def topk(x: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest values along the last axis: (indices int64, values float32), best first."""
    if _native is not None:
        return topk_native(x, k)
    return topk_fallback(x, k)


# --------------------------------------------------------------------------
# fp16


def f32_to_f16_fallback(x: Any) -> np.ndarray:
    a = _as_f32(x, "x")
    with np.errstate(over="ignore", invalid="ignore"):
        out = a.astype(np.float16).view(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        u = a.view(np.uint32)[nan]
        out[nan] = (((u >> 16) & 0x8000) | 0x7E00 | ((u >> 13) & 0x3FF)).astype(np.uint16)
    return out.view(np.float16)


def f32_to_f16_native(x: Any) -> np.ndarray:
    _require_native()
    a = _as_f32(x, "x")
    out = np.empty(a.shape, dtype=np.uint16)
    if a.size:
        _lib.arc_f32_to_f16(
            _ffi.from_buffer("uint32_t[]", a), _ffi.from_buffer("uint16_t[]", out, require_writable=True), a.size
        )
    return out.view(np.float16)


def f32_to_f16(x: Any) -> np.ndarray:
    """float32 -> float16, round to nearest even (a float16 array of the same shape)."""
    if _native is not None:
        return f32_to_f16_native(x)
    return f32_to_f16_fallback(x)


def f16_to_f32_fallback(h: Any) -> np.ndarray:
    b = _half_bits(h, "h")
    out = b.view(np.float16).astype(np.float32)
    nan = ((b & 0x7C00) == 0x7C00) & ((b & 0x3FF) != 0)
    if nan.any():
        bn = b[nan].astype(np.uint32)
        out.view(np.uint32)[nan] = ((bn & 0x8000) << 16) | 0x7F800000 | ((bn & 0x3FF) << 13)
    return out


def f16_to_f32_native(h: Any) -> np.ndarray:
    _require_native()
    b = _half_bits(h, "h")
    out = np.empty(b.shape, dtype=np.float32)
    if b.size:
        _lib.arc_f16_to_f32(
            _ffi.from_buffer("uint16_t[]", b), _ffi.from_buffer("uint32_t[]", out, require_writable=True), b.size
        )
    return out


def f16_to_f32(h: Any) -> np.ndarray:
    """float16 (or its uint16 bits) -> float32, exact."""
    if _native is not None:
        return f16_to_f32_native(h)
    return f16_to_f32_fallback(h)


# --------------------------------------------------------------------------
# bf16


def f32_to_bf16_fallback(x: Any) -> np.ndarray:
    a = _as_f32(x, "x")
    u = a.view(np.uint32)
    # uint32 arithmetic wraps as C's does; the only lanes that wrap are NaNs,
    # which the where() replaces.
    rounded = (u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16
    nan = (u & np.uint32(0x7FFFFFFF)) > 0x7F800000
    return np.where(nan, (u >> 16) | np.uint32(0x40), rounded).astype(np.uint16)


def f32_to_bf16_native(x: Any) -> np.ndarray:
    _require_native()
    a = _as_f32(x, "x")
    out = np.empty(a.shape, dtype=np.uint16)
    if a.size:
        _lib.arc_f32_to_bf16(
            _ffi.from_buffer("uint32_t[]", a), _ffi.from_buffer("uint16_t[]", out, require_writable=True), a.size
        )
    return out


def f32_to_bf16(x: Any) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    if _native is not None:
        return f32_to_bf16_native(x)
    return f32_to_bf16_fallback(x)


def bf16_to_f32_fallback(b: Any) -> np.ndarray:
    bits = _half_bits(b, "b")
    return (bits.astype(np.uint32) << 16).view(np.float32)


def bf16_to_f32_native(b: Any) -> np.ndarray:
    _require_native()
    bits = _half_bits(b, "b")
    out = np.empty(bits.shape, dtype=np.float32)
    if bits.size:
        _lib.arc_bf16_to_f32(
            _ffi.from_buffer("uint16_t[]", bits), _ffi.from_buffer("uint32_t[]", out, require_writable=True), bits.size
        )
    return out


def bf16_to_f32(b: Any) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exact."""
    if _native is not None:
        return bf16_to_f32_native(b)
    return bf16_to_f32_fallback(b)


# --------------------------------------------------------------------------
# the concurrency probe


def concurrency_max() -> int | None:
    """Most threads seen inside the C kernels at once since the last reset (None: fallback)."""
    if _native is None:
        return None
    return int(_lib.arc_concurrency_max())


def concurrency_reset() -> None:
    if _native is not None:
        _lib.arc_concurrency_reset()
