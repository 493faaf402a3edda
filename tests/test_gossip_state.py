"""State dissemination: the signed single-writer CRDT, its bounds, its read API, and a lossy mesh."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.gossip.membership import ALIVE, Member, MembershipCore
from arcnet.gossip.stack import GossipConfig, build_gossip_node, gossip_of
from arcnet.gossip.state import (
    GLOBAL,
    MESSAGE_BYTES_MAX,
    REGION,
    StateConfig,
    StateCore,
    StateDelta,
    StateSyn,
    decode_deltas,
    merge_entries,
    signed_bytes,
    summary_value,
)
from arcnet.mesh.core import Persist, Send
from arcnet.mesh.identity import Identity, verify_peer
from arcnet.mesh.wire import Codec, decode
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

IDS = [Identity.from_seed(hashlib.blake2b(f"state{i}".encode(), digest_size=32).digest()) for i in range(12)]
PEERS = [x.peer_id for x in IDS]


class Members:
    """A fixed membership view (the state core's only dependency on membership)."""

    def __init__(self, me: str, peers: list[str], region: str = "r0"):
        self.me, self.peers, self.region = me, [p for p in peers if p != me], region
        self.dead: set[str] = set()

    def region_peers(self):
        return [p for p in self.peers if p not in self.dead]

    def is_alive(self, p):
        return p not in self.dead

    def random_alive(self):
        return self.peers[0]

    def region_of(self, p):
        return self.region


def state(i: int, sampler=None, **cfg) -> StateCore:
    ident = IDS[i]
    return StateCore(
        ident.peer_id,
        rng=random.Random(i),
        membership=Members(ident.peer_id, PEERS[:6]),
        signer=ident.sign,
        verify=verify_peer,
        sampler=sampler,
        config=StateConfig(**cfg),
        region="r0",
        lat=40.0,
        lon=-100.0,
    )


def deltas_sent(effects):
    return [e for e in effects if type(e) is Send and type(e.msg) is StateDelta]


def test_publish_is_signed_pushed_to_the_region_and_accepted():
    a, b = state(0), state(1)
    out = a.start(0.0)
    assert any(type(e) is Persist and e.key == "state.version" for e in out)
    pushes = deltas_sent(out)
    assert {p.to for p in pushes} == set(PEERS[1:6])
    b.start(0.0)
    out_b = b.on_message(0.05, PEERS[0], pushes[0].msg)
    acks = [e for e in out_b if type(e) is Send]
    assert acks and acks[0].msg.owner == PEERS[0] and acks[0].msg.version == a.counter
    got = b.view.get(PEERS[0])
    assert got["region"] == "r0" and got["lat"] == 40.0 and got["health_score"] == 1.0
    assert b.stats["updates_accepted"] >= 5 and b.stats["updates_forged"] == 0


def test_forged_and_replayed_updates_are_rejected_and_counted():
    a, b = state(0), state(1)
    push = deltas_sent(a.start(0.0))[0].msg
    b.start(0.0)
    # a relay flips a value byte but keeps the owner's signature: forged
    (owner, since, entries), = decode_deltas(push.deltas)
    key, ver, val, sig = entries[0]
    forged_val = val[:-1] + bytes([val[-1] ^ 1])
    forged = StateDelta(REGION, False, _blob(owner, since, [(key, ver, forged_val, sig)]))
    b.on_message(0.1, PEERS[2], forged)
    assert b.stats["updates_forged"] == 1 and b.view.get(owner) is None
    # a relay signs with its own key: forged too
    sig2 = IDS[2].sign(signed_bytes(owner, key, ver, val))
    b.on_message(0.1, PEERS[2], StateDelta(REGION, False, _blob(owner, since, [(key, ver, val, sig2)])))
    assert b.stats["updates_forged"] == 2
    # the genuine delta relayed by anyone is accepted
    b.on_message(0.2, PEERS[3], push)
    assert b.view.get(owner) is not None
    accepted = b.stats["updates_accepted"]
    # a newer write, then a replay of the old one: rejected, counted, value unchanged
    a.set_local("draining", True)
    new = deltas_sent(a._flush(1.0))[0].msg
    b.on_message(1.1, PEERS[0], new)
    assert b.view.get(owner)["draining"] is True
    b.on_message(1.2, PEERS[4], push)
    assert b.stats["updates_replayed"] >= len(entries)
    assert b.view.get(owner)["draining"] is True and b.stats["updates_accepted"] == accepted + 1


def _blob(owner, since, entries):
    import msgpack

    return msgpack.packb([[owner, since, [list(e) for e in entries]]], use_bin_type=True)


entry = st.tuples(st.integers(1, 50), st.binary(max_size=4))
views = st.dictionaries(st.sampled_from(["health", "energy", "cache", "lead", "x"]), entry, max_size=5)


def _consistent(*vs):
    """Single writer: one version has one value. Make the generated views agree."""
    canon: dict[int, bytes] = {}
    out = []
    for v in vs:
        out.append({k: (ver, canon.setdefault(ver, val)) for k, (ver, val) in v.items()})
    return out


@settings(max_examples=300, deadline=None)
@given(views, views, views)
def test_merge_is_commutative_associative_and_idempotent(x, y, z):
    x, y, z = _consistent(x, y, z)
    assert merge_entries(x, y) == merge_entries(y, x)
    assert merge_entries(merge_entries(x, y), z) == merge_entries(x, merge_entries(y, z))
    assert merge_entries(x, x) == x
    assert merge_entries(merge_entries(x, y), y) == merge_entries(x, y)


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(4)))
def test_holders_converge_whatever_order_deltas_arrive_in(order):
    """The core's merge is the same CRDT: any delivery order (with duplicates) ends in one state."""
    a = state(0)
    msgs = [d.msg for d in deltas_sent(a.start(0.0))[:1]]
    for i, key in enumerate(("draining", "lead", "x1")):
        a.set_local(key, {"draining": True, "lead": (i, i, False)}.get(key, (i, i)))
        msgs.append(deltas_sent(a._flush(1.0 + i))[0].msg)
    b = state(1)
    b.start(0.0)
    for i in order:
        b.on_message(5.0, PEERS[2], msgs[i])
        b.on_message(5.0, PEERS[3], msgs[order[0]])
    c = state(2)
    c.start(0.0)
    for m in msgs:
        c.on_message(5.0, PEERS[0], m)
    assert b.view.get(PEERS[0]) == c.view.get(PEERS[0]) == a.view.get(PEERS[0])


