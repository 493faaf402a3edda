"""Where the runtime gets model bytes and keeps catalog entries, until the blob store serves them.

The runtime needs one thing from storage: the ONNX bytes of a model id.
:class:`ModelStore` is that interface (``get(model_id) -> bytes``, ``KeyError``
when absent); the blob store will implement it over its chunk store, with
model ids being artifact ids. Two stand-ins live here:

* :class:`MemoryModelStore` -- a dict, for tests and the simulator.
* :class:`ModelDir` -- a local directory, for ``arcnet model publish`` and
  ``arcnet model ls`` before the daemon wiring::

      <root>/models/<hex>.onnx               ONNX bytes, named by BLAKE3
      <root>/catalog/<name>@<version>.entry  signed ModelEntry (wire bytes)

Model ids here are content ids, ``"blake3:<64 hex>"`` (:func:`content_id`),
the artifact-reference form the audit log uses. Reads verify: bytes whose
hash is not their id are refused, as the blob store refuses a bad chunk.
Writes are atomic (temp file, fsync, rename).

Knowingly left out: eviction and size bounds on disk (the blob store's
garbage collector will own them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Protocol

import blake3

from .catalog import Catalog, CatalogError, ModelEntry, entry_from_bytes, entry_to_bytes

__all__ = [
    "MODEL_MAX_BYTES",
    "MemoryModelStore",
    "ModelDir",
    "ModelStore",
    "StoreError",
    "content_id",
]

MODEL_MAX_BYTES = 2 << 30  # 2 GiB: ONNX's protobuf limit for a single-file model
_ID_RE = re.compile(r"^blake3:[0-9a-f]{64}$")


class StoreError(Exception):
    """Missing or corrupt stored data; the message says what to do."""


def content_id(data: bytes) -> str:
    """``"blake3:<hex>"``: the content id of ``data`` (model ids, input and output hashes)."""
    return "blake3:" + blake3.blake3(data).hexdigest()


class ModelStore(Protocol):
    def get(self, model_id: str) -> bytes:
        """The ONNX bytes of ``model_id``; ``KeyError`` if this peer does not hold them."""
        ...


class MemoryModelStore:
    """Model bytes in a dict, keyed by content id."""

    def __init__(self) -> None:
        self._models: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        if len(data) > MODEL_MAX_BYTES:
            raise StoreError(f"model of {len(data)} bytes exceeds {MODEL_MAX_BYTES}")
        mid = content_id(data)
        self._models[mid] = bytes(data)
        return mid

    def get(self, model_id: str) -> bytes:
        return self._models[model_id]

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._models

    def ids(self) -> list[str]:
        return sorted(self._models)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ModelDir:
    """Models and signed catalog entries in a local directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.models = self.root / "models"
        self.catalog_dir = self.root / "catalog"

    def _model_path(self, model_id: str) -> Path:
        if not _ID_RE.match(model_id):
            raise StoreError(f"not a content id: {model_id!r} (expected blake3:<64 hex digits>)")
        return self.models / (model_id.split(":", 1)[1] + ".onnx")

    def put(self, data: bytes) -> str:
        if len(data) > MODEL_MAX_BYTES:
            raise StoreError(f"model of {len(data)} bytes exceeds {MODEL_MAX_BYTES}")
        mid = content_id(data)
        path = self._model_path(mid)
        if not path.exists():
            _atomic_write(path, data)
        return mid

    def get(self, model_id: str) -> bytes:
        path = self._model_path(model_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(model_id) from None
        if content_id(data) != model_id:
            raise StoreError(f"{path}: content does not match its id (corrupt); delete it and publish again")
        return data

    def __contains__(self, model_id: str) -> bool:
        try:
            return self._model_path(model_id).exists()
        except StoreError:
            return False

    def save_entry(self, entry: ModelEntry) -> Path:
        m = entry.meta
        path = self.catalog_dir / f"{m.name}@{m.version}.entry"
        _atomic_write(path, entry_to_bytes(entry))
        return path

    def iter_entries(self) -> Iterator[tuple[Path, ModelEntry | CatalogError]]:
        """Every stored entry file with its decoded entry, or the error that refused it."""
        if not self.catalog_dir.is_dir():
            return
        for path in sorted(self.catalog_dir.glob("*.entry")):
            try:
                yield path, entry_from_bytes(path.read_bytes())
            except CatalogError as exc:
                yield path, exc

    def load_catalog(self) -> Catalog:
        """A catalog of every valid stored entry (bad files are skipped; ``iter_entries`` names them)."""
        cat = Catalog()
        cat.merge(e for _, e in self.iter_entries() if isinstance(e, ModelEntry))
        return cat
