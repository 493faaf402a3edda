"""The runtime's C kernels against their NumPy twins, bit for bit, and the GIL release.

Each native kernel must equal its fallback on every input (hypothesis draws
arbitrary float32 bit patterns: NaNs, infinities, subnormals, -0.0); the
fp16 and bf16 narrowings also equal NumPy's and ml_dtypes' own casts on
every non-NaN input. Native tests skip where the extension was not built.
"""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from arcnet.native import kernels as K

native = pytest.mark.skipif(K.IMPLEMENTATION != "native", reason="native kernels not built")

# float32 arrays from raw bit patterns: every class of float, NaN payloads included
# (drawn as bytes: much faster for hypothesis than element by element)
_bits = st.binary(min_size=4, max_size=1600).map(lambda b: np.frombuffer(b[: len(b) // 4 * 4], dtype=np.uint32).copy())
_bits16 = st.binary(min_size=2, max_size=800).map(lambda b: np.frombuffer(b[: len(b) // 2 * 2], dtype=np.uint16).copy())
_special = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 65504.0, 65519.99, 65520.0, 6.1e-5, 5.96e-8, 2.98e-8, 1e-45,
     3.4028235e38, -3.4028235e38, 1.0, -1.0, 0.1, 1 / 3],
    dtype=np.float32,
)  # fmt: skip


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert a.tobytes() == b.tobytes()


def _matrix(bits, cols):
    x = bits.view(np.float32)
    rows = max(1, len(x) // cols)
    return np.resize(x, rows * cols).reshape(rows, cols)


# -- conversions ---------------------------------------------------------------


@native
@given(_bits)
def test_f32_to_f16_native_equals_fallback(bits):
    x = np.concatenate([bits.view(np.float32), _special])
    _same(K.f32_to_f16_native(x).view(np.uint16), K.f32_to_f16_fallback(x).view(np.uint16))


@given(_bits)
def test_f32_to_f16_is_numpys_cast_except_nan_payloads(bits):
    x = np.concatenate([bits.view(np.float32), _special])
    x = x[~np.isnan(x)]
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    _same(K.f32_to_f16(x).view(np.uint16), want)


def test_f16_nan_stays_nan_with_sign_and_quiet_bit():
    x = np.array([0x7F800001, 0xFF800001, 0x7FC00000, 0x7FBFFFFF], dtype=np.uint32).view(np.float32)
    h = K.f32_to_f16(x).view(np.uint16)
    assert all((v & 0x7C00) == 0x7C00 and (v & 0x200) for v in h)  # NaN, quiet
    assert [bool(v & 0x8000) for v in h] == [False, True, False, False]


@native
@given(_bits16)
def test_f16_to_f32_native_equals_fallback(bits):
    _same(K.f16_to_f32_native(bits).view(np.uint32), K.f16_to_f32_fallback(bits).view(np.uint32))


def test_f16_to_f32_every_pattern_roundtrips():
    h = np.arange(2**16, dtype=np.uint16)
    f = K.f16_to_f32(h)
    finite = (h & 0x7C00) != 0x7C00
    _same(f[finite], h[finite].view(np.float16).astype(np.float32))
    _same(K.f32_to_f16(f).view(np.uint16)[~np.isnan(f)], h[~np.isnan(f)])


@native
@given(_bits)
def test_f32_to_bf16_native_equals_fallback(bits):
    x = np.concatenate([bits.view(np.float32), _special])
    _same(K.f32_to_bf16_native(x), K.f32_to_bf16_fallback(x))


@given(_bits)
def test_f32_to_bf16_is_ml_dtypes_cast_except_nan(bits):
    ml_dtypes = pytest.importorskip("ml_dtypes")  # the bfloat16 reference; comes with recent onnx
    x = np.concatenate([bits.view(np.float32), _special])
    x = x[~np.isnan(x)]
    _same(K.f32_to_bf16(x), x.astype(ml_dtypes.bfloat16).view(np.uint16))


@given(_bits16)
def test_bf16_to_f32_both_ways(bits):
    want = (bits.astype(np.uint32) << 16).view(np.float32)
    _same(K.bf16_to_f32_fallback(bits).view(np.uint32), want.view(np.uint32))
    if K.IMPLEMENTATION == "native":
        _same(K.bf16_to_f32_native(bits).view(np.uint32), want.view(np.uint32))


def test_conversions_keep_shape_and_reject_wrong_widths():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert K.f32_to_f16(x).shape == (2, 3, 4) and K.f32_to_f16(x).dtype == np.float16
    assert K.f32_to_bf16(x).shape == (2, 3, 4) and K.f32_to_bf16(x).dtype == np.uint16
    assert K.f16_to_f32(K.f32_to_f16(x)).shape == (2, 3, 4)
    assert K.f32_to_f16(np.zeros(0, np.float32)).size == 0
    with pytest.raises(K.KernelError, match="16-bit"):
        K.f16_to_f32(np.zeros(3, dtype=np.int64))
    with pytest.raises(K.KernelError, match="scalar"):
        K.f32_to_f16(np.float32(1.0))


# -- normalisation -------------------------------------------------------------


@native
@given(_bits, st.integers(1, 17), st.randoms(use_true_random=False))
def test_normalize_native_equals_fallback(bits, cols, rnd):
    x = _matrix(bits, cols)
    r = np.random.default_rng(rnd.randrange(2**32))
    mean = r.normal(0, 10, cols).astype(np.float32)
    std = r.uniform(1e-3, 5, cols).astype(np.float32) * r.choice([-1, 1], cols)
    _same(K.normalize_native(x, mean, std), K.normalize_fallback(x, mean, std))


def test_normalize_is_subtract_then_divide_in_float32():
    r = np.random.default_rng(1)
    x = r.normal(size=(50, 7)).astype(np.float32)
    mean, std = x.mean(0), x.std(0)
    _same(K.normalize(x, mean, std), (x - mean) / std)
    out = x.copy()
    K.normalize(out, mean, std, out=out)  # in place
    _same(out, (x - mean) / std)


def test_normalize_rejects_bad_statistics():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(K.KernelError, match="shape"):
        K.normalize(x, [0, 0], [1, 1])
    with pytest.raises(K.KernelError, match="non-zero"):
        K.normalize(x, [0, 0, 0], [1, 0, 1])
    with pytest.raises(K.KernelError, match="non-zero"):
        K.normalize(x, [0, np.nan, 0], [1, 1, 1])


# -- argmax and top-k ----------------------------------------------------------


@given(_bits, st.integers(1, 70))
def test_argmax_native_fallback_and_numpy_agree(bits, cols):
    x = _matrix(bits, cols)
    want = np.argmax(x, axis=1)
    _same(K.argmax_fallback(x), want.astype(np.int64))
    if K.IMPLEMENTATION == "native":
        _same(K.argmax_native(x), want.astype(np.int64))


@given(_bits, st.integers(1, 70), st.data())
def test_topk_native_equals_fallback(bits, cols, data):
    x = _matrix(bits, cols)
    k = data.draw(st.integers(0, cols))
    fi, fv = K.topk_fallback(x, k)
    if K.IMPLEMENTATION == "native":
        ni, nv = K.topk_native(x, k)
        _same(ni, fi)
        _same(nv.view(np.uint32), fv.view(np.uint32))


@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 40)),
                  elements=st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, np.inf, -np.inf, np.nan])),
       st.data())  # fmt: skip