def test_noisy_readings_are_quantised_and_rate_limited():
    readings = {"battery_soc_fraction": 0.500, "battery_kwh": 1000.0, "solar_kw": 300.0}
    a = state(0, sampler=lambda now: dict(readings), energy_min_interval_s=15.0, max_staleness_s=60.0)
    a.start(0.0)
    v0 = a.counter
    readings["battery_soc_fraction"] = 0.512  # moves the quantised value, but under the threshold (0.05)
    for t in range(1, 30):
        a._sample(float(t))
    assert a.counter == v0
    readings["solar_kw"] = 420.0  # over its 50 kW threshold: published once the interval allows
    a._sample(30.0)
    assert a.counter == v0 + 1 and a.view.get(PEERS[0])["solar_kw"] == 420.0
    readings["solar_kw"] = 600.0
    a._sample(31.0)
    assert a.counter == v0 + 1, "rate limited"
    a._sample(46.0)
    assert a.counter == v0 + 2
    readings["battery_soc_fraction"] = 0.53  # small drift: published at max staleness
    a._sample(80.0)
    assert a.counter == v0 + 2
    a._sample(107.0)
    assert a.counter == v0 + 3 and a.view.get(PEERS[0])["battery_soc_fraction"] == 0.53


def test_a_changed_noisy_group_rides_along_with_one_that_is_due():
    readings = {"battery_soc_fraction": 0.5, "battery_kwh": 1000.0, "solar_kw": 300.0, "queue_length": 0}
    a = state(0, sampler=lambda now: dict(readings), energy_min_interval_s=60.0, health_min_interval_s=60.0, max_staleness_s=600.0)
    a.start(0.0)
    v0 = a.counter
    readings["queue_length"] = 2  # under the health threshold (4): held back
    a._sample(40.0)
    assert a.counter == v0
    readings["solar_kw"] = 420.0  # energy moved but not due yet (60 s)
    a._sample(50.0)
    assert a.counter == v0
    out = a._sample(61.0)  # energy is due; the held health change goes in the same push
    assert a.counter == v0 + 2
    got = a.view.get(PEERS[0])
    assert got["solar_kw"] == 420.0 and got["queue_length"] == 2
    pushes = deltas_sent(out)
    assert len({id(p.msg) for p in pushes}) == 1 and {p.to for p in pushes} == set(PEERS[1:6])
    (owner, since, entries), = decode_deltas(pushes[0].msg.deltas)
    assert len(entries) == 2
    readings["queue_length"] = 3
    a._sample(80.0)  # health alone, neither due nor moved: still held
    assert a.counter == v0 + 2


