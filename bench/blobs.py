"""Measure the blob store: chunking, hashing, store put/get, bulk ingest, and the swarm on real peers.

    python bench/blobs.py [--json] [--quick] [--size-mib N] [--peers N] [--durable]
                          [--swarm-only | --no-swarm] [--no-libtorrent]

Figures (one JSON object with ``--json``):

* ``fastcdc_gbps`` (the implementation in use), ``fastcdc_native_gbps``,
  ``fastcdc_fallback_gbps``: FastCDC cut points over random data with the
  dataset chunking (256 KiB / 1 MiB / 3 MiB), GB/s on one thread;
  ``*_cpu_gbps``: the same per CPU second of that thread, which a busy
  machine does not distort; ``fastcdc_native_2threads_gbps``: two threads
  at once (the C call releases the GIL); ``blake3_gbps``: hashing 1 MiB
  chunks, the baseline every path below pays.
* ``store_put_gb_s`` / ``store_put_durable_gb_s``: publishing a model
  (fixed 1 MiB chunks: hash, compression probe, write; durable = fsync per
  64 MiB group commit); ``store_get_gb_s``: reading it back verified.
* ``ingest_gb_s``: ONE bulk connection on loopback, holder in another
  process serving with sendfile, fetcher receiving, hashing (BLAKE3) and
  writing to the store (page cache; ``ingest_durable_gb_s`` with fsync);
  ``ingest_cpu_gb_s``: the same bytes over the fetcher's own CPU seconds,
  i.e. what one core of the fetcher sustains; ``recv_hash_gb_s``: receive
  and verify without writing; ``loopback_raw_gb_s`` (baseline, same run):
  plain ``send``/``recv_into`` of the same bytes with no hashing or writing.
* The swarm (``--peers`` fetchers, default 20; the artifact is ``--size-mib``,
  default 1 GiB, ``--quick`` 256 MiB, fixed 1 MiB chunks), every peer an
  ``arcnet-peer`` process on loopback, driven through the control protocol:
  ``wall_s``: from asking every fetcher at once (``blob.fetch``, each told
  only of the seed, as a job's entry peer) until the last has it all
  (``first_done_s``: the first); ``seed_upload_ratio``: bytes the seed served
  over the artifact size (``peer_upload_ratio_max``: the busiest fetcher);
  ``download_overhead``: bytes received beyond one copy per fetcher
  (endgame duplicates, late copies); ``chunks_verified``: chunks the
  fetchers verified and committed (``chunks_expected`` = chunks x peers).
  Baselines in the same run, before the mesh starts: ``chain_wall_s``, a
  verified chain seed -> p1 -> ... -> pN of processes, each hop receiving,
  hashing, writing to its store and forwarding, chunk by chunk;
  ``libtorrent_wall_s``, one libtorrent seeder and N leechers (processes,
  told of each other), or null when ``import libtorrent`` fails;
  ``ratio_vs_chain`` and ``ratio_vs_libtorrent`` are ``wall_s`` over each.
* ``resume_redownload_fraction``: a further peer fetches the artifact from
  the swarm, is killed with SIGKILL once half its chunks are verified,
  restarted, and asked again; the figure is the bytes the holders had sent
  it before the kill that its store did not keep, over the artifact size:
  what was in flight (at most 8 holders x 4 requests of 1 MiB) and the
  verified chunks still queued for the writer (``resume_lost_verified_chunks``).
  ``resume_fetch_overhead``: what the resumed fetch received beyond the
  missing bytes (endgame copies: its holders are all complete, and the bulk
  path cannot cancel a request).
* ``corrupt_bytes_committed`` / ``banned_after``: a holder started with the
  test-only fault hook (``ARCNET_BLOB_TEST_CORRUPT_FRACTION=0.01``: one
  chunk in 100 it sends has a byte flipped) serves, with the seed, an
  artifact of ``--corrupt-size-mib`` (64 MiB of 64 KiB chunks: it serves
  hundreds) to a fetcher; the figures are the bytes of the fetched file
  that differ from the source, and the bad chunks after which the fetcher
  banned the holder (null if it was not banned).
  ``--durable`` fsyncs every group commit in the swarm and the chain alike.

On a 2-core machine shared with other work the figures are noisy; ratios
taken in the same run hold better. With 20 peers on 2 cores every figure is
CPU-bound: the swarm, the chain and libtorrent all do N x the artifact of
receive + hash + write work on the same two cores. On a freshly booted VM
the first write of every page costs a hypervisor fault (~0.7 GB/s), so the
ingest runs once to warm up before it is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import blake3
import numpy as np
import trio

from arcnet.blobstore.bulk import fetch_bulk
from arcnet.blobstore.chunking import DATASET_CHUNKING
from arcnet.blobstore.store import Store
from arcnet.mesh.identity import Identity
from arcnet.native import fastcdc

IDENT = Identity.from_seed(b"\x42" * 32)
GB = 1e9


def _rand(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def _best(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs (noise only ever slows a run down)."""
    return _best2(fn, repeat)[0]


