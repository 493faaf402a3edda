"""Regional leaders: a pure function of converged state; agreement after a crash; one leader after a heal."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.gossip.leader import LeaderConfig, choose_leader, score
from arcnet.gossip.membership import ALIVE, Member, MembershipConfig
from arcnet.gossip.stack import GossipConfig, build_gossip_node, gossip_of
from arcnet.mesh.identity import Identity, verify_peer
from arcnet.mesh.wire import Codec
from arcnet.sims.engine import Simulator, SimpleNetwork, derive_seed


class Memo:
    """verify_peer, memoised: verification is a pure function (the simulator's trick)."""

    def __init__(self):
        self.memo = {}

    def __call__(self, peer, msg, sig):
        k = (peer, msg, sig)
        if k not in self.memo:
            self.memo[k] = verify_peer(peer, msg, sig)
        return self.memo[k]


MEMO = Memo()

CFG = LeaderConfig()


def cand(peer, *, alive=True, stable=True, health=0.9, soc=0.6, kwh=1000.0, head=500.0, epoch=0, term=0, draining=False):
    return {
        "peer": peer,
        "alive": alive,
        "stable": stable,
        "draining": draining,
        "health_score": health,
        "battery_soc_fraction": soc,
        "battery_kwh": kwh,
        "power_headroom_kw": head,
        "lead_epoch": epoch,
        "lead_term": term,
    }


def test_best_score_wins_and_peer_id_breaks_ties():
    cs = [cand("b", soc=0.5), cand("a", soc=0.9), cand("c", soc=0.9)]
    assert choose_leader(cs, CFG) == ("a", 1)
    assert choose_leader([cand("z"), cand("y")], CFG)[0] == "y"


def test_incumbent_keeps_leading_within_the_margin_and_loses_beyond_it():
    inc = cand("m", soc=0.5, epoch=4, term=4)
    close = cand("a", soc=0.5 + (CFG.margin - 0.01) / CFG.weight_battery, term=4)
    assert choose_leader([inc, close], CFG) == ("m", 4)
    far = cand("a", soc=0.5 + (CFG.margin + 0.05) / CFG.weight_battery, term=4)
    assert score(far, CFG) > score(inc, CFG) + CFG.margin
    assert choose_leader([inc, far], CFG) == ("a", 5)


def test_ineligible_candidates_and_incumbent_hysteresis():
    cs = [cand("a", alive=False, soc=0.9), cand("b", stable=False, soc=0.9), cand("c", draining=True, soc=0.9), cand("d", health=0.2), cand("e", soc=0.1), cand("f", soc=0.3)]
    assert choose_leader(cs, CFG)[0] == "f"
    # the incumbent stays eligible a little below the battery floor; a newcomer does not
    inc = cand("g", soc=CFG.battery_floor_fraction - CFG.floor_hysteresis / 2, epoch=2, term=2)
    assert choose_leader([inc, cand("h", soc=CFG.battery_floor_fraction - 0.01)], CFG) == ("g", 2)
    assert choose_leader([cand("h", soc=CFG.battery_floor_fraction - 0.01), cand("j", soc=0.9)], CFG)[0] == "j"
    # a site without a battery is judged on health alone
    assert choose_leader([cand("i", soc=0.0, kwh=0.0)], CFG)[0] == "i"


def test_a_region_with_every_battery_below_the_floor_still_has_a_leader():
    low = CFG.battery_floor_fraction - 0.1
    night = [cand("a", soc=low), cand("b", soc=low - 0.05), cand("c", soc=0.9, health=0.2), cand("d", stable=False, soc=0.9)]
    assert choose_leader(night, CFG) == ("a", 1)  # best of the healthy, stable ones; health floor still holds
    # it stays while nobody is charged (hysteresis as usual) ...
    assert choose_leader([cand("a", soc=low, epoch=1, term=1), cand("b", soc=low + 0.05, term=1)], CFG) == ("a", 1)
    # ... and a charged candidate takes over at once, at a higher epoch
    assert choose_leader([cand("a", soc=low, epoch=1, term=1), cand("e", soc=0.5, term=1)], CFG) == ("e", 2)
    assert choose_leader([cand("c", soc=0.9, health=0.2)], CFG) == (None, 0)  # unhealthy: no fallback


def test_epochs_grow_past_every_term_seen():
    cs = [cand("a", soc=0.95, term=7), cand("b", soc=0.3, epoch=3, term=7)]
    assert choose_leader(cs, CFG) == ("a", 8)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.floats(0, 1), st.floats(0, 1), st.integers(0, 5), st.integers(0, 5)),
        min_size=1,
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
def test_choice_is_a_function_of_the_set_not_the_order(rows, rnd):
    cs = [cand(f"p{i:02d}", alive=a, stable=s, health=h, soc=b, epoch=e, term=max(e, t)) for i, (a, s, h, b, e, t) in enumerate(rows)]
    first = choose_leader(cs, CFG)
    shuffled = list(cs)
    rnd.shuffle(shuffled)
    assert choose_leader(shuffled, CFG) == first
    if first[0] is not None:
        assert any(c["peer"] == first[0] and c["alive"] for c in cs)