def test_pushes_without_acks_set_no_retry_and_get_no_ack():
    a, b = state(0, push_acks=False), state(1)
    out = a.start(0.0)
    pushes = deltas_sent(out)
    assert pushes and not any(p.msg.ack for p in pushes)
    assert not any(getattr(e, "timer", None) == "retry" for e in out)
    b.start(0.0)
    assert [e for e in b.on_message(0.05, PEERS[0], pushes[0].msg) if type(e) is Send] == []
    assert b.view.get(PEERS[0])["region"] == "r0"


def test_cache_is_compacted_into_a_bloom_filter_and_holders_of_reads_it():
    arts = [f"sha256:{i:064x}"[:71] for i in range(300)]
    a = state(0, sampler=lambda now: {"artifacts": arts})
    b = state(1, sampler=lambda now: {"artifacts": arts[:3]})
    for s in (a, b):
        s.start(0.0)
    c = state(2)
    c.start(0.0)
    for src, s in ((PEERS[0], a), (PEERS[1], b)):
        for blob in s._deltas_for(REGION, [(s.me, 0)]):
            c.on_message(1.0, src, StateDelta(REGION, False, blob))
    assert c.view.get(PEERS[0])["artifacts"] is None and c.view.get(PEERS[0])["artifacts_count"] == 300
    assert c.view.get(PEERS[1])["artifacts"] == arts[:3]
    assert c.view.holders_of(arts[1]) == sorted([PEERS[0], PEERS[1]])
    assert c.view.holders_of(arts[200]) == [PEERS[0]]
    assert c.view.holders_of("sha256:missing") in ([], [PEERS[0]])  # a Bloom false positive is allowed
    assert c.view.peers_in_region() == sorted(PEERS[:3])


def test_deltas_and_digests_stay_under_1200_bytes():
    big = state(0, sampler=lambda now: {"artifacts": [f"id-{i:070d}" for i in range(8)], "gpu_model": "X" * 64})
    big.start(0.0)
    big.set_local("summary", summary_value("r0", 3, {"peers": 50}, [f"a{i:075d}" for i in range(8)]))
    big._flush(1.0)
    codec = Codec(control_max_bytes=MESSAGE_BYTES_MAX)
    for blob in big._deltas_for(REGION, [(big.me, 0)]) + big._deltas_for(GLOBAL, [(big.me, 0)]):
        assert len(codec.encode(StateDelta(REGION, False, blob))) <= MESSAGE_BYTES_MAX
    # a digest over 500 owners is covered range by range, one bounded message at a time
    many = [Identity.from_seed(hashlib.blake2b(f"o{i}".encode(), digest_size=32).digest()).peer_id for i in range(500)]
    for p in many:
        o = big._owner(p)
        o.maxv[REGION] = 7
        o.region = "r0"
        o.keys["health"] = None  # type: ignore[assignment]
    seen = set()
    for _ in range(10):
        syn = big._syn(PEERS[1], REGION).msg
        assert len(codec.encode(syn)) <= MESSAGE_BYTES_MAX
        assert isinstance(decode(codec.encode(syn)), StateSyn)
        import msgpack

        seen.update(p for p, _ in msgpack.unpackb(syn.digest))
    assert len(seen) == 501


