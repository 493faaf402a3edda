"""Executor: results equal bare onnxruntime's, the session LRU, provider choice, GPU-strict refusals."""

import numpy as np
import onnxruntime as ort
import pytest

from arcnet.runtime import models as M
from arcnet.runtime.executor import (
    CPU,
    CUDA,
    Executor,
    ExecutorConfig,
    ExecutorError,
    GpuRequiredError,
    ModelLoadError,
    check_providers,
)

CLF = M.mlp_classifier()
SCORER = M.text_scorer()


def bare(model: bytes, feeds, outputs=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(model, so, providers=[CPU])
    return s.run(outputs, feeds)


def test_models_are_deterministic_real_onnx():
    assert M.mlp_classifier() == CLF
    assert M.text_scorer() == SCORER
    x, y = M.blobs(7, 500)
    probs = bare(CLF, {"x": x}, ["probs"])[0]
    assert probs.shape == (500, 4)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=1) == y).mean() > 0.8  # a trained classifier, not noise
    ids, mask = M.tokenize(["fast cheap green solar", "slow costly remote cold", ""])
    score = bare(SCORER, {"ids": ids, "mask": mask})[0][:, 0]
    assert score[0] > 0.9 > 0.5 > score[1]


@pytest.mark.parametrize("iobinding", [False, True])
def test_results_equal_bare_onnxruntime(iobinding):
    ex = Executor(ExecutorConfig(iobinding=iobinding))
    x, _ = M.blobs(3, 64)
    got = ex.run("clf", {"x": x}, model=CLF)
    want = bare(CLF, {"x": x})
    assert list(got) == ["probs", "logits", "embedding"]
    for g, w in zip(got.values(), want):
        assert g.tobytes() == w.tobytes()
    ids, mask = M.tokenize(["fast green", "cold idle busy"])
    assert ex.run("sc", {"ids": ids, "mask": mask}, model=SCORER, outputs=["score"])["score"].tobytes() == bare(
        SCORER, {"ids": ids, "mask": mask}
    )[0].tobytes()
    assert ex.statistics()["iobinding"] is iobinding


def test_cpu_provider_reported_and_settings_recorded():
    ex = Executor()
    st = ex.statistics()
    if CUDA not in ort.get_available_providers():
        assert ex.provider == CPU and not ex.has_gpu
        assert "no CUDA provider" in st["provider_reason"]
    assert st["provider"] == ex.provider
    s = ex.settings()
    assert s["intra_op_threads"] == 1 and s["deterministic"] is True and s["onnxruntime"] == ort.__version__


def test_session_cache_is_a_bounded_lru():
    loads = []
    store = {f"m{i}": CLF for i in range(4)}

    def loader(mid):
        loads.append(mid)
        return store[mid]

    ex = Executor(ExecutorConfig(sessions_max=2), loader=loader)
    x = np.zeros((1, 16), np.float32)
    ex.run("m0", {"x": x})
    ex.run("m1", {"x": x})
    ex.run("m0", {"x": x})  # m0 most recent
    ex.run("m2", {"x": x})  # evicts m1
    assert ex.hot() == {"m0", "m2"}
    ex.run("m1", {"x": x})  # reloaded, evicts m0
    assert loads == ["m0", "m1", "m2", "m1"]
    st = ex.statistics()
    assert (st["session_hits"], st["session_misses"], st["session_evictions"], st["sessions"]) == (1, 4, 2, 2)
    assert ex.evict("m1") == 1 and ex.hot() == {"m2"}


def test_thread_counts_and_determinism_config():
    with pytest.raises(ValueError, match="explicit thread counts"):
        ExecutorConfig(intra_op_threads=0)
    ExecutorConfig(intra_op_threads=0, deterministic=False)  # "all cores" allowed when not deterministic
    with pytest.raises(ValueError, match="provider"):
        ExecutorConfig(provider="tpu")
    ex = Executor(ExecutorConfig(intra_op_threads=2))
    x, _ = M.blobs(4, 256)
    a = ex.run("clf", {"x": x}, model=CLF)["probs"]
    b = ex.run("clf", {"x": x})["probs"]
    assert a.tobytes() == b.tobytes()


def test_errors_are_one_clear_line():
    ex = Executor()
    with pytest.raises(ModelLoadError, match="not loaded on this peer"):
        ex.run("nope", {"x": np.zeros((1, 16), np.float32)})
    with pytest.raises(ModelLoadError, match="onnxruntime refused it"):
        ex.run("bad", {"x": np.zeros((1, 16), np.float32)}, model=b"not a model")
    with pytest.raises(ExecutorError, match="run failed") as info:
        ex.run("clf", {"x": np.zeros((1, 3), np.float32)}, model=CLF)
    assert "\n" not in str(info.value)
    assert ex.statistics()["run_errors"] == 1
    ex2 = Executor(loader=lambda mid: {}[mid])
    with pytest.raises(ModelLoadError, match="fetch the artifact first"):
        ex2.run("missing", {})


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this machine has CUDA")
def test_gpu_strict_job_fails_clearly_on_a_cpu_only_peer():
    ex = Executor()
    x = np.zeros((1, 16), np.float32)
    with pytest.raises(GpuRequiredError, match="GPU-strict job, but this peer runs CPUExecutionProvider only") as info:
        ex.run("clf", {"x": x}, model=CLF, gpu_strict=True)
    assert "\n" not in str(info.value) and "GPU peer" in str(info.value)
    assert ex.statistics()["gpu_strict_refused"] == 1
    assert ex.hot() == frozenset()  # nothing was built, nothing ran
    with pytest.raises(ExecutorError, match="provider cuda configured"):
        Executor(ExecutorConfig(provider="cuda"))


class _BelievesItHasCuda(Executor):
    """A peer whose provider choice said CUDA (a stale probe, a driver gone since): the
    session build itself must still refuse to run a strict job on CPU."""

    def _choose_provider(self):
        return CUDA, "test: pretend the probe succeeded"


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this machine has CUDA")
def test_gpu_strict_session_has_cpu_fallback_disabled():
    ex = _BelievesItHasCuda()
    with pytest.warns(UserWarning):  # onnxruntime's own "CUDA not available" warning
        with pytest.raises(GpuRequiredError, match="could not be built on CUDA"):
            ex.run("clf", {"x": np.zeros((1, 16), np.float32)}, model=CLF, gpu_strict=True)
    assert ex.hot() == frozenset()


def test_check_providers_refuses_a_session_that_fell_back_to_cpu():
    s = ort.InferenceSession(CLF, providers=[CPU])
    with pytest.raises(GpuRequiredError, match=r"runs on \['CPUExecutionProvider'\]"):
        check_providers(s, "clf")


def test_profile_reports_latency():
    ex = Executor()
    p = ex.profile("clf", {"x": np.zeros((1, 16), np.float32)}, model=CLF, runs=5)
    assert 0 < p["p50_ms"] <= p["p90_ms"]
