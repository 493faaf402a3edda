"""The discrete-event driver: determinism, crash/restart, pauses, codec round trip."""

import os
import subprocess
import sys

from arcnet.mesh.core import Emit, Persist, Send, Timers
from arcnet.mesh.identity import Identity
from arcnet.mesh.node import Node
from arcnet.mesh.wire import U32, Message
from arcnet.sims.engine import SimpleNetwork, Simulator, derive_seed


class EPing(Message, tag=0x7D01, protocol="eping"):
    seq = U32


class EAck(Message, tag=0x7D02, protocol="eping"):
    seq = U32


class PingCore:
    """Probe a random known peer every second; count acks; persist the probe count."""

    def __init__(self, me, peers, rng, disk):
        self.peers, self.rng, self.t = [p for p in peers if p != me], rng, Timers()
        self.acks = 0
        self.seq = int(disk.get("seq", b"0"))

    def start(self, now):
        return [self.t.set("probe", now + self.rng.random())]

    def on_timer(self, now, timer):
        self.t.fire(timer)
        self.seq += 1
        return [Persist("seq", str(self.seq).encode()), Send(self.rng.choice(self.peers), EPing(self.seq)),
                self.t.set("probe", now + 1.0)]

    def on_message(self, now, sender, msg):
        if isinstance(msg, EPing):
            return [Send(sender, EAck(msg.seq))]
        self.acks += 1
        return [Emit("ack", {"seq": msg.seq})]

    def next_deadline(self):
        return self.t.next_deadline()

    def statistics(self):
        return {"acks": self.acks}


def ids(n, seed=0):
    return [Identity.from_seed(derive_seed(seed, i).to_bytes(8, "big") * 4).peer_id for i in range(n)]


def build(seed, n, loss=0.0):
    net = SimpleNetwork(__import__("random").Random(derive_seed(seed, "net")), loss=loss)
    sim = Simulator(seed, net)
    peers = ids(n)
    for pid in peers:
        sim.add_peer(pid, lambda p: Node(p.peer_id, {"eping": PingCore(p.peer_id, peers, p.rng, p.disk)}))
    return sim, peers


def test_same_seed_same_trace_and_different_seeds_differ():
    a, _ = build(1, 60)
    a.run(30)
    b, _ = build(1, 60)
    b.run(30)
    c, _ = build(2, 60)
    c.run(30)
    assert a.trace_hash == b.trace_hash
    assert a.trace_hash != c.trace_hash
    assert a.counters["messages_delivered"] > 2 * 60 * 25


def test_thousand_peers_run():
    sim, peers = build(3, 1000)
    sim.run(10)
    acks = sum(sim.peers[p].node.cores["eping"].acks for p in peers)
    assert acks > 1000 * 8


def test_crash_drops_timers_keeps_disk_and_restart_resumes():
    sim, peers = build(4, 5)
    sim.run(10)
    victim = peers[0]
    seq_before = sim.peers[victim].node.cores["eping"].seq
    assert seq_before >= 9
    sim.crash(victim)
    sim.run(20)
    assert not sim.peers[victim].alive
    sim.restart(victim)
    assert sim.peers[victim].node.cores["eping"].seq == seq_before  # restored from disk
    sim.run(30)
    assert sim.peers[victim].node.cores["eping"].seq >= seq_before + 9
    sim.crash(peers[1], lose_disk=True)
    sim.restart(peers[1])
    assert sim.peers[peers[1]].node.cores["eping"].seq == 0


def test_pause_delays_handling():
    sim, peers = build(5, 3)
    sim.run(5)
    p = peers[0]
    before = sim.peers[p].node.cores["eping"].seq
    sim.pause(p, 15)
    sim.run(14.9)
    assert sim.peers[p].node.cores["eping"].seq == before
    sim.run(20)
    assert sim.peers[p].node.cores["eping"].seq > before


def test_loss_and_blocked_links():
    sim, peers = build(6, 10, loss=0.5)
    sim.run(20)
    st = sim.statistics()
    assert 0.3 < st["messages_lost"] / st["messages_sent"] < 0.7
    sim2, peers2 = build(6, 2)
    sim2.network.blocked.add((peers2[0], peers2[1]))
    sim2.run(20)
    assert sim2.peers[peers2[0]].node.cores["eping"].acks == 0  # its pings never arrive
    assert sim2.peers[peers2[1]].node.cores["eping"].acks == 0  # its pings arrive, acks never do


def test_trace_identical_across_hash_seeds():
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from test_sim_engine import build\n"
        "s, _ = build(7, 40); s.run(20); print(s.trace_hash)" % os.path.dirname(__file__)
    )
    outs = set()
    for hs in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hs)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout.strip())
    assert len(outs) == 1


class EventCore(PingCore):
    def on_event(self, now, event):
        if event.kind == "poke":
            return [Persist("poked", b"1"), Emit("poked", {"at": now})]
        return []


def test_deliver_event_runs_the_nodes_effects_and_skips_dead_peers():
    sim = Simulator(8)
    peers = ids(3)
    for pid in peers:
        sim.add_peer(pid, lambda p: Node(p.peer_id, {"eping": EventCore(p.peer_id, peers, p.rng, p.disk)}))
    sim.keep_events = True
    sim.run(2)
    assert sim.deliver_event(peers[0], Emit("poke"))
    assert sim.peers[peers[0]].disk["poked"] == b"1"
    assert [e.kind for _, pid, e in sim.events if pid == peers[0] and e.kind == "poked"] == ["poked"]
    sim.crash(peers[1])
    assert not sim.deliver_event(peers[1], Emit("poke"))


def test_core_timer_heaps_stay_bounded_on_long_runs():
    # the driver asks for next_deadline() after every timer, as the daemon does, so the cores'
    # lazy-deletion Timers heaps shed fired entries instead of growing for the whole run
    sim, peers = build(9, 20)
    sim.run(2000)
    assert max(len(sim.peers[p].node.cores["eping"].t._heap) for p in peers) <= 2
    assert sim.pending_events() < 20 * 4