def test_topk_order_ties_and_nan(x, data):
    """Best first; equal values (and -0.0 == +0.0, NaN == NaN) in index order; NaN ranks above +inf."""
    k = data.draw(st.integers(1, x.shape[1]))
    idx, val = K.topk(x, k)
    for r in range(x.shape[0]):
        row = x[r]
        rank = np.where(np.isnan(row), np.inf, row)
        nan = np.isnan(row)
        # reference: sort by (NaN first, value descending, index ascending)
        order = sorted(range(len(row)), key=lambda i: (not nan[i], -rank[i] if not nan[i] else 0.0, i))[:k]
        assert idx[r].tolist() == order
        _same(val[r].view(np.uint32), row[order].view(np.uint32))
    _same(idx[:, 0], K.argmax(x))


def test_topk_and_argmax_shapes_and_errors():
    x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    i, v = K.topk(x, 2)
    assert i.shape == (2, 3, 2) and v.shape == (2, 3, 2) and i.dtype == np.int64
    assert K.argmax(x).shape == (2, 3)
    assert K.argmax(x[0, 0]).shape == ()
    assert K.topk(x, 0)[0].shape == (2, 3, 0)
    with pytest.raises(K.KernelError, match="between 0"):
        K.topk(x, 6)
    with pytest.raises(K.KernelError, match="empty"):
        K.argmax(np.zeros((3, 0), np.float32))


# -- implementation choice and the GIL -----------------------------------------


def test_arcnet_native_0_forces_the_fallback():
    code = "from arcnet.native import kernels as K; print(K.IMPLEMENTATION, K.concurrency_max())"
    env = dict(os.environ, ARCNET_NATIVE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["fallback", "None"]


@native
def test_native_kernels_release_the_gil():
    """Two threads inside the C kernels at the same time: impossible if calls held the GIL.

    The kernels count the threads inside them; each thread converts 8 M
    floats (milliseconds of work) per call. With the GIL held the count can
    never pass 1, so the test cannot pass by luck; with it released, the
    two threads overlap within a few calls.
    """
    x = np.random.default_rng(0).normal(size=8_000_000).astype(np.float32)
    want = K.f32_to_f16_fallback(x).view(np.uint16)
    K.concurrency_reset()
    stop = time.monotonic() + 20.0
    errors = []
    barrier = threading.Barrier(2)

    def work():
        barrier.wait()
        while K.concurrency_max() < 2 and time.monotonic() < stop:
            got = K.f32_to_f16(x).view(np.uint16)
            if not np.array_equal(got, want):
                errors.append("wrong result under concurrency")
                return

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert K.concurrency_max() == 2