def test_lost_disk_self_heals_past_old_versions():
    a = state(0)
    b = state(1)
    b.start(0.0)
    for e in deltas_sent(a.start(0.0)):
        b.on_message(0.1, PEERS[0], e.msg)
    for t in range(1, 6):  # the old incarnation wrote more before it lost its disk
        a.set_local("draining", t % 2 == 1)
        for e in deltas_sent(a._flush(float(t))):
            b.on_message(t + 0.1, PEERS[0], e.msg)
    old = b.view.version(PEERS[0])
    a2 = state(0)  # restarted with no disk: its counter starts at 0
    a2.start(10.0)
    assert a2.counter < old
    # b's digest shows a newer version of a2's own state: a2 jumps past it and republishes
    syn = b._syn(PEERS[0], REGION).msg
    out = a2.on_message(11.0, PEERS[1], syn)
    for e in out:
        if type(e) is Send:
            b.on_message(11.1, PEERS[0], e.msg)
    for blob in b._deltas_for(REGION, [(PEERS[0], 0)]):
        a2.on_message(11.2, PEERS[1], StateDelta(REGION, False, blob))
    assert a2.stats["self_heals"] == 1 and a2.counter >= old
    for e in deltas_sent(a2._flush(12.0)):
        b.on_message(12.1, PEERS[0], e.msg)
    assert b.view.version(PEERS[0]) > old


def test_region_state_converges_under_loss_in_the_simulator():
    seed = 21
    idents = [Identity.from_seed(hashlib.blake2b(f"conv{i}".encode(), digest_size=32).digest()) for i in range(24)]
    peers = [x.peer_id for x in idents]
    region = {p: f"r{i % 2}" for i, p in enumerate(peers)}
    boot = {p: Member(p, 0, ALIVE, "", region[p]) for p in peers}
    net = SimpleNetwork(random.Random(derive_seed(seed, "net")), latency_s=0.02, jitter_s=0.01, loss=0.10)
    sim = Simulator(seed, net, codec=Codec(control_max_bytes=MESSAGE_BYTES_MAX))
    rng = random.Random(seed)

    def sampler_for(i):
        def sample(now):
            return {"battery_soc_fraction": 0.5 + 0.3 * ((int(now) // 20 + i) % 2), "battery_kwh": 500.0, "health_score": 0.9}

        return sample

    for i, p in enumerate(peers):
        sim.add_peer(p, lambda sp, i=i: build_gossip_node(idents[i], verify=MEMO, rng=sp.rng, region=region[peers[i]], sampler=sampler_for(i), disk=sp.disk, bootstrap=boot))
    sim.run(70.0)
    assert rng is not None
    for p in peers:
        g = gossip_of(sim.peers[p].node)
        mates = [q for q in peers if region[q] == region[p]]
        assert g.view.peers_in_region() == sorted(mates)
        for q in mates:
            mine = gossip_of(sim.peers[q].node).view.get(q)
            theirs = g.view.get(q)
            assert theirs["battery_soc_fraction"] == mine["battery_soc_fraction"], (p[-6:], q[-6:])
    s = gossip_of(sim.peers[peers[0]].node).state.statistics()
    assert s["updates_forged"] == 0 and s["updates_accepted"] > 0


def test_view_fields_are_the_same_values_as_get():
    a, b = state(0), state(1)
    b.start(0.0)
    a.set_local("lead", (3, 4, True))
    for push in deltas_sent(a.start(0.0)):
        b.on_message(0.05, PEERS[0], push.msg)
    names = ("stable", "draining", "health_score", "battery_kwh", "lat", "lead_term", "no_such_field")
    slim = b.view.fields(PEERS[0], names)  # before get() flattened it: read from the tuples
    full = b.view.get(PEERS[0])
    assert slim == {n: full[n] for n in names if n in full} | {"version": full["version"]}
    assert slim["lead_term"] == 4 and slim["stable"] is True and "no_such_field" not in slim
    assert b.view.fields(PEERS[0], names) == slim  # and from the flattened copy
    assert b.view.fields(PEERS[7], names) is None
