"""The audit log inside real peers: what they record, witnessed checkpoints, export, crash.

One mesh of three ``arcnet-peer`` processes on loopback serves the whole
module (starting peers is the slow part); the tests run in file order and
the crash test comes last. Audit knobs come from ``ARCNET_AUDIT_*``
environment variables: a checkpoint (and a witness round) every second.
Exports go through the control protocol and the ``arcnet audit`` CLI, and
verification is offline, with nothing but the bundle and the peers' keys.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import struct
from types import SimpleNamespace

import msgpack
import numpy as np
import pytest
import trio
from click.testing import CliRunner

from arcnet.audit import AuditLog, export_bundle, verify_bundle
from arcnet.audit.bundle import stitch_bundles
from arcnet.audit.entry import Entry, decode_entry
from arcnet.audit.log import default_origin
from arcnet.audit.service import AuditConfig, AuditService
from arcnet.mesh.core import Emit
from arcnet.audit.witness import witness_name
from arcnet.cli.audit import audit as audit_cli
from arcnet.cli.client import Client
from arcnet.cli.localmesh import LocalMesh
from arcnet.mesh.identity import Identity
from arcnet.runtime import models

from .meshutil import FAST_GOSSIP, member_states, wait_for

pytestmark = pytest.mark.integration

SITES = [("west", 37.77, -122.42), ("west", 34.05, -118.24), ("east", 40.71, -74.01)]
AUDIT_ENV = {"ARCNET_AUDIT_CHECKPOINT_INTERVAL_S": "1"}
TAMPER_SEED = 8  # reproduce: the positions below are drawn from random.Random(TAMPER_SEED)
TAMPER_SAMPLES = 24


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-mesh")
    m = LocalMesh(root / "mesh", SITES, gossip=FAST_GOSSIP,
                  env=dict(AUDIT_ENV, ARCNET_CLIENT_KEY=str(root / "client.key")))
    try:
        m.start_all()
        yield m
    finally:
        for peer in m.peers:  # stop them all at once, then reap each
            if peer.running:
                os.killpg(peer.proc.pid, signal.SIGTERM)
        m.close()


@pytest.fixture(scope="module")
def client_identity(tmp_path_factory):
    return Identity.load_or_create(tmp_path_factory.mktemp("client") / "client.key")


def _entries(bundle: bytes) -> dict[str, list[Entry]]:
    obj = msgpack.unpackb(bundle, raw=False)
    return {lg["origin"]: [decode_entry(raw) for raw in lg["entries"]] for lg in obj["logs"]}


async def _converged(client: Client, mesh: LocalMesh) -> None:
    ids = {p.peer_id for p in mesh.peers}

    async def all_alive():
        for p in mesh.peers:
            states = await member_states(client, p.addr)
            if set(states) != ids or any(s != "alive" for s in states.values()):
                return False
        return True

    await wait_for(all_alive, 30, what="3 peers to see each other alive")


def _tampered_all_fail(bundle: bytes, trust: list[str], seed: int) -> list[int]:
    """Change one byte at sampled positions (and the first and last); return
    the positions whose change still verified (must be none)."""
    rng = random.Random(seed)
    positions = sorted({0, len(bundle) - 1, *rng.sample(range(len(bundle)), TAMPER_SAMPLES)})
    survived = []
    for pos in positions:
        bad = bytearray(bundle)
        bad[pos] ^= 1 + rng.randrange(255)
        if verify_bundle(bytes(bad), trust, workers=1).ok:
            survived.append(pos)
    return survived


def _offline_service(tmp_path, seed: int) -> AuditService:
    """An AuditService fed events by hand, with its log and no daemon."""
    ident = Identity.from_seed(bytes([seed]) * 32)
    ctx = SimpleNamespace(identity=ident, config=SimpleNamespace(data_dir=tmp_path / f"p{seed}"))
    svc = AuditService(None, ctx, AuditConfig())
    svc.log = AuditLog.open(svc.dir, ident, background_commit=False)
    return svc


def test_events_become_entries_and_peers_parts_stitch_into_one_bundle(tmp_path):
    """No processes: a job's events on its intake peer, executor and custodian,
    mapped by the service, exported per peer and stitched, verify as one bundle."""
    entry, executor, custodian = (_offline_service(tmp_path, i) for i in (1, 2, 3))
    job, task, epoch = "job-7", "job-7/main", (1 << 40) | 3
    model, data, out = "blake3:" + "aa" * 32, "blake3:" + "bb" * 32, "cc" * 32
    ex, cu = executor.peer_id, custodian.peer_id
    feed = {
        entry: [
            Emit("job.submitted", {"job": job, "custodians": [cu, ex]}),
            Emit("job.accepted", {"job": job, "custodians": [cu, ex]}),
            Emit("job.bid_won", {"job": job, "task": task, "executor": ex, "epoch": epoch, "cost_s": 1.5, "bids": 3}),
            Emit("job.placed", {"job": job, "task": task, "epoch": epoch, "executor": ex}),  # already recorded
            Emit("job.started", {"job": job, "task": task, "epoch": epoch, "executor": ex}),
            Emit("job.done", {"job": job, "output": out}),
            Emit("member.alive", {"peer": cu, "incarnation": 0, "addr": "", "region": "west"}),
            Emit("swim.probe", {"peer": cu}),  # not recorded
        ],
        executor: [
            Emit("task.accepted", {"task": task, "epoch": epoch, "defer_s": 0.0}),
            Emit("task.run", {"job": job, "task": task, "epoch": epoch, "cls": "batch", "slots": 1, "run_s": 1.0,
                              "artifacts": [["aa" * 32, 10]]}),
            Emit("task.finished", {"task": task, "epoch": epoch, "ok": True, "output": out, "manifest": {
                "model": model, "inputs": [data], "outputs": ["blake3:" + out], "runtime": "onnxruntime cpu",
                "started_ms": 1, "finished_ms": 2, "energy_kwh": 0.001, "submitter": ""}}),
        ],
        custodian: [
            Emit("task.replaced", {"job": job, "task": task, "executor": ex, "previous": entry.peer_id,
                                   "epoch": epoch + (1 << 40), "cost_s": 2.0}),
            Emit("custody.done", {"job": job, "output": out}),
            Emit("leader.changed", {"region": "west", "leader": "", "epoch": 2, "previous": cu}),
        ],
    }
    parts = []
    for svc, events in feed.items():
        for ev in events:
            svc.observe(0.0, ev)
        assert svc.counts["entries_refused"] == 0
        svc.log.checkpoint()
        parts.append(export_bundle([svc.log], job=job, views=False))
    kinds = [e.kind for e in _entries(parts[0])[entry.log.origin]]
    assert kinds == ["job.submitted", "policy.decision", "job.placed", "job.started", "policy.decision"]
    (finished,) = [e for e in _entries(parts[1])[executor.log.origin] if e.kind == "job.finished"]
    assert finished.data["manifest"]["unchecked"] == {"submitter": ""}  # not a peer id: kept, unchecked
    assert finished.data["job"] == job
    bundle = stitch_bundles(parts)
    trust = [entry.peer_id, ex, cu]
    report = verify_bundle(bundle, trust, workers=1)
    assert report.ok, report.problems
    assert report.job == job and report.entries_verified == 5 + 3 + 2
    assert msgpack.unpackb(bundle, raw=False)["manifest"]["views"] == ["prov", "slsa"]
    survived = _tampered_all_fail(bundle, trust, TAMPER_SEED)
    assert not survived, f"changed bytes at {survived} still verified (seed {TAMPER_SEED})"
    for svc in feed:
        svc.close()


async def test_membership_changes_are_logged_on_every_peer(mesh, client_identity):
    async with Client(client_identity) as client:
        await _converged(client, mesh)
        for p in mesh.peers:
            others = {q.peer_id for q in mesh.peers} - {p.peer_id}

            async def logged(p=p, others=others):
                res = await client.call(p.addr, "audit.export", {"witness": False}, timeout_s=20)
                (entries,) = _entries(res["bundle"]).values()
                seen = {e.data["member"] for e in entries if e.kind == "member.changed" and e.data["status"] == "alive"}
                return others <= seen

            await wait_for(logged, 15, what=f"{p.name}'s log to record the other peers joining")


async def test_checkpoints_are_cosigned_and_an_export_verifies_offline(mesh, client_identity, tmp_path):
    async with Client(client_identity) as client:
        await _converged(client, mesh)
        for p in mesh.peers:  # periodic witnessing, no export asked for yet

            async def cosigned(p=p):
                st = await client.call(p.addr, "statistics")
                return st["audit.checkpoint_cosignatures"] >= 2 and st["audit.equivocations"] == 0

            await wait_for(cosigned, 20, what=f"{p.name}'s latest checkpoint to carry 2 cosignatures")

    runner = CliRunner()
    target = mesh.peers[1]
    trust_file, out = tmp_path / "trust.txt", tmp_path / "peer2.bundle"

    def cli(*args: str):
        return runner.invoke(audit_cli, list(args), catch_exceptions=False)

    r = await trio.to_thread.run_sync(cli, "trust", "--peer", mesh.peers[0].addr, "--members", "-o", str(trust_file))
    assert r.exit_code == 0, r.output
    assert len([ln for ln in trust_file.read_text().splitlines() if "+" in ln]) == 6  # log + witness key per peer
    r = await trio.to_thread.run_sync(cli, "export", "--peer", target.addr, "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["bytes"] == out.stat().st_size
    r = await trio.to_thread.run_sync(cli, "verify", str(out), "--trust", str(trust_file), "--min-cosignatures", "2")
    assert r.exit_code == 0 and "OK" in r.output, r.output

    bundle = out.read_bytes()
    trust = [p.peer_id for p in mesh.peers]
    report = verify_bundle(bundle, trust, min_cosignatures=2, workers=1)
    assert report.ok, report.problems
    (row,) = report.logs
    assert row["peer"] == target.peer_id and row["entries"] == row["size"] > 0
    assert row["cosigners"] == sorted(witness_name(p.peer_id) for p in mesh.peers if p is not target)
    # the witnesses recorded what they cosigned in their own logs
    kinds = {e.kind for e in next(iter(_entries(bundle).values()))}
    assert {"member.changed", "leader.changed", "checkpoint.witnessed"} <= kinds, kinds
    # and the bundle proves nothing with other keys
    assert not verify_bundle(bundle, [mesh.peers[0].peer_id], workers=1).ok
    survived = _tampered_all_fail(bundle, trust, TAMPER_SEED)
    assert not survived, f"changed bytes at {survived} still verified (seed {TAMPER_SEED})"


async def test_a_job_across_three_peers_exports_one_bundle_that_verifies(mesh, client_identity):
    async with Client(client_identity) as client:
        await _converged(client, mesh)
        entry = mesh.peers[2]  # in the east; only the west may run the job, so it runs elsewhere
        await client.call(mesh.peers[0].addr, "model.publish",
                          {"model": models.mlp_classifier(), "name": "mlp", "version": "1", "task": "classify"},
                          timeout_s=20)
        buf = io.BytesIO()
        np.save(buf, np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32), allow_pickle=False)
        sub = await client.call(entry.addr, "submit", {"kind": "online", "model": "mlp@1",
                                                       "inputs": {"x": buf.getvalue()}, "regions": ["west"]},
                                timeout_s=20)
        job = sub["job_id"]

        async def done():
            s = await client.call(entry.addr, "job.show", {"job_id": job})
            return s.get("state") in ("done", "failed") and s

        show = await wait_for(done, 40, what=f"job {job} to finish")
        assert show["state"] == "done", show
        executor = show["executor"]
        assert executor != entry.peer_id
        res = await client.call(entry.addr, "audit.export", {"job": job}, timeout_s=60)
        # the executor finds the others too (its log names the entry peer and custodians)
        ex_addr = next(p.addr for p in mesh.peers if p.peer_id == executor)
        from_executor = await client.call(ex_addr, "audit.export", {"job": job}, timeout_s=60)
    assert default_origin(entry.peer_id) in from_executor["logs"], from_executor["logs"]
    assert verify_bundle(from_executor["bundle"], [p.peer_id for p in mesh.peers], workers=1).ok
    bundle = res["bundle"]
    assert not res["unreachable"], res["unreachable"]
    trust = [p.peer_id for p in mesh.peers]
    report = verify_bundle(bundle, trust, workers=1)
    assert report.ok, report.problems
    assert report.job == job
    by_peer = {row["peer"]: row for row in report.logs}
    assert {entry.peer_id, executor} <= set(by_peer)  # stitched: the intake peer's log and the executor's
    by_log = _entries(bundle)
    kinds = {o: {e.kind for e in es} for o, es in by_log.items()}
    assert {"job.submitted", "job.placed"} <= kinds[default_origin(entry.peer_id)], kinds
    assert {"job.started", "job.finished"} <= kinds[default_origin(executor)], kinds
    (finished,) = [e for e in by_log[default_origin(executor)] if e.kind == "job.finished"]
    assert finished.data["manifest"]["outputs"], finished.data  # the run manifest, as the runtime wrote it
    assert all(e.data["job"] == job for es in by_log.values() for e in es)
    assert msgpack.unpackb(bundle, raw=False)["manifest"]["views"] == ["prov", "slsa"]
    survived = _tampered_all_fail(bundle, trust, TAMPER_SEED)
    assert not survived, f"changed bytes at {survived} still verified (seed {TAMPER_SEED})"


async def test_a_crashed_peer_restarts_with_its_log_intact_and_goes_on(mesh, client_identity):
    victim_i = 2
    victim = mesh.peers[victim_i]
    others = [p for p in mesh.peers if p is not victim]
    trust = [p.peer_id for p in mesh.peers]
    entries_file = victim.data_dir / "audit" / "entries.bin"
    async with Client(client_identity) as client:
        await _converged(client, mesh)
        before = (await client.call(victim.addr, "audit.export", {}, timeout_s=20))["bundle"]
        rep = verify_bundle(before, trust, workers=1)
        assert rep.ok, rep.problems
        size_before = rep.logs[0]["size"]

        mesh.kill(victim_i)
        # a crash in the middle of a write: a record header and part of its body
        torn = struct.pack(">I", 200) + b"\x95\x00torn"
        with open(entries_file, "ab") as f:
            f.write(torn)

        async def marked_dead():
            for p in others:
                if (await member_states(client, p.addr)).get(victim.peer_id) != "dead":
                    return False
            return True

        await wait_for(marked_dead, 20, what="the others to mark the killed peer dead")
        await trio.to_thread.run_sync(mesh.start, victim_i)

    # a fresh client: a long-lived libp2p host keeps dialing the peer's old port
    # (see the transport's address book), so the restarted peer is asked anew
    async with Client(Identity.from_seed(b"\x42" * 32)) as client:
        st = await wait_for(lambda: client.call(victim.addr, "statistics", timeout_s=5), 20,
                            what="the restarted peer to answer")
        assert st["audit.torn_bytes_dropped"] == len(torn)
        assert st["audit.witness_logs"] == 2  # its witness state came back from witness.bin
        assert "torn tail" in (victim.data_dir / "peer.log").read_text()
        await _converged(client, mesh)

        # the others recorded the death, and the restarted peer records the mesh again
        async def death_logged():
            res = await client.call(others[0].addr, "audit.export", {"witness": False}, timeout_s=20)
            (entries,) = _entries(res["bundle"]).values()
            return any(e.kind == "member.changed" and e.data["member"] == victim.peer_id and e.data["status"] == "dead"
                       for e in entries)

        await wait_for(death_logged, 10, what="a survivor's log to record the crash")

        async def goes_on():
            res = await client.call(victim.addr, "audit.export", {"since": before}, timeout_s=20)
            (entries,) = _entries(res["bundle"]).values()
            new = [e for e in entries if e.kind == "member.changed"]
            return len(new) >= 2 and res

        res = await wait_for(goes_on, 15, what="the restarted peer to log membership again")
    after = res["bundle"]
    report = verify_bundle(after, trust, min_cosignatures=2, workers=1)
    assert report.ok, report.problems
    (row,) = report.logs
    # a consistency proof from the pre-crash export: no signed entry was lost or changed
    assert row["since_size"] == size_before and row["size"] > size_before
