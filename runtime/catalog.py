"""The model catalog: signed model metadata, merged as a set keyed by (name, version).

A model is an artifact (its ONNX bytes, addressed by ``model_id``) plus a
:class:`ModelMeta` that its publisher signs: the task it does, the
input/output signature read from the ONNX graph, a cost and latency
profile, evaluation scores, and its lineage (``parent_id``, the model it
was fine-tuned from). The router chooses among these entries; the runners
read the signature; ``arcnet model ls`` shows them.

Encoding: metadata is a :mod:`arcnet.mesh.wire` struct, so decoding is
strict and bounded like every other message, and its canonical bytes are
the codec's msgpack array (fields in declaration order, ints in shortest
form, floats as float64, scores sorted by metric with no repeats). A
received entry is re-encoded before it is verified, so a non-canonical
encoding cannot pass. The signature is Ed25519 by the publisher
(:mod:`arcnet.mesh.identity`) over ``"arcnet/model-meta/v1\\0"`` + the
canonical bytes, checked against the key inside the publisher's peer id.

Merging: :class:`Catalog` is a state-based CRDT. Its state is a map from
``(name, version)`` to one entry; merging keeps, per key, the entry with the
smallest ``(published_s, entry hash)`` -- first publish wins, ties broken by
hash, never by arrival order -- so merge is commutative, associative and
idempotent, and peers that have seen the same entries hold the same
catalog (same :meth:`Catalog.digest`) whatever order gossip brought them
in. A version, once published, is immutable: republishing different bytes
under a taken (name, version) loses to the original everywhere.

Units: ``latency_ms_p50`` is one call at batch 1 on the publisher's peer
(0 = not measured); ``latency_ms_per_item`` the added time per extra row in
a batch; ``cost_per_1k`` is in cost units per 1,000 items, where one unit is
one giga-multiply-accumulate unless the publisher says otherwise (the
static MAC count of the graph's Gemm/MatMul nodes gives the default).

Knowingly left out: who may publish under a name (project grants, an
admission-layer matter; here any signed entry counts); deletion and
deprecation (a tombstone entry type, later); delta sync (gossip will carry
entries, this module gives it :meth:`Catalog.digest` and :meth:`Catalog.keys`).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import blake3
import msgpack
import numpy as np
import onnx
from onnx import helper

from arcnet.mesh import identity as _identity
from arcnet.mesh.wire import F64, PEER_ID, SIG, U8, U64, Float, List, Message, Str, WireError, decode, encode

__all__ = [
    "CATALOG_PROTOCOL",
    "Catalog",
    "CatalogError",
    "ModelEntry",
    "ModelMeta",
    "Score",
    "TensorSig",
    "check_meta",
    "describe",
    "entry_from_bytes",
    "entry_hash",
    "entry_summary",
    "entry_to_bytes",
    "meta_bytes",
    "sign_meta",
    "signature_of",
    "verify_entry",
    "version_key",
]

CATALOG_PROTOCOL = "catalog"
FORMAT = 1
_SIG_DOMAIN = b"arcnet/model-meta/v1\0"
_HASH_DOMAIN = b"arcnet/model-entry/v1\0"

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
VERSION_RE = re.compile(r"^\d{1,9}(\.\d{1,9}){0,3}$")
TASK_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
ENTRIES_MAX = 100_000  # per catalog: ~1 KiB each, ~100 MiB at the bound
LINEAGE_MAX = 256  # generations followed by Catalog.lineage


class CatalogError(ValueError):
    """An entry that is malformed, inconsistent or badly signed; the message says which."""


class TensorSig(Message):
    """One input or output of a model: name, NumPy dtype name, shape (digits or a symbol per axis)."""

    name = Str(128, 1)
    dtype = Str(16, 1)
    shape = List(Str(32, 1), 8)


class Score(Message):
    metric = Str(64, 1)
    value = F64


class ModelMeta(Message):
    """What a publisher says about a model, and signs."""

    format = U8
    name = Str(128, 1)
    version = Str(32, 1)
    model_id = Str(128, 1)  # the artifact id of the ONNX bytes, e.g. "blake3:<hex>"
    project = Str(64, 1)
    task = Str(32, 1)
    inputs = List(TensorSig, 16)
    outputs = List(TensorSig, 16)
    size_bytes = U64
    params = U64  # weights in the graph's initialisers
    macs_per_item = U64  # static estimate, Gemm/MatMul only
    latency_ms_p50 = Float(0.0, 1e7)
    latency_ms_per_item = Float(0.0, 1e7)
    cost_per_1k = Float(0.0, 1e12)
    scores = List(Score, 32)  # sorted by metric, no repeats
    parent_id = Str(128)  # model_id of the parent; "" for none
    publisher = PEER_ID
    published_s = U64  # publisher's wall clock, seconds since the epoch


class ModelEntry(Message, tag=0x0701, protocol=CATALOG_PROTOCOL):
    """A signed catalog entry: what gossip carries and the model directory stores."""

    meta = ModelMeta
    signature = SIG


# --------------------------------------------------------------------------
# reading a graph


def _dims(value_info: onnx.ValueInfoProto) -> list[str]:
    shape = value_info.type.tensor_type.shape
    out = []
    for d in shape.dim:
        if d.HasField("dim_value"):
            out.append(str(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param[:32])
        else:
            out.append("?")
    return out


def _sig(value_info: onnx.ValueInfoProto) -> TensorSig:
    elem = value_info.type.tensor_type.elem_type
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name
    except (KeyError, TypeError, ValueError):
        dtype = f"onnx{elem}"
    return TensorSig(value_info.name, dtype, _dims(value_info))


def signature_of(model: onnx.ModelProto | bytes) -> tuple[list[TensorSig], list[TensorSig]]:
    """Inputs (initialisers excluded) and outputs of an ONNX model."""
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    inits = {i.name for i in model.graph.initializer}
    inputs = [_sig(v) for v in model.graph.input if v.name not in inits]
    outputs = [_sig(v) for v in model.graph.output]
    return inputs, outputs


def _static_cost(model: onnx.ModelProto) -> tuple[int, int]:
    """(weights, multiply-accumulates per input row) from initialisers and Gemm/MatMul nodes."""
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    params = sum(int(np.prod(s)) if s else 1 for s in shapes.values())
    macs = 0
    for node in model.graph.node:
        if node.op_type in ("Gemm", "MatMul") and len(node.input) >= 2 and node.input[1] in shapes:
            s = shapes[node.input[1]]
            if len(s) == 2:
                macs += s[0] * s[1]
    return params, macs


def describe(
    model_bytes: bytes,
    *,
    name: str,
    version: str,
    task: str,
    model_id: str,
    publisher: str,
    published_s: int,
    project: str = "public",
    parent_id: str = "",
    scores: dict[str, float] | None = None,
    latency_ms_p50: float = 0.0,
    latency_ms_per_item: float = 0.0,
    cost_per_1k: float | None = None,
) -> ModelMeta:
    """The metadata of a model, its signature and static cost read from the graph (unsigned)."""
    try:
        model = onnx.load_from_string(model_bytes)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise CatalogError(f"not an ONNX model: {type(exc).__name__}") from None
    inputs, outputs = signature_of(model)
    params, macs = _static_cost(model)
    if cost_per_1k is None:
        cost_per_1k = macs * 1000 / 1e9
    meta = ModelMeta(
        format=FORMAT,
        name=name,
        version=version,
        model_id=model_id,
        project=project,
        task=task,
        inputs=inputs,
        outputs=outputs,
        size_bytes=len(model_bytes),
        params=params,
        macs_per_item=macs,
        latency_ms_p50=float(latency_ms_p50),
        latency_ms_per_item=float(latency_ms_per_item),
        cost_per_1k=float(cost_per_1k),
        scores=[Score(k, float(v)) for k, v in sorted((scores or {}).items())],
        parent_id=parent_id,
        publisher=publisher,
        published_s=int(published_s),
    )
    check_meta(meta)
    return meta


# --------------------------------------------------------------------------
# checks, canonical bytes, signatures


def version_key(version: str) -> tuple[int, ...]:
    """Sort key of a dotted version: "1.10" after "1.9"; "1" before "1.0"."""
    return tuple(int(p) for p in version.split("."))


def check_meta(meta: ModelMeta) -> None:
    """Raise :class:`CatalogError` unless ``meta`` is well-formed (types, bounds, syntax, order)."""
    try:
        meta.validate()
    except WireError as exc:
        raise CatalogError(f"model metadata: {exc}") from None
    if meta.format != FORMAT:
        raise CatalogError(f"model metadata format {meta.format} (this peer reads {FORMAT})")
    if not NAME_RE.match(meta.name):
        raise CatalogError(f"model name {meta.name!r}: use lower-case letters, digits, '.', '_' and '-'")
    if not VERSION_RE.match(meta.version):
        raise CatalogError(f"model version {meta.version!r}: use dotted integers such as 1.2.0")
    if not TASK_RE.match(meta.task):
        raise CatalogError(f"task {meta.task!r}: use a lower-case word such as classify or score")
    metrics = [s.metric for s in meta.scores]
    if metrics != sorted(set(metrics)):
        raise CatalogError("scores must be sorted by metric with no repeats")
    if meta.parent_id == meta.model_id:
        raise CatalogError("a model cannot be its own parent")


def meta_bytes(meta: ModelMeta) -> bytes:
    """Canonical bytes of ``meta`` (what is signed and hashed)."""
    return msgpack.packb(meta._to_fields(), use_bin_type=True)


def entry_hash(entry: ModelEntry) -> bytes:
    """32-byte BLAKE3 of an entry's canonical metadata: its identity in merges."""
    return blake3.blake3(_HASH_DOMAIN + meta_bytes(entry.meta)).digest()


