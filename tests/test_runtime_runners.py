"""Job runners end to end on one peer: results equal bare onnxruntime's, fine-tune lineage,
the agent workflow, run manifests, and reruns that reproduce outputs bit for bit."""

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest

from arcnet.audit.kinds import JOB_FINISHED, check_data
from arcnet.mesh.identity import Identity
from arcnet.native import kernels
from arcnet.runtime import models as M
from arcnet.runtime.catalog import Catalog, verify_entry
from arcnet.runtime.executor import CPU, Executor, ExecutorConfig
from arcnet.runtime.manifest import ManifestError, RunManifest, rerun
from arcnet.runtime.runners import (
    Job,
    JobError,
    RunContext,
    agent_workflow,
    decode_array,
    decode_msg,
    encode_array,
    encode_msg,
    finetune_entry,
    publish_model,
    run_job,
)
from arcnet.runtime.store import MemoryModelStore, content_id

PEER = Identity.from_seed(bytes([7]) * 32)
CLF = M.mlp_classifier()
SCORER = M.text_scorer()


@pytest.fixture
def ctx():
    store = MemoryModelStore()
    c = RunContext(
        executor=Executor(ExecutorConfig(), loader=store.get),
        models=store,
        catalog=Catalog(),
        peer_id=PEER.peer_id,
        identity=PEER,
        wall_ms=iter(range(1_000_000, 2_000_000, 7)).__next__,  # a fake wall clock: deterministic manifests
    )
    publish_model(c, CLF, name="clf", version="1.0.0", task="classify", published_s=100, scores={"accuracy": 0.88})
    publish_model(c, SCORER, name="scorer", version="1.0.0", task="score", published_s=100)
    return c


def bare(model, feeds, outputs=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=[CPU]).run(outputs, feeds)


def test_online_equals_bare_onnxruntime(ctx):
    x, _ = M.blobs(21, 5)
    r = run_job(ctx, Job("online", "clf@1.0.0", {"top_k": {"output": "probs", "k": 2}}), {"x": encode_array(x)})
    probs, logits, emb = bare(CLF, {"x": x})
    assert decode_array(r.outputs["probs"]).tobytes() == probs.tobytes()
    assert decode_array(r.outputs["embedding"]).tobytes() == emb.tobytes()
    idx, val = decode_array(r.outputs["topk_idx"]), decode_array(r.outputs["topk_val"])
    assert idx[:, 0].tolist() == probs.argmax(axis=1).tolist()
    assert val.tobytes() == np.take_along_axis(probs, idx, axis=1).tobytes()
    m = r.manifest
    assert (m.kind, m.model, m.model_name, m.model_version) == ("online", content_id(CLF), "clf", "1.0.0")
    assert m.inputs == [content_id(encode_array(x))] and m.native == kernels.IMPLEMENTATION
    assert m.output_names == ["embedding", "logits", "probs", "topk_idx", "topk_val"]


def test_online_normalises_and_routes_by_task(ctx):
    x, _ = M.blobs(22, 3)
    mean, std = [0.5] * 16, [2.0] * 16
    r = run_job(ctx, Job("online", "task:classify", {"normalize": {"input": "x", "mean": mean, "std": std}}),
                {"x": encode_array(x)})  # fmt: skip
    xn = (x - np.float32(0.5)) / np.float32(2.0)
    assert decode_array(r.outputs["probs"]).tobytes() == bare(CLF, {"x": xn})[0].tobytes()
    assert r.reasons[-1].startswith("chose clf@1.0.0: accuracy 0.88")
    assert r.manifest.model == content_id(CLF)
    with pytest.raises(JobError, match="no model for task 'translate'"):
        run_job(ctx, Job("online", "task:translate"), {"x": encode_array(x)})


def test_batch_inference_equals_bare_onnxruntime_per_chunk(ctx):
    x, _ = M.blobs(23, 10)
    records = encode_msg([{"id": f"r{i}", "x": [float(v) for v in row]} for i, row in enumerate(x)])
    r = run_job(ctx, Job("batch", "clf", {"batch_size": 4, "top_k": 2}), {"records": records})
    want = np.concatenate([bare(CLF, {"x": x[s : s + 4]}, ["probs"])[0] for s in (0, 4, 8)])
    assert decode_array(r.outputs["output"]).tobytes() == want.tobytes()
    results = decode_msg(r.outputs["results"])
    assert [res["id"] for res in results] == [f"r{i}" for i in range(10)]
    assert [res["label"] for res in results] == want.argmax(axis=1).tolist()
    assert results[0]["top"][0] == [int(want[0].argmax()), float(want[0].max())]
    npy = run_job(ctx, Job("batch", "clf", {"batch_size": 4}), {"records": encode_array(x)})
    assert npy.outputs["output"] == r.outputs["output"]
    with pytest.raises(JobError, match=r"records\[1\]"):
        run_job(ctx, Job("batch", "clf"), {"records": encode_msg([{"x": [1.0] * 16}, {"x": [1.0]}])})


