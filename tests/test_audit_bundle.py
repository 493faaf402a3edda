"""Bundles: export from several peers' logs, verify offline, and catch every changed byte.

Randomised tests print their seed; ``AUDIT_SEED=<n> pytest tests/test_audit_bundle.py``
reproduces a run.
"""

from __future__ import annotations

import json
import os
import random

import msgpack
import pytest
from click.testing import CliRunner

from arcnet.audit import bundle as bundle_mod
from arcnet.audit import kinds as K
from arcnet.audit.bundle import ExportError, bundle_checkpoints, export_bundle, load_trust, verify_bundle
from arcnet.audit.entry import decode_entry, encode_entry
from arcnet.audit.log import AuditLog
from arcnet.audit.note import Checkpoint, Signer
from arcnet.audit.witness import Cosigned, Witness, witness_signer
from arcnet.cli.audit import audit as audit_cli
from arcnet.mesh.identity import Identity

SEED = int(os.environ.get("AUDIT_SEED", "20240611"))
NOW = 1_700_000_000.0
PEERS = [Identity.from_seed(bytes([0x41 + i]) * 32) for i in range(3)]  # intake, custodian, executor
MODEL = "blake3:" + "11" * 32
INPUT = "blake3:" + "22" * 32
OUTPUT = "blake3:" + "33" * 32


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        self.ms += 7
        return self.ms


def run_job(logs: list[AuditLog], job: str) -> None:
    intake, custodian, executor = logs
    a, b, c = (p.peer_id for p in PEERS)
    client = Identity.from_seed(b"c" * 32).peer_id
    intake.append(K.JOB_SUBMITTED, {"job": job, "submitter": client, "spec": {"class": "inference", "model": MODEL}})
    custodian.append(K.JOB_PLACED, {"job": job, "executor": c, "bid": {"bidder": c, "price": 0.42, "queue_s": 1.5}})
    executor.append(K.ARTIFACT_FETCHED, {"artifact": MODEL, "size_bytes": 1 << 20, "sources": [a, b], "job": job})
    executor.append(K.JOB_STARTED, {"job": job, "attempt": 1})
    executor.append(
        K.JOB_FINISHED,
        {"job": job, "manifest": {"model": MODEL, "inputs": [INPUT], "outputs": [OUTPUT], "energy_kwh": 0.125, "runtime": "onnxruntime"}},
    )
    custodian.append(K.POLICY_DECISION, {"policy": "replication", "decision": "keep 3", "subject": OUTPUT, "job": job})


def witness_all(logs: list[AuditLog]) -> list[Witness]:
    """Each peer witnesses the other two: every checkpoint gets two cosignatures."""
    witnesses = []
    for w_id in PEERS:
        w = Witness(witness_signer(w_id), [lg.verifier for lg in logs if lg.peer_id != w_id.peer_id])
        witnesses.append(w)
    for lg in logs:
        note = lg.checkpoint()
        cp = Checkpoint.parse(note)
        for w in witnesses:
            if w.name.endswith(lg.peer_id):
                continue  # a peer does not witness its own log
            last = w.latest(lg.origin)
            old = last[0] if last else 0
            r = w.add_checkpoint(NOW, note, old, lg.consistency_proof(old, cp.size))
            assert isinstance(r, Cosigned), r
            lg.add_cosignature(cp.size, r.line, w.verifier)
    return witnesses


@pytest.fixture
def mesh(tmp_path):
    clock = Clock()
    logs = [AuditLog.open(tmp_path / f"peer{i}", p, clock_ms=clock, background_commit=False) for i, p in enumerate(PEERS)]
    for i, lg in enumerate(logs):
        for j in range(25):  # background noise
            lg.append(K.MEMBER_CHANGED, {"member": PEERS[(i + 1) % 3].peer_id, "status": "alive", "incarnation": j})
    run_job(logs, "job-7")
    run_job(logs, "job-8")
    witnesses = witness_all(logs)
    trust = [lg.verifier for lg in logs] + [w.verifier for w in witnesses]
    yield logs, witnesses, trust
    for lg in logs:
        lg.close()


# -- round trips -------------------------------------------------------------------


