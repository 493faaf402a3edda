"""ONNX Runtime executor: one provider per peer, sessions cached per model, strict GPU jobs.

The executor is the only place that builds ``onnxruntime.InferenceSession``
objects. At start it picks the peer's provider once -- CUDA when the
installed onnxruntime offers it *and* a probe session actually lands on it,
else CPU -- and reports the choice and the reason in :meth:`Executor.statistics`
(the metrics endpoint and ``arcnet status`` read it). onnxruntime-gpu lists
CUDA as available even when no driver or device is present and then silently
runs on CPU; the probe is what catches that.

Sessions are cached per ``(model id, provider, strict)`` in a bounded LRU:
building one parses and optimises the graph (milliseconds to seconds), a
cached run costs only onnxruntime's own call. Which models hold a session is
"hot on this peer", an input of the router.

GPU-strict jobs: a job marked ``gpu_strict`` must run on the GPU or fail.
On a CPU-only peer it fails before any work with :class:`GpuRequiredError`;
on a CUDA peer its session is built with CUDA alone and the CPU fallback
disabled (``session.disable_cpu_ep_fallback``), and the session's providers
are checked after building, so a graph with nodes CUDA cannot run fails
loudly instead of running partly on CPU.

Determinism (``deterministic=True``, the default): sequential execution,
fixed thread counts (never "all cores"), a fixed graph-optimisation level,
denormals kept, and deterministic compute where the provider offers a
choice (cuDNN heuristics, not benchmarking). With the same onnxruntime, CPU
type and settings, a rerun gives the same bytes; :meth:`Executor.settings`
returns what a run manifest must record to rerun it.

IOBinding: on CUDA, inputs are bound from host memory and outputs are
allocated on the device and copied back once, which saves onnxruntime's
per-output staging copies. It can be switched on for CPU too (tests use that
to exercise the path on machines without a GPU).

Thread counts (``intra_op_threads``, ``inter_op_threads``): threads per
session, default 1 each. A peer runs many models and many jobs at once;
one thread per session keeps sessions from fighting over cores and keeps
reruns bit-exact. Raise ``intra_op_threads`` for one big model per peer.

Knowingly left out: TensorRT and other providers, multi-GPU placement
(``cuda_device_id`` picks one), memory-based eviction (the LRU bound counts
sessions, not bytes), building two sessions for one model in parallel.
"""

from __future__ import annotations

import os
import statistics as _stats
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnxruntime as ort

__all__ = [
    "CPU",
    "CUDA",
    "Executor",
    "ExecutorConfig",
    "ExecutorError",
    "GpuRequiredError",
    "ModelLoadError",
    "ModelSource",
    "check_providers",
]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

# A model as the executor receives it: ONNX bytes or a path to a file.
ModelSource = bytes | str | os.PathLike

_OPT_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ExecutorError(Exception):
    """A model could not be run; the message is one line that says what to do."""


class GpuRequiredError(ExecutorError):
    """A GPU-strict job met a peer (or a session) that would not run it on the GPU."""


class ModelLoadError(ExecutorError):
    """The model bytes are missing, unreadable, or not a model onnxruntime accepts."""