# --------------------------------------------------------------------------
# the simulator


def mesh(n: int, seed: int):
    idents = [Identity.from_seed(hashlib.blake2b(f"lead{seed}/{i}".encode(), digest_size=32).digest()) for i in range(n)]
    peers = [x.peer_id for x in idents]
    region = {p: f"r{i % 2}" for i, p in enumerate(peers)}
    boot = {p: Member(p, 0, ALIVE, "", region[p]) for p in peers}
    net = SimpleNetwork(random.Random(derive_seed(seed, "net")), latency_s=0.02, jitter_s=0.01)
    sim = Simulator(seed, net, codec=Codec(control_max_bytes=1200))
    cfg = GossipConfig(leader=LeaderConfig(stable_s=5.0), membership=MembershipConfig(check_sizes=True))
    leaders: dict[str, str] = {}
    changes: list[tuple[float, str, dict]] = []

    def on_emit(now, pid, e):
        if e.kind == "leader.changed":
            leaders[pid] = e.data["leader"]
            changes.append((now, pid, dict(e.data)))

    sim.on_emit = on_emit

    def sampler_for(i):
        r = random.Random(i)
        soc = r.uniform(0.3, 0.9)

        def sample(now):  # noisy readings: quantisation and the margin keep leadership still
            return {"health_score": 0.95, "battery_kwh": 2000.0, "battery_soc_fraction": soc + r.gauss(0, 0.01), "power_headroom_kw": 400.0 + r.gauss(0, 5)}

        return sample

    for i, p in enumerate(peers):
        sim.add_peer(p, lambda sp, i=i: build_gossip_node(idents[i], verify=MEMO, rng=sp.rng, region=region[peers[i]], config=cfg, sampler=sampler_for(i), disk=sp.disk, bootstrap=boot))
    return sim, peers, region, leaders, changes


def agreed(sim, peers, region, leaders, r):
    names = {leaders.get(p, "") for p in peers if region[p] == r and sim.peers[p].alive}
    return names.pop() if len(names) == 1 else None


def test_leader_crash_then_agreement_on_a_new_one():
    sim, peers, region, leaders, changes = mesh(30, 2)
    sim.run(15.0)
    old = agreed(sim, peers, region, leaders, "r0")
    assert old, "one leader per region once states are stable"
    assert agreed(sim, peers, region, leaders, "r1")
    t0 = sim.now
    sim.crash(old)
    sim.run(t0 + 10.0)
    new = agreed(sim, peers, region, leaders, "r0")
    assert new and new != old
    after = [now for now, pid, d in changes if now > t0 and d["region"] == "r0"]
    assert max(after) - min(after) < 2.0, "peers agree within a gossip spread of each other"
    g = gossip_of(sim.peers[new].node)
    assert g.leader.leader == new and g.state.local("lead")[0] == g.leader.epoch > 0
    # another region reads who leads r0 from its summary
    other = [p for p in peers if region[p] == "r1"][0]
    sim.run(sim.now + 30.0)
    assert gossip_of(sim.peers[other].node).leader_of("r0") == new


def test_each_side_of_a_partition_picks_its_own_then_one_leader_after_heal():
    sim, peers, region, leaders, changes = mesh(24, 4)
    sim.run(15.0)
    side_a = peers[: len(peers) // 2]
    side_b = peers[len(peers) // 2 :]
    for a in side_a:
        for b in side_b:
            sim.network.blocked.add((a, b))
            sim.network.blocked.add((b, a))
    sim.run(35.0)
    for r in ("r0", "r1"):
        on_a = {leaders.get(p) for p in side_a if region[p] == r}
        on_b = {leaders.get(p) for p in side_b if region[p] == r}
        assert len(on_a) == 1 and len(on_b) == 1 and on_a != on_b, "each side leads itself"
    sim.network.blocked.clear()
    t_heal = sim.now
    sim.run(t_heal + 5.0)
    for r in ("r0", "r1"):
        assert agreed(sim, peers, region, leaders, r), f"{r}: still split 5 s after the heal"