def test_finetune_publishes_a_new_version_with_lineage(ctx):
    x, y = M.blobs(31, 1200, shift=4.0)  # shifted data: the parent does worse on it
    r = run_job(ctx, Job("finetune", "clf@1.0.0", {"name": "clf", "version": "1.1.0", "seed": 5}),
                {"x": encode_array(x), "y": encode_array(y)})  # fmt: skip
    meta = decode_msg(r.outputs["meta"])
    assert meta["parent_id"] == content_id(CLF) and meta["model_id"] == content_id(r.outputs["model"])
    assert meta["scores"]["accuracy"] > meta["scores"]["parent_accuracy"] + 0.05
    # the new model is a real ONNX model: same body, new head
    xt, yt = M.blobs(32, 400, shift=4.0)
    new_probs = bare(r.outputs["model"], {"x": xt}, ["probs"])[0]
    assert (new_probs.argmax(axis=1) == yt).mean() > (bare(CLF, {"x": xt}, ["probs"])[0].argmax(axis=1) == yt).mean()
    assert bare(r.outputs["model"], {"x": xt}, ["embedding"])[0].tobytes() == bare(CLF, {"x": xt}, ["embedding"])[0].tobytes()
    entry = finetune_entry(ctx, r, published_s=200)
    verify_entry(entry)
    ctx.catalog.add(entry)
    ctx.models.put(r.outputs["model"])
    assert [f"{e.meta.name}@{e.meta.version}" for e in ctx.catalog.lineage("clf@1.1.0")] == ["clf@1.1.0", "clf@1.0.0"]
    assert ctx.catalog.get("clf").meta.scores[0].metric == "accuracy"
    # the new version is now what task routing picks (better score)
    xr, _ = M.blobs(33, 2, shift=4.0)
    routed = run_job(ctx, Job("online", "task:classify"), {"x": encode_array(xr)})
    assert routed.manifest.model_version == "1.1.0"


def test_agent_workflow_climbs_and_records_each_step(ctx):
    spec = agent_workflow(3, n=8, seed=2)
    r = run_job(ctx, Job("workflow", "", {"spec": spec}), {})
    best = [max(decode_msg(r.outputs[f"score{i}"])["scores"]) for i in range(4)]
    assert best == sorted(best) and best[-1] > best[0]  # refine keeps the best: never worse
    sel = decode_msg(r.outputs["select"])
    assert sel["score"] == best[-1]
    ids, mask = M.tokenize([sel["text"]])
    assert abs(float(bare(SCORER, {"ids": ids, "mask": mask})[0][0, 0]) - sel["score"]) < 1e-6
    steps = r.manifest.steps
    assert [s["name"] for s in steps] == ["propose", "score0", "refine1", "score1", "refine2", "score2",
                                          "refine3", "score3", "select"]  # fmt: skip
    assert steps[1]["model"] == content_id(SCORER) and steps[1]["reasons"][-1].startswith("chose scorer@1.0.0")
    assert steps[2]["inputs"] == [steps[1]["output"]]  # refine consumed score0's output


def test_workflow_dag_validation(ctx):
    def wf(steps, **kw):
        return run_job(ctx, Job("workflow", "", {"spec": {"steps": steps, **kw}}), {"x": encode_array(np.ones((1, 16), np.float32))})

    with pytest.raises(JobError, match="cycle through a, b"):
        wf([{"name": "a", "op": "select", "deps": ["b"]}, {"name": "b", "op": "select", "deps": ["a"]}])
    with pytest.raises(JobError, match="unknown step 'nope'"):
        wf([{"name": "a", "op": "select", "deps": ["nope"]}])
    with pytest.raises(JobError, match="op must be one of"):
        wf([{"name": "a", "op": "rm -rf"}])
    with pytest.raises(JobError, match="used twice"):
        wf([{"name": "a", "op": "propose"}, {"name": "a", "op": "propose"}])
    with pytest.raises(JobError, match="job input 'y' not given"):
        wf([{"name": "a", "op": "infer", "deps": ["input:y"], "model": "clf"}])
    # steps run in dependency order whatever the spec order; an infer -> topk pipeline on a job input
    r = wf([{"name": "top", "op": "topk", "deps": ["probs"], "params": {"k": 1}},
            {"name": "probs", "op": "infer", "deps": ["input:x"], "model": "clf@1.0.0"}], outputs=["top", "probs"])  # fmt: skip
    want = bare(CLF, {"x": np.ones((1, 16), np.float32)}, ["probs"])[0]
    assert decode_array(r.outputs["probs"]).tobytes() == want.tobytes()
    assert decode_msg(r.outputs["top"])["idx"] == [[int(want.argmax())]]