def test_whole_logs_export_and_verify(mesh, tmp_path):
    logs, _, trust = mesh
    out = tmp_path / "all.bundle"
    data = export_bundle(logs, out)
    assert out.read_bytes() == data
    report = verify_bundle(out, trust, min_cosignatures=2)
    assert report.ok, report.problems
    assert report.entries_verified == sum(lg.size for lg in logs)
    assert [len(lg["cosigners"]) for lg in report.logs] == [2, 2, 2]
    assert report.first_bad_entry is None and json.loads(json.dumps(report.to_json()))["ok"]


def test_one_jobs_bundle_stitches_three_logs_with_views(mesh):
    logs, _, trust = mesh
    data = export_bundle(logs, job="job-7")
    report = verify_bundle(data, trust)
    assert report.ok, report.problems
    assert report.job == "job-7" and [lg["entries"] for lg in report.logs] == [1, 2, 3]
    doc = msgpack.unpackb(data)
    for lg in doc["logs"]:
        for raw in lg["entries"]:
            assert decode_entry(raw).job == "job-7"
        assert all(len(p) <= 32 * 7 for p in lg["proofs"])  # ceil(log2(31 entries)) hashes at most
    slsa = json.loads(doc["views"]["slsa"])
    assert slsa["_type"] == "https://in-toto.io/Statement/v1"
    assert slsa["predicateType"] == "https://slsa.dev/provenance/v1"
    assert slsa["subject"] == [{"name": OUTPUT, "digest": {"blake3": "33" * 32}}]
    assert slsa["predicate"]["runDetails"]["builder"]["id"].endswith(PEERS[2].peer_id)
    deps = slsa["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert [d["name"] for d in deps] == [MODEL, INPUT]
    prov = json.loads(doc["views"]["prov"])
    assert "job:job-7" in prov["activity"] and prov["activity"]["job:job-7"]["arcnet:energy_kwh"] == 0.125
    assert {u["prov:role"] for u in prov["used"].values()} == {"model", "input"}
    roles = {a: set(v["arcnet:roles"]) for a, v in prov["agent"].items()}
    assert roles[f"peer:{PEERS[2].peer_id}"] == {"executor"} and "intake" in roles[f"peer:{PEERS[0].peer_id}"]
    assert verify_bundle(export_bundle(logs, job="job-7", views=False), trust).ok


def test_since_exports_only_new_entries_with_a_consistency_proof(mesh):
    logs, witnesses, trust = mesh
    first = export_bundle(logs)
    sizes = [lg.size for lg in logs]
    run_job(logs, "job-9")
    witness_all_again(logs, witnesses)
    second = export_bundle(logs, since=bundle_checkpoints(first))
    report = verify_bundle(second, trust, min_cosignatures=2)
    assert report.ok, report.problems
    assert [lg["since_size"] for lg in report.logs] == sizes
    assert report.entries_verified == sum(lg.size for lg in logs) - sum(sizes)
    doc = msgpack.unpackb(second)
    assert all(lg["consistency"] for lg in doc["logs"])
    # a job bundle since the first export holds only job-9's entries
    assert verify_bundle(export_bundle(logs, job="job-9", since=bundle_checkpoints(first)), trust).ok


def witness_all_again(logs: list[AuditLog], witnesses: list[Witness]) -> None:
    for lg in logs:
        note = lg.checkpoint()
        cp = Checkpoint.parse(note)
        for w in witnesses:
            last = w.latest(lg.origin)
            if last is None:
                continue
            r = w.add_checkpoint(NOW + 60, note, last[0], lg.consistency_proof(last[0], cp.size))
            assert isinstance(r, Cosigned)
            lg.add_cosignature(cp.size, r.line, w.verifier)


def test_export_refuses_a_previous_checkpoint_from_another_history(mesh, tmp_path):
    logs, _, _ = mesh
    fork_signer = Signer(logs[0].origin, PEERS[0])
    forged = Checkpoint.sign(fork_signer, 3, b"\x99" * 32)  # signed by the log's key, not its history
    with pytest.raises(ExportError, match="equivocated"):
        export_bundle(logs, since=[forged.note])


# -- what verification catches -------------------------------------------------------


def mutate_bits(data: bytes, rng: random.Random, n: int) -> list[tuple[int, bytes]]:
    out = []
    for pos in rng.sample(range(len(data)), min(n, len(data))):
        b = bytearray(data)
        b[pos] ^= 1 << rng.randrange(8)
        out.append((pos, bytes(b)))
    return out


@pytest.mark.parametrize("job", [None, "job-7"])
def test_any_single_changed_byte_fails_verification(mesh, job):
    logs, _, trust = mesh
    data = export_bundle(logs, job=job)
    rng = random.Random(SEED)
    print(f"seed {SEED}: AUDIT_SEED={SEED} pytest {__file__}")
    assert verify_bundle(data, trust).ok
    missed = [pos for pos, bad in mutate_bits(data, rng, 300) if verify_bundle(bad, trust).ok]
    assert not missed, f"changed bytes at {missed[:10]} went unnoticed (seed {SEED})"


def reencode(data: bytes, change) -> bytes:
    doc = msgpack.unpackb(data)
    change(doc)
    return msgpack.packb(doc)


def test_the_first_bad_entry_is_named_with_its_reason(mesh):
    logs, _, trust = mesh
    data = export_bundle(logs)
    origin = logs[1].origin

    def alter(doc):  # a well-formed entry with one value changed: only the tree can tell
        lg = doc["logs"][1]
        e = decode_entry(lg["entries"][10])
        data_ = dict(e.data, incarnation=999)
        lg["entries"][10] = encode_entry(e.seq, e.time_ms, e.kind, e.peer, data_)

    report = verify_bundle(reencode(data, alter), trust)
    assert not report.ok
    bad = report.first_bad_entry
    assert (bad.origin, bad.seq) == (origin, 10) and "altered" in bad.reason

    def swap(doc):  # reordering entries: seq numbers stop matching their place
        es = doc["logs"][2]["entries"]
        es[3], es[4] = es[4], es[3]

    bad = verify_bundle(reencode(data, swap), trust).first_bad_entry
    assert bad.seq == 3 and "seq is 4" in bad.reason

    def foreign(doc):  # an entry copied from another peer's log
        doc["logs"][0]["entries"][5] = doc["logs"][1]["entries"][5]

    bad = verify_bundle(reencode(data, foreign), trust).first_bad_entry
    assert bad.seq == 5 and "log of" in bad.reason

    def truncate(doc):
        doc["logs"][0]["entries"].pop()

    report = verify_bundle(reencode(data, truncate), trust)
    assert not report.ok and "do not reach the checkpoint size" in report.problems[0].reason


def test_job_bundle_entries_are_checked_one_proof_at_a_time(mesh):
    logs, _, trust = mesh
    data = export_bundle(logs, job="job-7")

    def alter(doc):
        lg = doc["logs"][2]
        e = decode_entry(lg["entries"][1])
        lg["entries"][1] = encode_entry(e.seq, e.time_ms, e.kind, e.peer, dict(e.data, attempt=2))

    bad = verify_bundle(reencode(data, alter), trust).first_bad_entry
    assert bad.origin == logs[2].origin and "inclusion proof" in bad.reason

    def other_job(doc):  # a genuine entry, but not of this job
        lg = doc["logs"][2]
        seq = next(s for s in range(logs[2].size) if decode_entry(logs[2].read_entries(s, s + 1)[0]).job == "job-8")
        lg["entries"][0] = logs[2].read_entries(seq, seq + 1)[0]
        lg["proofs"][0] = b"".join(logs[2].inclusion_proof(seq, logs[2].latest_checkpoint().size))

    report = verify_bundle(reencode(data, other_job), trust)
    assert not report.ok


def test_trust_and_witness_policy(mesh):
    logs, witnesses, trust = mesh
    data = export_bundle(logs)
    only_logs = [lg.verifier for lg in logs]
    report = verify_bundle(data, only_logs)
    assert not report.ok and "not among the keys you trust" in report.problems[0].reason
    # trust by bare key (peer ids) works too: the key id binds the name
    assert verify_bundle(data, [p.peer_id for p in PEERS]).ok
    assert verify_bundle(data, [p.public_key.hex() for p in PEERS]).ok
    report = verify_bundle(data, trust, min_cosignatures=3)
    assert not report.ok and "policy needs 3" in report.problems[0].reason

    def drop_cosignature(doc):
        cp = Checkpoint.parse(doc["logs"][0]["checkpoint"])
        doc["logs"][0]["checkpoint"] = cp.without_signature(cp.signatures[-1].name).note

    # the manifest still lists the cosigner; and a policy of 2 would fail anyway
    assert not verify_bundle(reencode(data, drop_cosignature), trust).ok

    def swap_checkpoints(doc):
        a, b = doc["logs"][0], doc["logs"][1]
        a["checkpoint"], b["checkpoint"] = b["checkpoint"], a["checkpoint"]

    assert not verify_bundle(reencode(data, swap_checkpoints), trust).ok


def test_values_that_python_thinks_equal_are_still_different_bytes(mesh):
    logs, _, trust = mesh
    data = export_bundle(logs, job="job-7")  # the intake log holds 1 entry, since_size 0

    def to_bool(doc):
        m = doc["manifest"]["logs"][0]
        assert m["entries"] == 1 and m["since_size"] == 0
        m["entries"], m["since_size"] = True, False  # 0x01 -> 0xc3, 0x00 -> 0xc2: one byte each

    report = verify_bundle(reencode(data, to_bool), trust)
    assert not report.ok and "manifest" in report.problems[0].where


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\xc1", msgpack.packb({"format": "arcnet-audit-bundle/1"}), os.urandom(64)])
def test_garbage_is_a_failed_report_not_a_crash(junk, mesh):
    _, _, trust = mesh
    report = verify_bundle(junk, trust)
    assert not report.ok and report.problems


# -- the command line --------------------------------------------------------------


def test_cli_export_and_verify(mesh, tmp_path):
    logs, _, trust = mesh
    dirs = [str(lg.directory) for lg in logs]
    for lg in logs:
        lg.close()  # the CLI opens them itself, as it would a stopped peer's
    keys = []
    for i, p in enumerate(PEERS):
        kf = tmp_path / f"key{i}"
        p.save(kf)
        keys.append(str(kf))
    runner = CliRunner()
    vkeys = []
    for kf in keys:
        for extra in ([], ["--witness"]):
            r = runner.invoke(audit_cli, ["vkey", "--key", kf, *extra])
            assert r.exit_code == 0, r.output
            vkeys.append(r.output.strip())
    trust_file = tmp_path / "trust"
    trust_file.write_text("# the mesh's peers\n" + "\n".join(vkeys) + "\n")
    assert load_trust(trust_file)[0] == {v.vkey() for v in trust}

    out = tmp_path / "job.bundle"
    args = ["export", *(x for d in dirs for x in ("--log-dir", d)), "--key", keys[2], "--job", "job-7", "-o", str(out)]
    r = runner.invoke(audit_cli, args)
    assert r.exit_code == 0, r.output
    r = runner.invoke(audit_cli, ["verify", str(out), "--trust", str(trust_file)])
    assert r.exit_code == 0 and "OK" in r.output, r.output
    r = runner.invoke(audit_cli, ["verify", str(out), "--trust", str(trust_file), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True

    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x10
    out.write_bytes(bytes(data))
    r = runner.invoke(audit_cli, ["verify", str(out), "--trust", str(trust_file)])
    assert r.exit_code == 1 and "FAILED" in r.output, r.output
    r = runner.invoke(audit_cli, ["verify", str(out), "--trust", str(tmp_path / "missing")])
    assert r.exit_code == 2

    full = tmp_path / "all.bundle"
    r = runner.invoke(audit_cli, ["export", *(x for d in dirs for x in ("--log-dir", d)), "-o", str(full), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["bytes"] == full.stat().st_size
    r = runner.invoke(audit_cli, ["verify", str(full), "--trust", str(trust_file), "--min-cosignatures", "1"])
    assert r.exit_code == 0, r.output
    again = tmp_path / "since.bundle"
    r = runner.invoke(audit_cli, ["export", "--log-dir", dirs[0], "--key", keys[0], "--since", str(full), "-o", str(again)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(audit_cli, ["verify", str(again), "--trust", str(trust_file), "--json"])
    assert r.exit_code == 0, r.output


# -- the fast path and the worker processes ---------------------------------------


def test_fast_column_checks_never_pass_what_entry_checks_fail():
    """The verifier checks whole chunks column by column and falls back to
    entry by entry only on failure; the fast checks must catch everything."""
    peer = PEERS[0].peer_id
    pk = msgpack.packb
    good = [encode_entry(i, 1000 + i, K.MEMBER_CHANGED, peer, {"member": PEERS[1].peer_id, "status": "alive", "incarnation": i}) for i in range(6)]
    head = lambda i: b"\x95" + pk(i) + pk(1000 + i) + pk(K.MEMBER_CHANGED) + pk(peer)  # noqa: E731
    fields = [("incarnation", 5), ("member", PEERS[1].peer_id), ("status", "alive")]

    def body(pairs):
        return bytes([0x80 | len(pairs)]) + b"".join(pk(k) + pk(v) for k, v in pairs)

    bad_entries = {
        "ext type": head(5) + body(fields + [("x", msgpack.ExtType(5, b"zz"))]),
        "timestamp ext": head(5) + body(fields + [("x", msgpack.Timestamp(1, 0))]),
        "bytes key": head(5) + b"\x84" + pk(b"a") + pk(1) + b"".join(pk(k) + pk(v) for k, v in fields),
        "unsorted keys": head(5) + body(list(reversed(fields))),
        "nested unsorted": head(5) + body(fields + [("z", {"b": 1, "a": 2})]),
        "nested NaN": head(5) + body(fields + [("z", [1.0, float("nan")])]),
        "float incarnation": head(5) + body([("incarnation", 5.0)] + fields[1:]),
        "missing field": head(5) + body(fields[1:]),
        "wide int": head(5).replace(b"\x95\x05", b"\x95\xcc\x05") + body(fields),
        "duplicate key": head(5) + b"\x84" + b"".join(pk(k) + pk(v) for k, v in fields + [fields[-1]]),
        "other peer": encode_entry(5, 1005, K.MEMBER_CHANGED, PEERS[2].peer_id, dict(fields)),
        "bad member": head(5) + body([fields[0], ("member", "12D3KooWnope"), fields[2]]),
        "time back": encode_entry(5, 900, K.MEMBER_CHANGED, peer, dict(fields)),
        "bool seq": b"\x95\xc3" + head(5)[2:] + body(fields),
        "unknown kind": b"\x95" + pk(5) + pk(1005) + pk("job.vanished") + pk(peer) + body(fields),
        "deep": head(5) + body(fields + [("z", [[[[[[[[[1]]]]]]]]])]),
    }
    assert bundle_mod._chunk_ok_fast(good, peer, 0) is not None
    for name, raw in bad_entries.items():
        part = good[:5] + [raw]
        assert bundle_mod._chunk_ok_fast(part, peer, 0) is None, name
        problem = bundle_mod._check_chunk(part, b"", peer, 0, 0, 6)[0]
        assert problem is not None and problem[0] == 5, (name, problem)


def test_worker_processes_and_chunk_merging_agree_with_one_process(mesh, monkeypatch):
    logs, _, trust = mesh
    # tiny chunks, so a small bundle exercises the subtree merging and the workers
    monkeypatch.setattr(bundle_mod, "CHUNK_HEIGHT", 2)
    monkeypatch.setattr(bundle_mod, "CHUNK_ENTRIES", 4)
    monkeypatch.setattr(bundle_mod, "PARALLEL_MIN_ENTRIES", 8)
    first = export_bundle(logs)
    for lg in logs:
        for i in range(13):
            lg.append(K.LEADER_CHANGED, {"region": "eu-2", "leader": None})
        lg.checkpoint()
    since = export_bundle(logs, since=bundle_checkpoints(first))  # starts mid-chunk
    for data in (first, since):
        assert verify_bundle(data, trust, workers=1).ok
        assert verify_bundle(data, trust, workers=2).ok

        def alter(doc):
            lg = doc["logs"][1]
            e = decode_entry(lg["entries"][9])
            lg["entries"][9] = encode_entry(e.seq, e.time_ms, e.kind, e.peer, dict(e.data, extra=1))

        bad = reencode(data, alter)
        one, two = verify_bundle(bad, trust, workers=1), verify_bundle(bad, trust, workers=2)
        assert not one.ok and one.first_bad_entry == two.first_bad_entry and one.first_bad_entry.seq is not None
