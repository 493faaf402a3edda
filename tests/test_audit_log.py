"""The audit log on disk: canonical entries, group commit, torn tails, crashes, checkpoints."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import msgpack
import pytest
import trio

from arcnet.audit import kinds as K
from arcnet.audit import merkle
from arcnet.audit.entry import EntryError, decode_entry, encode_entry
from arcnet.audit.log import CHECKPOINTS_FILE, ENTRIES_FILE, ENTRIES_MAGIC, AuditLog, AuditLogError
from arcnet.audit.note import Checkpoint
from arcnet.audit.witness import Cosigned, Witness, witness_signer
from arcnet.mesh.identity import Identity

ME = Identity.from_seed(b"a" * 32)
OTHER = Identity.from_seed(b"b" * 32)
REF = "blake3:" + "ab" * 32


class Clock:
    """A fake wall clock in ms: tests never read the real one."""

    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        self.ms += 1
        return self.ms


def open_log(path: Path, **kw) -> AuditLog:
    kw.setdefault("background_commit", False)
    kw.setdefault("clock_ms", Clock())
    return AuditLog.open(path, ME, **kw)


def member(i: int) -> dict:
    return {"member": OTHER.peer_id, "status": "alive", "incarnation": i}


# -- entries ------------------------------------------------------------------


def test_entries_are_canonical_and_stored_as_their_exact_bytes(tmp_path):
    with open_log(tmp_path / "log") as log:
        seq = log.append(K.JOB_PLACED, {"job": "j1", "bid": {"price": 1.5, "bidder": OTHER.peer_id}, "executor": OTHER.peer_id})
        assert seq == 0
        log.sync()
        (raw,) = log.read_entries(0, 1)
        e = decode_entry(raw)
        assert (e.seq, e.kind, e.peer, e.data["bid"]["price"]) == (0, K.JOB_PLACED, ME.peer_id, 1.5)
        # the documented layout: [seq, time_ms, kind, peer, data] with sorted keys
        assert msgpack.unpackb(raw) == [0, e.time_ms, "job.placed", ME.peer_id, e.data]
        assert list(e.data) == sorted(e.data) and list(e.data["bid"]) == ["bidder", "price"]
        # the same values in any order give the same bytes
        again = encode_entry(0, e.time_ms, K.JOB_PLACED, ME.peer_id, {"executor": OTHER.peer_id, "bid": {"bidder": OTHER.peer_id, "price": 1.5}, "job": "j1"})
        assert again == raw
        # the file holds those very bytes, and so does the tree
        assert raw in (tmp_path / "log" / ENTRIES_FILE).read_bytes()
        assert log.leaf_hash(0) == merkle.leaf_hash(raw)


@pytest.mark.parametrize(
    "kind,data,match",
    [
        ("job.exploded", {"job": "j"}, "unknown entry kind"),
        (K.JOB_STARTED, {"job": "j"}, "missing field 'attempt'"),
        (K.JOB_STARTED, {"job": "j", "attempt": "1"}, "must be int"),
        (K.JOB_PLACED, {"job": "j", "executor": "not-a-peer", "bid": {}}, "must be peer"),
        (K.ARTIFACT_EVICTED, {"artifact": "sha256:xyz", "reason": "lru"}, "must be ref"),
        (K.JOB_FINISHED, {"job": "j", "manifest": {"energy_kwh": float("nan")}}, "NaN"),
        (K.JOB_FINISHED, {"job": "j", "manifest": {"outputs": ["nope"]}}, "refs"),
        (K.JOB_FAILED, {"job": "j", "error": "x", 3: "int key"}, "keys must be str"),
        (K.JOB_FAILED, {"job": "j", "error": object()}, "not a plain value"),
        (K.JOB_FAILED, {"job": "j", "error": "x", "n": 1 << 64}, "64 bits"),
    ],
)
def test_bad_entries_are_refused_with_a_reason(tmp_path, kind, data, match):
    with open_log(tmp_path / "log") as log:
        with pytest.raises(EntryError, match=match):
            log.append(kind, data)
        assert log.size == 0


def test_every_kind_is_declared_once_with_its_fields():
    assert K.JOB_FINISHED in K.KINDS and K.KINDS[K.JOB_PLACED]["bid"] == "map"
    for kind, fields in K.KINDS.items():
        assert kind.count(".") == 1 and fields
    for name in ("job.submitted", "job.placed", "job.started", "job.finished", "job.failed", "job.replaced",
                 "artifact.published", "artifact.fetched", "artifact.served", "artifact.evicted",
                 "member.changed", "leader.changed", "policy.decision", "admission.granted"):
        assert name in K.KINDS


def test_decode_refuses_non_canonical_bytes():
    good = encode_entry(3, 5, K.JOB_FAILED, ME.peer_id, {"job": "j", "error": "e"})
    assert decode_entry(good).seq == 3
    unsorted = msgpack.packb([3, 5, K.JOB_FAILED, ME.peer_id, {"job": "j", "error": "e"}])
    wide_int = good.replace(b"\x95\x03", b"\x95\xcd\x00\x03")
    pk = msgpack.packb
    head = b"\x95" + pk(3) + pk(5) + pk(K.JOB_FAILED) + pk(ME.peer_id)
    dup_key = head + b"\x83" + pk("error") + pk("e") + pk("job") + pk("j") + pk("job") + pk("k")
    assert head + b"\x82" + pk("error") + pk("e") + pk("job") + pk("j") == good
    for bad in (unsorted, wide_int, dup_key, good[:-1], good + b"\x00", b"\xc1"):
        with pytest.raises(EntryError):
            decode_entry(bad)


def test_entry_times_never_go_backwards(tmp_path):
    clock = Clock()
    with open_log(tmp_path / "log", clock_ms=clock) as log:
        log.append(K.MEMBER_CHANGED, member(0))
        clock.ms -= 10_000  # the wall clock steps back
        log.append(K.MEMBER_CHANGED, member(1))
        a, b = (decode_entry(r) for r in log.read_entries(0, 2))
        assert b.time_ms >= a.time_ms


# -- durability ----------------------------------------------------------------


def test_append_is_durable_only_after_wait(tmp_path):
    with open_log(tmp_path / "log") as log:
        s0 = log.append(K.MEMBER_CHANGED, member(0))
        s1 = log.append(K.MEMBER_CHANGED, member(1))
        assert (log.size, log.durable_size) == (2, 0)
        assert not log.wait_durable_nowait(s1)
        assert log.wait_durable(s0)
        assert log.durable_size == 2  # one commit took the whole batch
        assert log.statistics()["commits"] == 1
        with pytest.raises(ValueError):
            log.wait_durable(5)


def test_group_commit_from_many_threads(tmp_path):
    n_threads, per_thread = 8, 150
    with open_log(tmp_path / "log") as log:
        seqs: list[int] = []
        lock = threading.Lock()
        start = threading.Barrier(n_threads)

        def worker(t: int) -> None:
            start.wait()
            for i in range(per_thread):
                s = log.append(K.MEMBER_CHANGED, member(t * 1000 + i))
                assert log.wait_durable(s)
                with lock:
                    seqs.append(s)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        total = n_threads * per_thread
        assert sorted(seqs) == list(range(total))
        st = log.statistics()
        assert st["durable_size"] == total and st["committed_entries"] == total
        assert st["commits"] <= total and st["pending_entries"] == 0
    with open_log(tmp_path / "log") as log:
        assert log.size == total


def test_background_committer_makes_entries_durable_unasked(tmp_path):
    committed = threading.Event()
    log = AuditLog.open(tmp_path / "log", ME, clock_ms=Clock(), commit_delay_ms=0, on_durable=lambda n: committed.set())
    try:
        log.append(K.MEMBER_CHANGED, member(0))
        assert committed.wait(timeout=30)  # nobody waits on the log: the committer thread did it
        assert log.durable_size == 1 and log.statistics()["commits"] == 1
    finally:
        log.close()


async def test_trio_code_waits_for_durability_in_a_thread(tmp_path):
    log = AuditLog.open(tmp_path / "log", ME, clock_ms=Clock())
    try:
        seqs = [log.append(K.MEMBER_CHANGED, member(i)) for i in range(10)]
        async with trio.open_nursery() as nursery:
            for s in seqs:
                nursery.start_soon(trio.to_thread.run_sync, log.wait_durable, s)
        assert log.durable_size == 10
    finally:
        log.close()


def test_second_writer_is_refused_but_readers_are_welcome(tmp_path):
    with open_log(tmp_path / "log") as log:
        log.append(K.MEMBER_CHANGED, member(0))
        log.checkpoint()
        with pytest.raises(AuditLogError, match="another process"):
            AuditLog.open(tmp_path / "log", ME)
        with AuditLog.open_readonly(tmp_path / "log") as ro:
            assert ro.size == 1 and ro.latest_checkpoint().size == 1
            with pytest.raises(AuditLogError):
                ro.append(K.MEMBER_CHANGED, member(1))
    with pytest.raises(AuditLogError, match="belongs to peer"):
        AuditLog.open(tmp_path / "log", OTHER)


# -- torn tails and crashes -----------------------------------------------------


def write_entries(path: Path, n: int) -> tuple[int, list[int]]:
    """n durable entries; returns (file size, record offsets)."""
    with open_log(path) as log:
        for i in range(n):
            log.append(K.MEMBER_CHANGED, member(i))
        log.sync()
        return log.statistics()["file_bytes"], list(log._offsets)


@pytest.mark.parametrize("cut", ["header", "payload", "crc"])
def test_torn_tail_is_truncated_with_a_warning(tmp_path, caplog, cut):
    path = tmp_path / "log"
    end, offsets = write_entries(path, 10)
    last = offsets[-1]
    keep = {"header": last + 2, "payload": last + 20, "crc": end - 1}[cut]
    with open(path / ENTRIES_FILE, "r+b") as f:
        f.truncate(keep)
    with caplog.at_level(logging.WARNING, logger="arcnet.audit"):
        log = open_log(path)
    try:
        assert log.size == 9
        assert any("torn tail" in r.message and r.name == "arcnet.audit" for r in caplog.records)
        assert os.path.getsize(path / ENTRIES_FILE) == last
        assert log.append(K.MEMBER_CHANGED, member(99)) == 9  # the lost seq is reused
        log.sync()
    finally:
        log.close()
    with caplog.at_level(logging.WARNING, logger="arcnet.audit"):
        caplog.clear()
        with open_log(path) as log:
            assert log.size == 10 and not caplog.records


def test_garbage_after_the_last_record_is_a_torn_tail(tmp_path, caplog):
    path = tmp_path / "log"
    end, _ = write_entries(path, 5)
    with open(path / ENTRIES_FILE, "ab") as f:
        f.write(b"\0" * 4096)  # a filesystem that extended the file but never wrote the data
    with caplog.at_level(logging.WARNING, logger="arcnet.audit"):
        with open_log(path) as log:
            assert log.size == 5
    assert os.path.getsize(path / ENTRIES_FILE) == end
    assert "torn tail" in caplog.text


def test_damage_followed_by_whole_records_is_kept_aside(tmp_path, caplog):
    path = tmp_path / "log"
    end, offsets = write_entries(path, 10)
    data = bytearray((path / ENTRIES_FILE).read_bytes())
    data[offsets[6] + 10] ^= 0xFF  # bit rot in entry 6 of 10
    (path / ENTRIES_FILE).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="arcnet.audit"):
        with open_log(path) as log:
            assert log.size == 6
    assert "followed by whole records" in caplog.text
    kept = path / f"{ENTRIES_FILE}.dropped-{offsets[6]}"
    assert kept.read_bytes() == bytes(data[offsets[6] :])


def test_signed_entries_lost_means_refusal_not_truncation(tmp_path):
    path = tmp_path / "log"
    with open_log(path) as log:
        for i in range(10):
            log.append(K.MEMBER_CHANGED, member(i))
        log.checkpoint()
        offsets = list(log._offsets)
    with open(path / ENTRIES_FILE, "r+b") as f:
        f.truncate(offsets[8] + 3)
    with pytest.raises(AuditLogError, match="signed entries are missing"):
        open_log(path)


def test_rewritten_signed_entries_are_refused(tmp_path):
    path = tmp_path / "log"
    with open_log(path) as log:
        for i in range(4):
            log.append(K.MEMBER_CHANGED, member(i))
        log.checkpoint()
    # rewrite the whole entry file with another history of the same length
    (path / ENTRIES_FILE).write_bytes(ENTRIES_MAGIC)
    (path / CHECKPOINTS_FILE).rename(path / "cp.saved")
    with open_log(path) as log:
        for i in range(4):
            log.append(K.MEMBER_CHANGED, member(100 + i))
    (path / "cp.saved").replace(path / CHECKPOINTS_FILE)
    with pytest.raises(AuditLogError, match="do not hash to the root"):
        open_log(path)


CHILD = textwrap.dedent(
    """
    import sys
    from arcnet.audit import kinds as K
    from arcnet.audit.log import AuditLog
    from arcnet.mesh.identity import Identity
    me, other = Identity.from_seed(b"a" * 32), Identity.from_seed(b"b" * 32)
    log = AuditLog.open(sys.argv[1], me, commit_delay_ms=0)
    i = 0
    while True:
        for _ in range(50):
            log.append(K.MEMBER_CHANGED, {"member": other.peer_id, "status": "alive", "incarnation": i})
            i += 1
        durable = log.sync()
        if i % 500 == 0:
            log.checkpoint()
        print(durable, flush=True)
    """
)


def test_killed_mid_append_restarts_with_every_acknowledged_entry(tmp_path):
    path = tmp_path / "log"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    try:
        assert child.stdout is not None
        for _ in range(40):  # read progress; the child keeps appending while we read
            line = child.stdout.readline()
            assert line, "the child died before it was killed"
            acknowledged = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    with open_log(path) as log:
        assert log.size >= acknowledged >= 2000
        cp = log.latest_checkpoint()
        assert cp is not None and cp.size <= log.size and log.root(cp.size) == cp.root
        entries = log.read_entries(0, log.size)
        assert [decode_entry(r).seq for r in entries] == list(range(log.size))
        assert log.append(K.MEMBER_CHANGED, member(0)) == len(entries)


# -- checkpoints -----------------------------------------------------------------


def test_checkpoints_cover_durable_entries_and_gather_cosignatures(tmp_path):
    path = tmp_path / "log"
    witness = Witness(witness_signer(OTHER), [])
    with open_log(path, checkpoint_every_entries=5, checkpoint_interval_s=60) as log:
        witness.add_log(log.verifier)
        assert log.maybe_checkpoint(0.0) is None  # nothing to sign yet
        for i in range(3):
            log.append(K.MEMBER_CHANGED, member(i))
        assert log.maybe_checkpoint(1.0) is None  # not due: 3 entries, 1 s
        note = log.maybe_checkpoint(61.0)  # due by time
        cp = Checkpoint.parse(note)
        assert cp.size == 3 and cp.verify(log.verifier) and log.durable_size == 3
        assert log.checkpoint() == note  # nothing new: the same checkpoint
        r = witness.add_checkpoint(1_700_000_000.0, note)
        assert isinstance(r, Cosigned)
        log.add_cosignature(3, r.line, witness.verifier)
        for i in range(5):
            log.append(K.MEMBER_CHANGED, member(10 + i))
        assert Checkpoint.parse(log.maybe_checkpoint(62.0)).size == 8  # due by count
        old = log.checkpoint_at(3)
        assert old is not None and old.verify(witness.verifier)
        proof = log.consistency_proof(3, 8)
        r2 = witness.add_checkpoint(1_700_000_060.0, log.checkpoint(), 3, proof)
        assert isinstance(r2, Cosigned)
        log.add_cosignature(8, r2.line, witness.verifier)
    with AuditLog.open_readonly(path) as ro:
        latest = ro.latest_checkpoint()
        assert latest.size == 8 and latest.verify(witness.verifier) and latest.verify(ro.verifier)


def test_statistics_are_plain_numbers(tmp_path):
    with open_log(tmp_path / "log") as log:
        for i in range(20):
            log.append(K.MEMBER_CHANGED, member(i))
        log.sync()
        log.checkpoint()
        st = log.statistics()
    assert all(isinstance(v, (int, float)) for v in st.values())
    assert st["size"] == st["durable_size"] == 20 and st["checkpoints_signed"] == 1 and st["fsyncs"] >= 1


def test_on_durable_reports_each_commit(tmp_path):
    seen: list[int] = []
    with open_log(tmp_path / "log", on_durable=seen.append) as log:
        log.append(K.MEMBER_CHANGED, member(0))
        log.append(K.MEMBER_CHANGED, member(1))
        log.sync()
        log.append(K.MEMBER_CHANGED, member(2))
        log.sync()
        log.sync()  # nothing new: no call
    assert seen == [2, 3]


def test_a_reader_ignores_an_unfinished_tail_without_touching_it(tmp_path, caplog):
    path = tmp_path / "log"
    end, _ = write_entries(path, 4)
    with open(path / ENTRIES_FILE, "ab") as f:
        f.write(b"\x00\x00\x01")  # a writer caught mid-record
    with caplog.at_level(logging.WARNING, logger="arcnet.audit"):
        with AuditLog.open_readonly(path) as ro:
            assert ro.size == 4 and len(ro.read_entries(0, 4)) == 4
    assert os.path.getsize(path / ENTRIES_FILE) == end + 3 and not caplog.records
