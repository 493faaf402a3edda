"""Jobs on real peer processes: publish a real ONNX model, submit anywhere, run elsewhere, survive a crash."""

from __future__ import annotations

import io

import msgpack
import numpy as np
import onnxruntime as ort
import pytest
import trio

from arcnet.cli.client import Client
from arcnet.cli.localmesh import LocalMesh
from arcnet.mesh.identity import Identity
from arcnet.runtime import models

from .meshutil import FAST_GOSSIP, member_states, wait_for

pytestmark = pytest.mark.integration

SITES = [("west", 37.77, -122.42), ("west", 34.05, -118.24), ("east", 40.71, -74.01),
         ("east", 42.36, -71.06), ("east", 39.95, -75.17)]


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def from_npy(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


async def converge(client, mesh, n):
    async def ok():
        for p in mesh.peers:
            if not p.running:
                continue
            st = await member_states(client, p.addr)
            if sum(1 for s in st.values() if s == "alive") != n:
                return False
        return True

    await wait_for(ok, 40, what=f"{n} peers to converge")


async def test_online_job_runs_elsewhere_and_equals_bare_onnxruntime(tmp_path):
    with LocalMesh(tmp_path / "mesh", SITES[:3], gossip=FAST_GOSSIP) as mesh:
        await trio.to_thread.run_sync(mesh.start_all)
        async with Client(Identity.load_or_create(tmp_path / "client.key")) as c:
            await converge(c, mesh, 3)
            model = models.mlp_classifier()
            pub = await c.call(mesh.peers[0].addr, "model.publish",
                               {"model": model, "name": "mlp", "version": "1", "task": "classify"})
            assert pub["catalog_peers"] >= 2
            ls = await c.call(mesh.peers[2].addr, "model.ls")
            assert [m["name"] for m in ls["models"]] == ["mlp"]
            x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
            # submitted in the east, only west may run it: the executor lacks nothing but must fetch inputs
            sub = await c.call(mesh.peers[2].addr, "submit",
                               {"kind": "online", "model": "mlp@1", "inputs": {"x": npy(x)}, "regions": ["west"]})
            job = sub["job_id"]

            async def done():
                s = await c.call(mesh.peers[2].addr, "job.show", {"job_id": job})
                return s.get("state") in ("done", "failed") and s

            show = await wait_for(done, 40, what="the job to finish")
            assert show["state"] == "done", show
            assert show["executor"] in (mesh.peers[0].peer_id, mesh.peers[1].peer_id)
            assert show["placement"]["bids"] >= 1
            res = await c.call(mesh.peers[2].addr, "result", {"job_id": job})
            sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            want = sess.run(None, {sess.get_inputs()[0].name: x})
            names = [o.name for o in sess.get_outputs()]
            for name, w in zip(names, want):
                assert np.array_equal(from_npy(res["outputs"][name]), w), name
            assert res["manifest"]["model"] == pub["model_id"]
            assert res["manifest"]["peer"] == show["executor"]


async def test_executor_killed_mid_run_job_completes_elsewhere(tmp_path):
    with LocalMesh(tmp_path / "mesh", SITES, gossip=FAST_GOSSIP) as mesh:
        await trio.to_thread.run_sync(mesh.start_all)
        async with Client(Identity.load_or_create(tmp_path / "client.key")) as c:
            await converge(c, mesh, 5)
            model = models.mlp_classifier()
            await c.call(mesh.peers[0].addr, "model.publish",
                         {"model": model, "name": "mlp", "version": "1", "task": "classify"})
            x = np.random.default_rng(2).standard_normal((40000, 16)).astype(np.float32)
            # 2.5 MB of records: too big to go inline, so they are put as an artifact from a file
            path = tmp_path / "records.npy"
            path.write_bytes(npy(x))
            put = await c.call(mesh.peers[1].addr, "blob.put", {"path": str(path), "name": "records"})
            # entry in the west, executors only in the east: killing the executor never kills the entry
            sub = await c.call(mesh.peers[1].addr, "submit",
                               {"kind": "batch", "model": "mlp@1", "inputs": {"records": "artifact:" + put["id"]},
                                "params": {"batch_size": 1}, "regions": ["east"], "run_s": 5.0})
            job = sub["job_id"]

            async def running():
                s = await c.call(mesh.peers[1].addr, "job.show", {"job_id": job})
                return s.get("state") == "running" and s

            first = await wait_for(running, 40, interval_s=0.05, what="the job to start")
            victim = next(i for i, p in enumerate(mesh.peers) if p.peer_id == first["executor"])
            assert victim >= 2
            mesh.kill(victim)

            async def done():
                s = await c.call(mesh.peers[1].addr, "job.show", {"job_id": job})
                return s.get("state") in ("done", "failed") and s

            show = await wait_for(done, 90, what="the job to finish after its executor died")
            assert show["state"] == "done", show
            assert show["executor"] != first["executor"], "\n".join(f"{e['t']:.3f} {e['event']} {e.get('executor', '')[-6:]} {e.get('reason', '')}" for e in show["events"])
            assert show["attempts"] >= 2
            out_path = tmp_path / "result.bin"
            res = await c.call(mesh.peers[1].addr, "result", {"job_id": job, "path": str(out_path)})
            assert res["bytes"] > 900 * 1024  # too big to travel inline: written where the CLI asked
            res = msgpack.unpackb(out_path.read_bytes(), raw=False)
            sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            got = from_npy(res["outputs"]["output"])
            assert got.shape[0] == 40000
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            records = msgpack.unpackb(res["outputs"]["results"], raw=False)
            assert len(records) == 40000


async def test_finetune_workflow_and_rerun_on_real_peers(tmp_path):
    """Fine-tune publishes a child version with lineage; an agent workflow runs; rerun is bit for bit."""
    from arcnet.runtime.runners import agent_workflow

    with LocalMesh(tmp_path / "mesh", SITES[:3], gossip=FAST_GOSSIP) as mesh:
        await trio.to_thread.run_sync(mesh.start_all)
        async with Client(Identity.load_or_create(tmp_path / "client.key")) as c:
            await converge(c, mesh, 3)
            parent = await c.call(mesh.peers[0].addr, "model.publish",
                                  {"model": models.mlp_classifier(), "name": "mlp", "version": "1", "task": "classify"})
            await c.call(mesh.peers[1].addr, "model.publish",
                         {"model": models.text_scorer(), "name": "scorer", "version": "1", "task": "score"})
            x, y = models.blobs(seed=3, n=256, shift=0.5)

            async def run(peer, args):
                sub = await c.call(mesh.peers[peer].addr, "submit", args)

                async def done():
                    s = await c.call(mesh.peers[peer].addr, "job.show", {"job_id": sub["job_id"]})
                    return s.get("state") in ("done", "failed") and s

                show = await wait_for(done, 60, what=f"{args['kind']} job to finish")
                assert show["state"] == "done", [e for e in show["events"] if "reason" in e]
                return sub["job_id"]

            await run(2, {"kind": "finetune", "model": "mlp@1", "inputs": {"x": npy(x), "y": npy(y.astype(np.int64))},
                          "params": {"name": "mlp", "version": "2", "seed": 1}})

            async def child_listed():
                ls = await c.call(mesh.peers[2].addr, "model.ls")
                return next((m for m in ls["models"] if m["version"] == "2"), None)

            child = await wait_for(child_listed, 20, what="the fine-tuned version in the catalog")
            assert child["parent"] == parent["model_id"]

            wf = await run(1, {"kind": "workflow", "params": {"spec": agent_workflow(2, n=6)}})
            res = await c.call(mesh.peers[1].addr, "result", {"job_id": wf})
            assert "select" in res["outputs"]
            steps = [s["name"] for s in res["manifest"]["steps"]]
            assert steps[0] == "propose" and "refine2" in steps and steps[-1] == "select"

            xo = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)
            online = await run(0, {"kind": "online", "model": "mlp@2", "inputs": {"x": npy(xo)}})
            rerun = await c.call(mesh.peers[0].addr, "job.rerun", {"job_id": online}, timeout_s=60)
            assert rerun["identical"] is True and rerun["outputs"]
