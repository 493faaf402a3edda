"""The `arcnet` CLI, as a person runs it, against real peer processes: every command, --json parses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from arcnet.cli.localmesh import LOCAL_GOSSIP, LocalMesh
from arcnet.runtime import models

pytestmark = pytest.mark.integration

SITES = [("west", 37.77, -122.42), ("west", 34.05, -118.24), ("east", 40.71, -74.01)]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("climesh")
    m = LocalMesh(root / "mesh", SITES, gossip=LOCAL_GOSSIP)
    try:
        m.start_all()
        m.root_dir = root
        yield m
    finally:
        m.close()


def arcnet(mesh, *args, check=True, timeout=120):
    env = dict(os.environ, ARCNET_CLIENT_KEY=str(mesh.root_dir / "client.key"), ARCNET_PEER="")
    r = subprocess.run([sys.executable, "-m", "arcnet.cli.main", *args], capture_output=True, text=True,
                       env=env, timeout=timeout)
    if check:
        assert r.returncode == 0, f"arcnet {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
    return r


def js(mesh, *args):
    return json.loads(arcnet(mesh, *args, "--json").stdout)


def poll(fn, timeout_s=60.0):
    import time

    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out; last {last!r}")


def test_every_command_against_real_peers(mesh, tmp_path):
    a, b, c = (p.addr for p in mesh.peers)
    poll(lambda: all(m["state"] == "alive" for m in js(mesh, "peers", "--peer", a)["members"])
         and len(js(mesh, "peers", "--peer", a)["members"]) == 3)
    st = js(mesh, "status", "--peer", b)
    assert st["region"] == "west" and st["peer_id"] == mesh.peers[1].peer_id

    model = tmp_path / "mlp.onnx"
    model.write_bytes(models.mlp_classifier())
    pub = js(mesh, "model", "publish", str(model), "--name", "mlp", "--version", "1", "--task", "classify",
             "--peer", a)
    assert pub["model_id"].startswith("blake3:")
    assert [m["name"] for m in js(mesh, "model", "ls", "--peer", c)["models"]] == ["mlp"]

    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x, allow_pickle=False)
    done = js(mesh, "submit", "--model", "mlp@1", "--input", f"x={tmp_path / 'x.npy'}", "--wait", "--peer", c)
    assert done["state"] == "done" and done["placement"]["bids"] >= 1
    job = done["job_id"]
    assert job in [j["job_id"] for j in js(mesh, "jobs", "--peer", c)["jobs"]]
    assert js(mesh, "job", "show", job, "--peer", c)["output"]
    res = js(mesh, "result", job, "-o", str(tmp_path / "out"), "--peer", c)
    assert res["outputs"]["probs"] > 0 and (tmp_path / "out" / "probs.npy").exists()
    assert (tmp_path / "out" / "manifest.json").exists()
    assert js(mesh, "job", "rerun", job, "--peer", c)["identical"] is True

    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(300_000))
    put = js(mesh, "blob", "put", str(data), "--peer", a)
    listed = js(mesh, "blob", "ls", "--peer", a)
    listed = listed["artifacts"] if isinstance(listed, dict) else listed
    assert any(x["id"] == put["id"] for x in listed)
    stat = js(mesh, "blob", "stat", put["id"], "--peer", a)
    assert stat["size"] == 300_000
    arcnet(mesh, "blob", "get", put["id"], "-o", str(tmp_path / "copy.bin"), "--peer", b)
    assert (tmp_path / "copy.bin").read_bytes() == data.read_bytes()

    assert js(mesh, "drain", "--peer", b)["draining"] is True
    poll(lambda: any(m["draining"] for m in js(mesh, "peers", "--peer", a)["members"]
                     if m["peer_id"] == mesh.peers[1].peer_id))
    assert js(mesh, "undrain", "--peer", b)["draining"] is False

    bundle = tmp_path / "job.bundle"
    arcnet(mesh, "audit", "export", "--job", job, "-o", str(bundle), "--peer", c)
    trust = tmp_path / "trust.keys"
    trust.write_text("".join(p.peer_id + "\n" for p in mesh.peers))
    ok = arcnet(mesh, "audit", "verify", str(bundle), "--trust", str(trust), "--json")
    assert json.loads(ok.stdout)["ok"] is True
    raw = bytearray(bundle.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    bundle.write_bytes(bytes(raw))
    bad = arcnet(mesh, "audit", "verify", str(bundle), "--trust", str(trust), check=False)
    assert bad.returncode != 0


def test_metrics_and_health_endpoints(mesh):
    p = mesh.peers[0]
    text = urllib.request.urlopen(p.metrics + "/metrics", timeout=10).read().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "arcnet_daemon_frames_in" in names or "arcnet_daemon_frames_in_total" in names
    assert any(n.startswith("arcnet_swim_") for n in names)
    health = json.loads(urllib.request.urlopen(p.metrics + "/health", timeout=10).read())
    assert health["status"] == "ok" and health["peer_id"] == p.peer_id


def test_errors_are_one_line(mesh, tmp_path):
    r = arcnet(mesh, "job", "show", "j-doesnotexist", "--peer", mesh.peers[0].addr, check=False)
    assert r.returncode == 1
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr
    bad = tmp_path / "job.toml"
    bad.write_text("kind = 'online'\nmodle = 'x'\n")
    r = arcnet(mesh, "submit", str(bad), "--peer", mesh.peers[0].addr, check=False)
    assert r.returncode == 2 and "modle: unknown key" in r.stderr


def test_join_starts_a_new_site_that_joins_and_takes_work(mesh, tmp_path):
    import signal

    dd = tmp_path / "site4"
    r = arcnet(mesh, "join", "--bootstrap", mesh.peers[0].addr, "--data-dir", str(dd), "--region", "east",
               timeout=180)
    assert "ready:" in r.stdout
    info = json.loads((dd / "run" / "peer.json").read_text())
    try:
        poll(lambda: any(m["peer_id"] == info["peer_id"] and m["state"] == "alive"
                         for m in js(mesh, "peers", "--peer", mesh.peers[0].addr)["members"]))
        assert js(mesh, "status", "--peer", info["addrs"][0])["draining"] is False
    finally:
        os.kill(info["pid"], signal.SIGTERM)
        poll(lambda: not (dd / "run" / "peer.json").exists(), 30)