def _best2(fn, repeat: int = 3) -> tuple[float, float]:
    """Best wall time and best CPU time (this thread) of ``repeat`` runs.

    On a machine shared with other work the wall time counts the time other
    processes had the core; the CPU time of a single-threaded step does not,
    so ``*_cpu_gbps`` figures are what one core sustains.
    """
    wall = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.thread_time() - c0)
    return wall, cpu


# -- chunking and hashing -----------------------------------------------------------


def chunking_figures(size: int) -> dict[str, float]:
    data = _rand(size, 1)
    p = fastcdc.Params(DATASET_CHUNKING.min_size, DATASET_CHUNKING.avg_size, DATASET_CHUNKING.max_size)
    out: dict[str, float] = {"fastcdc_implementation": fastcdc.IMPLEMENTATION}
    small = data[: max(p.max_size, size // 8)]  # the fallback is slow: measure it on less
    wall, cpu = _best2(lambda: fastcdc.cut_points_fallback(small, p), 2)
    out["fastcdc_fallback_gbps"], out["fastcdc_fallback_cpu_gbps"] = len(small) / wall / GB, len(small) / cpu / GB
    if fastcdc.IMPLEMENTATION == "native":
        assert fastcdc.cut_points_native(small, p) == fastcdc.cut_points_fallback(small, p)
        wall, cpu = _best2(lambda: fastcdc.cut_points_native(data, p))
        out["fastcdc_native_gbps"], out["fastcdc_native_cpu_gbps"] = size / wall / GB, size / cpu / GB

        def two() -> None:
            ts = [threading.Thread(target=fastcdc.cut_points_native, args=(data, p)) for _ in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        out["fastcdc_native_2threads_gbps"] = 2 * size / _best(two) / GB
    # the implementation this install uses (native when compiled)
    out["fastcdc_gbps"] = out.get("fastcdc_native_gbps", out["fastcdc_fallback_gbps"])
    chunk = data[: 1 << 20]
    reps = max(1, size >> 20)
    wall, cpu = _best2(lambda: [blake3.blake3(chunk).digest() for _ in range(reps)])
    out["blake3_gbps"], out["blake3_cpu_gbps"] = reps * len(chunk) / wall / GB, reps * len(chunk) / cpu / GB
    return out


# -- store put/get -----------------------------------------------------------------------


def store_figures(size: int, workdir: str) -> dict[str, float]:
    data = _rand(size, 2)
    out: dict[str, float] = {}
    for durable in (False, True):
        root = tempfile.mkdtemp(dir=workdir)
        with Store(root, durable=durable) as s:
            t0, c0 = time.perf_counter(), time.process_time()
            aid, _ = s.put_bytes(data, identity=IDENT, name="w.bin", kind="model")
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            if durable:
                out["store_put_durable_gb_s"] = size / dt / GB
            else:
                out["store_put_gb_s"], out["store_put_cpu_gb_s"] = size / dt / GB, size / cpu / GB
                t0, c0 = time.perf_counter(), time.process_time()
                n = sum(len(c) for c in s.read_artifact(aid))
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                out["store_get_gb_s"], out["store_get_cpu_gb_s"] = n / dt / GB, n / cpu / GB
        shutil.rmtree(root)
    return out


# -- bulk ingest: the holder runs in another process --------------------------------------


def _serve_raw(size: int) -> None:
    """Child mode: send ``size`` bytes to the first connection (the loopback baseline)."""
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    buf = bytes(1 << 20)
    left = size
    while left:
        left -= conn.send(buf[: min(left, len(buf))])
    conn.close()


def _recv_raw(port: int, size: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(1 << 20)
    got = 0
    while got < size:
        n = s.recv_into(buf)
        if not n:
            raise RuntimeError("raw sender stopped early")
        got += n
    s.close()


def ingest_figures(size: int, workdir: str, repeat: int = 3) -> dict[str, float]:
    """One bulk connection, holder in a child process; best of ``repeat`` runs (durable: one run)."""
    src_root = tempfile.mkdtemp(dir=workdir)
    with Store(src_root, durable=False) as src:
        aid, m = src.put_bytes(_rand(size, 3), identity=IDENT, name="w.bin", kind="model")
    tokens = [os.urandom(32) for _ in range(3 * repeat + 2)]
    child = subprocess.Popen(
        [sys.executable, "-m", "arcnet.blobstore.bulk", src_root, aid.hex(), *[t.hex() for t in tokens]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    out: dict[str, float] = {}
    try:
        port = int(child.stdout.readline())
        everything = list(range(len(m.body.chunks)))
        tok = iter(tokens)

        def run(store: Store | None) -> tuple[float, float]:
            async def go() -> tuple[float, float]:
                t0, c0 = time.perf_counter(), time.process_time()
                res = await fetch_bulk(("127.0.0.1", port), next(tok), m, everything, store)
                assert not res.bad and len(res.committed) + len(res.already) == len(everything)
                return time.perf_counter() - t0, time.process_time() - c0

            return trio.run(go)

        # warm-up: faults in the page cache of both sides
        root = tempfile.mkdtemp(dir=workdir)
        with Store(root, durable=False) as dst:
            dst.add_manifest(m)
            run(dst)
        shutil.rmtree(root)
        out["recv_hash_gb_s"] = size / min(run(None)[0] for _ in range(repeat)) / GB
        for durable in (False, True):
            best_wall, best_cpu = float("inf"), float("inf")
            for _ in range(repeat if not durable else 1):
                root = tempfile.mkdtemp(dir=workdir)
                with Store(root, durable=durable) as dst:
                    dst.add_manifest(m)
                    wall, cpu = run(dst)
                    assert dst.is_complete(aid)
                shutil.rmtree(root)
                best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
            if durable:
                out["ingest_durable_gb_s"] = size / best_wall / GB
            else:
                out["ingest_gb_s"] = size / best_wall / GB
                out["ingest_cpu_gb_s"] = size / best_cpu / GB
    finally:
        child.stdin.close()
        child.wait(timeout=60)
        shutil.rmtree(src_root)
    best = float("inf")
    for _ in range(repeat):
        raw = subprocess.Popen([sys.executable, __file__, "--serve-raw", str(size)], stdout=subprocess.PIPE, text=True)
        try:
            port = int(raw.stdout.readline())
            t0 = time.perf_counter()
            _recv_raw(port, size)
            best = min(best, time.perf_counter() - t0)
        finally:
            raw.wait(timeout=60)
            raw.stdout.close()
    out["loopback_raw_gb_s"] = size / best / GB
    out["ingest_vs_raw"] = out["ingest_gb_s"] / out["loopback_raw_gb_s"]
    return out


# -- the swarm on real peer processes, and its baselines -----------------------------------------
#
# Every process below is a separate OS process on loopback: ``arcnet-peer``
# daemons for the swarm, child processes of this script for the chain and
# libtorrent. The chain and libtorrent run before the mesh starts, so idle
# daemons do not take their CPU.

_CHAIN_HEAD = struct.Struct(">IBII")  # index, codec, stored length, content size


def _recv_exact_into(sock: socket.socket, mv: memoryview) -> None:
    while mv:
        n = sock.recv_into(mv)
        if not n:
            raise RuntimeError("upstream closed early")
        mv = mv[n:]


def _chain_hop(store_dir: str, manifest_file: str, upstream: int, last: bool, durable: bool) -> None:
    """Child mode: one hop of the verified chain (receive, hash, write, forward)."""
    from arcnet.blobstore.chunking import chunk_id, decode_chunk
    from arcnet.blobstore.manifest import decode_manifest

    aid, m = decode_manifest(open(manifest_file, "rb").read())
    down = None
    if not last:
        srv = socket.create_server(("127.0.0.1", 0))
        print(srv.getsockname()[1], flush=True)
        down, _ = srv.accept()
    else:
        print(0, flush=True)
    with Store(store_dir, durable=durable) as store:
        store.add_manifest(m)
        if upstream == 0:  # the seed: serves its store with sendfile once told to go
            print("ready", flush=True)
            sys.stdin.readline()
            for i, ref in enumerate(m.body.chunks):
                path, stored, codec, size = store.chunk_file(ref.id)
                down.sendall(_CHAIN_HEAD.pack(i, codec, stored, size))
                with open(path, "rb") as f:
                    off = 0
                    while off < stored:
                        off += os.sendfile(down.fileno(), f.fileno(), off, stored - off)
            down.close()
            print("done", flush=True)
            return
        up = socket.create_connection(("127.0.0.1", upstream))
        up.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        print("ready", flush=True)
        head = bytearray(_CHAIN_HEAD.size)
        buf = bytearray(max(r.size for r in m.body.chunks))
        with store.batch() as batch:
            for ref in m.body.chunks:
                _recv_exact_into(up, memoryview(head))
                i, codec, stored, size = _CHAIN_HEAD.unpack(head)
                data = memoryview(buf)[:stored]
                _recv_exact_into(up, data)
                if chunk_id(decode_chunk(codec, data, ref.size)) != ref.id:
                    raise RuntimeError(f"chunk {i} does not verify")
                batch.put_chunk(ref.id, data, codec=codec, size=size, verified=True)
                if down is not None:
                    down.sendall(head)
                    down.sendall(data)
        assert store.is_complete(aid)
        if down is not None:
            down.close()
        print("done", flush=True)


def _publish(path: str, root: str, chunk_bytes: int | None = None) -> tuple[bytes, Any]:
    from arcnet.blobstore.chunking import ChunkingSpec

    with Store(root, durable=False) as s:
        kw = {"chunking": ChunkingSpec.fixed(chunk_bytes)} if chunk_bytes else {"kind": "model"}
        return s.put_file(path, identity=IDENT, **kw)


def chain_figures(src: str, hops: int, workdir: str, durable: bool) -> dict[str, float]:
    """seed -> p1 -> ... -> p<hops>, each hop a process: receive, verify (BLAKE3), write to its store, forward."""
    from arcnet.blobstore.manifest import encode_manifest

    base = tempfile.mkdtemp(dir=workdir)
    aid, m = _publish(src, os.path.join(base, "seed"))
    mfile = os.path.join(base, "manifest")
    with open(mfile, "wb") as f:
        f.write(encode_manifest(m))
    procs: list[subprocess.Popen] = []
    try:
        up = 0
        for k in range(hops + 1):
            d = os.path.join(base, "seed" if k == 0 else f"hop{k}")
            p = subprocess.Popen([sys.executable, __file__, "--chain-hop", d, mfile, str(up), str(int(k == hops)),
                                  str(int(durable))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(p)
            up = int(p.stdout.readline())
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        t0 = time.perf_counter()
        procs[0].stdin.write("go\n")
        procs[0].stdin.flush()
        for p in procs[1:]:  # every hop, in order: the last one finishes last
            line = p.stdout.readline().strip()
            if line != "done":
                raise RuntimeError(f"chain hop failed ({line!r})")
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill()
                p.wait(10)
        shutil.rmtree(base, ignore_errors=True)
    return {"chain_wall_s": wall}


def _lt_peer(torrent: str, save: str, seed: bool) -> None:
    """Child mode: one libtorrent session with one torrent; prints its port, then 'done' when it has it all."""
    import warnings

    import libtorrent as lt

    warnings.simplefilter("ignore", DeprecationWarning)  # the dict forms of the 1.x API, still supported
    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "allow_multiple_connections_per_ip": True, "enable_outgoing_utp": False,
        "enable_incoming_utp": False, "alert_mask": 0,
    })
    params = {"ti": lt.torrent_info(torrent), "save_path": save}
    if seed:
        params["flags"] = lt.torrent_flags.seed_mode
    h = ses.add_torrent(params)
    print(ses.listen_port(), flush=True)
    ports = sys.stdin.readline().split()
    for port in ports:
        if int(port) != ses.listen_port():
            h.connect_peer(("127.0.0.1", int(port)))
    while not h.status().is_seeding:
        time.sleep(0.02)
    print("done", flush=True)
    sys.stdin.read()  # keep seeding until the parent closes stdin


def libtorrent_figures(src: str, peers: int, workdir: str) -> dict[str, Any]:
    """One libtorrent seeder and ``peers`` leechers, each its own process, all told of each other."""
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import libtorrent as lt
    except ImportError:
        return {"libtorrent_wall_s": None, "libtorrent_note": "libtorrent is not installed (pip install libtorrent)"}
    base = tempfile.mkdtemp(dir=workdir)
    fs = lt.file_storage()
    lt.add_files(fs, src)
    t = lt.create_torrent(fs, 1 << 20)
    lt.set_piece_hashes(t, os.path.dirname(src))
    tfile = os.path.join(base, "a.torrent")
    with open(tfile, "wb") as f:
        f.write(lt.bencode(t.generate()))
    procs: list[subprocess.Popen] = []
    try:
        for k in range(peers + 1):
            save = os.path.dirname(src) if k == 0 else os.path.join(base, f"l{k}")
            os.makedirs(save, exist_ok=True)
            procs.append(subprocess.Popen([sys.executable, __file__, "--lt-peer", tfile, save, str(int(k == 0))],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        ports = [p.stdout.readline().strip() for p in procs]
        t0 = time.perf_counter()
        for p in procs:
            p.stdin.write(" ".join(ports) + "\n")
            p.stdin.flush()
        assert procs[0].stdout.readline().strip() == "done"  # the seed: at once
        for p in procs[1:]:
            if p.stdout.readline().strip() != "done":
                raise RuntimeError("a libtorrent leecher failed")
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.stdin.close()
                p.kill()
                p.wait(10)
        shutil.rmtree(base, ignore_errors=True)
    return {"libtorrent_wall_s": wall, "libtorrent_version": lt.__version__}


async def _call(client: Any, addr: str, method: str, args: dict[str, Any] | None = None, timeout_s: float = 20.0,
                tries: int = 6) -> dict[str, Any]:
    """A control call that retries when the peer is too busy to open a stream (20 daemons on 2 cores)."""
    from arcnet.cli.client import Unreachable

    for k in range(tries):
        try:
            return await client.call(addr, method, args, timeout_s=timeout_s)
        except Unreachable:
            if k == tries - 1:
                raise
            await trio.sleep(0.5 * 2**k)
    raise AssertionError("unreachable")


async def _stats(client: Any, addr: str) -> dict[str, Any]:
    return await _call(client, addr, "statistics")


async def _fetch_until_done(client: Any, addr: str, aid: str, hints: list[str], wait_s: float = 30.0) -> dict[str, Any]:
    while True:
        r = await _call(client, addr, "blob.fetch", {"id": aid, "hints": hints, "wait_s": wait_s, "pin": False}, wait_s + 20)
        if r["state"] == "done":
            return r
        if r["state"] == "failed":
            raise RuntimeError(f"fetch on {addr[-8:]} failed: {r['error']}")


def swarm_figures(src: str, size: int, peers: int, workdir: str, durable: bool, corrupt_size: int) -> dict[str, Any]:
    """One seed and ``peers`` fetchers (arcnet-peer processes), plus a corrupting holder and a peer killed mid-fetch."""
    from arcnet.cli.client import Client
    from arcnet.cli.localmesh import LocalMesh

    gossip = {"membership_probe_interval_s": 1.0, "membership_probe_timeout_s": 0.8,
              "membership_indirect_timeout_s": 1.0, "membership_suspicion_mult": 6.0}
    env = {"ARCNET_BLOB_DURABLE": str(int(durable))}
    n_all = peers + 3  # seed, fetchers, the corrupting holder, the peer killed mid-fetch
    sites = [("bench", 0.0, 0.0)] * n_all
    seed_i, fetchers, bad_i, resume_i = 0, list(range(1, peers + 1)), peers + 1, peers + 2
    out: dict[str, Any] = {"swarm_peers": peers}
    root = tempfile.mkdtemp(dir=workdir)
    with LocalMesh(os.path.join(root, "mesh"), sites, gossip=gossip, env=env, log_level="warning") as mesh:
        mesh.start(seed_i, timeout_s=120)
        for i in range(1, n_all):
            if i == bad_i:
                mesh.env = dict(mesh.env, ARCNET_BLOB_TEST_CORRUPT_FRACTION="0.01")
            mesh.start(i, wait=False)
            if i == bad_i:
                mesh.env = dict(mesh.env)
                mesh.env.pop("ARCNET_BLOB_TEST_CORRUPT_FRACTION")
        for i in range(1, n_all):
            mesh.wait_ready(i, 180)
        P = mesh.peers
        addr = [p.addr for p in P]

        async def main() -> None:
            async with Client(Identity.from_seed(b"\x43" * 32)) as c:
                t_conv = time.perf_counter()
                while True:  # every peer sees every other alive: directory peers agree
                    ok = True
                    for a in addr:
                        res = await _call(c, a, "peers")
                        if sum(m["state"] == "alive" for m in res["members"]) != n_all:
                            ok = False
                            break
                    if ok:
                        break
                    if time.perf_counter() - t_conv > 180:
                        raise RuntimeError("the mesh did not converge in 180 s")
                    await trio.sleep(1.0)
                put = await _call(c, addr[seed_i], "blob.put", {"path": src, "kind": "model", "policy": "cache"}, 55)
                aid, n_chunks = put["id"], put["chunks"]
                before = {i: await _stats(c, addr[i]) for i in range(n_all)}

                # 1. the swarm: every fetcher at once, each told only of the seed (as a job's entry peer)
                done_at: dict[int, float] = {}
                swarm_stats: dict[str, float] = {}
                t0 = time.perf_counter()

                async def one(i: int) -> None:
                    r = await _fetch_until_done(c, addr[i], aid, [P[seed_i].peer_id])
                    done_at[i] = time.perf_counter() - t0
                    for k, v in (r.get("swarm") or {}).items():
                        if isinstance(v, (int, float)):
                            swarm_stats[k] = swarm_stats.get(k, 0) + v

                async with trio.open_nursery() as n:
                    for i in fetchers:
                        n.start_soon(one, i)
                out["wall_s"] = max(done_at.values())
                out["first_done_s"] = min(done_at.values())
                after = {i: await _stats(c, addr[i]) for i in range(n_all)}
                delta = {i: {k: after[i].get(k, 0) - before[i].get(k, 0) for k in ("blob.bytes_out", "blob.chunks_verified", "blob.bytes_in")}
                         for i in range(n_all)}
                out["seed_upload_ratio"] = delta[seed_i]["blob.bytes_out"] / size
                out["peer_upload_ratio_max"] = max(delta[i]["blob.bytes_out"] for i in fetchers) / size
                out["chunks_verified"] = sum(delta[i]["blob.chunks_verified"] for i in fetchers)
                out["chunks_expected"] = n_chunks * peers
                out["download_overhead"] = sum(delta[i]["blob.bytes_in"] for i in fetchers) / (size * peers) - 1
                # why the seed sent what it sent: the fetchers' swarm counters, summed (diagnostics)
                out["swarm_counters"] = {k: swarm_stats.get(k, 0) for k in (
                    "requests_sent", "origin_requests", "origin_opens", "timeouts", "timeouts_deferred",
                    "endgame_requests", "duplicate_chunks", "unsolicited_chunks", "missing_replies")}

                # 2. a holder corrupting 1% of the chunks it serves (64 KiB chunks: it serves hundreds)
                csrc = os.path.join(root, "corrupt.bin")
                with open(csrc, "wb") as f:
                    f.write(_rand(corrupt_size, 9))
                cput = await _call(c, addr[seed_i], "blob.put", {"path": csrc, "chunk_bytes": 65536, "policy": "cache"}, 55)
                cid = cput["id"]
                await _fetch_until_done(c, addr[bad_i], cid, [P[seed_i].peer_id])
                victim = fetchers[0]
                r = await _fetch_until_done(c, addr[victim], cid, [P[bad_i].peer_id, P[seed_i].peer_id])
                bad_id = P[bad_i].peer_id
                scrub = await _call(c, addr[victim], "blob.verify", None, 55)
                check = os.path.join(root, "corrupt.out")
                await _call(c, addr[victim], "blob.get", {"id": cid, "path": check}, 55)
                with open(csrc, "rb") as f1, open(check, "rb") as f2:
                    a1, a2 = np.frombuffer(f1.read(), np.uint8), np.frombuffer(f2.read(), np.uint8)
                out["corrupt_bytes_committed"] = int((a1 != a2).sum()) if len(a1) == len(a2) else len(a1)
                out["corrupt_chunks_in_store"] = scrub["corrupt"]
                out["corrupt_holder_banned"] = bad_id in r["banned"]
                out["banned_after"] = r["bad_from"].get(bad_id) if bad_id in r["banned"] else None
                out["corrupt_holder_served_chunks"] = r["from_peer"].get(bad_id, 0)
                out["corrupt_chunks_total"] = cput["chunks"]

                # 3. kill -9 mid-download, restart, resume
                base = {i: (await _stats(c, addr[i]))["blob.bytes_out"] for i in range(n_all) if i != resume_i}
                polled = 0
                while True:
                    r = await _call(c, addr[resume_i], "blob.fetch", {"id": aid, "wait_s": 0.05, "pin": False})
                    polled = r["chunks_have"]
                    if polled >= n_chunks // 2 or r["state"] == "done":
                        break
                await trio.to_thread.run_sync(mesh.kill, resume_i)
                out["resume_state_at_kill"] = r["state"]
                out["resume_chunks_at_kill"] = polled
                sent_before_kill = 0
                for i in base:
                    sent_before_kill += (await _stats(c, addr[i]))["blob.bytes_out"] - base[i]
                await trio.to_thread.run_sync(lambda: mesh.start(resume_i, timeout_s=120))
                addr[resume_i] = P[resume_i].addr
            # a fresh client for the restarted peer (new port, same peer id)
            async with Client(Identity.from_seed(b"\x44" * 32)) as c:
                st = await _call(c, addr[resume_i], "blob.stat", {"id": aid})
                kept = st.get("chunks_present", 0)
                out["resume_chunks_kept"] = kept
                r2 = await _fetch_until_done(c, addr[resume_i], aid, [P[seed_i].peer_id])
                out["resume_chunks_fetched_after_restart"] = r2["chunks_fetched"]
                # what the holders had sent before the kill and the store did not keep (fixed 1 MiB
                # chunks, the last one shorter): requests in flight and verified chunks not yet written
                kept_bytes = min(size, kept << 20)
                out["resume_redownload_fraction"] = max(0, sent_before_kill - kept_bytes) / size
                out["resume_lost_verified_chunks"] = max(0, polled - kept)
                # the resumed fetch's own extra: endgame copies from its (many, complete) holders
                out["resume_fetch_overhead"] = r2["bytes_received"] / max(1, size - kept_bytes) - 1

        trio.run(main)
    shutil.rmtree(root, ignore_errors=True)
    return out


def swarm_all(size: int, peers: int, workdir: str, durable: bool, corrupt_size: int, libtorrent: bool) -> dict[str, Any]:
    src_dir = tempfile.mkdtemp(dir=workdir)
    src = os.path.join(src_dir, "artifact.bin")
    with open(src, "wb") as f:
        for k in range(0, size, 64 << 20):
            f.write(_rand(min(64 << 20, size - k), 100 + k))
    out: dict[str, Any] = {"swarm_size_bytes": size, "durable": durable}
    out.update(chain_figures(src, peers, workdir, durable))
    if libtorrent:
        out.update(libtorrent_figures(src, peers, workdir))
    else:
        out["libtorrent_wall_s"] = None
    out.update(swarm_figures(src, size, peers, workdir, durable, corrupt_size))
    out["ratio_vs_chain"] = out["wall_s"] / out["chain_wall_s"]
    if out.get("libtorrent_wall_s"):
        out["ratio_vs_libtorrent"] = out["wall_s"] / out["libtorrent_wall_s"]
    shutil.rmtree(src_dir, ignore_errors=True)
    return out


# -- report ---------------------------------------------------------------------------------

ROWS = [  # key, label, key of the per-CPU-second twin
    ("fastcdc_native_gbps", "FastCDC, C kernel, 1 thread", "fastcdc_native_cpu_gbps"),
    ("fastcdc_native_2threads_gbps", "FastCDC, C kernel, 2 threads", None),
    ("fastcdc_fallback_gbps", "FastCDC, NumPy fallback", "fastcdc_fallback_cpu_gbps"),
    ("blake3_gbps", "BLAKE3, 1 MiB chunks (baseline)", "blake3_cpu_gbps"),
    ("store_put_gb_s", "store put (publish), page cache", "store_put_cpu_gb_s"),
    ("store_put_durable_gb_s", "store put (publish), fsync", None),
    ("store_get_gb_s", "store get, verified", "store_get_cpu_gb_s"),
    ("ingest_gb_s", "bulk ingest, 1 stream (recv+hash+write)", "ingest_cpu_gb_s"),
    ("ingest_durable_gb_s", "bulk ingest, 1 stream, fsync", None),
    ("recv_hash_gb_s", "bulk receive + verify, no write", None),
    ("loopback_raw_gb_s", "raw loopback TCP (baseline)", None),
]


SWARM_ROWS = [  # key, label, unit
    ("wall_s", "swarm: last of the fetchers done", "s"),
    ("first_done_s", "swarm: first of the fetchers done", "s"),
    ("chain_wall_s", "verified chain seed -> p1 -> ... (baseline)", "s"),
    ("ratio_vs_chain", "swarm / chain", "x"),
    ("libtorrent_wall_s", "libtorrent, same peers (baseline)", "s"),
    ("ratio_vs_libtorrent", "swarm / libtorrent", "x"),
    ("seed_upload_ratio", "seed uploads / artifact", "x"),
    ("peer_upload_ratio_max", "busiest fetcher uploads / artifact", "x"),
    ("download_overhead", "bytes received beyond one copy each", "x"),
    ("chunks_verified", "chunks verified by the fetchers", ""),
    ("resume_redownload_fraction", "kill -9 at ~50%: sent, not kept / artifact", "x"),
    ("resume_fetch_overhead", "resumed fetch: endgame copies / missing", "x"),
    ("resume_lost_verified_chunks", "verified chunks lost to the kill", ""),
    ("corrupt_bytes_committed", "corrupt bytes committed (1% corrupter)", ""),
    ("banned_after", "corrupter banned after bad chunks", ""),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object of figures")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (256 MiB)")
    ap.add_argument("--size-mib", type=int, default=None, help="artifact size (default 1024, quick 256)")
    ap.add_argument("--peers", type=int, default=20, help="fetching peers of the swarm and hops of the chain (default 20)")
    ap.add_argument("--corrupt-size-mib", type=int, default=64,
                    help="artifact of the corrupting-holder run, 64 KiB chunks (default 64: 1,024 chunks)")
    ap.add_argument("--durable", action="store_true", help="fsync group commits in the swarm and the chain (default: off)")
    ap.add_argument("--no-libtorrent", action="store_true", help="skip the libtorrent baseline")
    ap.add_argument("--no-swarm", action="store_true", help="only the data-path figures")
    ap.add_argument("--swarm-only", action="store_true", help="only the swarm figures (and their baselines)")
    ap.add_argument("--workdir", default=None, help="where temporary stores go (default: a temp dir)")
    ap.add_argument("--serve-raw", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--chain-hop", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--lt-peer", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_raw:
        _serve_raw(args.serve_raw)
        return
    if args.chain_hop:
        d, mfile, up, last, durable = args.chain_hop
        _chain_hop(d, mfile, int(up), last == "1", durable == "1")
        return
    if args.lt_peer:
        torrent, save, seed = args.lt_peer
        _lt_peer(torrent, save, seed == "1")
        return
    size = (args.size_mib or (256 if args.quick else 1024)) << 20
    small = min(size, 256 << 20)
    workdir = tempfile.mkdtemp(dir=args.workdir)
    try:
        figures: dict[str, Any] = {"size_bytes": size}
        if not args.swarm_only:
            figures.update(chunking_figures(small))
            figures.update(store_figures(small, workdir))
            figures.update(ingest_figures(size, workdir))
        if not args.no_swarm:
            figures.update(swarm_all(size, args.peers, workdir, args.durable, args.corrupt_size_mib << 20,
                                     not args.no_libtorrent))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))
        return
    if not args.swarm_only:
        print(f"blob store data path ({size >> 20} MiB, fastcdc {figures['fastcdc_implementation']}, {os.cpu_count()} cores)")
        print(f"  {'':<44} {'GB/s':>8} {'GB/cpu-s':>9}")
        for key, label, cpu_key in ROWS:
            if key in figures:
                cpu = f"{figures[cpu_key]:9.2f}" if cpu_key in figures else f"{'':9}"
                print(f"  {label:<44} {figures[key]:8.2f} {cpu}")
        print(f"  ingest / raw loopback: {figures['ingest_vs_raw']:.2f}x")
    if not args.no_swarm:
        print(f"swarm: 1 seed + {args.peers} peers (arcnet-peer processes, loopback), {size >> 20} MiB, "
              f"{'fsync' if args.durable else 'page cache'}, {os.cpu_count()} cores")
        for key, label, unit in SWARM_ROWS:
            v = figures.get(key)
            text = "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
            print(f"  {label:<44} {text:>10} {unit}")
        if figures.get("libtorrent_note"):
            print(f"  ({figures['libtorrent_note']})")


if __name__ == "__main__":
    main()
