"""FastCDC: the C kernel and its NumPy twin cut at the same places; the C call releases the GIL."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.native import fastcdc

native = pytest.mark.skipif(fastcdc.IMPLEMENTATION != "native", reason="native FastCDC kernel not built")


@st.composite
def params(draw):
    lo = draw(st.integers(64, 600))
    avg = draw(st.integers(lo, 4 * lo))
    hi = draw(st.integers(avg, 4 * avg))
    return fastcdc.Params(lo, avg, hi)


@st.composite
def data_for(draw):
    p = draw(params())
    kind = draw(st.sampled_from(["random", "runs", "text"]))
    n = draw(st.integers(0, 12 * p.max_size))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    if kind == "random":
        data = rnd.randbytes(n)
    elif kind == "runs":  # long runs of one byte: no cut in them but at max
        data = b"".join(bytes([rnd.randrange(3)]) * rnd.randrange(1, 500) for _ in range(n // 100 + 1))[:n]
    else:
        words = [b"alpha", b"beta", b"gamma", b"delta", b"\n"]
        data = b" ".join(rnd.choice(words) for _ in range(n // 4 + 1))[:n]
    return p, data


def check_shape(cuts, data, p, eof=True):
    assert cuts == sorted(set(cuts))
    if eof:
        assert (cuts[-1] if cuts else 0) == len(data)
    sizes = [b - a for a, b in zip([0] + cuts, cuts)]
    for k, s in enumerate(sizes):
        last = eof and k == len(sizes) - 1
        assert s <= p.max_size
        assert s >= p.min_size or last


@native
@settings(max_examples=300)
@given(data_for(), st.booleans())
def test_native_and_fallback_cut_identically(case, eof):
    p, data = case
    a = fastcdc.cut_points_native(data, p, eof=eof)
    b = fastcdc.cut_points_fallback(data, p, eof=eof)
    assert a == b
    check_shape(a, data, p, eof)


@settings(max_examples=60)
@given(data_for(), st.integers(1, 5000))
def test_streaming_equals_one_shot(case, read_bytes):
    p, data = case
    pos = 0

    def read(n):
        nonlocal pos
        out = data[pos : pos + n]
        pos += len(out)
        return out

    chunks = list(fastcdc.iter_cuts(read, p, read_bytes=read_bytes))
    assert b"".join(chunks) == data
    cuts = fastcdc.cut_points(data, p)
    assert [len(c) for c in chunks] == [b - a for a, b in zip([0] + cuts, cuts)]


def test_gear_table_and_cut_points_are_pinned():
    # chunk ids of every stored dataset depend on these; a change must be deliberate
    assert fastcdc.GEAR[0] == 0x88DDE8A6FF4B1438 and fastcdc.GEAR[255] == 0x8834CBD665786BF6
    table = b"".join(x.to_bytes(8, "little") for x in fastcdc.GEAR)
    assert blake3.blake3(table).hexdigest()[:16] == "45995ec0c28fb7ed"
    data = random.Random(2024).randbytes(4 << 20)
    p = fastcdc.Params(4096, 16384, 65536)
    for cut in (fastcdc.cut_points, fastcdc.cut_points_fallback):
        cuts = cut(data, p)
        assert len(cuts) == 227 and cuts[:3] == [26776, 59212, 76865]
        assert blake3.blake3(repr(cuts).encode()).hexdigest()[:16] == "e7e74a5e49583362"


def test_average_size_is_near_the_target():
    data = random.Random(3).randbytes(8 << 20)
    p = fastcdc.Params(8192, 32768, 131072)
    cuts = fastcdc.cut_points(data, p)
    mean = len(data) / len(cuts)
    assert 0.8 * p.avg_size < mean < 1.5 * p.avg_size


def test_params_are_checked():
    with pytest.raises(ValueError):
        fastcdc.Params(32, 64, 128)  # min below the 64-byte window
    with pytest.raises(ValueError):
        fastcdc.Params(1024, 512, 4096)


def test_force_fallback_with_env():
    code = "from arcnet.native import fastcdc; print(fastcdc.IMPLEMENTATION)"
    env = dict(os.environ, ARCNET_NATIVE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "fallback", out.stderr


@native
def test_native_call_releases_the_gil():
    """While one thread is inside the C loop, another thread runs Python code.

    The switch interval is raised to 5 s and the other thread gives the GIL
    up at every step (``sleep(0)``), so the only way it can run while this
    thread is busy is that this thread let go of the GIL: a C call that
    holds it (``bytes.count``, checked here as the control) moves the
    counter by exactly 0.
    """
    data = random.Random(1).randbytes(48 << 20)
    p = fastcdc.Params(256 << 10, 1 << 20, 4 << 20)
    counter = 0
    stop = threading.Event()
    started = threading.Event()

    def spin():
        nonlocal counter
        started.set()
        while not stop.is_set():
            counter += 1
            time.sleep(0)  # hands the GIL back at once: never holds up this thread

    def moved_during(fn):
        before = counter
        fn()
        return counter - before

    old = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    t = threading.Thread(target=spin)
    t.start()
    started.wait()
    try:
        held = [moved_during(lambda: data.count(b"\x00\x01\x02\x03")) for _ in range(2)]
        released = [moved_during(lambda: fastcdc.cut_points_native(data, p)) for _ in range(3)]
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    assert held == [0, 0], held  # the control: a call that keeps the GIL
    assert max(released) > 20, released


@native
def test_two_threads_chunk_in_parallel_with_the_same_result():
    blobs = [random.Random(s).randbytes(16 << 20) for s in (1, 2)]
    p = fastcdc.Params(16 << 10, 64 << 10, 256 << 10)
    expected = [fastcdc.cut_points_native(b, p) for b in blobs]
    results = [None, None]

    def work(k):
        results[k] = fastcdc.cut_points_native(blobs[k], p)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected
