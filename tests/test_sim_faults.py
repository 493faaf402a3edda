"""Each fault kind, shown by its effect on a small simulated mesh with a recording core."""

import random

import pytest

from arcnet.mesh.core import Persist, Send, Timers
from arcnet.mesh.identity import Identity
from arcnet.mesh.node import Node
from arcnet.mesh.wire import F64, U32, Bytes, Message
from arcnet.sims.engine import Simulator, derive_seed
from arcnet.sims.faults import Fault, FaultInjector, draw_random_faults, format_fault
from arcnet.sims.geo import build_catalog
from arcnet.sims.wan import WanNetwork


class FPing(Message, tag=0x7B01, protocol="frec", channel="data"):
    seq = U32
    sent_local = F64
    pad = Bytes(4 << 20)


class FRec:
    """Every interval: persist the counter and ping every other peer. Records what arrives, when."""

    def __init__(self, me, peers, disk, interval_s=1.0, pad=0):
        self.me, self.peers, self.t = me, [p for p in peers if p != me], Timers()
        self.interval_s, self.pad = interval_s, pad
        self.seq = int(disk.get("seq", b"0"))
        self.got = []  # (local now, sender, seq, sent_local)
        self.fired = []  # local now of every tick

    def start(self, now):
        return [self.t.set("tick", now + self.interval_s)]

    def on_timer(self, now, timer):
        self.t.fire(timer)
        self.fired.append(now)
        self.seq += 1
        out = [Persist("seq", str(self.seq).encode())]
        out += [Send(p, FPing(self.seq, now, b"\0" * self.pad)) for p in self.peers]
        out.append(self.t.set("tick", now + self.interval_s))
        return out

    def on_message(self, now, sender, msg):
        self.got.append((now, sender, msg.seq, msg.sent_local))
        return []

    def next_deadline(self):
        return self.t.next_deadline()

    def statistics(self):
        return {"got": len(self.got)}


def world(n=6, seed=11, interval_s=1.0, pad=0, **wan):
    cat = build_catalog(seed, count=n, regions=3, states=("CA", "WA", "IL", "TX", "NY", "MA"))
    ids = [Identity.from_seed(derive_seed(seed, "id", i).to_bytes(8, "big") * 4).peer_id for i in range(n)]
    from arcnet.sims.wan import WanConfig

    net = WanNetwork(random.Random(derive_seed(seed, "wan")), dict(zip(ids, cat.sites)), WanConfig(**wan))
    sim = Simulator(seed, net)
    for pid in ids:
        sim.add_peer(pid, lambda p: Node(p.peer_id, {"frec": FRec(p.peer_id, ids, p.disk, interval_s, pad)}))
    return sim, net, ids, cat


def core(sim, pid):
    return sim.peers[pid].node.cores["frec"]


def inject(sim, net, *faults, energy=None):
    inj = FaultInjector(sim, list(faults), network=net, energy=energy)
    inj.schedule()
    return inj


def test_crash_keeps_disk_and_restart_resumes():
    sim, net, ids, _ = world()
    inject(sim, net, Fault(5.5, "crash", (ids[0],), for_s=10.0, params={"disk": "keep"}))
    sim.run(10)
    assert not sim.peers[ids[0]].alive
    assert sim.peers[ids[0]].disk["seq"] == b"5"
    heard_from_0 = [g for g in core(sim, ids[1]).got if g[1] == ids[0]]
    assert max(g[0] for g in heard_from_0) < 5.6  # nothing from the dead peer
    sim.run(30)
    assert sim.peers[ids[0]].alive and core(sim, ids[0]).seq > 5  # resumed from its disk
    assert core(sim, ids[0]).seq < 30 - 10  # lost the ten seconds it was down


def test_crash_lose_unsynced_rolls_back_recent_writes_and_wipe_loses_all():
    sim, net, ids, _ = world()
    sim.unsynced_window_s = 2.5
    inject(
        sim,
        net,
        Fault(10.5, "crash", (ids[0],), params={"disk": "lose_unsynced"}),
        Fault(10.5, "crash", (ids[1],), params={"disk": "wipe"}),
        Fault(10.5, "crash", (ids[2],), params={"disk": "keep"}),
    )
    sim.run(11)
    assert sim.peers[ids[2]].disk["seq"] == b"10"
    assert sim.peers[ids[0]].disk["seq"] == b"8"  # writes at 9 and 10 were within 2.5 s: lost
    assert sim.peers[ids[1]].disk == {}
    assert sim.counters["writes_lost"] == 2 + 1