def sign_meta(meta: ModelMeta, ident: _identity.Identity) -> ModelEntry:
    """Sign ``meta`` as its publisher; ``meta.publisher`` must be ``ident``'s peer id."""
    check_meta(meta)
    if meta.publisher != ident.peer_id:
        raise CatalogError("the metadata names another publisher than the signing key")
    return ModelEntry(meta, ident.sign(_SIG_DOMAIN + meta_bytes(meta)))


def verify_entry(entry: ModelEntry) -> None:
    """Raise :class:`CatalogError` unless ``entry`` is well-formed and signed by its publisher."""
    check_meta(entry.meta)
    if not _identity.verify_peer(entry.meta.publisher, _SIG_DOMAIN + meta_bytes(entry.meta), entry.signature):
        raise CatalogError(
            f"model {entry.meta.name}@{entry.meta.version}: bad signature "
            f"(not signed by publisher {entry.meta.publisher[-8:]})"
        )


def entry_to_bytes(entry: ModelEntry) -> bytes:
    return encode(entry)


def entry_from_bytes(data: bytes) -> ModelEntry:
    """Decode strictly and verify; raises :class:`CatalogError`."""
    try:
        msg = decode(data)
    except WireError as exc:
        raise CatalogError(f"catalog entry: {exc}") from None
    if not isinstance(msg, ModelEntry):
        raise CatalogError(f"catalog entry: got a {type(msg).__name__} message")
    verify_entry(msg)
    return msg



