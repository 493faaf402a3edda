"""Run manifests: what ran, on what, with which inputs and outputs, and how to run it again.

Every job run ends in a :class:`RunManifest`: the model (artifact id, name
and version), the provider and executor settings, the native-kernel
implementation, the content ids of every input and output, the job's
parameters, the peer, wall-clock start and finish, timings, an energy
estimate, and for workflows one record per step (its model, inputs, output
and the router's reasons). The audit log appends it to ``job.finished``;
:meth:`RunManifest.to_plain` already carries the keys the audit views read
(``model``, ``inputs``, ``outputs``, ``runtime``, ``started_ms``,
``finished_ms``, ``energy_kwh``, ``submitter``).

Canonical encoding: the plain map with every map's keys sorted, encoded
with msgpack (ints shortest, floats float64, NaN and infinities refused),
prefixed by nothing; :meth:`RunManifest.manifest_id` is its BLAKE3. Decoding
(:meth:`RunManifest.from_bytes`) is bounded and type-checked and refuses
bytes that are not canonical.

Hashes are ``"blake3:<hex>"`` content ids of the exact bytes (BLAKE3 for
speed, as the blob store; the audit log's artifact-reference form).

Energy: ``power_w`` x run time. Power is an estimate: the executor's busy
power (``power_w`` in the run context; defaults below), not a meter
reading. Good enough to compare runs and to price energy windows; the
sensing layer will replace it with measured figures where a site has them.

:func:`rerun` reproduces a run on CPU from its manifest and the same input
bytes: it checks the inputs against their recorded ids, builds a
deterministic CPU executor with the recorded thread counts and
optimisation level, runs the same job with the same parameters and the
same model ids (never re-routed), and compares the outputs' ids. On the
same onnxruntime version and CPU type the outputs match bit for bit.

Knowingly left out: signatures on manifests (the audit log signs its
entries), and reruns of CUDA runs on CUDA (CUDA kernels are not bit-stable
across GPU models; a rerun says when outputs differ and which).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import blake3
import msgpack

if TYPE_CHECKING:  # pragma: no cover
    from .runners import RunContext
    from .store import ModelStore

__all__ = [
    "MANIFEST_MAX_BYTES",
    "ManifestError",
    "RerunReport",
    "RunManifest",
    "canonical_bytes",
    "rerun",
]

FORMAT = 1
MANIFEST_MAX_BYTES = 1 << 20  # a manifest is a few KiB; workflows of 64 steps stay far below
_DEPTH_MAX = 16

# Busy power assumed when the run context gives none (watts): one CPU core
# of a modern server socket, one datacentre GPU at typical inference load.
POWER_W_PER_CPU_THREAD = 12.0
POWER_W_GPU = 300.0


class ManifestError(ValueError):
    """A manifest that is malformed, not canonical, or does not match the inputs given."""


def _canon(value: Any, depth: int = 0) -> Any:
    """Plain value with sorted map keys; refuses anything that has no canonical form."""
    if depth > _DEPTH_MAX:
        raise ManifestError("manifest nested too deeply")
    t = type(value)
    if value is None or t in (bool, int, str, bytes):
        return value
    if t is float:
        if not math.isfinite(value):
            raise ManifestError("manifest values must be finite numbers")
        return value
    if t in (list, tuple):
        return [_canon(v, depth + 1) for v in value]
    if t is dict:
        if not all(type(k) is str for k in value):
            raise ManifestError("manifest map keys must be strings")
        return {k: _canon(value[k], depth + 1) for k in sorted(value)}
    raise ManifestError(f"manifest values must be plain (str, int, float, bool, bytes, list, map), got {t.__name__}")


def canonical_bytes(value: Any) -> bytes:
    """msgpack of ``value`` with every map's keys sorted (see the module docstring)."""
    return msgpack.packb(_canon(value), use_bin_type=True)


