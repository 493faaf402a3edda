"""Build hook for the C kernels in native/ (cffi, API mode).

Each ``native/build_*.py`` defines an ``ffibuilder``; they are compiled at
install. A machine without a working C compiler still installs: the build
failure is reported and every kernel falls back to its NumPy/pure-Python
twin (see ``arcnet.native``).
"""
import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Compile the kernels if we can; never fail the install because of them."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            print(f"arcnet: native kernels not built ({exc}); using fallbacks", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"arcnet: native kernel {ext.name} not built ({exc}); using fallback", file=sys.stderr)


here = os.path.dirname(os.path.abspath(__file__))
builders = sorted(glob.glob(os.path.join(here, "native", "build_*.py")))
setup(
    cffi_modules=[os.path.relpath(b, here) + ":ffibuilder" for b in builders],
    cmdclass={"build_ext": OptionalBuildExt},
)