def test_manifest_canonical_bytes_and_audit_fields(ctx):
    x, _ = M.blobs(24, 2)
    r = run_job(ctx, Job("online", "clf@1.0.0", {}, job_id="job-1", submitter=PEER.peer_id), {"x": encode_array(x)})
    m = r.manifest
    data = m.to_bytes()
    assert RunManifest.from_bytes(data) == m and m.manifest_id().startswith("blake3:")
    with pytest.raises(ManifestError, match="not canonical"):
        import msgpack

        RunManifest.from_bytes(msgpack.packb(dict(reversed(list(m.to_plain().items()))), use_bin_type=True))
    with pytest.raises(ManifestError):
        RunManifest.from_bytes(b"\x93garbage")
    assert check_data(JOB_FINISHED, {"job": m.job, "manifest": m.to_plain()}) is None
    assert m.energy_j == pytest.approx(m.power_w * m.timings_ms["total"] / 1e3, rel=1e-3)
    assert m.energy_kwh == pytest.approx(m.energy_j / 3.6e6)
    assert m.provider == ctx.executor.provider and m.settings["intra_op_threads"] == 1
    assert m.started_ms < m.finished_ms and m.peer == PEER.peer_id


@pytest.mark.parametrize("kind", ["online", "batch", "finetune", "workflow"])
def test_rerun_reproduces_outputs_bit_for_bit_on_cpu(ctx, kind):
    x, y = M.blobs(41, 300, shift=4.0)
    jobs = {
        "online": (Job("online", "task:classify", {"top_k": {"k": 3, "output": "probs"}}), {"x": encode_array(x)}),
        "batch": (Job("batch", "clf@1.0.0", {"batch_size": 64, "top_k": 2}), {"records": encode_array(x)}),
        "finetune": (Job("finetune", "clf@1.0.0", {"name": "clf", "version": "2.0.0", "seed": 9, "epochs": 50}),
                     {"x": encode_array(x), "y": encode_array(y)}),
        "workflow": (Job("workflow", "", {"spec": agent_workflow(2, seed=4)}), {}),
    }  # fmt: skip
    job, inputs = jobs[kind]
    first = run_job(ctx, job, inputs)
    manifest = RunManifest.from_bytes(first.manifest.to_bytes())  # as the audit log would hand it back
    # a fresh peer: its own executor (nothing hot), no catalog, only the model bytes by id
    store = MemoryModelStore()
    store.put(CLF)
    store.put(SCORER)
    report = rerun(manifest, inputs, store)
    assert report.matches, report.mismatched
    assert report.outputs == first.outputs
    assert report.manifest.steps == [] or [s["model"] for s in report.manifest.steps] == [s["model"] for s in manifest.steps]


def test_rerun_refuses_other_inputs(ctx):
    x, _ = M.blobs(42, 3)
    r = run_job(ctx, Job("online", "clf@1.0.0"), {"x": encode_array(x)})
    with pytest.raises(ManifestError, match="not the recorded one"):
        rerun(r.manifest, {"x": encode_array(x + 1)}, ctx.models)
    with pytest.raises(ManifestError, match="needs inputs"):
        rerun(r.manifest, {}, ctx.models)


def test_bad_jobs_fail_with_one_line(ctx):
    with pytest.raises(JobError, match="job kind"):
        run_job(ctx, Job("mine-crypto", "clf"), {})
    with pytest.raises(JobError, match="missing input"):
        run_job(ctx, Job("finetune", "clf", {"name": "n", "version": "1"}), {"x": encode_array(np.zeros((4, 16)))})
    with pytest.raises(JobError, match="not a .npy"):
        run_job(ctx, Job("online", "clf"), {"x": b"\x00" * 10})
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(JobError, match="npy"):
        run_job(ctx, Job("online", "clf"), {"x": buf.getvalue()})
    with pytest.raises(JobError, match="not in this peer's catalog"):
        run_job(ctx, Job("online", "nope@9"), {"x": encode_array(np.zeros((1, 16), np.float32))})
    with pytest.raises(JobError, match="params"):
        run_job(ctx, Job("online", "clf", {"bad": float("nan")}), {"x": encode_array(np.zeros((1, 16), np.float32))})
    with pytest.raises(JobError, match="parameter 'latency_budget_ms' must be float or none"):
        run_job(ctx, Job("online", "task:classify", {"latency_budget_ms": "fast"}), {"x": encode_array(np.zeros((1, 16), np.float32))})
    with pytest.raises(JobError, match="over the 1e-06 ms budget"):
        run_job(ctx, Job("online", "task:classify", {"latency_budget_ms": 1e-6}), {"x": encode_array(np.zeros((1, 16), np.float32))})
    with pytest.raises(JobError, match="parameter 'top_k'"):
        run_job(ctx, Job("batch", "clf", {"top_k": "3"}), {"records": encode_array(np.zeros((1, 16), np.float32))})
    bad_ctx = dataclasses.replace(ctx, models=MemoryModelStore(), executor=Executor())
    with pytest.raises(JobError, match="fetch the artifact first"):
        run_job(bad_ctx, Job("online", "clf@1.0.0"), {"x": encode_array(np.zeros((1, 16), np.float32))})
