"""cffi build (API mode) of the runtime's pre/post-processing kernels.

``setup.py`` compiles this at install as the extension
``arcnet.native._kernels``; ``kernels.py`` is its Python face. To build by
hand (for instance while editing ``kernels.c``)::

    python native/build_kernels.py      # writes native/_kernels.*.so

Compiler flags: -O3 lets GCC vectorise the loops; -ffp-contract=off
forbids fused multiply-add, so every result is rounded exactly as NumPy
rounds it; -fno-trapping-math lets selects become vector blends (nothing
reads the FP exception flags). The GIL: in API mode cffi releases it around
every call to a function declared in ``CDEF`` (the kernels touch no Python
object); ``tests/test_kernels.py`` checks that two threads are inside the
kernels at once. No -march: the extension must run on any x86-64
(or Arm) machine the wheel lands on.
"""

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

CDEF = """
int arc_normalize_f32(const float *x, float *out, int64_t rows, int64_t cols,
                      const float *mean, const float *std);
int arc_argmax_f32(const float *x, int64_t rows, int64_t cols, int64_t *idx);
int arc_topk_f32(const float *x, int64_t rows, int64_t cols, int64_t k,
                 int64_t *idx, float *val);
void arc_f32_to_f16(const uint32_t *x, uint16_t *out, int64_t n);
void arc_f16_to_f32(const uint16_t *h, uint32_t *out, int64_t n);
void arc_f32_to_bf16(const uint32_t *x, uint16_t *out, int64_t n);
void arc_bf16_to_f32(const uint16_t *b, uint32_t *out, int64_t n);
int64_t arc_concurrency_max(void);
void arc_concurrency_reset(void);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
with open(os.path.join(HERE, "kernels.c"), encoding="utf-8") as f:
    _SOURCE = f.read()
ffibuilder.set_source(
    "arcnet.native._kernels",
    _SOURCE,
    extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math", "-std=gnu11"],
    libraries=["m"],
)

if __name__ == "__main__":
    # Build in place: the compiled module lands in native/ (imported as
    # arcnet.native), where an editable install looks for it.
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        lib = ffibuilder.compile(tmpdir=tmp, verbose=False)
        dest = os.path.join(HERE, os.path.basename(lib))
        shutil.copyfile(lib, dest)
        print(dest)
