"""The on-disk store: round trips, manifests, verify-on-read, quota/LRU/GC, chunking, crash consistency."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest

from arcnet.blobstore.chunking import (
    CODEC_RAW,
    CODEC_ZSTD,
    DATASET_CHUNKING,
    ChunkingSpec,
    chunk_id,
    encode_chunk,
)
from arcnet.blobstore.manifest import ManifestError, decode_manifest, encode_manifest, manifest_id, verify_manifest
from arcnet.blobstore.messages import ChunkRef, Manifest
from arcnet.blobstore.store import Store, StoreError
from arcnet.mesh.identity import Identity

IDENT = Identity.from_seed(b"\x07" * 32)
SMALL_CDC = ChunkingSpec.cdc(1024, 4096, 16384)
SMALL_FIXED = ChunkingSpec.fixed(4096)


def rbytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path, durable=False) as s:
        yield s


def test_round_trip_model_and_dataset(store):
    weights = rbytes(3 << 20, 1) + b"\0" * 4096
    aid, m = store.put_bytes(weights, identity=IDENT, name="m.onnx", kind="model", version="1.0", project="vision")
    assert m.body.chunking == "fixed:1048576"
    assert [c.size for c in m.body.chunks] == [1 << 20] * 3 + [4096]
    assert b"".join(store.read_artifact(aid)) == weights
    info = store.stat(aid)
    assert info.complete and info.pinned and info.total_size == len(weights) and info.project == "vision"

    data = rbytes(6 << 20, 2)
    did, dm = store.put_bytes(data, identity=IDENT, name="d.csv", kind="dataset")
    assert dm.body.chunking == DATASET_CHUNKING.text()
    assert b"".join(store.read_artifact(did)) == data
    assert {a.name for a in store.list_artifacts()} == {"m.onnx", "d.csv"}
    assert store.resolve(did.hex()[:10]) == did


def test_put_file_and_export(tmp_path, store):
    src = tmp_path / "weights.safetensors"
    src.write_bytes(rbytes(1_500_000, 3))
    aid, m = store.put_file(src, identity=IDENT)
    assert m.body.name == "weights.safetensors" and m.body.chunking.startswith("fixed:")
    out = tmp_path / "out.bin"
    assert store.export(aid, out) == src.stat().st_size
    assert out.read_bytes() == src.read_bytes()


def test_manifest_id_signature_and_tamper_detection(store):
    aid, m = store.put_bytes(rbytes(10_000, 4), identity=IDENT, name="x", chunking=SMALL_FIXED)
    assert manifest_id(m) == aid == verify_manifest(m)
    raw = encode_manifest(m)
    assert decode_manifest(raw, aid)[0] == aid
    body = m.body
    forged_chunks = list(body.chunks)
    forged_chunks[0] = ChunkRef(bytes(32), forged_chunks[0].size, forged_chunks[0].codec)
    forged = Manifest(type(body)(*[forged_chunks if n == "chunks" else getattr(body, n) for n in body._names]), m.signature)
    with pytest.raises(ManifestError, match="bad signature"):
        verify_manifest(forged)
    with pytest.raises(StoreError) as e:
        store.add_manifest(forged)
    assert e.value.code == "invalid"
    with pytest.raises(ManifestError):
        decode_manifest(raw, bytes(32))  # not the id asked for


def test_compression_only_when_it_pays(store):
    compressible = (b"abcdefgh" * 200_000)[: 1 << 20]
    codec, packed = encode_chunk(compressible)
    assert codec == CODEC_ZSTD and len(compressible) / len(packed) >= 1.1
    assert encode_chunk(rbytes(1 << 20, 5))[0] == CODEC_RAW
    # a chunk that shrinks by only ~5% stays raw
    mixed = rbytes(950_000, 6) + b"\0" * 98_576
    assert encode_chunk(mixed)[0] == CODEC_RAW
    aid, m = store.put_bytes(compressible + rbytes(1 << 20, 7), identity=IDENT, name="c", kind="model")
    assert [c.codec for c in m.body.chunks] == [CODEC_ZSTD, CODEC_RAW]
    assert store.statistics()["stored_bytes"] < 1.2 * (1 << 20)
    assert b"".join(store.read_artifact(aid)) == compressible + rbytes(1 << 20, 7)


def test_verify_on_read_quarantines_a_corrupt_chunk(store):
    data = rbytes(40_000, 8)
    aid, m = store.put_bytes(data, identity=IDENT, name="v", chunking=SMALL_FIXED)
    victim = m.body.chunks[2].id
    path, *_ = store.chunk_file(victim)
    blob = bytearray(open(path, "rb").read())
    blob[100] ^= 0x01  # one flipped bit
    open(path, "wb").write(blob)
    with pytest.raises(StoreError) as e:
        b"".join(store.read_artifact(aid))
    assert e.value.code == "corrupt" and "quarantined" in str(e.value)
    assert store.missing(aid) == [2]
    assert not store.stat(aid).complete
    stats = store.statistics()
    assert stats["corrupt_detected"] == 1 and stats["corrupt_total"] == 1
    assert len(os.listdir(store.root / "quarantine")) == 1
    # a resumed fetch puts the good chunk back (verified on the way in)
    with pytest.raises(StoreError) as e:
        store.put_chunk(victim, bytes(blob))
    assert e.value.code == "corrupt"
    assert store.put_chunk(victim, data[8192:12288])
    assert store.is_complete(aid) and b"".join(store.read_artifact(aid)) == data


def test_truncated_or_missing_chunk_file_is_detected(store):
    aid, m = store.put_bytes(rbytes(20_000, 9), identity=IDENT, name="t", chunking=SMALL_FIXED)
    path, *_ = store.chunk_file(m.body.chunks[0].id)
    os.unlink(path)
    with pytest.raises(StoreError) as e:
        store.read_chunk(m.body.chunks[0].id)
    assert e.value.code == "corrupt"
    assert store.missing(aid) == [0]


def test_verify_all_scrub(store):
    aid, m = store.put_bytes(rbytes(20_000, 10), identity=IDENT, name="s", chunking=SMALL_FIXED)
    path, *_ = store.chunk_file(m.body.chunks[1].id)
    open(path, "r+b").write(b"X")
    assert store.verify_all() == {"chunks_checked": 5, "corrupt": 1}


def test_pins_refcounts_and_gc(store):
    shared = rbytes(8192, 11)
    a, ma = store.put_bytes(shared + rbytes(4096, 12), identity=IDENT, name="a", chunking=SMALL_FIXED, pin=None)
    b, mb = store.put_bytes(shared + rbytes(4096, 13), identity=IDENT, name="b", chunking=SMALL_FIXED, pin=None)
    common = ma.body.chunks[0].id
    assert store.refcount(common) == 2
    assert store.gc()["chunks_removed"] == 0
    store.pin(a, "job:1")
    with pytest.raises(StoreError) as e:
        store.delete_artifact(a)
    assert e.value.code == "pinned"
    store.delete_artifact(b)
    assert store.refcount(common) == 1
    res = store.gc()
    assert res["chunks_removed"] == 1  # only b's own last chunk
    assert store.has_chunk(common)
    store.unpin(a, "job:1")
    store.delete_artifact(a)
    assert store.gc()["chunks_removed"] == 3
    assert store.statistics()["chunks"] == 0 and store.statistics()["stored_bytes"] == 0


def test_quota_evicts_least_recently_used_unpinned(tmp_path):
    with Store(tmp_path, durable=False, cache_quota_bytes=100_000) as s:
        ids = [s.put_bytes(rbytes(30_000, 20 + k), identity=IDENT, name=f"a{k}", chunking=SMALL_FIXED, pin=None)[0] for k in range(3)]
        s.touch(ids[0])  # a0 is now the most recently used
        d, _ = s.put_bytes(rbytes(30_000, 30), identity=IDENT, name="a3", chunking=SMALL_FIXED, pin=None)
        left = {a.name for a in s.list_artifacts()}
        assert left == {"a0", "a2", "a3"}
        assert s.statistics()["stored_bytes"] <= 100_000
        assert s.statistics()["evicted_artifacts"] == 1
        # pinned data is never evicted; when it alone fills the quota, writes fail clearly
        for a in s.list_artifacts():
            s.pin(a.id)
        with pytest.raises(StoreError) as e:
            s.put_bytes(rbytes(30_000, 31), identity=IDENT, name="a4", chunking=SMALL_FIXED, pin=None)
        assert e.value.code == "quota" and "unpin" in str(e.value)
        assert {a.name for a in s.list_artifacts()} == {"a0", "a2", "a3"}


def test_artifact_being_fetched_is_not_evicted(tmp_path):
    with Store(tmp_path, durable=False, cache_quota_bytes=60_000) as s:
        src_data = rbytes(40_000, 40)
        with Store(tmp_path / "src", durable=False) as src:
            aid, m = src.put_bytes(src_data, identity=IDENT, name="f", chunking=SMALL_FIXED)
        s.add_manifest(m)
        other, _ = s.put_bytes(rbytes(30_000, 41), identity=IDENT, name="o", chunking=SMALL_FIXED, pin=None)
        with s.writing(aid), s.batch() as b:
            for k, ref in enumerate(m.body.chunks):
                b.put_chunk(ref.id, src_data[k * 4096 : (k + 1) * 4096])
        assert s.is_complete(aid)
        assert [a.name for a in s.list_artifacts()] == ["f"]  # "o" made room


def test_second_opener_is_refused(tmp_path):
    with Store(tmp_path, durable=False):
        with pytest.raises(StoreError) as e:
            Store(tmp_path)
        assert e.value.code == "locked"


def test_resume_lists_only_missing_chunks(tmp_path):
    data = rbytes(64 * 4096, 50)
    with Store(tmp_path / "src", durable=False) as src:
        aid, m = src.put_bytes(data, identity=IDENT, name="r", chunking=SMALL_FIXED)
    with Store(tmp_path / "dst", durable=False) as dst:
        dst.add_manifest(m)
        assert dst.missing(aid) == list(range(64))
        with dst.batch() as b:
            for k in range(0, 64, 2):
                b.put_chunk(m.body.chunks[k].id, data[k * 4096 : (k + 1) * 4096])
    with Store(tmp_path / "dst", durable=False) as dst:
        assert dst.missing(aid) == list(range(1, 64, 2))
        bitmap = dst.present_bitmap(aid)
        assert bitmap == b"\x55" * 8


def _chunk_ids(data: bytes, spec: ChunkingSpec) -> list[bytes]:
    pos = 0

    def read(n):
        nonlocal pos
        out = data[pos : pos + n]
        pos += len(out)
        return out

    return [chunk_id(c) for c in spec.chunks(read)]


@pytest.mark.parametrize("edit", ["replace", "insert", "delete"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_byte_edit_changes_at_most_two_chunks(edit, seed):
    rng = random.Random(seed)
    data = rng.randbytes(24 << 20)
    pos = rng.randrange(len(data))
    if edit == "replace":
        edited = data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :]
    elif edit == "insert":
        edited = data[:pos] + b"!" + data[pos:]
    else:
        edited = data[:pos] + data[pos + 1 :]
    before = _chunk_ids(data, DATASET_CHUNKING)
    after = _chunk_ids(edited, DATASET_CHUNKING)
    new = [c for c in after if c not in set(before)]
    assert len(before) > 15
    assert len(new) <= 2, f"seed {seed}: {len(new)} new chunks"


# -- crash consistency: a real child process is killed with SIGKILL mid-write --------------

CHILD = textwrap.dedent(
    """
    import os, random, signal, sys
    from arcnet.blobstore import store as store_mod
    from arcnet.blobstore.chunking import ChunkingSpec
    from arcnet.mesh.identity import Identity

    root, point, nth, durable = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    seen = 0

    def hook(p):
        global seen
        if p == point:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    store_mod.fault_hook = hook if point != "none" else None
    ident = Identity.from_seed(b"\\x07" * 32)
    spec = ChunkingSpec.fixed(4096)
    s = store_mod.Store(root, durable=durable, batch_chunks_max=8)
    rng = random.Random(5)
    k = 0
    while True:
        data = rng.randbytes(rng.randrange(10_000, 120_000))
        s.put_bytes(data, identity=ident, name=f"f{k}", chunking=spec)
        print(k, flush=True)
        k += 1
    """
)


def _check_consistent(root) -> dict:
    with Store(root, durable=False) as s:
        assert list((s.root / "tmp").iterdir()) == []
        stats = s.statistics()
        scrub = s.verify_all()
        assert scrub["corrupt"] == 0
        for info in s.list_artifacts():
            assert info.complete, info.name  # a manifest is added after all its chunks
            data = b"".join(s.read_artifact(info.id))
            assert len(data) == info.total_size
        gc = s.gc()
        names = sorted(p.name for d in (s.root / "chunks").iterdir() for p in d.iterdir())
        assert len(names) == s.statistics()["chunks"]
        return {"stats": stats, "gc": gc, "artifacts": len(s.list_artifacts())}


@pytest.mark.parametrize(
    "point,nth",
    [("written", 3), ("synced", 2), ("pending", 2), ("renamed", 5), ("dirs_synced", 2), ("present", 3), ("manifest", 2)],
)
def test_kill_at_each_commit_step_leaves_a_consistent_store(tmp_path, point, nth):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data"), point, str(nth), "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    result = _check_consistent(tmp_path / "data")
    if point in ("renamed", "dirs_synced"):
        assert result["stats"]["recovered_pending"] > 0  # the pending rows of the cut batch were settled


def test_kill_from_outside_during_writes(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "data"), "none", "0", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        target = 3 + 4 * round_  # wait for a few artifacts, then kill mid-stream
        for _ in range(target):
            assert proc.stdout.readline()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        result = _check_consistent(tmp_path / "data")
        assert result["artifacts"] >= target