@dataclass(frozen=True)
class RunManifest:
    """One run. Field units are in their names; refs are ``blake3:<hex>``."""

    job: str
    kind: str  # online | batch | finetune | workflow
    model: str  # model id; "" for a workflow (its steps name theirs)
    model_name: str
    model_version: str
    provider: str
    runtime: str  # "onnxruntime <version> <provider>"
    settings: dict[str, Any]  # executor settings a rerun needs
    native: str  # native-kernel implementation: native | fallback
    input_names: list[str]
    inputs: list[str]  # refs, in input_names order (sorted by name)
    output_names: list[str]
    outputs: list[str]
    params: dict[str, Any]
    peer: str
    submitter: str
    started_ms: int
    finished_ms: int
    timings_ms: dict[str, float]
    power_w: float
    energy_j: float
    energy_kwh: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    format: int = FORMAT

    def to_plain(self) -> dict[str, Any]:
        return _canon(asdict(self))

    def to_bytes(self) -> bytes:
        data = canonical_bytes(self.to_plain())
        if len(data) > MANIFEST_MAX_BYTES:
            raise ManifestError(f"manifest of {len(data)} bytes exceeds {MANIFEST_MAX_BYTES}")
        return data

    def manifest_id(self) -> str:
        return "blake3:" + blake3.blake3(self.to_bytes()).hexdigest()

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> "RunManifest":
        if type(plain) is not dict:
            raise ManifestError("a manifest is a map")
        names = {f for f in cls.__dataclass_fields__}
        missing = names - set(plain) - {"steps", "reasons", "format"}
        extra = set(plain) - names
        if missing or extra:
            raise ManifestError(f"manifest fields: missing {sorted(missing)}, unknown {sorted(extra)}")
        types = {
            "job": str, "kind": str, "model": str, "model_name": str, "model_version": str,
            "provider": str, "runtime": str, "settings": dict, "native": str,
            "input_names": list, "inputs": list, "output_names": list, "outputs": list,
            "params": dict, "peer": str, "submitter": str, "started_ms": int, "finished_ms": int,
            "timings_ms": dict, "power_w": float, "energy_j": float, "energy_kwh": float,
            "steps": list, "reasons": list, "format": int,
        }  # fmt: skip
        for k, v in plain.items():
            want = types[k]
            ok = type(v) is want or (want is float and type(v) is int)
            if not ok:
                raise ManifestError(f"manifest field {k!r} must be {want.__name__}, got {type(v).__name__}")
        if plain.get("format", FORMAT) != FORMAT:
            raise ManifestError(f"manifest format {plain['format']} (this peer reads {FORMAT})")
        for a, b in (("input_names", "inputs"), ("output_names", "outputs")):
            if len(plain[a]) != len(plain[b]) or not all(type(x) is str for x in plain[a] + plain[b]):
                raise ManifestError(f"manifest {a} and {b} must be lists of strings of equal length")
        kw = dict(plain)
        for k in ("power_w", "energy_j", "energy_kwh"):
            kw[k] = float(kw[k])
        return cls(**kw)

    @classmethod
    def from_bytes(cls, data: bytes) -> "RunManifest":
        if len(data) > MANIFEST_MAX_BYTES:
            raise ManifestError(f"manifest of {len(data)} bytes exceeds {MANIFEST_MAX_BYTES}")
        try:
            plain = msgpack.unpackb(
                data, raw=False, strict_map_key=True, max_str_len=len(data), max_bin_len=len(data),
                max_array_len=len(data), max_map_len=len(data), max_ext_len=0,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - msgpack raises many types
            raise ManifestError(f"not a manifest: {type(exc).__name__}") from None
        m = cls.from_plain(plain)
        if m.to_bytes() != data:
            raise ManifestError("manifest bytes are not canonical")
        return m

    def input_refs(self) -> dict[str, str]:
        return dict(zip(self.input_names, self.inputs))

    def output_refs(self) -> dict[str, str]:
        return dict(zip(self.output_names, self.outputs))


@dataclass(frozen=True)
class RerunReport:
    """The outcome of :func:`rerun`: ``matches`` is True when every output id is the recorded one."""

    matches: bool
    mismatched: list[str]
    outputs: dict[str, bytes]
    manifest: RunManifest


def rerun(
    manifest: RunManifest,
    inputs: Mapping[str, bytes],
    models: "ModelStore",
    *,
    context: "RunContext | None" = None,
) -> RerunReport:
    """Run ``manifest``'s job again on CPU with the same inputs; compare the outputs bit for bit.

    ``models`` supplies the ONNX bytes of the recorded model ids. Raises
    :class:`ManifestError` if the inputs are not the recorded ones.
    """
    from .executor import Executor, ExecutorConfig  # late: runners imports this module
    from .runners import Job, RunContext, run_job
    from .store import content_id

    want = manifest.input_refs()
    if set(inputs) != set(want):
        raise ManifestError(f"rerun needs inputs {sorted(want)}, got {sorted(inputs)}")
    for name, data in inputs.items():
        if content_id(data) != want[name]:
            raise ManifestError(f"input {name!r} is not the recorded one ({want[name][:20]}...)")
    if context is None:
        s = manifest.settings
        config = ExecutorConfig(
            provider="cpu",
            intra_op_threads=int(s.get("intra_op_threads", 1)),
            inter_op_threads=int(s.get("inter_op_threads", 1)),
            graph_optimization=str(s.get("graph_optimization", "all")),
            deterministic=True,
        )
        context = RunContext(executor=Executor(config, loader=models.get), models=models, peer_id="rerun")
    pins = {st["name"]: st["model"] for st in manifest.steps if st.get("model")}
    job = Job(
        kind=manifest.kind,
        model=manifest.model,
        params=manifest.params,
        job_id=manifest.job,
        submitter=manifest.submitter,
    )
    result = run_job(context, job, dict(inputs), pins=pins)
    got = result.manifest.output_refs()
    recorded = manifest.output_refs()
    mismatched = sorted(k for k in set(got) | set(recorded) if got.get(k) != recorded.get(k))
    return RerunReport(not mismatched, mismatched, result.outputs, result.manifest)
