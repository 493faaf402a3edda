"""The blob store in the daemon: swarm fetches between real peer processes, a corrupting holder, the CLI.

The replication planner (sans-IO) is tested first on plain data; then one
mesh of four ``arcnet-peer`` processes on loopback (A, B, C, and D, whose
bulk server corrupts one chunk in 20 through the test-only fault hook) is
shared by the integration tests, which talk to it only through the control
protocol and the CLI.
"""

from __future__ import annotations

import json
import random

import pytest
import trio
from click.testing import CliRunner

from arcnet.blobstore.replication import Fetch, Forward, RegionView, ReplicationConfig, ReplicationPlanner, target_regions
from arcnet.blobstore.service import BlobConfig, host_of
from arcnet.cli.client import CliError, Client
from arcnet.cli.localmesh import LocalMesh
from arcnet.cli.main import cli
from arcnet.mesh.identity import Identity

from .meshutil import FAST_GOSSIP, member_states, wait_for

PEERS = [f"12D3KooW{c * 44}" for c in "ABCDEFGH"]
ART = "ab" * 32


# -- the planner, sans-IO ----------------------------------------------------------------------


def view(policy: str, holders=(), peers=PEERS[:5], **kw) -> RegionView:
    return RegionView("west", list(peers), {ART: frozenset(holders)}, {ART: policy}, **kw)


def test_hot_asks_every_peer_that_lacks_it_once_per_retry_interval():
    p = ReplicationPlanner(PEERS[0], ReplicationConfig(retry_s=60))
    out = p.plan(0.0, view("hot", holders=[PEERS[1]]))
    assert sorted(i.peer for i in out) == sorted(set(PEERS[:5]) - {PEERS[1]})
    assert all(isinstance(i, Fetch) and i.hints == (PEERS[1],) for i in out)
    assert p.plan(30.0, view("hot", holders=[PEERS[1]])) == []  # rate-limited: nothing twice within retry_s
    assert len(p.plan(61.0, view("hot", holders=[PEERS[1]]))) == 4  # still lacking: asked again


def test_warm_tops_up_to_n_per_region_and_two_leaders_agree():
    cfg = ReplicationConfig(warm_copies=3)
    a = ReplicationPlanner(PEERS[0], cfg).plan(0.0, view("warm", holders=[PEERS[2]]))
    b = ReplicationPlanner(PEERS[0], cfg).plan(5.0, view("warm", holders=[PEERS[2]]))
    assert len(a) == 2 and [i.peer for i in a] == [i.peer for i in b]  # HRW: same view, same choice
    assert ReplicationPlanner(PEERS[0], cfg).plan(0.0, view("warm", holders=PEERS[1:4])) == []


def test_durable_names_r_regions_and_hands_off_to_their_leaders():
    regions = {"east": PEERS[6], "north": PEERS[7], "south": "", "central": PEERS[5]}
    cfg = ReplicationConfig(durable_regions=3)
    targets = target_regions(ART, "durable", "west", list(regions), frozenset({"west"}), 3)
    assert len(targets) == 3 and "west" in targets
    out = ReplicationPlanner(PEERS[0], cfg).plan(0.0, view("durable", holders=[PEERS[0]], regions=regions))
    fwd = [i for i in out if isinstance(i, Forward)]
    assert {i.region for i in fwd} == set(targets) - {"west", "south"}  # no leader known for south: skipped
    assert all(i.hints == (PEERS[0],) and i.leader == regions[i.region] for i in fwd)
    assert not [i for i in out if isinstance(i, Fetch)]  # one copy in the region is enough
    # a region that is not a target and does not hold it does nothing
    assert ReplicationPlanner(PEERS[0], cfg).plan(0.0, view("durable", regions_holding={ART: frozenset(targets)},
                                                                 regions=regions)) == []


def test_instruction_bound_works_through_a_long_list_round_robin():
    arts = [f"{i:064x}" for i in range(10)]
    v = RegionView("west", PEERS[:3], {a: frozenset({PEERS[0]}) for a in arts}, {a: "hot" for a in arts})
    p = ReplicationPlanner(PEERS[0], ReplicationConfig(instructions_per_plan_max=4))
    seen = set()
    for t in range(5):
        out = p.plan(float(t), v)
        assert len(out) <= 4
        seen |= {(i.peer, i.artifact) for i in out}
    assert seen == {(q, a) for a in arts for q in PEERS[1:3]}  # 20 instructions over 5 plans, none twice


def test_config_from_env_and_hosts():
    cfg = BlobConfig.from_env({"ARCNET_BLOB_DURABLE": "0", "ARCNET_BLOB_TEST_CORRUPT_FRACTION": "0.01"})
    assert cfg.durable is False and cfg.test_corrupt_fraction == 0.01 and BlobConfig().test_corrupt_fraction == 0
    with pytest.raises(ValueError, match="ARCNET_BLOB_FETCHES_MAX"):
        BlobConfig.from_env({"ARCNET_BLOB_FETCHES_MAX": "many"})
    assert host_of("/ip4/10.0.0.7/tcp/4001/p2p/x") == "10.0.0.7" and host_of("/ip6/::1/tcp/1") == "::1"


