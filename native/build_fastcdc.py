"""cffi (API mode) build of the FastCDC kernel: extension ``arcnet.native._fastcdc``.

``setup.py`` compiles every ``native/build_*.py`` ``ffibuilder`` at install
(``pip install -e .`` puts the shared object next to this file, in
``native/``). The C source is read here and handed to cffi as the module's
source text, so the build does not depend on the working directory that
setuptools runs in.

By hand (for example after editing ``fastcdc.c``)::

    python native/build_fastcdc.py     # writes native/_fastcdc.*.so

The GIL: in API mode cffi releases the GIL around every call to a C
function declared in ``cdef`` (the kernel touches no Python object), so
threads chunk in parallel; ``tests/test_fastcdc.py`` checks it.
"""

import os
import sys

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))

CDEF = """
size_t arc_fastcdc_cuts(const uint8_t *data, size_t n, int eof,
                        size_t min_size, size_t avg_size, size_t max_size,
                        uint64_t mask_s, uint64_t mask_l,
                        const uint64_t *gear,
                        uint64_t *cuts, size_t cuts_cap);
"""

with open(os.path.join(_HERE, "fastcdc.c"), encoding="utf-8") as _f:
    _SOURCE = _f.read()

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "arcnet.native._fastcdc",
    _SOURCE,
    extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
)

if __name__ == "__main__":
    # Build in place: the compiled module lands in native/ (which imports as
    # arcnet.native), where an editable install looks for it.
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        lib = ffibuilder.compile(tmpdir=tmp, verbose=False)
        dest = os.path.join(_HERE, os.path.basename(lib))
        shutil.copyfile(lib, dest)
        print(dest)
