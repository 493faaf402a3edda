"""The bulk data path over loopback TCP: tickets, sendfile serving, verify-before-commit."""

from __future__ import annotations

import random

import pytest
import trio

from arcnet.blobstore.bulk import BulkError, BulkServer, TicketBook, fetch_bulk
from arcnet.blobstore.chunking import ChunkingSpec
from arcnet.blobstore.store import Store
from arcnet.mesh.identity import Identity

IDENT = Identity.from_seed(b"\x09" * 32)
FETCHER = Identity.from_seed(b"\x0a" * 32).peer_id
SPEC = ChunkingSpec.fixed(64 << 10)


def token(n: int) -> bytes:
    return random.Random(n).randbytes(32)


@pytest.fixture
def stores(tmp_path):
    src = Store(tmp_path / "src", durable=False)
    dst = Store(tmp_path / "dst", durable=False)
    data = random.Random(1).randbytes(3_000_000) + b"\0" * 200_000  # the zero tail is stored compressed
    aid, m = src.put_bytes(data, identity=IDENT, name="w.bin", chunking=SPEC)
    dst.add_manifest(m)
    yield src, dst, aid, m, data
    src.close()
    dst.close()


async def serve(nursery, src, book):
    server = BulkServer(src, book)
    port = await nursery.start(server.serve)
    return server, ("127.0.0.1", port)


async def test_bulk_fetch_commits_verified_chunks(stores):
    src, dst, aid, m, data = stores
    book = TicketBook()
    async with trio.open_nursery() as nursery:
        server, addr = await serve(nursery, src, book)
        book.issue(trio.current_time(), FETCHER, aid, token(1))
        seen = []
        res = await fetch_bulk(addr, token(1), m, range(len(m.body.chunks)), dst, on_chunk=lambda i, ok: seen.append((i, ok)))
        nursery.cancel_scope.cancel()
    n = len(m.body.chunks)
    # the zero tail repeats one chunk: it is written once, the repeats are "already" here
    assert sorted(res.committed + res.already) == list(range(n)) and not res.bad
    assert len(res.already) == 1
    assert seen == [(i, True) for i in range(n)]
    assert dst.is_complete(aid)
    assert b"".join(dst.read_artifact(aid)) == data
    assert server.statistics()["chunks_sent"] == n
    assert any(c.codec == 1 for c in m.body.chunks)  # compressed chunks travel compressed


async def test_ticket_is_single_use_bound_and_expires(stores):
    src, dst, aid, m, _ = stores
    book = TicketBook(ttl_s=5.0)
    async with trio.open_nursery() as nursery:
        _, addr = await serve(nursery, src, book)
        book.issue(trio.current_time(), FETCHER, aid, token(2))
        await fetch_bulk(addr, token(2), m, [0], dst)
        with pytest.raises(BulkError, match="ticket refused"):
            await fetch_bulk(addr, token(2), m, [1], dst)  # used up
        with pytest.raises(BulkError, match="ticket refused"):
            await fetch_bulk(addr, token(3), m, [1], dst)  # never issued
        book.issue(trio.current_time() - 10.0, FETCHER, aid, token(4))  # issued 10 s ago: expired
        with pytest.raises(BulkError, match="ticket refused"):
            await fetch_bulk(addr, token(4), m, [1], dst)
        nursery.cancel_scope.cancel()
    assert book.statistics()["refused"] == 3
    assert dst.missing(aid) == list(range(1, len(m.body.chunks)))