# -- real peer processes ------------------------------------------------------------------------

SITES = [("west", 37.77, -122.42), ("west", 34.05, -118.24), ("west", 36.17, -115.14), ("west", 45.52, -122.68)]
ENV = {"ARCNET_BLOB_DISCOVER_INTERVAL_S": "0.3", "ARCNET_BLOB_REPLICATE_INTERVAL_S": "1", "ARCNET_BLOB_DURABLE": "0"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobmesh")
    with LocalMesh(root / "mesh", SITES, gossip=FAST_GOSSIP, env=ENV) as m:
        m.start(0, timeout_s=60)
        m.start(1, wait=False)
        m.start(2, wait=False)
        m.env = dict(m.env, ARCNET_BLOB_TEST_CORRUPT_FRACTION="0.05")  # D: the test-only fault hook
        m.start(3, wait=False)
        for i in (1, 2, 3):
            m.wait_ready(i, 60)
        m.work = root  # type: ignore[attr-defined]
        yield m
        for i in range(4):
            assert m.stop(i) == 0, m.tail(i)


@pytest.fixture
async def client(mesh, tmp_path):
    async with Client(Identity.load_or_create(tmp_path / "client.key")) as c:
        async def converged():
            for p in mesh.peers:
                states = await member_states(c, p.addr)
                if len(states) != 4 or any(s != "alive" for s in states.values()):
                    return False
            return True

        await wait_for(converged, 30, what="4 peers to converge")
        yield c


async def fetch(c: Client, addr: str, aid: str, **args) -> dict:
    """blob.fetch until the fetch ends (each call waits at most wait_s)."""
    for _ in range(20):
        r = await c.call(addr, "blob.fetch", {"id": aid, "wait_s": 20, **args}, timeout_s=30)
        if r["state"] in ("done", "failed"):
            return r
    raise AssertionError(f"fetch of {aid[:16]} did not end: {r}")


async def put_file(c: Client, mesh, addr: str, name: str, size: int, chunk_bytes: int, seed: int) -> tuple[str, bytes]:
    data = random.Random(seed).randbytes(size)
    src = mesh.work / name
    src.write_bytes(data)
    res = await c.call(addr, "blob.put", {"path": str(src), "chunk_bytes": chunk_bytes, "policy": "cache"}, timeout_s=30)
    assert res["complete"] and res["size"] == size and res["pins"] == ["publish"]
    return res["id"], data


async def test_fetch_from_the_publisher_and_from_a_peer_that_fetched_it(mesh, client):
    a, b, c, _ = mesh.peers
    aid, data = await put_file(client, mesh, a.addr, "x.bin", 300 * 65536 + 77, 65536, 1)

    rb = await fetch(client, b.addr, aid, hints=[a.peer_id])
    assert rb["state"] == "done", rb
    assert rb["from_peer"] == {a.peer_id: 301} and rb["bad_chunks"] == 0

    # C names nobody: gossip ("cache" key) and the holder directory find A and B
    rc = await fetch(client, c.addr, aid)
    assert rc["state"] == "done", rc
    assert set(rc["from_peer"]) == {a.peer_id, b.peer_id} and sum(rc["from_peer"].values()) == 301
    assert rc["chunks_fetched"] == 301 and rc["bad_chunks"] == 0 and rc["banned"] == []

    out = mesh.work / "x.out"
    got = await client.call(c.addr, "blob.get", {"id": aid, "path": str(out)})
    assert got["size"] == len(data) and out.read_bytes() == data
    for bad in (c.data_dir / "peer.key", "/proc/x.out"):  # the data directory, outside the path roots
        with pytest.raises(CliError, match="forbidden"):
            await client.call(c.addr, "blob.get", {"id": aid, "path": str(bad)})
    assert (c.data_dir / "peer.key").stat().st_size < 1000
    stats = await client.call(c.addr, "statistics")
    assert stats["blob.chunks_verified"] >= 301 and stats["blob.bytes_in"] >= len(data)

    async def three_holders():
        st = await client.call(c.addr, "blob.stat", {"id": aid})
        return {h["peer"] for h in st["holders"] if h["complete"]} == {a.peer_id, b.peer_id, c.peer_id} and st

    st = await wait_for(three_holders, 15, what="C to see three holders")
    assert st["size"] == len(data) and st["chunks"] == 301 and st["regions"] == ["west"]
    # the holders served what C counted
    served = [(await client.call(p.addr, "statistics"))["blob.bytes_out"] for p in (a, b)]
    assert served[0] > 0 and served[1] > 0


async def test_a_corrupting_holder_is_banned_and_nothing_corrupt_is_committed(mesh, client):
    a, b, c, d = mesh.peers
    aid, data = await put_file(client, mesh, a.addr, "y.bin", 400 * 16384, 16384, 2)
    rd = await fetch(client, d.addr, aid, hints=[a.peer_id])  # D's own fetch is clean; D corrupts what it serves
    assert rd["state"] == "done" and rd["bad_chunks"] == 0, rd

    rc = await fetch(client, c.addr, aid, hints=[d.peer_id, a.peer_id])
    assert rc["state"] == "done", rc
    assert rc["banned"] == [d.peer_id], rc
    assert rc["bad_from"] == {d.peer_id: 3} and rc["bad_chunks"] == 3  # banned at the third bad chunk
    assert sum(rc["from_peer"].values()) == 400

    scrub = await client.call(c.addr, "blob.verify")
    assert scrub["corrupt"] == 0 and scrub["chunks_checked"] >= 400  # zero corrupt bytes committed
    out = mesh.work / "y.out"
    await client.call(c.addr, "blob.get", {"id": aid, "path": str(out)})
    assert out.read_bytes() == data
    sd = await client.call(d.addr, "statistics")
    sc = await client.call(c.addr, "statistics")
    assert sd["blob.test_corrupted"] >= 3 and sc["blob.bans"] >= 1 and sc["blob.bad_chunks"] >= 3


def run_cli(args, env):
    res = CliRunner(env=env).invoke(cli, args, catch_exceptions=False)
    return res


async def test_cli_put_get_ls_stat_against_a_peer(mesh, client, tmp_path):
    a, b, _, _ = mesh.peers
    env = {"ARCNET_CLIENT_KEY": str(tmp_path / "cli.key"), "ARCNET_PEER": ""}
    small = tmp_path / "labels.csv"
    small.write_bytes(b"id,label\n" + b"".join(b"%d,x\n" % i for i in range(20000)))
    big = tmp_path / "weights.onnx"
    big.write_bytes(random.Random(3).randbytes((1 << 20) + 12345))  # above the inline limit: put by path

    async def cli_(*args):
        res = await trio.to_thread.run_sync(run_cli, list(args), env)
        assert res.exit_code == 0, res.output
        return res.output

    put_small = json.loads(await cli_("blob", "put", str(small), "--policy", "durable", "--project", "p1",
                                      "--peer", a.addr, "--json"))
    put_big = json.loads(await cli_("blob", "put", str(big), "--policy", "durable", "--peer", a.addr, "--json"))
    assert put_small["project"] == "p1" and put_small["policy"] == "durable" and put_small["complete"]
    assert put_big["chunking"] == "fixed:1048576" and put_big["chunks"] == 2

    ls = json.loads(await cli_("blob", "ls", "--peer", a.addr, "--json"))
    assert {put_small["id"], put_big["id"]} <= {x["id"] for x in ls}
    ls_p1 = json.loads(await cli_("blob", "ls", "--project", "p1", "--peer", a.addr, "--json"))
    assert [x["id"] for x in ls_p1] == [put_small["id"]]

    # get through B: B fetches it from A, then writes the file (B is on this machine)
    out = tmp_path / "w.out"
    got = json.loads(await cli_("blob", "get", put_big["id"], "-o", str(out), "--peer", b.addr, "--json"))
    assert got["size"] == big.stat().st_size and out.read_bytes() == big.read_bytes()
    # what the CLI does with a peer on another machine: windows of at most 900 KiB through the control path
    parts, offset = [], 0
    while True:
        w = await client.call(b.addr, "blob.get", {"id": put_big["id"], "offset": offset, "length": 1 << 30})
        assert len(w["data"]) <= 900 << 10
        parts.append(w["data"])
        offset += len(w["data"])
        if w["eof"]:
            break
    assert b"".join(parts) == big.read_bytes() and len(parts) == 2

    st = json.loads(await cli_("blob", "stat", put_big["id"], "--peer", b.addr, "--json"))
    holders = {h["peer"] for h in st["holders"] if h["complete"]}
    assert {a.peer_id, b.peer_id} <= holders and st["size"] == big.stat().st_size
    text = await cli_("blob", "stat", put_big["id"], "--peer", b.addr)
    assert "holder" in text and a.peer_id in text

    res = await trio.to_thread.run_sync(run_cli, ["blob", "stat", "ff" * 32, "--peer", a.addr, "--json"], env)
    assert res.exit_code == 0 and json.loads(res.output)["holders"] == []  # nobody holds it: said, not an error


async def test_hot_policy_replicates_to_every_peer_of_the_region(mesh, client):
    a = mesh.peers[0]
    data = random.Random(4).randbytes(200_000)
    res = await client.call(a.addr, "blob.put", {"data": data, "name": "hot.bin", "policy": "hot"})
    aid = res["id"]

    async def everywhere():
        for p in mesh.peers:
            st = await client.call(p.addr, "blob.stat", {"id": aid})
            if not st.get("complete"):
                return False
        return True

    await wait_for(everywhere, 40, interval_s=0.5, what="the hot artifact on every peer")
    got = await client.call(mesh.peers[2].addr, "blob.get", {"id": aid})
    assert got["data"] == data and got["eof"]
    sent = sum([(await client.call(p.addr, "statistics"))["blob.replicate_sent"] for p in mesh.peers])
    assert sent >= 1  # whoever leads lacked it on some peer, and told that peer
