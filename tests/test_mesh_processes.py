"""Real peer processes on loopback: discovery, failure detection, rejoin, bad input.

Each test starts ``arcnet-peer`` processes (separate OS processes, real
libp2p over TCP with Noise and yamux) and talks to them only through the
control protocol, as the CLI does.
"""

from __future__ import annotations

import pytest
import trio

from arcnet.cli.client import Client
from arcnet.cli.localmesh import LocalMesh
from arcnet.mesh.identity import Identity

from .meshutil import FAST_GOSSIP, member_states, wait_for

pytestmark = pytest.mark.integration

SITES = [("west", 37.77, -122.42), ("west", 34.05, -118.24), ("east", 40.71, -74.01),
         ("east", 42.36, -71.06), ("central", 41.88, -87.63)]


@pytest.fixture
def client_identity(tmp_path):
    return Identity.load_or_create(tmp_path / "client.key")


async def test_three_peers_find_each_other(tmp_path, client_identity):
    with LocalMesh(tmp_path / "mesh", SITES[:3], gossip=FAST_GOSSIP) as mesh:
        await trio.to_thread.run_sync(mesh.start_all)
        ids = {p.peer_id for p in mesh.peers}
        async with Client(client_identity) as client:
            for p in mesh.peers:
                async def sees_all(p=p):
                    states = await member_states(client, p.addr)
                    return set(states) == ids and all(s == "alive" for s in states.values())

                await wait_for(sees_all, 20, what=f"{p.name} to see all 3 peers alive")
            st = await client.call(mesh.peers[0].addr, "status")
            assert st["peer_id"] == mesh.peers[0].peer_id
            assert st["region"] == "west"
            stats = await client.call(mesh.peers[1].addr, "statistics")
            assert stats["daemon.frames_in"] > 0 and stats["daemon.frames_bad"] == 0
        for i in range(3):
            assert mesh.stop(i) == 0, mesh.tail(i)


async def test_sigkill_detected_then_rejoins_with_higher_incarnation(tmp_path, client_identity):
    with LocalMesh(tmp_path / "mesh", SITES, gossip=FAST_GOSSIP) as mesh:
        await trio.to_thread.run_sync(mesh.start_all)
        victim = mesh.peers[4]
        others = mesh.peers[:4]
        async with Client(client_identity) as client:
            async def converged():
                for p in mesh.peers:
                    states = await member_states(client, p.addr)
                    if len(states) != 5 or any(s != "alive" for s in states.values()):
                        return False
                return True

            await wait_for(converged, 30, what="5 peers to converge")
            before = await client.call(others[0].addr, "peers")
            inc_before = next(m["incarnation"] for m in before["members"] if m["peer_id"] == victim.peer_id)

            mesh.kill(4)
            t0 = trio.current_time()

            async def all_mark_dead():
                for p in others:
                    if (await member_states(client, p.addr)).get(victim.peer_id) != "dead":
                        return False
                return True

            await wait_for(all_mark_dead, 20, what="every peer to mark the killed peer dead")
            detect_s = trio.current_time() - t0
            # bound: probe interval + suspicion timeout (max multiplier) with slack for a loaded CI box
            assert detect_s < 15, detect_s

            await trio.to_thread.run_sync(mesh.start, 4)

            async def all_see_rejoined():
                for p in others:
                    res = await client.call(p.addr, "peers")
                    m = next((m for m in res["members"] if m["peer_id"] == victim.peer_id), None)
                    if m is None or m["state"] != "alive" or m["incarnation"] <= inc_before:
                        return False
                return True

            await wait_for(all_see_rejoined, 30, what="the restarted peer to rejoin with a higher incarnation")

            # its signed state is accepted again: others report the region it publishes
            async def state_seen():
                res = await client.call(others[0].addr, "peers")
                return any(m["peer_id"] == victim.peer_id and m["region"] == "central" for m in res["members"])

            await wait_for(state_seen, 20, what="the restarted peer's state")


async def test_garbage_frames_are_counted_and_the_peer_keeps_running(tmp_path, client_identity):
    """A peer that sends malformed frames gets them counted and logged; the target keeps serving."""
    from arcnet.mesh.transport import Libp2pTransport

    with LocalMesh(tmp_path / "mesh", SITES[:1], gossip=FAST_GOSSIP) as mesh:
        await trio.to_thread.run_sync(mesh.start_all)
        target = mesh.peers[0]
        evil = Identity.from_seed(b"\x66" * 32)
        t = Libp2pTransport(evil, ["/ip4/127.0.0.1/tcp/0"])
        async with trio.open_nursery() as nursery:
            await nursery.start(t.run)
            await t.connect(target.addr)
            for frame in [b"\xc1", b"\x93\x01\x02", b"\x92\xcd\xff\xff\x01", b"\x00" * 100]:
                assert t.send_nowait(target.peer_id, frame)
            async with Client(client_identity) as client:
                async def counted():
                    stats = await client.call(target.addr, "statistics")
                    return stats["daemon.frames_bad"] >= 4 and stats

                stats = await wait_for(counted, 15, what="bad frames to be counted")
                assert stats["daemon.core_errors"] == 0
                assert (await client.call(target.addr, "ping"))["peer_id"] == target.peer_id
            nursery.cancel_scope.cancel()
        assert mesh.peers[0].running
        log = (target.data_dir / "peer.log").read_text()
        assert "dropped a bad frame" in log