@dataclass(frozen=True)
class ExecutorConfig:
    """How the executor builds sessions. Units and defaults in each line.

    provider: "auto" (CUDA if a probe session lands on it, else CPU),
        "cuda" (refuse to start without CUDA) or "cpu".
    intra_op_threads: threads inside one operator, per session; default 1.
        Must be >= 1 when deterministic (0 means "all cores" to onnxruntime).
    inter_op_threads: threads across independent operators; default 1
        (only used by parallel execution, which determinism turns off).
    sessions_max: LRU bound on cached sessions; default 16. A session of a
        small MLP holds ~1 MiB, of a 1 GB model ~1 GB: size it to the models.
    deterministic: sequential execution and fixed settings; default True.
    graph_optimization: "disabled" | "basic" | "extended" | "all"; default
        "all". Recorded in manifests: a rerun uses the same level.
    cuda_device_id: which GPU; default 0.
    iobinding: None (default) uses IOBinding on CUDA only; True/False force it.
    allow_spinning: let onnxruntime's worker threads spin for work (lower
        latency, burns a core while idle); default True.
    """

    provider: str = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    sessions_max: int = 16
    deterministic: bool = True
    graph_optimization: str = "all"
    cuda_device_id: int = 0
    iobinding: bool | None = None
    allow_spinning: bool = True

    def __post_init__(self) -> None:
        if self.provider not in ("auto", "cuda", "cpu"):
            raise ValueError(f"provider must be auto, cuda or cpu, got {self.provider!r}")
        if self.graph_optimization not in _OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {sorted(_OPT_LEVELS)}, got {self.graph_optimization!r}")
        if not 0 <= self.intra_op_threads <= 1024 or not 0 <= self.inter_op_threads <= 1024:
            raise ValueError("thread counts must lie in 0..1024")
        if self.deterministic and (self.intra_op_threads < 1 or self.inter_op_threads < 1):
            raise ValueError("deterministic execution needs explicit thread counts (>= 1), not 0 (all cores)")
        if not 1 <= self.sessions_max <= 4096:
            raise ValueError("sessions_max must lie in 1..4096")


@dataclass
class _Entry:
    session: ort.InferenceSession
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    iobinding: bool
    output_list: list[str]  # output_names as the list onnxruntime's run takes


def check_providers(session: ort.InferenceSession, model_id: str) -> None:
    """Raise :class:`GpuRequiredError` unless ``session`` runs on CUDA first.

    onnxruntime does not fail when a requested provider is missing; it warns
    and falls back. This check is what makes a GPU-strict job fail instead.
    """
    got = session.get_providers()
    if not got or got[0] != CUDA:
        raise GpuRequiredError(
            f"model {model_id}: GPU-strict job, but the session runs on {got} "
            f"(CUDA unavailable or refused the graph); run it on a GPU peer or drop gpu_strict"
        )


def _identity_model() -> bytes:
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return m.SerializeToString()


