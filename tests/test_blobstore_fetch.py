"""A real 3-process swarm fetch: two holder processes (one corrupting) serve one fetcher over bulk TCP."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys

import pytest

from arcnet.blobstore.chunking import ChunkingSpec
from arcnet.blobstore.fetch import FetchError, fetch_swarm
from arcnet.blobstore.store import Store
from arcnet.blobstore.swarm import SwarmConfig
from arcnet.mesh.identity import Identity

IDENT = Identity.from_seed(b"\x0b" * 32)
GOOD, BAD = Identity.from_seed(b"\x0c" * 32).peer_id, Identity.from_seed(b"\x0d" * 32).peer_id


def token(n: int) -> bytes:
    return random.Random(100 + n).randbytes(32)


@pytest.fixture(scope="module")
def holders(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("holders")
    data = random.Random(2).randbytes(200 * 65536)
    with Store(tmp_path / "good", durable=False) as src:
        aid, m = src.put_bytes(data, identity=IDENT, name="ds.bin", chunking=ChunkingSpec.fixed(65536))
    shutil.copytree(tmp_path / "good", tmp_path / "bad")
    with Store(tmp_path / "bad", durable=False) as bad:
        # 15% of its chunks rotted on disk: it serves about half the requests, so it sends its third
        # bad chunk well before the end in every run (with 5% it served fewer than 3 now and then)
        corrupt = random.Random(3).sample(range(200), 30)
        for i in corrupt:
            path, *_ = bad.chunk_file(m.body.chunks[i].id)
            with open(path, "r+b") as f:
                f.seek(1000)
                f.write(b"\x00\xff")
    procs = {}
    ports = {}
    for name in ("good", "bad"):
        p = subprocess.Popen(
            [sys.executable, "-m", "arcnet.blobstore.bulk", str(tmp_path / name), aid.hex(), token(1).hex(), token(2).hex()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs[name] = p
        ports[name] = int(p.stdout.readline())
    yield aid, m, data, ports, set(corrupt)
    for p in procs.values():
        p.stdin.close()
        p.wait(timeout=30)
        p.stdout.close()


async def test_three_process_swarm_fetch_with_a_corrupting_holder(tmp_path, holders):
    aid, m, data, ports, corrupt = holders
    events = []
    with Store(tmp_path / "fetcher", durable=False) as dst:
        stats = await fetch_swarm(
            dst,
            m,
            {BAD: (("127.0.0.1", ports["bad"]), token(1)), GOOD: (("127.0.0.1", ports["good"]), token(1))},
            rng=random.Random(4),
            config=SwarmConfig(inflight_per_holder_max=4),
            on_event=events.append,
        )
        assert dst.is_complete(aid)
        assert b"".join(dst.read_artifact(aid)) == data
        assert dst.verify_all()["corrupt"] == 0  # zero corrupt bytes committed
    bad_events = [e for e in events if e.kind == "swarm.bad_chunk"]
    banned = [e for e in events if e.kind == "swarm.holder_banned"]
    assert len(banned) == 1 and banned[0].data["peer"] == BAD
    assert 1 <= len(bad_events) <= 3 and {e.data["index"] for e in bad_events} <= corrupt
    assert stats["chunks_committed"] == 200 and stats["bad_chunks"] <= 3


async def test_fetch_without_a_holder_says_why(tmp_path, holders):
    aid, m, _, ports, _ = holders
    with Store(tmp_path / "fetcher", durable=False) as dst:
        with pytest.raises(FetchError, match="no live holder"):
            await fetch_swarm(dst, m, {GOOD: (("127.0.0.1", ports["good"]), token(9))}, rng=random.Random(1))
        assert dst.missing(aid) == list(range(200))  # the manifest is kept: a later fetch resumes
