"""Job runners: online and batch inference, fine-tuning, and workflow DAGs, each ending in a run manifest.

A job is a :class:`Job` (its kind, a model reference, plain parameters) and
named input bytes; :func:`run_job` runs it on this peer and returns the
named output bytes and a :class:`~arcnet.runtime.manifest.RunManifest`.
Inputs and outputs are bytes because they are artifacts: arrays travel as
``.npy`` (``allow_pickle=False``), structured data as msgpack with sorted
keys; every one is hashed (``blake3:<hex>``) into the manifest.

Kinds (the workload classes of :mod:`arcnet.placement`):

* ``online`` -- one request: the model's named inputs (``.npy``) in, every
  output (or ``params["outputs"]``) out as ``.npy``. Optional
  ``normalize`` (``{"input", "mean", "std"}``) before and ``top_k``
  (``{"output", "k"}``) after, through the native kernels. Online traffic
  under load goes through :class:`~arcnet.runtime.online.OnlineBatcher`.
* ``batch`` -- ``records`` in (msgpack ``[{"id": str, "x": [float...]}...]``
  or one ``.npy`` matrix), run in chunks of ``batch_size`` rows; out come
  ``results`` (msgpack ``[{"id", "label", "top": [[class, value]...]}...]``)
  and ``output`` (the whole output matrix as ``.npy``).
* ``finetune`` -- ``x`` (``.npy`` features) and ``y`` (``.npy`` int labels)
  in; the parent model's ``embedding`` output is computed for every row, a
  new softmax head is fitted with NumPy on a seeded split, the parent graph
  is exported with the new head (onnx helper API), and both models are
  scored on the held-out rows. Out come ``model`` (the new ONNX bytes) and
  ``meta`` (msgpack: name, version, task, ``parent_id``, scores).
  :func:`finetune_entry` turns them into a signed catalog entry whose
  lineage points to the parent.
* ``workflow`` -- a DAG of steps (``params["spec"]``): each step consumes
  the outputs of the steps it names in ``deps`` (or job inputs, as
  ``input:<name>``) and yields one output. Ops: ``infer``, ``normalize``,
  ``topk``, ``propose``, ``score``, ``refine``, ``select``. A step that
  names a ``task`` instead of a ``model`` is routed (its reasons go into
  the manifest). :func:`agent_workflow` builds the example agent loop:
  propose -> evaluate -> refine, unrolled for a number of rounds.

A model reference is a model id (``blake3:<hex>``), ``name@version``,
``name`` (latest), or ``task:<task>`` to let the router choose. The
manifest records the model id actually used, and a rerun uses that id.

Determinism: everything seeded comes from ``params`` (``seed``), fitting is
full-batch, ONNX export is deterministic, and the executor runs in its
deterministic mode, so :func:`arcnet.runtime.manifest.rerun` reproduces the
outputs bit for bit on CPU.

Knowingly left out: streaming inputs larger than memory (batch jobs read
their input artifact whole; sharding is placement's job), and training
anything but a model's head.
"""

from __future__ import annotations

import io
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import msgpack
import numpy as np

from arcnet.mesh.identity import Identity
from arcnet.native import kernels

from . import models as _models
from .catalog import Catalog, ModelEntry, describe, sign_meta
from .executor import CUDA, Executor
from .manifest import POWER_W_GPU, POWER_W_PER_CPU_THREAD, RunManifest, canonical_bytes
from .router import RouteError, RouteRequest, RouterConfig, route
from .store import ModelStore, content_id

__all__ = [
    "ARRAY_MAX_BYTES",
    "KINDS",
    "OPS",
    "Job",
    "JobError",
    "RunContext",
    "RunResult",
    "agent_workflow",
    "decode_array",
    "decode_msg",
    "encode_array",
    "encode_msg",
    "finetune_entry",
    "publish_model",
    "run_job",
]

KINDS = ("online", "batch", "finetune", "workflow")
ARRAY_MAX_BYTES = 1 << 30  # one input or output array
MSG_MAX_BYTES = 256 << 20  # one msgpack input
RECORDS_MAX = 1_000_000  # rows of a batch job
STEPS_MAX = 64  # steps of a workflow (as placement's JobSpec)
DEPS_MAX = 16
TEXTS_MAX = 4096  # candidates in an agent step
_STEP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_ARRAY_KINDS = "fiub"  # float, signed, unsigned, bool: never object arrays


class JobError(Exception):
    """A job that cannot run as given; the message is one line that says what to fix."""


# --------------------------------------------------------------------------
# bytes in, bytes out