def test_restart_fault_brings_crashed_peers_back():
    sim, net, ids, _ = world()
    inject(sim, net, Fault(3.5, "crash", (ids[3],)), Fault(8.0, "restart", (ids[3],)))
    sim.run(7)
    assert not sim.peers[ids[3]].alive
    sim.run(12)
    assert sim.peers[ids[3]].alive and sim.peers[ids[3]].restarts == 1


def test_pause_defers_everything_until_it_ends():
    sim, net, ids, _ = world()
    inject(sim, net, Fault(5.5, "pause", (ids[0],), for_s=10.0))
    sim.run(15.4)
    c = core(sim, ids[0])
    assert max(c.fired) < 5.6 and max(g[0] for g in c.got) < 5.6
    sim.run(16)
    # the backlog is handled at 15.5: everything that arrived meanwhile, late
    late = [g for g in c.got if 15.49 < g[0] < 15.51]
    assert len(late) >= 5 * 9
    assert sim.counters["deferred_paused"] > 0


def test_slow_peer_handles_messages_and_timers_late():
    sim, net, ids, _ = world()
    inject(sim, net, Fault(2.0, "slow", (ids[0],), for_s=10.0, params={"delay_s": 0.5}))
    sim.run(20)
    c = core(sim, ids[0])
    slow = [now - sent for now, _, _, sent in c.got if 3 < now < 11]
    fast = [now - sent for now, _, _, sent in c.got if now > 13]
    assert min(slow) > 0.5 and max(fast) < 0.1
    ticks = c.fired
    assert any(abs(t - round(t) - 0.5) < 1e-6 for t in ticks if 3 < t < 11)  # timers fired 0.5 s late
    assert sim.counters["deferred_slow"] > 0


def test_clock_skew_and_drift_shift_the_now_a_peer_sees():
    sim, net, ids, _ = world()
    inject(sim, net, Fault(10.0, "clock", (ids[0],), for_s=100.0, params={"step_s": 5.0, "drift_ppm": 10000.0}))
    sim.run(9.9)
    sim.run(60.0)
    c0, c1 = core(sim, ids[0]), core(sim, ids[1])
    # local = 10 + 5 + 1.01 * (t - 10): a timer set for local L fires at true (L - 15) / 1.01 + 10
    p = sim.peers[ids[0]]
    assert p.local_time(60.0) == pytest.approx(15.0 + 1.01 * 50.0)
    assert c0.fired[-1] > 60.0  # its timers run on its own (fast, ahead) clock
    assert c1.fired[-1] <= 60.0
    # what it receives is stamped with its clock: the sender's send time + latency + skew
    skews = [now - sent for now, s, _, sent in c0.got if s == ids[1] and now > 30]
    assert min(skews) > 5.0
    sim.run(200.0)
    assert p.local_time(200.0) - p.local_time(150.0) == pytest.approx(50.0)  # drift stopped when healed


@pytest.mark.parametrize("symmetric", [True, False])
def test_partition_symmetric_and_asymmetric(symmetric):
    sim, net, ids, cat = world()
    west = [pid for pid, s in zip(ids, cat.sites) if s.region == "West"]
    rest = [pid for pid in ids if pid not in west]
    inject(sim, net, Fault(10.5, "partition", tuple(west), for_s=10.0, params={"symmetric": symmetric}, peers_b=tuple(rest)))
    sim.run(40)

    def crossing(src_side, dst_side, lo, hi):
        return [g for d in dst_side for g in core(sim, d).got if g[1] in src_side and lo < g[3] < hi]

    assert crossing(west, rest, 11, 20) == []  # a -> b cut either way
    b_to_a = crossing(rest, west, 11, 20)
    assert (b_to_a == []) == symmetric  # b -> a cut only if symmetric
    assert crossing(west, rest, 22, 30) and crossing(rest, west, 22, 30)  # healed
    assert net.statistics()["dropped_cut"] > 0


def test_isolate_region_cuts_it_both_ways_and_heals():
    sim, net, ids, cat = world()
    east = tuple(pid for pid, s in zip(ids, cat.sites) if s.region == "East")
    inject(sim, net, Fault(5.5, "isolate_region", east, for_s=10.0, region="East"))
    sim.run(30)
    inside = set(east)
    for pid in ids:
        for now, sender, _, sent in core(sim, pid).got:
            if 6 < sent < 15:
                assert (pid in inside) == (sender in inside)
    assert net.active_cuts() == []


