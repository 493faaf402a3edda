"""C kernels called through cffi (API mode), each with a NumPy/pure-Python twin.

Convention: ``native/build_<name>.py`` defines ``ffibuilder`` for the
extension ``arcnet.native._<name>`` (compiled at install by ``setup.py``;
a failed compile never fails the install). ``native/<name>.py`` is the
Python face: it imports the compiled module if it is there and falls back
to the twin otherwise. Setting ``ARCNET_NATIVE=0`` forces every fallback.
Each face exposes ``IMPLEMENTATION`` (``"native"`` or ``"fallback"``), which
run manifests record.
"""

import os

FORCE_FALLBACK = os.environ.get("ARCNET_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")