# --------------------------------------------------------------------------
# the catalog


class Catalog:
    """A mergeable set of verified model entries keyed by (name, version).

    Not thread-safe: one owner (the peer's catalog core) mutates it.
    """

    def __init__(self, entries_max: int = ENTRIES_MAX):
        if entries_max < 1:
            raise ValueError("entries_max must be >= 1")
        self.entries_max = entries_max
        self._by_key: dict[tuple[str, str], ModelEntry] = {}
        self._hash: dict[tuple[str, str], bytes] = {}
        self._ids: dict[str, set[tuple[str, str]]] = {}  # model_id -> keys that name it
        self._added = 0
        self._replaced = 0
        self._duplicates = 0
        self._conflicts_lost = 0
        self._rejected = 0
        self._refused_full = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._by_key

    def add(self, entry: ModelEntry) -> bool:
        """Verify and merge one entry; True if the catalog changed. Raises CatalogError if bad."""
        try:
            verify_entry(entry)
        except CatalogError:
            self._rejected += 1
            raise
        key = (entry.meta.name, entry.meta.version)
        old = self._by_key.get(key)
        if old is None:
            if len(self._by_key) >= self.entries_max:
                self._refused_full += 1
                raise CatalogError(f"catalog full ({self.entries_max} entries); raise entries_max")
            self._put(key, entry, entry_hash(entry))
            self._added += 1
            return True
        h = entry_hash(entry)
        if h == self._hash[key]:
            self._duplicates += 1
            return False
        if (entry.meta.published_s, h) < (old.meta.published_s, self._hash[key]):
            self._ids[old.meta.model_id].discard(key)
            if not self._ids[old.meta.model_id]:
                del self._ids[old.meta.model_id]
            self._put(key, entry, h)
            self._replaced += 1
            return True
        self._conflicts_lost += 1
        return False

    def _put(self, key: tuple[str, str], entry: ModelEntry, h: bytes) -> None:
        self._by_key[key] = entry
        self._hash[key] = h
        self._ids.setdefault(entry.meta.model_id, set()).add(key)

    def merge(self, entries: Iterable[ModelEntry] | "Catalog") -> int:
        """Merge many entries (or another catalog); returns how many changed this one.

        Bad entries are counted (``rejected`` in statistics) and skipped: one
        forged entry in a gossip batch must not stop the rest.
        """
        if isinstance(entries, Catalog):
            entries = entries.entries()
        changed = 0
        for e in entries:
            try:
                changed += self.add(e)
            except CatalogError:
                continue
        return changed

    # -- queries -----------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> ModelEntry | None:
        """The entry of ``name@version``, or the latest version of ``name``."""
        if version is not None:
            return self._by_key.get((name, version))
        versions = self.versions(name)
        return self._by_key[(name, versions[-1])] if versions else None

    def resolve(self, ref: str) -> ModelEntry | None:
        """``name@version``, ``name`` (latest) or a model id."""
        if "@" in ref:
            name, _, version = ref.partition("@")
            return self.get(name, version)
        return self.get(ref) or self.by_id(ref)

    def versions(self, name: str) -> list[str]:
        return sorted((v for (n, v) in self._by_key if n == name), key=version_key)

    def by_id(self, model_id: str) -> ModelEntry | None:
        """An entry for ``model_id`` (the first by name and version if several)."""
        keys = self._ids.get(model_id)
        if not keys:
            return None
        return self._by_key[min(keys, key=lambda k: (k[0], version_key(k[1])))]

    def entries(self, task: str | None = None) -> list[ModelEntry]:
        """Every entry, ordered by (name, version), optionally of one task."""
        keys = sorted(self._by_key, key=lambda k: (k[0], version_key(k[1])))
        out = [self._by_key[k] for k in keys]
        return [e for e in out if e.meta.task == task] if task is not None else out

    def keys(self) -> list[tuple[tuple[str, str], bytes]]:
        """(key, entry hash) pairs, sorted: what anti-entropy compares."""
        return sorted(self._hash.items())

    def lineage(self, ref: str) -> list[ModelEntry]:
        """``ref``'s entry, then its parent's, and so on (as far as this catalog knows)."""
        out: list[ModelEntry] = []
        seen: set[str] = set()
        e = self.resolve(ref)
        while e is not None and len(out) < LINEAGE_MAX and e.meta.model_id not in seen:
            out.append(e)
            seen.add(e.meta.model_id)
            e = self.by_id(e.meta.parent_id) if e.meta.parent_id else None
        return out

    def children(self, model_id: str) -> list[ModelEntry]:
        return [e for e in self.entries() if e.meta.parent_id == model_id]

    def digest(self) -> bytes:
        """32-byte BLAKE3 over the sorted (key, entry hash) pairs: equal iff same entries."""
        h = blake3.blake3(b"arcnet/catalog-digest/v1\0")
        for (name, version), eh in self.keys():
            h.update(msgpack.packb([name, version, eh], use_bin_type=True))
        return h.digest()

    def statistics(self) -> dict[str, int]:
        return {
            "entries": len(self._by_key),
            "entries_max": self.entries_max,
            "added": self._added,
            "replaced": self._replaced,
            "duplicates": self._duplicates,
            "conflicts_lost": self._conflicts_lost,
            "rejected": self._rejected,
            "refused_full": self._refused_full,
        }


def entry_summary(entry: ModelEntry) -> dict[str, Any]:
    """Plain values for tables, JSON output and job status."""
    m = entry.meta
    return {
        "name": m.name,
        "version": m.version,
        "task": m.task,
        "model_id": m.model_id,
        "project": m.project,
        "inputs": [f"{t.name}:{t.dtype}[{','.join(t.shape)}]" for t in m.inputs],
        "outputs": [f"{t.name}:{t.dtype}[{','.join(t.shape)}]" for t in m.outputs],
        "size_bytes": m.size_bytes,
        "params": m.params,
        "macs_per_item": m.macs_per_item,
        "latency_ms_p50": m.latency_ms_p50,
        "latency_ms_per_item": m.latency_ms_per_item,
        "cost_per_1k": m.cost_per_1k,
        "scores": {s.metric: s.value for s in m.scores},
        "parent_id": m.parent_id,
        "publisher": m.publisher,
        "published_s": m.published_s,
    }