def test_clog_holds_frames_until_it_clears_then_delivers_them():
    sim, net, ids, _ = world()
    inject(sim, net, Fault(5.5, "clog", (ids[0],), for_s=10.0))
    sim.run(40)
    c1 = core(sim, ids[1])
    from0 = [(now, sent) for now, s, _, sent in c1.got if s == ids[0]]
    held = [now for now, sent in from0 if 6 < sent < 15]
    assert len(held) == 8 and min(held) > 15.5  # every one arrives, none before the clog ends
    assert sim.counters["messages_lost"] == 0 and net.statistics()["held_clog"] > 0


def test_clog_of_links_holds_only_those_directions():
    sim, net, ids, _ = world()
    inject(sim, net, Fault(5.5, "clog", (ids[0],), for_s=10.0, peers_b=(ids[1], ids[2])))
    sim.run(40)
    held = [now for now, s, _, sent in core(sim, ids[1]).got if s == ids[0] and 6 < sent < 15]
    assert held and min(held) > 15.5
    free = [now - sent for now, s, _, sent in core(sim, ids[3]).got if s == ids[0] and 6 < sent < 15]
    back = [now - sent for now, s, _, sent in core(sim, ids[0]).got if s == ids[1] and 6 < sent < 15]
    assert max(free) < 0.1 and max(back) < 0.1
    assert net._link_clogs == {}  # forgotten once healed


def test_clog_bandwidth_factor_slows_large_transfers():
    sim, net, ids, _ = world(interval_s=5.0, pad=1 << 20)
    inject(sim, net, Fault(12.0, "clog", (ids[0],), for_s=10.0, params={"bandwidth_factor": 100.0}))
    sim.run(40)
    c1 = core(sim, ids[1])
    delays = {round(sent): now - sent for now, s, _, sent in c1.got if s == ids[0]}
    # 1 MiB at 10 Gbit/s is ~0.8 ms; at 100 Mbit/s it is 84 ms per frame, and 5 frames queue behind each other
    assert delays[10] < 0.05
    assert delays[15] > 0.08
    assert delays[25] < 0.05  # restored


def test_power_dip_cuts_solar_for_its_window():
    from datetime import datetime, timezone

    from arcnet.sims.energy import EnergyConfig, EnergyModel

    sim, net, ids, cat = world()
    energy = EnergyModel(cat.sites, datetime(2025, 6, 21, 17, 0, tzinfo=timezone.utc), 7200, 1,
                         EnergyConfig(cloud_cover_fraction=0.0, cloud_variability=0.0))
    energy.clock = lambda: sim.now
    inject(sim, net, Fault(1800.0, "power_dip", (ids[0],), sites=(cat.sites[0].name,), for_s=1800.0,
                           params={"solar_factor": 0.1, "grid_factor": 0.0}), energy=energy)
    s0, s1 = energy.sampler(0), energy.sampler(1)
    sim.run(1700)
    before = s0(0)["solar_kw"]
    sim.run(2400)
    during = s0(0)["solar_kw"]
    ratio_other = s1(0)["solar_kw"]
    sim.run(3700)
    after = s0(0)["solar_kw"]
    assert before > 100 and after > 100 and ratio_other > 100
    assert during == pytest.approx(0.1 * energy.solar_kw_at(0, 2340, clouds=False), rel=0.02)


def test_random_faults_are_a_function_of_the_seed_and_print_one_line_each():
    kw = dict(count=12, kinds=["crash", "pause", "slow", "clock", "clog", "partition", "power_dip", "isolate_region"],
              start_s=0.0, end_s=3600.0, peer_ids=[f"p{i}" for i in range(20)], site_names=[f"s{i}" for i in range(20)],
              regions={"A": list(range(10)), "B": list(range(10, 20))})
    a, b, c = draw_random_faults(1, **kw), draw_random_faults(1, **kw), draw_random_faults(2, **kw)
    assert a == b and a != c
    lines = [format_fault(f) for f in a]
    assert all("\n" not in line and "[random]" in line for line in lines)
    assert [f.at_s for f in a] == sorted(f.at_s for f in a)