async def test_corrupt_holder_commits_nothing_bad_and_is_abandoned(stores):
    src, dst, aid, m, _ = stores
    for k in (1, 3, 4, 6):  # the holder's disk rotted under four chunks
        path, *_ = src.chunk_file(m.body.chunks[k].id)
        with open(path, "r+b") as f:
            f.write(b"\xde\xad")
    book = TicketBook()
    async with trio.open_nursery() as nursery:
        _, addr = await serve(nursery, src, book)
        book.issue(trio.current_time(), FETCHER, aid, token(5))
        seen = []
        with pytest.raises(BulkError, match="3 bad chunks"):
            await fetch_bulk(addr, token(5), m, range(len(m.body.chunks)), dst, on_chunk=lambda i, ok: seen.append((i, ok)))
        nursery.cancel_scope.cancel()
    assert [i for i, ok in seen if not ok] == [1, 3, 4]
    assert dst.missing(aid)[:3] == [1, 3, 4]
    assert dst.verify_all()["corrupt"] == 0
    assert all(dst.has_chunk(m.body.chunks[i].id) for i, ok in seen if ok)


async def test_partial_holder_says_not_have(stores, tmp_path):
    src, dst, aid, m, data = stores
    with Store(tmp_path / "partial", durable=False) as partial:
        partial.add_manifest(m)
        size = SPEC.avg_size
        for i in (0, 2):
            partial.put_chunk(m.body.chunks[i].id, data[i * size : (i + 1) * size])
        book = TicketBook()
        async with trio.open_nursery() as nursery:
            _, addr = await serve(nursery, partial, book)
            book.issue(trio.current_time(), FETCHER, aid, token(6))
            res = await fetch_bulk(addr, token(6), m, [0, 1, 2, 3], dst)
            nursery.cancel_scope.cancel()
    assert res.committed == [0, 2] and res.not_have == [1, 3]


async def test_out_of_range_index_is_refused_before_connecting(stores):
    src, dst, aid, m, _ = stores
    with pytest.raises(BulkError, match="out of range"):
        await fetch_bulk(("127.0.0.1", 9), token(7), m, [len(m.body.chunks)], dst)


FETCH_CHILD = """
import os, signal, sys, trio
from arcnet.blobstore import store as store_mod
from arcnet.blobstore.bulk import fetch_bulk
from arcnet.blobstore.manifest import decode_manifest

root, port, token, manifest_path, kill_after = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), sys.argv[4], int(sys.argv[5])
_, m = decode_manifest(open(manifest_path, "rb").read())
seen = 0
def hook(point):
    global seen
    if point == "present":
        seen += 1
        if seen == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
store_mod.fault_hook = hook
s = store_mod.Store(root, durable=True, batch_chunks_max=4)
aid = s.add_manifest(m)
with s.writing(aid):
    trio.run(fetch_bulk, ("127.0.0.1", port), token, m, s.missing(aid), s)
"""


async def test_fetch_killed_mid_download_resumes_with_only_missing_chunks(stores, tmp_path):
    src, _, aid, m, data = stores
    from arcnet.blobstore.manifest import encode_manifest

    (tmp_path / "m.bin").write_bytes(encode_manifest(m))
    (tmp_path / "child.py").write_text(FETCH_CHILD)
    book = TicketBook()
    n = len(m.body.chunks)
    async with trio.open_nursery() as nursery:
        server, addr = await serve(nursery, src, book)
        book.issue(trio.current_time(), FETCHER, aid, token(8))
        import sys

        proc = await trio.run_process(
            [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "fetcher"), str(addr[1]), token(8).hex(),
             str(tmp_path / "m.bin"), "3"],
            check=False,
        )
        assert proc.returncode == -9  # killed by SIGKILL after its 3rd group commit
        with Store(tmp_path / "fetcher", durable=False) as again:
            missing = again.missing(aid)
            assert 0 < len(missing) < n
            assert n - len(missing) >= 3 * 4  # the three group commits of 4 chunks survived the kill
            book.issue(trio.current_time(), FETCHER, aid, token(9))
            sent_before = server.statistics()["chunks_sent"]
            res = await fetch_bulk(addr, token(9), m, missing, again)
            assert server.statistics()["chunks_sent"] - sent_before == len(missing)  # nothing committed is sent again
            assert sorted(res.committed + res.already) == missing
            assert again.is_complete(aid) and b"".join(again.read_artifact(aid)) == data
            assert again.verify_all()["corrupt"] == 0
        nursery.cancel_scope.cancel()
