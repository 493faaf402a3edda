"""Membership (SWIM + Lifeguard): unit tests on the core, and small meshes in the simulator."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.gossip.membership import (
    ALIVE,
    DEAD,
    MESSAGE_BYTES_MAX,
    SUSPECT,
    Ack,
    Gossip,
    Member,
    MembershipConfig,
    MembershipCore,
    Ping,
    PingReq,
    SyncPage,
    SyncReq,
    decode_updates,
    encode_updates,
)
from arcnet.mesh.core import CancelTimer, Emit, Persist, Send, SetTimer
from arcnet.mesh.identity import Identity
from arcnet.mesh.node import Node
from arcnet.mesh.wire import Codec, WireError, decode, encode
from arcnet.sims.engine import Simulator, SimpleNetwork, derive_seed


def ids(n: int, tag: str = "m") -> list[str]:
    return [Identity.from_seed(hashlib.blake2b(f"{tag}{i}".encode(), digest_size=32).digest()).peer_id for i in range(n)]


PEERS = ids(24)


def core(me: str, peers: list[str], **kw) -> MembershipCore:
    cfg = kw.pop("config", None) or MembershipConfig()
    boot = [Member(p, 0, ALIVE, "", "r0") for p in peers]
    return MembershipCore(me, rng=random.Random(7), config=cfg, region="r0", bootstrap=boot, **kw)


def sends(effects, typ=None):
    return [e for e in effects if type(e) is Send and (typ is None or type(e.msg) is typ)]


def emits(effects, kind):
    return [e for e in effects if type(e) is Emit and e.kind == kind]


def timers(effects):
    return {e.timer: e.at for e in effects if type(e) is SetTimer}


# --------------------------------------------------------------------------
# unit: the core alone


def test_probe_acked_directly_needs_no_indirect_stage():
    a = core(PEERS[0], PEERS)
    out = a.start(0.0)
    assert any(type(e) is Persist for e in out)
    out = a.on_timer(timers(out)["round"], "round")
    pings = sends(out, Ping)
    assert len(pings) == 1
    target, seq = pings[0].to, pings[0].msg.seq
    b = core(target, PEERS)
    b.start(0.0)
    acks = sends(b.on_message(0.1, PEERS[0], pings[0].msg), Ack)
    assert len(acks) == 1 and acks[0].to == PEERS[0] and acks[0].msg.seq == seq
    out = a.on_message(0.15, target, acks[0].msg)
    assert any(type(e) is CancelTimer for e in out)
    assert a.stats["probes_failed"] == 0 and not a.probes


def test_silent_target_is_suspected_then_refutes_and_comes_back():
    a = core(PEERS[0], PEERS)
    out = a.start(0.0)
    out = a.on_timer(timers(out)["round"], "round")
    ping = sends(out, Ping)[0]
    target, seq = ping.to, ping.msg.seq
    t0 = timers(out)[("p", seq)]
    out = a.on_timer(t0, ("p", seq))  # no ack by half the timeout: ping again
    assert len(sends(out, Ping)) == 1 and not sends(out, PingReq)
    t1 = timers(out)[("p", seq)]
    out = a.on_timer(t1, ("p", seq))  # no ack: a third ping + indirect through k helpers
    assert len(sends(out, Ping)) == 1
    reqs = sends(out, PingReq)
    assert len(reqs) == a.cfg.indirect_checks and all(r.msg.target == target and r.msg.witness for r in reqs)
    t2 = timers(out)[("p", seq)]
    out = a.on_timer(t2, ("p", seq))  # still nothing: suspect, and tell the suspect first (buddy)
    assert emits(out, "member.suspect")[0].data["peer"] == target
    assert a.status_of(target) == "suspect"
    buddy = [s for s in sends(out, Gossip) if s.to == target]
    assert buddy, "Lifeguard's buddy system sends the suspicion to the suspect"
    b = core(target, PEERS)
    b.start(0.0)
    out_b = b.on_message(t2 + 0.05, PEERS[0], buddy[0].msg)
    assert b.inc == 1 and b.stats["refutations"] == 1
    assert emits(out_b, "member.alive")[0].data == {"peer": target, "incarnation": 1, "addr": "", "region": "r0"}
    assert any(type(e) is Persist and e.key == "swim.incarnation" and e.value == b"1" for e in out_b)
    # b's refutation reaches a on b's next message (here: the ack to a ping)
    ack = sends(b.on_message(t2 + 0.1, PEERS[0], Ping(99, target, b"")), Ack)[0]
    out = a.on_message(t2 + 0.15, target, ack.msg)
    assert a.status_of(target) == "alive" and a.members[target].inc == 1
    assert emits(out, "member.alive")
    assert ("s", target) not in a.timers.names()


def test_lifeguard_suspicion_timeout_shrinks_with_independent_confirmations():
    a = core(PEERS[0], PEERS)
    a.start(0.0)
    lo, hi = a.suspicion_bounds()
    assert hi == pytest.approx(a.cfg.suspicion_max_mult * lo)
    x = PEERS[5]
    out = a.on_message(10.0, PEERS[1], Gossip(encode_updates([(SUSPECT, x, 0, PEERS[1], "", "")])))
    assert timers(out)[("s", x)] == pytest.approx(10.0 + hi)
    deadlines = [hi]
    for k, origin in enumerate(PEERS[2:5], start=1):
        out = a.on_message(10.0 + 0.1 * k, origin, Gossip(encode_updates([(SUSPECT, x, 0, origin, "", "")])))
        deadlines.append(timers(out)[("s", x)] - 10.0)
        assert deadlines[-1] == pytest.approx(a.suspicion_timeout(k))
    assert deadlines == sorted(deadlines, reverse=True) and deadlines[-1] == pytest.approx(lo)
    # the same accuser again is not a new confirmation
    out = a.on_message(10.5, PEERS[2], Gossip(encode_updates([(SUSPECT, x, 0, PEERS[2], "", "")])))
    assert ("s", x) not in timers(out)


def test_plain_swim_uses_a_fixed_timeout_and_no_buddy():
    a = core(PEERS[0], PEERS, config=MembershipConfig(plain_swim=True))
    a.start(0.0)
    lo, _ = a.suspicion_bounds()
    x = PEERS[5]
    out = a.on_message(1.0, PEERS[1], Gossip(encode_updates([(SUSPECT, x, 0, PEERS[1], "", "")])))
    assert timers(out)[("s", x)] == pytest.approx(1.0 + lo)
    out = a.on_message(1.1, PEERS[2], Gossip(encode_updates([(SUSPECT, x, 0, PEERS[2], "", "")])))
    assert ("s", x) not in timers(out)
    assert a.suspicion_timeout(0) == a.suspicion_timeout(3) == lo


def test_unconfirmed_suspicion_gets_a_last_chance_probe_before_death():
    a = core(PEERS[0], PEERS)
    a.start(0.0)
    x = PEERS[6]
    out = a.on_message(1.0, PEERS[1], Gossip(encode_updates([(SUSPECT, x, 0, PEERS[1], "", "")])))
    due = timers(out)[("s", x)]
    out = a.on_timer(due, ("s", x))
    assert not emits(out, "member.dead") and a.stats["last_chance_probes"] == 1
    ping = [s for s in sends(out, Ping) if s.to == x][0]
    assert decode_updates(ping.msg.updates)[0][:3] == (SUSPECT, x, 0), "the suspicion rides first"
    # nobody answers: the death is declared at the rescheduled deadline
    seq = ping.msg.seq
    t = timers(out)[("p", seq)]
    due2 = timers(out)[("s", x)]
    while True:
        nxt = timers(a.on_timer(t, ("p", seq))).get(("p", seq))
        if nxt is None:
            break
        t = nxt
    assert t <= due2
    out3 = a.on_timer(due2, ("s", x))
    assert emits(out3, "member.dead") and a.status_of(x) == "dead"


def test_dead_members_are_not_revived_by_stale_records_even_after_they_are_forgotten():
    cfg = MembershipConfig(dead_retain_s=30.0)
    a = core(PEERS[0], PEERS, config=cfg)
    a.start(0.0)
    x = PEERS[3]
    out = a.on_message(1.0, PEERS[1], Gossip(encode_updates([(DEAD, x, 0, PEERS[1], "", "")])))
    assert emits(out, "member.dead") and a.status_of(x) == "dead"
    stale = encode_updates([(ALIVE, x, 0, None, "", "r0")])
    a.on_message(2.0, PEERS[2], Gossip(stale))
    a.on_message(2.0, PEERS[2], SyncPage(False, 0, False, stale))
    a.on_message(2.0, PEERS[2], SyncReq(False, 0, stale))
    assert a.status_of(x) == "dead" and a.stats["stale_rejected"] == 3
    # forgotten after dead_retain_s: a tombstone remains
    t = 40.0
    a._expire(t)  # what every probe round does
    assert x not in a.members and x in a.tombstones and a.status_of(x) is None
    a.on_message(t + 1, PEERS[2], SyncPage(False, 0, False, stale))
    assert a.status_of(x) is None and a.stats["stale_rejected"] == 4
    # only the member itself, at a higher incarnation, comes back
    out = a.on_message(t + 2, x, Gossip(encode_updates([(ALIVE, x, 1, None, "/ip4/10.0.0.3/tcp/4001", "r0")])))
    assert a.status_of(x) == "alive" and emits(out, "member.alive")[0].data["addr"] == "/ip4/10.0.0.3/tcp/4001"


def test_a_stale_accuser_is_corrected_with_the_newer_record():
    a = core(PEERS[0], PEERS)
    a.start(0.0)
    x = PEERS[4]
    a.on_message(1.0, x, Gossip(encode_updates([(ALIVE, x, 3, None, "", "r0")])))
    out = a.on_message(2.0, PEERS[9], Gossip(encode_updates([(SUSPECT, x, 1, PEERS[9], "", "")])))
    fix = [s for s in sends(out, Gossip) if s.to == PEERS[9]]
    assert fix and decode_updates(fix[0].msg.updates)[0][:3] == (ALIVE, x, 3)


def test_local_health_multiplier_rises_on_missed_nacks_and_stretches_timeouts():
    a = core(PEERS[0], PEERS)
    out = a.start(0.0)
    now = timers(out)["round"]
    for _ in range(3):
        out = a.on_timer(now, "round")
        seq = sends(out, Ping)[0].msg.seq
        t = timers(out)[("p", seq)]
        while True:  # no acks, no nacks: we are the likely problem
            nxt = timers(a.on_timer(t, ("p", seq))).get(("p", seq))
            if nxt is None:
                break
            t = nxt
        now = t + 0.01
    assert a.lhm >= 3
    out = a.on_timer(now, "round")
    assert timers(out)["round"] - now == pytest.approx(a.cfg.probe_interval_s * (1 + a.lhm))


def test_every_message_fits_1200_bytes_even_with_long_addresses_and_a_full_queue():
    me = PEERS[0]
    long_addr = "/ip6/2001:db8:85a3:8d3:1319:8a2e:370:7348/udp/4001/quic-v1/p2p/" + PEERS[1] + "/p2p-circuit"
    long_addr = (long_addr * 2)[:250]
    boot = [Member(p, 0, ALIVE, long_addr, "region-with-a-long-name-" + "x" * 30) for p in ids(300, "big")]
    a = MembershipCore(me, rng=random.Random(1), region="r0", addr=long_addr, bootstrap=boot)
    a.start(0.0)
    for i, p in enumerate(ids(300, "big")[:200]):
        a._queue((SUSPECT, p, 7, PEERS[2], "", ""))
        a._queue((ALIVE, p, 9, None, long_addr, "region-with-a-long-name-" + "y" * 30))
    codec = Codec(control_max_bytes=MESSAGE_BYTES_MAX)
    built = [Ping(1, PEERS[1], a._piggyback(PEERS[1])), Gossip(a._piggyback(None)), SyncReq(True, 0, a._sample_records())]
    built += [SyncPage(True, c, m, r) for c, m, r in a._join_pages(0)]
    for m in built:
        data = codec.encode(m)  # raises if over the limit
        assert len(data) <= MESSAGE_BYTES_MAX
        assert decode(data) == m
    assert a.stats["message_bytes_max"] <= MESSAGE_BYTES_MAX


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_update_blob_decoder_raises_only_wire_errors(blob):
    try:
        ups = decode_updates(blob)
    except WireError:
        return
    assert isinstance(ups, list)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(PEERS), st.integers(0, 2**32 - 1), st.sampled_from([None] + PEERS), st.text(max_size=40), st.text(max_size=20)), max_size=8))
def test_update_blob_round_trips(updates):
    assert decode_updates(encode_updates(updates)) == updates


# --------------------------------------------------------------------------
# the simulator: small meshes


def mesh(n: int, seed: int, *, loss: float = 0.0, regions: int = 2, join: bool = False, cfg: MembershipConfig | None = None):
    peers = ids(n, f"sim{seed}-")
    region = {p: f"r{i % regions}" for i, p in enumerate(peers)}
    boot = {p: Member(p, 0, ALIVE, "", region[p]) for p in peers}
    net = SimpleNetwork(random.Random(derive_seed(seed, "net")), latency_s=0.02, jitter_s=0.01, loss=loss)
    sim = Simulator(seed, net, codec=Codec(control_max_bytes=MESSAGE_BYTES_MAX))
    cfg = cfg or MembershipConfig()
    events: list[tuple[float, str, Emit]] = []
    sim.on_emit = lambda now, pid, e: events.append((now, pid, e))

    def factory(p):
        def build(sp):
            first = sp.crashes == 0 and sp.restarts == 0
            core = MembershipCore(
                p, rng=sp.rng, config=cfg, region=region[p], disk=sp.disk, seeds=peers[:2],
                bootstrap=boot if (first and not join) else (),
            )
            return Node(p, {"swim": core})

        return build

    for p in peers:
        sim.add_peer(p, factory(p))
    return sim, peers, events


def test_crashed_peers_are_detected_by_every_live_peer_within_the_bound():
    sim, peers, events = mesh(60, 3)
    sim.run(10.0)
    victims = [peers[5], peers[17]]
    sim.call_at(10.0, lambda: sim.crash(victims[0]))
    sim.call_at(20.0, lambda: sim.crash(victims[1]))
    sim.run(35.0)
    for v, t0 in zip(victims, (10.0, 20.0)):
        seen = {pid: now for now, pid, e in events if e.kind == "member.dead" and e.data["peer"] == v}
        live = [p for p in peers if sim.peers[p].alive]
        assert set(seen) >= set(live), f"{len(set(live) - set(seen))} live peers never declared {v[-6:]} dead"
        assert max(seen[p] for p in live) - t0 < 6.0
    false = [e for _, _, e in events if e.kind == "member.dead" and e.data["peer"] not in victims]
    assert not false


def test_restart_rejoins_with_a_higher_incarnation_and_lost_disk_refutes():
    sim, peers, events = mesh(30, 5)
    sim.run(5.0)
    x, y = peers[3], peers[4]
    sim.crash(x)
    sim.crash(y, lose_disk=True)
    sim.run(15.0)
    sim.restart(x)
    sim.restart(y)
    sim.run(35.0)
    for p in peers:
        if p in (x, y):
            continue
        core = sim.peers[p].node.cores["swim"]
        assert core.status_of(x) == "alive" and core.members[x].inc >= 1
        assert core.status_of(y) == "alive" and core.members[y].inc >= 1, "a peer that lost its disk refutes its death"
    assert sim.peers[x].node.cores["swim"].inc == 1  # persisted 0, booted as 1


def test_peers_join_through_seeds():
    sim, peers, events = mesh(25, 9, join=True)
    sim.run(25.0)
    for p in peers:
        core = sim.peers[p].node.cores["swim"]
        assert core.n() == len(peers), f"{p[-6:]} knows {core.n()} of {len(peers)}"


def test_a_joiner_asks_for_one_batch_of_pages_at_a_time():
    many = ids(300, "join-batches")
    seed = MembershipCore(many[0], rng=random.Random(1), region="r0", bootstrap=[Member(p, 0, ALIVE, "", "r0") for p in many])
    seed.start(0.0)
    joiner = MembershipCore(PEERS[0], rng=random.Random(2), region="r0", seeds=[many[0]])
    joiner.start(0.0)
    cursor, batches = 0, 0
    while True:
        pages = seed._join_pages(cursor)
        batches += 1
        assert [m for _, m, _ in pages[:-1]] == [False] * (len(pages) - 1)
        asks = []
        for c, m, r in pages:
            asks += [e.msg for e in sends(joiner.on_message(1.0, many[0], SyncPage(True, c, m, r)), SyncReq)]
        assert len(asks) <= 1, f"batch {batches}: {len(asks)} requests for the next batch (one is enough)"
        if not asks:
            break
        assert asks[0].join and asks[0].cursor > cursor
        cursor = asks[0].cursor
    assert batches > 1 and joiner.n() >= len(many)


def test_no_false_deaths_at_20_percent_loss():
    sim, peers, events = mesh(40, 11, loss=0.20)
    sim.run(60.0)
    assert not [e for _, _, e in events if e.kind == "member.dead"]
    sus = [e for _, _, e in events if e.kind == "member.suspect"]
    assert sus, "at 20% loss suspicions do happen; they must all be refuted"


def test_graceful_leave_is_announced_and_stops_the_core():
    a = core(PEERS[0], PEERS)
    a.start(0.0)
    out = a.leave(1.0)
    gossips = sends(out, Gossip)
    assert gossips and not a.timers.names() and a.status_of(PEERS[0]) == "left"
    assert a.on_message(1.5, PEERS[1], Ping(5, PEERS[0], b"")) == []
    b = core(PEERS[1], PEERS)
    b.start(0.0)
    out_b = b.on_message(1.1, PEERS[0], gossips[0].msg)
    assert emits(out_b, "member.left")[0].data["peer"] == PEERS[0]
    assert b.status_of(PEERS[0]) == "left" and not b.is_alive(PEERS[0])