class Executor:
    """Runs ONNX models on this peer's provider with a bounded session cache.

    ``loader(model_id) -> bytes | path`` supplies models that are not in the
    cache and not passed to :meth:`run` (the blobstore, later; a dict in
    tests). Thread-safe: sessions are shared, onnxruntime runs them
    concurrently, the cache is guarded by a lock.
    """

    def __init__(self, config: ExecutorConfig | None = None, loader: Callable[[str], ModelSource] | None = None):
        self.config = config or ExecutorConfig()
        self._loader = loader
        self._lock = threading.Lock()
        self._sessions: OrderedDict[tuple[str, str, bool], _Entry] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._runs = 0
        self._run_errors = 0
        self._gpu_strict_refused = 0
        self._load_ms_total = 0.0
        self.available_providers: tuple[str, ...] = tuple(ort.get_available_providers())
        self.provider, self.provider_reason = self._choose_provider()
        self._iobinding = self.config.iobinding if self.config.iobinding is not None else self.provider == CUDA

    # -- provider -----------------------------------------------------------

    def _choose_provider(self) -> tuple[str, str]:
        want = self.config.provider
        if want == "cpu":
            return CPU, "configured: cpu"
        if CUDA not in self.available_providers:
            reason = f"onnxruntime offers no CUDA provider (available: {', '.join(self.available_providers)})"
            if want == "cuda":
                raise ExecutorError(f"provider cuda configured but {reason}; install onnxruntime-gpu (extra 'gpu')")
            return CPU, reason
        try:
            so = self._session_options(strict=True)
            probe = ort.InferenceSession(_identity_model(), so, providers=self._providers(CUDA, strict=True))
            check_providers(probe, "probe")
        except Exception as exc:  # noqa: BLE001 - any CUDA init failure means "no GPU here"
            reason = f"CUDA probe failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            if want == "cuda":
                raise ExecutorError(f"provider cuda configured but {reason}; check the driver and device") from None
            return CPU, reason
        return CUDA, f"CUDA probe session ran on device {self.config.cuda_device_id}"

    @property
    def has_gpu(self) -> bool:
        return self.provider == CUDA

    def _providers(self, provider: str, strict: bool) -> list[Any]:
        if provider == CUDA:
            opts = {"device_id": str(self.config.cuda_device_id)}
            if self.config.deterministic:
                opts["cudnn_conv_algo_search"] = "HEURISTIC"
            cuda = (CUDA, opts)
            return [cuda] if strict else [cuda, CPU]
        return [CPU]

    def _session_options(self, strict: bool) -> ort.SessionOptions:
        c = self.config
        so = ort.SessionOptions()
        so.intra_op_num_threads = c.intra_op_threads
        so.inter_op_num_threads = c.inter_op_threads
        so.graph_optimization_level = _OPT_LEVELS[c.graph_optimization]
        so.log_severity_level = 3  # errors only: fallbacks are reported by us, once
        if c.deterministic:
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.use_deterministic_compute = True
            so.add_session_config_entry("session.set_denormal_as_zero", "0")
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if c.allow_spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "1" if c.allow_spinning else "0")
        if strict:
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return so

    def settings(self) -> dict[str, Any]:
        """What a run manifest records so that a rerun builds the same session."""
        c = self.config
        return {
            "provider": self.provider,
            "intra_op_threads": c.intra_op_threads,
            "inter_op_threads": c.inter_op_threads,
            "graph_optimization": c.graph_optimization,
            "deterministic": c.deterministic,
            "onnxruntime": ort.__version__,
        }

    # -- sessions -----------------------------------------------------------

    def _open(self, model_id: str, model: ModelSource | None, strict: bool) -> _Entry:
        if model is None:
            if self._loader is None:
                raise ModelLoadError(f"model {model_id} is not loaded on this peer and no model store is attached")
            try:
                model = self._loader(model_id)
            except KeyError:
                raise ModelLoadError(f"model {model_id} is not on this peer; fetch the artifact first") from None
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        if not isinstance(model, (bytes, str)):
            raise ModelLoadError(f"model {model_id}: expected ONNX bytes or a file path, got {type(model).__name__}")
        t0 = time.perf_counter()
        try:
            session = ort.InferenceSession(
                model, self._session_options(strict), providers=self._providers(self.provider, strict)
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several pybind types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if strict:
                self._gpu_strict_refused += 1
                raise GpuRequiredError(
                    f"model {model_id}: GPU-strict session could not be built on CUDA ({first}); "
                    f"run it on a peer whose CUDA supports every node, or drop gpu_strict"
                ) from None
            raise ModelLoadError(f"model {model_id}: onnxruntime refused it: {first}") from None
        if strict:
            try:
                check_providers(session, model_id)
            except GpuRequiredError:
                self._gpu_strict_refused += 1
                raise
        self._load_ms_total += (time.perf_counter() - t0) * 1e3
        return _Entry(
            session,
            tuple(i.name for i in session.get_inputs()),
            tuple(o.name for o in session.get_outputs()),
            self._iobinding,
            [o.name for o in session.get_outputs()],
        )

    def _entry(self, model_id: str, model: ModelSource | None, gpu_strict: bool) -> _Entry:
        if gpu_strict and self.provider != CUDA:
            self._gpu_strict_refused += 1
            raise GpuRequiredError(
                f"model {model_id}: GPU-strict job, but this peer runs {self.provider} only "
                f"({self.provider_reason}); submit it to a GPU peer or drop gpu_strict"
            )
        key = (model_id, self.provider, gpu_strict)
        with self._lock:
            entry = self._sessions.get(key)
            if entry is not None:
                self._sessions.move_to_end(key)
                self._hits += 1
                return entry
            self._misses += 1
            entry = self._open(model_id, model, gpu_strict)
            self._sessions[key] = entry
            while len(self._sessions) > self.config.sessions_max:
                self._sessions.popitem(last=False)
                self._evictions += 1
            return entry

    def session(self, model_id: str, model: ModelSource | None = None, *, gpu_strict: bool = False) -> ort.InferenceSession:
        """The cached session of ``model_id`` (built from ``model`` or the loader if absent)."""
        return self._entry(model_id, model, gpu_strict).session

    def load(self, model_id: str, model: ModelSource | None = None, *, gpu_strict: bool = False) -> None:
        """Make ``model_id`` hot: build and cache its session now."""
        self._entry(model_id, model, gpu_strict)

    def evict(self, model_id: str) -> int:
        """Drop every cached session of ``model_id``; returns how many."""
        with self._lock:
            keys = [k for k in self._sessions if k[0] == model_id]
            for k in keys:
                del self._sessions[k]
            return len(keys)

    def hot(self) -> frozenset[str]:
        """Model ids with a cached session on this peer."""
        with self._lock:
            return frozenset(k[0] for k in self._sessions)

    def input_names(self, model_id: str, model: ModelSource | None = None) -> tuple[str, ...]:
        return self._entry(model_id, model, False).input_names

    def output_names(self, model_id: str, model: ModelSource | None = None) -> tuple[str, ...]:
        return self._entry(model_id, model, False).output_names

    # -- running ------------------------------------------------------------

    def run(
        self,
        model_id: str,
        feeds: Mapping[str, np.ndarray],
        *,
        model: ModelSource | None = None,
        outputs: Sequence[str] | None = None,
        gpu_strict: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run ``model_id`` on ``feeds``; returns ``{output name: array}`` (all outputs by default)."""
        # The hot path, without the lock: a dict read and an LRU touch are each
        # atomic under the GIL; if another thread evicts the entry in between,
        # the touch misses and this run still uses the (valid) session.
        key = (model_id, self.provider, gpu_strict)
        entry = self._sessions.get(key)
        if entry is None:
            entry = self._entry(model_id, model, gpu_strict)
        else:
            try:
                self._sessions.move_to_end(key)
            except KeyError:
                pass
            self._hits += 1
        names = outputs if outputs is not None else entry.output_list
        try:
            if entry.iobinding:
                results = self._run_bound(entry, feeds, names)
            else:
                results = entry.session.run(names, feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several pybind types
            self._run_errors += 1
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExecutorError(f"model {model_id}: run failed: {first}") from None
        self._runs += 1
        return dict(zip(names, results))

    def _run_bound(self, entry: _Entry, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        binding = entry.session.io_binding()
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        device = "cuda" if self.provider == CUDA else "cpu"
        for name in names:
            binding.bind_output(name, device, self.config.cuda_device_id if device == "cuda" else 0)
        entry.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def profile(self, model_id: str, feeds: Mapping[str, np.ndarray], *, runs: int = 20, model: ModelSource | None = None) -> dict[str, float]:
        """Latency of ``model_id`` on ``feeds`` here: p50 and p90 over ``runs`` calls, in ms."""
        if not 1 <= runs <= 10_000:
            raise ValueError("runs must lie in 1..10000")
        self.run(model_id, feeds, model=model)  # warm-up: first-run allocations
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.run(model_id, feeds, model=model)
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        return {"p50_ms": _stats.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))]}

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            sessions = len(self._sessions)
        return {
            "provider": self.provider,
            "provider_reason": self.provider_reason,
            "gpu": self.provider == CUDA,
            "iobinding": self._iobinding,
            "sessions": sessions,
            "sessions_max": self.config.sessions_max,
            "session_hits": self._hits,
            "session_misses": self._misses,
            "session_evictions": self._evictions,
            "session_load_ms_total": round(self._load_ms_total, 3),
            "runs": self._runs,
            "run_errors": self._run_errors,
            "gpu_strict_refused": self._gpu_strict_refused,
            **{k: v for k, v in asdict(self.config).items() if k in ("intra_op_threads", "inter_op_threads", "deterministic")},
        }