def encode_array(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def decode_array(data: bytes, what: str = "input") -> np.ndarray:
    """A ``.npy`` array of numbers; refuses pickles, objects and oversized data."""
    if len(data) > ARRAY_MAX_BYTES:
        raise JobError(f"{what}: {len(data)} bytes exceeds the array limit of {ARRAY_MAX_BYTES}")
    if not data.startswith(b"\x93NUMPY"):
        raise JobError(f"{what}: not a .npy array")
    try:
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, EOFError, ...
        raise JobError(f"{what}: unreadable .npy ({type(exc).__name__})") from None
    if a.dtype.kind not in _ARRAY_KINDS:
        raise JobError(f"{what}: arrays of {a.dtype} are not accepted")
    return a


def encode_msg(obj: Any) -> bytes:
    return canonical_bytes(obj)


def decode_msg(data: bytes, what: str = "input") -> Any:
    n = len(data)
    if n > MSG_MAX_BYTES:
        raise JobError(f"{what}: {n} bytes exceeds the limit of {MSG_MAX_BYTES}")
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_str_len=n, max_bin_len=n,
            max_array_len=n, max_map_len=n, max_ext_len=0,
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types
        raise JobError(f"{what}: not msgpack ({type(exc).__name__})") from None


# --------------------------------------------------------------------------
# jobs and their context


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RunContext:
    """What a runner needs from its peer.

    ``power_w``: busy power for the energy estimate (None: 300 W on a GPU
    peer, 12 W per intra-op thread on CPU). ``wall_ms`` and ``perf_s`` are
    the clocks (injected so a simulator can drive them).
    """

    executor: Executor
    models: ModelStore
    catalog: Catalog | None = None
    peer_id: str = ""
    identity: Identity | None = None
    project: str = "public"
    power_w: float | None = None
    router: RouterConfig | None = None
    wall_ms: Callable[[], int] = _wall_ms
    perf_s: Callable[[], float] = time.perf_counter


@dataclass(frozen=True)
class Job:
    kind: str
    model: str = ""  # model id, name@version, name, or task:<task>; "" for workflows
    params: Mapping[str, Any] = field(default_factory=dict)
    job_id: str = ""
    submitter: str = ""
    gpu_strict: bool = False


@dataclass(frozen=True)
class RunResult:
    outputs: dict[str, bytes]
    manifest: RunManifest

    @property
    def reasons(self) -> list[str]:
        """The router's reasons (the job's own and every step's), for job status."""
        return list(self.manifest.reasons) + [r for s in self.manifest.steps for r in s.get("reasons", [])]


class _Run:
    """Book-keeping of one run: model resolution, timed model calls, step records."""

    def __init__(self, ctx: RunContext, job: Job, pins: Mapping[str, str]):
        self.ctx = ctx
        self.job = job
        self.pins = dict(pins)
        self.model_ms = 0.0
        self.load_ms = 0.0
        self.reasons: list[str] = []
        self.model: tuple[str, str, str] = ("", "", "")  # the job's model: id, name, version

    def resolve(
        self, ref: str, *, items: int = 1, features: int | None = None, pin: str | None = None
    ) -> tuple[str, str, str, list[str]]:
        """(model id, name, version, routing reasons) for a model reference."""
        ctx = self.ctx
        if pin:
            ref = pin
        if not ref:
            raise JobError("the job names no model")
        if ref.startswith("task:"):
            if ctx.catalog is None:
                raise JobError(f"{ref}: routing needs a catalog on this peer")
            p = self.job.params
            allowed = p.get("allowed")
            if allowed is not None and (type(allowed) is not list or not all(type(a) is str for a in allowed)):
                raise JobError("parameter 'allowed' must be a list of model names or name@version")
            req = RouteRequest(
                task=ref[5:],
                items=items,
                input_features=features,
                latency_budget_ms=_param(p, "latency_budget_ms", (float, type(None)), None, 0.0),
                cost_budget=_param(p, "cost_budget", (float, type(None)), None, 0.0),
                project=ctx.project,
                allowed=frozenset(allowed) if allowed is not None else None,
            )
            local = frozenset(ctx.executor.hot()) | frozenset(
                e.meta.model_id for e in ctx.catalog.entries() if _holds(ctx.models, e.meta.model_id)
            )
            try:
                d = route(req, ctx.catalog.entries(), hot=ctx.executor.hot(), local=local, config=ctx.router)
            except RouteError as exc:
                raise JobError(str(exc)) from None
            m = d.entry.meta
            return m.model_id, m.name, m.version, list(d.reasons)
        if ref.startswith("blake3:"):
            e = ctx.catalog.by_id(ref) if ctx.catalog is not None else None
            return ref, (e.meta.name if e else ""), (e.meta.version if e else ""), []
        e = ctx.catalog.resolve(ref) if ctx.catalog is not None else None
        if e is None:
            raise JobError(f"model {ref!r} is not in this peer's catalog")
        return e.meta.model_id, e.meta.name, e.meta.version, []

    def load(self, model_id: str, model: bytes | None = None) -> None:
        """Make ``model_id`` hot (timed as load), from ``model`` or this peer's store."""
        ex = self.ctx.executor
        if model_id in ex.hot():
            return
        t0 = self.ctx.perf_s()
        try:
            ex.load(model_id, model if model is not None else self.model_bytes(model_id), gpu_strict=self.job.gpu_strict)
        finally:
            self.load_ms += (self.ctx.perf_s() - t0) * 1e3

    def call(
        self, model_id: str, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, model: bytes | None = None
    ) -> dict[str, np.ndarray]:
        """Run a model (timed as model time), loading it first if it is not hot."""
        self.load(model_id, model)
        t0 = self.ctx.perf_s()
        try:
            return self.ctx.executor.run(model_id, feeds, outputs=outputs, gpu_strict=self.job.gpu_strict)
        finally:
            self.model_ms += (self.ctx.perf_s() - t0) * 1e3

    def model_bytes(self, model_id: str) -> bytes:
        try:
            return self.ctx.models.get(model_id)
        except KeyError:
            raise JobError(f"model {model_id} is not on this peer; fetch the artifact first") from None

    def input_names(self, model_id: str) -> tuple[str, ...]:
        self.load(model_id)
        return self.ctx.executor.input_names(model_id)

    def output_names(self, model_id: str) -> tuple[str, ...]:
        self.load(model_id)
        return self.ctx.executor.output_names(model_id)

    def metadata(self, model_id: str) -> dict[str, str]:
        """The model's ONNX metadata properties (``arcnet.*``)."""
        self.load(model_id)
        return dict(self.ctx.executor.session(model_id, gpu_strict=self.job.gpu_strict).get_modelmeta().custom_metadata_map)


def _holds(store: ModelStore, model_id: str) -> bool:
    contains = getattr(store, "__contains__", None)
    if contains is not None:
        return bool(contains(model_id))
    try:
        store.get(model_id)
        return True
    except KeyError:
        return False


def _param(params: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    v = params.get(name, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    what = " or ".join("none" if k is type(None) else k.__name__ for k in kinds)
    if isinstance(v, bool) and bool not in kinds:
        raise JobError(f"parameter {name!r} must be {what}, got a bool")
    if float in kinds and isinstance(v, int):
        v = float(v)
    if not isinstance(v, kinds):
        raise JobError(f"parameter {name!r} must be {what}, got {type(v).__name__}")
    if v is None:
        return v
    if lo is not None and v < lo or hi is not None and v > hi:
        raise JobError(f"parameter {name!r} must lie in [{lo}, {hi}], got {v}")
    return v


def _require(inputs: Mapping[str, bytes], *names: str) -> None:
    missing = [n for n in names if n not in inputs]
    if missing:
        raise JobError(f"missing input(s) {', '.join(missing)} (got {', '.join(sorted(inputs)) or 'none'})")


# --------------------------------------------------------------------------
# pre and post processing shared by the runners


def _normalize(a: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    try:
        return kernels.normalize(a, spec["mean"], spec["std"])
    except (KeyError, TypeError) as exc:
        raise JobError(f"normalize needs mean and std lists ({exc})") from None
    except kernels.KernelError as exc:
        raise JobError(f"normalize: {exc}") from None


def _topk(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        return kernels.topk(a, k)
    except kernels.KernelError as exc:
        raise JobError(f"top_k: {exc}") from None


# --------------------------------------------------------------------------
# online


def _run_online(run: _Run, inputs: Mapping[str, bytes]) -> dict[str, bytes]:
    p = run.job.params
    arrays = {n: decode_array(b, f"input {n!r}") for n, b in inputs.items()}
    first = next(iter(arrays.values()), None)
    rows = int(first.shape[0]) if first is not None and first.ndim else 1
    width = int(first.shape[-1]) if first is not None and first.ndim == 2 else None
    mid, name, version, reasons = run.resolve(run.job.model, items=max(rows, 1), features=width)
    run.model = (mid, name, version)
    run.reasons += reasons
    wanted = run.input_names(mid)
    _require(arrays, *wanted)
    norm = p.get("normalize")
    if norm is not None:
        target = norm.get("input", wanted[0]) if isinstance(norm, dict) else None
        if target not in arrays:
            raise JobError("normalize: name the input to normalise ({'input', 'mean', 'std'})")
        arrays[target] = _normalize(arrays[target], norm)
    outputs = p.get("outputs")
    out = run.call(mid, {n: arrays[n] for n in wanted}, outputs=outputs)
    result = {n: encode_array(v) for n, v in out.items()}
    tk = p.get("top_k")
    if tk is not None:
        if not isinstance(tk, dict) or "k" not in tk:
            raise JobError("top_k must be a map {'output': name, 'k': int}")
        src = tk.get("output", next(iter(out)))
        if src not in out:
            raise JobError(f"top_k: model has no output {src!r} among {sorted(out)}")
        idx, val = _topk(out[src], _param(tk, "k", int, 1, 0, 1 << 20))
        result["topk_idx"] = encode_array(idx)
        result["topk_val"] = encode_array(val)
    return result


# --------------------------------------------------------------------------
# batch


def _records(data: bytes) -> tuple[list[str], np.ndarray]:
    if data.startswith(b"\x93NUMPY"):
        x = decode_array(data, "records")
        if x.ndim != 2:
            raise JobError(f"records: a .npy input must be a [rows, features] matrix, got shape {x.shape}")
        if x.shape[0] > RECORDS_MAX:
            raise JobError(f"records: {x.shape[0]} rows exceeds {RECORDS_MAX}")
        return [str(i) for i in range(x.shape[0])], x.astype(np.float32, copy=False)
    recs = decode_msg(data, "records")
    if type(recs) is not list or len(recs) > RECORDS_MAX:
        raise JobError(f"records: expected a list of at most {RECORDS_MAX} records")
    ids: list[str] = []
    rows: list[list[float]] = []
    width = None
    for i, r in enumerate(recs):
        if type(r) is not dict or type(r.get("x")) is not list:
            raise JobError(f"records[{i}]: expected {{'id': str, 'x': [numbers]}}")
        rid = r.get("id", str(i))
        if type(rid) is not str or len(rid) > 256:
            raise JobError(f"records[{i}]: id must be a string of at most 256 characters")
        if width is None:
            width = len(r["x"])
        if len(r["x"]) != width or not all(type(v) in (int, float) for v in r["x"]):
            raise JobError(f"records[{i}]: x must be {width} numbers like the first record")
        ids.append(rid)
        rows.append(r["x"])
    return ids, np.asarray(rows, dtype=np.float32).reshape(len(rows), width or 0)


def _run_batch(run: _Run, inputs: Mapping[str, bytes]) -> dict[str, bytes]:
    p = run.job.params
    _require(inputs, "records")
    ids, x = _records(inputs["records"])
    if not ids:
        raise JobError("records: the input holds no records")
    mid, name, version, reasons = run.resolve(run.job.model, items=len(ids), features=x.shape[1])
    run.model = (mid, name, version)
    run.reasons += reasons
    batch_size = _param(p, "batch_size", int, 256, 1, 1 << 20)
    k = _param(p, "top_k", int, 1, 1, 1 << 20)
    in_name = p.get("input") or run.input_names(mid)[0]
    out_name = p.get("output") or run.output_names(mid)[0]
    if p.get("normalize") is not None:
        x = _normalize(x, p["normalize"])
    parts = []
    for start in range(0, len(ids), batch_size):
        chunk = x[start : start + batch_size]
        parts.append(run.call(mid, {in_name: chunk}, outputs=[out_name])[out_name])
    out = np.concatenate(parts, axis=0)
    if out.ndim != 2:
        raise JobError(f"batch: output {out_name!r} has shape {out.shape}; top-k needs [rows, classes]")
    idx, val = _topk(out, min(k, out.shape[1]))
    labels = kernels.argmax(out)
    results = [
        {"id": rid, "label": int(labels[i]), "top": [[int(c), float(v)] for c, v in zip(idx[i], val[i])]}
        for i, rid in enumerate(ids)
    ]
    return {"results": encode_msg(results), "output": encode_array(out)}


# --------------------------------------------------------------------------
# fine-tune


def _run_finetune(run: _Run, inputs: Mapping[str, bytes]) -> dict[str, bytes]:
    p = run.job.params
    _require(inputs, "x", "y")
    x = decode_array(inputs["x"], "input 'x'").astype(np.float32, copy=False)
    y = decode_array(inputs["y"], "input 'y'")
    if x.ndim != 2 or y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise JobError(f"finetune needs x [rows, features] and integer y [rows], got {x.shape} and {y.shape} {y.dtype}")
    if x.shape[0] < 4:
        raise JobError("finetune needs at least 4 labelled rows")
    name = _param(p, "name", str, "")
    version = _param(p, "version", str, "")
    if not name or not version:
        raise JobError("finetune needs params name and version for the new model")
    parent_id, parent_name, parent_version, reasons = run.resolve(run.job.model, items=x.shape[0], features=x.shape[1])
    run.model = (parent_id, parent_name, parent_version)
    run.reasons += reasons
    props = run.metadata(parent_id)
    emb_name = props.get("arcnet.embedding")
    if not emb_name or "arcnet.head" not in props:
        raise JobError(f"model {parent_id[:20]}... has no arcnet.embedding/arcnet.head metadata: it cannot be head-tuned")
    task = props.get("arcnet.task", "classify")
    seed = _param(p, "seed", int, 0, 0, 2**63 - 1)
    holdout = _param(p, "holdout", float, 0.2, 0.0, 0.9)
    epochs = _param(p, "epochs", int, 200, 1, 100_000)
    lr = _param(p, "lr", float, 0.5, 1e-9, 100.0)
    l2 = _param(p, "l2", float, 1e-3, 0.0, 100.0)
    classes = _param(p, "classes", int, int(y.max()) + 1, 2, 1 << 16)
    if y.min() < 0 or y.max() >= classes:
        raise JobError(f"labels must lie in [0, {classes})")
    chunk = _param(p, "batch_size", int, 4096, 1, 1 << 20)
    emb = np.concatenate(
        [run.call(parent_id, {"x": x[s : s + chunk]}, outputs=[emb_name])[emb_name] for s in range(0, len(x), chunk)]
    )
    perm = np.random.default_rng(seed).permutation(len(x))
    n_hold = int(len(x) * holdout)
    test, train = perm[:n_hold], perm[n_hold:]
    w, b = _models.fit_softmax_head(emb[train], y[train], classes, epochs=epochs, lr=lr, l2=l2, seed=seed)
    parent_bytes = run.model_bytes(parent_id)
    new_bytes = _models.replace_head(parent_bytes, w, b, doc=f"{name} {version}: head fine-tuned from {parent_id}")
    new_id = content_id(new_bytes)
    scores: dict[str, float] = {}
    if n_hold:
        new_probs = run.call(new_id, {"x": x[test]}, outputs=["probs"], model=new_bytes)["probs"]
        old_probs = run.call(parent_id, {"x": x[test]}, outputs=["probs"])["probs"]
        scores["accuracy"] = float(np.mean(kernels.argmax(new_probs) == y[test]))
        if old_probs.shape[1] == classes:
            scores["parent_accuracy"] = float(np.mean(kernels.argmax(old_probs) == y[test]))
    meta = {
        "name": name,
        "version": version,
        "task": task,
        "model_id": new_id,
        "parent_id": parent_id,  # ids only: a rerun without the catalog must give the same bytes
        "scores": scores,
        "classes": classes,
        "train_items": int(len(train)),
        "holdout_items": int(n_hold),
    }
    return {"model": new_bytes, "meta": encode_msg(meta)}


def finetune_entry(ctx: RunContext, result: RunResult, *, published_s: int, project: str | None = None) -> ModelEntry:
    """A signed catalog entry for a fine-tune's output model, lineage pointing to its parent."""
    if ctx.identity is None:
        raise JobError("publishing a fine-tuned model needs this peer's identity in the run context")
    meta = decode_msg(result.outputs["meta"], "meta")
    m = describe(
        result.outputs["model"],
        name=meta["name"],
        version=meta["version"],
        task=meta["task"],
        model_id=meta["model_id"],
        publisher=ctx.identity.peer_id,
        published_s=published_s,
        project=project or ctx.project,
        parent_id=meta["parent_id"],
        scores=meta["scores"],
    )
    return sign_meta(m, ctx.identity)


def publish_model(
    ctx: RunContext,
    model_bytes: bytes,
    *,
    name: str,
    version: str,
    task: str,
    published_s: int,
    parent_id: str = "",
    scores: Mapping[str, float] | None = None,
    latency: Mapping[str, float] | None = None,
) -> ModelEntry:
    """Store ``model_bytes``, sign its metadata as this peer and add it to the catalog."""
    if ctx.identity is None or ctx.catalog is None:
        raise JobError("publishing needs this peer's identity and catalog in the run context")
    put = getattr(ctx.models, "put", None)
    mid = put(model_bytes) if put is not None else content_id(model_bytes)
    lat = latency or {}
    meta = describe(
        model_bytes,
        name=name,
        version=version,
        task=task,
        model_id=mid,
        publisher=ctx.identity.peer_id,
        published_s=published_s,
        project=ctx.project,
        parent_id=parent_id,
        scores=dict(scores or {}),
        latency_ms_p50=lat.get("p50_ms", 0.0),
        latency_ms_per_item=lat.get("per_item_ms", 0.0),
    )
    entry = sign_meta(meta, ctx.identity)
    ctx.catalog.add(entry)
    return entry


# --------------------------------------------------------------------------
# workflows


@dataclass
class _StepCtx:
    run: _Run
    step: Mapping[str, Any]
    model_id: str = ""
    reasons: list[str] = field(default_factory=list)

    @property
    def params(self) -> Mapping[str, Any]:
        p = self.step.get("params", {})
        if type(p) is not dict:
            raise JobError(f"step {self.step['name']}: params must be a map")
        return p

    def model(self, items: int = 1, features: int | None = None) -> str:
        ref = self.step.get("model") or (f"task:{self.step['task']}" if self.step.get("task") else "")
        mid, _, _, reasons = self.run.resolve(ref, items=items, features=features, pin=self.run.pins.get(self.step["name"]))
        self.model_id = mid
        self.reasons = reasons
        return mid


def _one(inputs: list[bytes], step: Mapping[str, Any]) -> bytes:
    if len(inputs) != 1:
        raise JobError(f"step {step['name']}: op {step['op']} takes one input, got {len(inputs)}")
    return inputs[0]


def _texts(data: bytes, what: str) -> list[str]:
    obj = decode_msg(data, what)
    if isinstance(obj, dict) and "texts" in obj:
        obj = obj["texts"]
    if type(obj) is not list or len(obj) > TEXTS_MAX or not all(type(t) is str and len(t) <= 1024 for t in obj):
        raise JobError(f"{what}: expected a list of at most {TEXTS_MAX} texts")
    return obj


def _scored(data: bytes, what: str) -> list[tuple[str, float]]:
    obj = decode_msg(data, what)
    if type(obj) is not dict or type(obj.get("texts")) is not list or type(obj.get("scores")) is not list:
        raise JobError(f"{what}: expected the output of a score step")
    if len(obj["texts"]) != len(obj["scores"]):
        raise JobError(f"{what}: texts and scores differ in length")
    return [(str(t), float(s)) for t, s in zip(obj["texts"], obj["scores"])]


def _op_infer(sc: _StepCtx, inputs: list[bytes]) -> bytes:
    x = decode_array(_one(inputs, sc.step), f"step {sc.step['name']} input")
    mid = sc.model(items=int(x.shape[0]) if x.ndim else 1, features=int(x.shape[-1]) if x.ndim == 2 else None)
    in_name = sc.params.get("input") or sc.run.input_names(mid)[0]
    out_name = sc.params.get("output") or sc.run.output_names(mid)[0]
    return encode_array(sc.run.call(mid, {in_name: x}, outputs=[out_name])[out_name])


def _op_normalize(sc: _StepCtx, inputs: list[bytes]) -> bytes:
    x = decode_array(_one(inputs, sc.step), f"step {sc.step['name']} input")
    return encode_array(_normalize(x, sc.params))


def _op_topk(sc: _StepCtx, inputs: list[bytes]) -> bytes:
    x = decode_array(_one(inputs, sc.step), f"step {sc.step['name']} input")
    idx, val = _topk(x, _param(sc.params, "k", int, 1, 0, 1 << 20))
    return encode_msg({"idx": idx.tolist(), "val": [[float(v) for v in row] for row in np.atleast_2d(val)]})


def _op_propose(sc: _StepCtx, inputs: list[bytes]) -> bytes:
    """Seeded first candidates: ``n`` texts of ``words`` words drawn from the vocabulary."""
    p = sc.params
    rng = random.Random(_param(p, "seed", int, 0, 0, 2**63 - 1))
    n = _param(p, "n", int, 8, 1, TEXTS_MAX)
    words = _param(p, "words", int, 4, 1, 16)
    seeds = _texts(inputs[0], "propose input") if inputs else []
    out = list(seeds)
    while len(out) < n:
        out.append(" ".join(rng.choice(_models.WORDS) for _ in range(words)))
    return encode_msg(out[:n])


def _op_score(sc: _StepCtx, inputs: list[bytes]) -> bytes:
    """Evaluate candidate texts with a scorer model (tokenizer settings from its metadata)."""
    texts = _texts(_one(inputs, sc.step), f"step {sc.step['name']} input")
    mid = sc.model(items=max(1, len(texts)))
    tok = sc.run.metadata(mid).get("arcnet.tokenizer", "")
    cfg = dict(kv.split("=", 1) for kv in tok.split(":")[1:] if "=" in kv)
    if not tok.startswith(_models.TOKENIZER):
        raise JobError(f"step {sc.step['name']}: model has no {_models.TOKENIZER} tokenizer metadata")
    ids, mask = _models.tokenize(texts, vocab=int(cfg.get("vocab", 512)), max_tokens=int(cfg.get("max_tokens", 16)))
    scores = sc.run.call(mid, {"ids": ids, "mask": mask})["score"][:, 0] if texts else np.zeros(0, np.float32)
    return encode_msg({"texts": texts, "scores": [float(s) for s in scores]})


def _op_refine(sc: _StepCtx, inputs: list[bytes]) -> bytes:
    """Keep the best ``keep`` candidates and add ``children`` mutations of each (seeded).

    The agent does not know which words the scorer likes: it mutates blindly
    and lets the next evaluation keep what helped. Once the best score
    reaches ``target`` the candidates pass through unchanged.
    """
    p = sc.params
    scored = _scored(_one(inputs, sc.step), f"step {sc.step['name']} input")
    keep = _param(p, "keep", int, 3, 1, TEXTS_MAX)
    children = _param(p, "children", int, 3, 0, 64)
    target = _param(p, "target", float, 1.0, 0.0, 1.0)
    rng = random.Random(_param(p, "seed", int, 0, 0, 2**63 - 1))
    best = sorted(scored, key=lambda ts: (-ts[1], ts[0]))[:keep]  # ties by text: no dependence on order
    out = [t for t, _ in best]
    if best and best[0][1] >= target:
        return encode_msg(out)
    for text, _ in best:
        words = text.split() or [rng.choice(_models.WORDS)]
        for _ in range(children):
            w = list(words)
            w[rng.randrange(len(w))] = rng.choice(_models.WORDS)
            cand = " ".join(w)
            if cand not in out:
                out.append(cand)
    return encode_msg(out[:TEXTS_MAX])


def _op_select(sc: _StepCtx, inputs: list[bytes]) -> bytes:
    scored = _scored(_one(inputs, sc.step), f"step {sc.step['name']} input")
    if not scored:
        raise JobError(f"step {sc.step['name']}: nothing to select from")
    text, score = sorted(scored, key=lambda ts: (-ts[1], ts[0]))[0]
    return encode_msg({"text": text, "score": score})


OPS: dict[str, Callable[[_StepCtx, list[bytes]], bytes]] = {
    "infer": _op_infer,
    "normalize": _op_normalize,
    "topk": _op_topk,
    "propose": _op_propose,
    "score": _op_score,
    "refine": _op_refine,
    "select": _op_select,
}


def _plan(spec: Any, input_names: set[str]) -> tuple[list[Mapping[str, Any]], list[str]]:
    """Validated steps in execution order (Kahn's algorithm, ties by spec order), and the output steps."""
    if type(spec) is not dict or type(spec.get("steps")) is not list:
        raise JobError("workflow needs params.spec = {'steps': [...], 'outputs': [...]}")
    steps = spec["steps"]
    if not 1 <= len(steps) <= STEPS_MAX:
        raise JobError(f"a workflow has 1 to {STEPS_MAX} steps, got {len(steps)}")
    by_name: dict[str, Mapping[str, Any]] = {}
    order_in_spec: dict[str, int] = {}
    for i, st in enumerate(steps):
        if type(st) is not dict or type(st.get("name")) is not str or not _STEP_NAME.match(st["name"]):
            raise JobError(f"steps[{i}]: needs a name of lower-case letters, digits, '_' or '-' (at most 32)")
        if st["name"] in by_name:
            raise JobError(f"steps[{i}]: step name {st['name']!r} used twice")
        if st.get("op") not in OPS:
            raise JobError(f"step {st['name']}: op must be one of {', '.join(sorted(OPS))}")
        deps = st.get("deps", [])
        if type(deps) is not list or len(deps) > DEPS_MAX or not all(type(d) is str for d in deps):
            raise JobError(f"step {st['name']}: deps must be a list of at most {DEPS_MAX} names")
        by_name[st["name"]] = st
        order_in_spec[st["name"]] = i
    indeg: dict[str, int] = {}
    users: dict[str, list[str]] = {n: [] for n in by_name}
    for n, st in by_name.items():
        count = 0
        for d in st.get("deps", []):
            if d.startswith("input:"):
                if d[6:] not in input_names:
                    raise JobError(f"step {n}: job input {d[6:]!r} not given")
            elif d in by_name:
                users[d].append(n)
                count += 1
            else:
                raise JobError(f"step {n}: depends on unknown step {d!r}")
        indeg[n] = count
    ready = sorted((n for n, c in indeg.items() if c == 0), key=order_in_spec.__getitem__)
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for u in users[n]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
                ready.sort(key=order_in_spec.__getitem__)
    if len(order) != len(by_name):
        cyc = sorted(n for n, c in indeg.items() if c > 0)
        raise JobError(f"workflow has a cycle through {', '.join(cyc)}")
    outs = spec.get("outputs", [order[-1]])
    if type(outs) is not list or not outs or not all(o in by_name for o in outs):
        raise JobError("workflow outputs must name steps")
    return [by_name[n] for n in order], list(outs)


def _run_workflow(run: _Run, inputs: Mapping[str, bytes]) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    steps, outs = _plan(run.job.params.get("spec"), set(inputs))
    produced: dict[str, bytes] = {}
    records: list[dict[str, Any]] = []
    perf = run.ctx.perf_s
    for st in steps:
        args = [inputs[d[6:]] if d.startswith("input:") else produced[d] for d in st.get("deps", [])]
        sc = _StepCtx(run, st)
        t0 = perf()
        out = OPS[st["op"]](sc, args)
        produced[st["name"]] = out
        records.append(
            {
                "name": st["name"],
                "op": st["op"],
                "model": sc.model_id,
                "inputs": [content_id(a) for a in args],
                "output": content_id(out),
                "ms": round((perf() - t0) * 1e3, 3),
                "reasons": sc.reasons,
            }
        )
    return {o: produced[o] for o in outs}, records


def agent_workflow(
    rounds: int = 3,
    *,
    scorer: str = "task:score",
    n: int = 8,
    words: int = 4,
    keep: int = 3,
    children: int = 3,
    target: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The example agent loop as a DAG: propose -> score -> (refine -> score) x rounds -> select.

    Every score step's output is returned too, so the climb is visible.
    """
    if not 1 <= rounds <= (STEPS_MAX - 3) // 2:
        raise ValueError(f"rounds must lie in 1..{(STEPS_MAX - 3) // 2}")
    steps: list[dict[str, Any]] = [
        {"name": "propose", "op": "propose", "deps": [], "params": {"n": n, "words": words, "seed": seed}},
        {"name": "score0", "op": "score", "deps": ["propose"], "model": scorer},
    ]
    for r in range(1, rounds + 1):
        steps.append(
            {
                "name": f"refine{r}",
                "op": "refine",
                "deps": [f"score{r - 1}"],
                "params": {"keep": keep, "children": children, "target": target, "seed": seed * 1000 + r},
            }
        )
        steps.append({"name": f"score{r}", "op": "score", "deps": [f"refine{r}"], "model": scorer})
    steps.append({"name": "select", "op": "select", "deps": [f"score{rounds}"]})
    return {"steps": steps, "outputs": ["select"] + [f"score{r}" for r in range(rounds + 1)]}


# --------------------------------------------------------------------------
# the entry point


def run_job(ctx: RunContext, job: Job, inputs: Mapping[str, bytes], *, pins: Mapping[str, str] | None = None) -> RunResult:
    """Run ``job`` on ``inputs`` here; returns outputs and the run manifest.

    ``pins`` fixes the model id of workflow steps by step name (reruns use
    it so that a changed catalog cannot change the models).
    """
    if job.kind not in KINDS:
        raise JobError(f"job kind must be one of {', '.join(KINDS)}, got {job.kind!r}")
    for name, data in inputs.items():
        if type(name) is not str or not isinstance(data, (bytes, bytearray)):
            raise JobError("inputs must map names to bytes")
    inputs = {n: bytes(b) for n, b in inputs.items()}
    try:
        canonical_bytes(dict(job.params))
    except ValueError as exc:
        raise JobError(f"params: {exc}") from None
    run = _Run(ctx, job, pins or {})
    started_ms = ctx.wall_ms()
    t0 = ctx.perf_s()
    steps: list[dict[str, Any]] = []
    if job.kind == "online":
        outputs = _run_online(run, inputs)
    elif job.kind == "batch":
        outputs = _run_batch(run, inputs)
    elif job.kind == "finetune":
        outputs = _run_finetune(run, inputs)
    else:
        outputs, steps = _run_workflow(run, inputs)
    total_ms = (ctx.perf_s() - t0) * 1e3
    finished_ms = ctx.wall_ms()
    ex = ctx.executor
    settings = ex.settings()
    settings["gpu_strict"] = job.gpu_strict
    if ctx.power_w is not None:
        power_w = float(ctx.power_w)
    elif ex.provider == CUDA:
        power_w = POWER_W_GPU
    else:
        power_w = POWER_W_PER_CPU_THREAD * max(1, ex.config.intra_op_threads)
    energy_j = power_w * total_ms / 1e3
    in_names = sorted(inputs)
    out_names = sorted(outputs)
    mid, name, version = run.model
    manifest = RunManifest(
        job=job.job_id,
        kind=job.kind,
        model=mid,
        model_name=name,
        model_version=version,
        provider=ex.provider,
        runtime=f"onnxruntime {settings['onnxruntime']} {ex.provider}",
        settings=settings,
        native=kernels.IMPLEMENTATION,
        input_names=in_names,
        inputs=[content_id(inputs[n]) for n in in_names],
        output_names=out_names,
        outputs=[content_id(outputs[n]) for n in out_names],
        params=dict(job.params),
        peer=ctx.peer_id,
        submitter=job.submitter,
        started_ms=int(started_ms),
        finished_ms=int(finished_ms),
        timings_ms={
            "total": round(total_ms, 3),
            "model": round(run.model_ms, 3),
            "load": round(run.load_ms, 3),
        },
        power_w=power_w,
        energy_j=energy_j,
        energy_kwh=energy_j / 3.6e6,
        steps=steps,
        reasons=run.reasons,
    )
    return RunResult(outputs, manifest)
