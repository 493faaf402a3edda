"""Gossip benchmark: membership, state spread, failure detection, false deaths, leaders.

Runs the real gossip cores (``arcnet.gossip``) in the discrete-event
simulator on virtual time: N = 1,000 peers (``--large``: 10,000), at least 10
seeds by default (``--seeds`` to reduce while developing). Prints a table;
``--json`` prints one JSON object of the named figures instead. Every run
prints its seeds and a command that reproduces it.

The world (one per seed and task):

* **sites**: real US city locations from ``arcnet.sims.geo``, grouped into
  geographic regions of about ``--region-size`` (50) sites, so a region is a
  metro or grid area: 20 regions at 1,000 peers, 200 at 10,000 (the state
  design's premise: per-peer cost follows the region size, not N);
* **network**: ``arcnet.sims.wan`` (great-circle fibre latency, jitter,
  access links) plus an independent loss knob;
* **energy**: ``arcnet.sims.energy`` (pvlib clear sky, seeded clouds,
  batteries), starting at 14:00 UTC on 21 June -- the morning ramp across
  the US, when solar and state of charge move fastest, the hardest hour for
  leader stability; health readings are fixed per site (no workload here);
* **start**: pre-converged membership (every peer starts knowing every
  member, as after a join), then a warm-up so leaders are stable.

Tasks per seed, each in its own world:

* ``full`` (full gossip stack, default config), phases in order:
  base (no extra loss): state spread, bytes per peer and per leader, leader
  changes per region-hour under the energy model's noise; crash: 10 peers
  crash 15 s apart (5 of them regional leaders): detection time by every
  live peer, leader agreement; partition: a random half of the mesh is cut
  from the other for 30 s, then healed: time until every region has one
  leader named by all its live peers; loss10: 10% loss, state spread.
* ``fd_lifeguard``, ``fd_plain``, ``fd_loss20`` (membership core only -- the
  only core whose messages can kill a member; the state core's traffic does
  not change its decisions): false deaths per 1,000 peer-hours with 4% slow
  peers and 10% loss, the same without Lifeguard, and with 20% loss alone.
  A slow peer, Exp(mean 10 s) after its last trouble ended, either stalls (``Simulator.pause``)
  for U(0.1, 1.0) s, or runs starved (``Simulator.slow``: every message and
  timer U(0.05, 0.3) s late) for U(2, 10) s, or has its network clogged
  (``WanNetwork.clog``: its frames held, its timers on time -- it misses
  acks and would accuse healthy peers: Lifeguard's case) for U(0.2, 1.0) s. A false death is a distinct
  (peer, incarnation) declared dead while that peer never crashed.

Figures (the issue's names): ``spread_p99_s`` (a state change seen by every
live peer of its scope -- its region; summaries cross regions separately:
``summary_spread_p99_s`` is informational), ``spread_p99_loss10_s``,
``serf_spread_s`` (Serf's closed-form convergence estimate for the same N,
gossip interval and fanout as our membership dissemination),
``detect_p99_s``, ``false_deaths_per_1000_peer_hours``,
``false_deaths_loss20``, ``plain_swim_false_deaths_per_1000_peer_hours``,
``bytes_per_peer_per_s_mean``, ``bytes_per_leader_per_s_mean``,
``message_bytes_max``, ``leader_agreement_s`` (from the first peer of the
region dropping the crashed leader until all its live peers name the same
new one; ``leader_failover_s`` counts from the crash, detection included),
``leader_changes_per_region_hour``, ``leaders_per_region_after_heal_s``.

    python bench/gossip.py                     # N=1,000, 10 seeds
    python bench/gossip.py --seeds 2 --quick   # a fast look
    python bench/gossip.py --large --seeds 1   # N=10,000
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from datetime import datetime, timezone
from typing import Any

from arcnet.gossip.leader import LeaderConfig
from arcnet.gossip.membership import ALIVE, Member, MembershipConfig, MembershipCore
from arcnet.gossip.stack import GossipConfig, build_gossip_node, gossip_of
from arcnet.gossip.state import StateConfig
from arcnet.mesh.identity import Identity, verify_peer
from arcnet.mesh.node import Node
from arcnet.mesh.wire import Codec
from arcnet.sims.engine import Network, Simulator, derive_seed

MESSAGE_BYTES_MAX = 1200
START = datetime(2025, 6, 21, 14, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------
# the world


class Lossy(Network):
    """Independent loss in front of the WAN model (its own seeded generator)."""

    def __init__(self, inner: Network, rng: random.Random):
        self.inner = inner
        self.rng = rng
        self.loss = 0.0
        self.dropped = 0

    def transmit(self, now: float, src: str, dst: str, nbytes: int):
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return ()
        return self.inner.transmit(now, src, dst, nbytes)

    def statistics(self) -> dict[str, float]:
        s = dict(self.inner.statistics())
        s["loss_dropped"] = self.dropped
        return s


def tile_regions(sites: list, region_size: int) -> list[str]:
    """Geographic regions of about ``region_size`` sites: longitude strips cut by latitude.

    The tiling is ``arcnet.sims.geo.tile_labels`` in its ``region_size`` form
    (each strip cut into ``round(len / region_size)`` runs), named ``g000``,
    ``g001``, ... as the benchmark's figures have always been.
    """
    from arcnet.sims.geo import tile_labels

    n = len(sites)
    count = max(1, round(n / region_size))
    labels = tile_labels([(s.latitude, s.longitude) for s in sites], count, region_size=region_size)
    return [f"g{r:03d}" for r in labels]


class World:
    """N peers on the WAN with the energy model; hooks that measure."""

    def __init__(self, seed: int, n: int, region_size: int, *, full: bool, plain: bool = False, duration_s: float = 600.0, leader_stable_s: float = 30.0):
        from arcnet.sims.geo import build_catalog
        from arcnet.sims.wan import WanNetwork

        self.seed = seed
        self.n = n
        self.full = full
        cat = build_catalog(seed, count=n, regions=1)
        labels = tile_regions(cat.sites, region_size)
        self.sites = [dataclasses.replace(s, region=labels[i]) for i, s in enumerate(cat.sites)]
        self.idents = [Identity.from_seed(hashlib.blake2b(f"bench/{seed}/{i}".encode(), digest_size=32).digest()) for i in range(n)]
        self.ids = [x.peer_id for x in self.idents]
        self.region = {self.ids[i]: labels[i] for i in range(n)}
        self.by_region: dict[str, list[str]] = {}
        for i, p in enumerate(self.ids):
            self.by_region.setdefault(labels[i], []).append(p)
        wan = WanNetwork(random.Random(derive_seed(seed, "wan")), {self.ids[i]: self.sites[i] for i in range(n)})
        self.wan = wan
        self.net = Lossy(wan, random.Random(derive_seed(seed, "loss")))
        self.sim = Simulator(seed, self.net, codec=Codec(control_max_bytes=MESSAGE_BYTES_MAX), unsynced_window_s=0.0)
        self.boot = {p: Member(p, 0, ALIVE, "", self.region[p]) for p in self.ids}
        self.cfg = GossipConfig(
            membership=MembershipConfig(plain_swim=plain, check_sizes=False),  # the codec enforces 1,200 B
            state=StateConfig(check_sizes=False),
            leader=LeaderConfig(stable_s=leader_stable_s),
        )
        self._verified: dict[tuple, bool] = {}
        self.energy = None
        if full:
            from arcnet.sims.energy import EnergyModel

            self.energy = EnergyModel(self.sites, START, duration_s + 600.0, seed)
        hrng = random.Random(derive_seed(seed, "health"))
        self.health = [round(hrng.uniform(0.85, 1.0), 3) for _ in range(n)]
        self.gpus = [hrng.choice((4, 8, 8, 16)) for _ in range(n)]
        # measurement state
        self.recording = False
        self.pub: dict[tuple[str, int], list] = {}
        self.spread: list[float] = []
        self.summary_pub: dict[tuple[str, int], list] = {}
        self.summary_spread: list[float] = []
        self.leader_now: dict[str, str] = {}
        self.leader_changes: dict[str, int] = {}
        self.watchers: dict[str, str] = {}
        self.dead_counts: dict[str, int] = {}
        self.dead_first: dict[str, float] = {}
        self.dead_done: dict[str, float] = {}
        self.false_deaths: dict[tuple[str, int], float] = {}
        self.crashed: dict[str, float] = {}
        self.live = n
        self.leader_watch: dict[str, dict[str, Any]] = {}
        self.sim.on_emit = self._on_emit
        for i, p in enumerate(self.ids):
            self.sim.add_peer(p, self._factory(i))

    # -- peers ---------------------------------------------------------------

    def verify(self, peer: str, msg: bytes, sig: bytes) -> bool:
        key = (peer, msg, sig)
        v = self._verified.get(key)
        if v is None:
            if len(self._verified) >= 200_000:  # bounded: one signed update is verified by its region within seconds
                self._verified.clear()
            v = self._verified[key] = verify_peer(peer, msg, sig)
        return v

    def _factory(self, i: int):
        def build(sp) -> Node:
            p = self.ids[i]
            if not self.full:
                core = MembershipCore(p, rng=sp.rng, config=self.cfg.membership, region=self.region[p], disk=sp.disk, bootstrap=self.boot)
                return Node(p, {"swim": core})
            node = build_gossip_node(
                self.idents[i],
                rng=sp.rng,
                region=self.region[p],
                config=self.cfg,
                lat=self.sites[i].latitude,
                lon=self.sites[i].longitude,
                sampler=self._sampler(i),
                verify=self.verify,
                disk=sp.disk,
                bootstrap=self.boot,
            )
            gossip_of(node).state.observer = self._observer(p)
            return node

        return build

    def _sampler(self, i: int):
        energy = self.energy
        extra = {"health_score": self.health[i], "gpu_slots_free": self.gpus[i], "gpu_count": self.gpus[i], "gpu_model": "H100", "cpu_slots_free": 64, "memory_gb": 2048.0}

        def sample(now: float) -> dict[str, Any]:
            r = energy.reading(i, now)
            r.update(extra)
            return r

        return sample

    def _observer(self, me: str):
        region = self.region[me]
        sim = self.sim

        def seen(now: float, owner: str, key: str, version: int) -> None:
            if not self.recording:
                return
            k = (owner, version)
            if key == "summary":
                if owner == me:
                    target = sum(1 for p in self.ids if sim.peers[p].alive) - 1
                    self.summary_pub[k] = [now, 0, target]
                else:
                    rec = self.summary_pub.get(k)
                    if rec is not None:
                        rec[1] += 1
                        if rec[1] == rec[2]:
                            self.summary_spread.append(now - rec[0])
                return
            if owner == me:
                target = sum(1 for p in self.by_region[region] if p != me and sim.peers[p].alive)
                self.pub[k] = [now, 0, target]
                return
            rec = self.pub.get(k)
            if rec is not None:
                rec[1] += 1
                if rec[1] == rec[2]:
                    self.spread.append(now - rec[0])

        return seen

    # -- events ----------------------------------------------------------------

    def _on_emit(self, now: float, pid: str, e) -> None:
        kind = e.kind
        if kind == "member.dead":
            subject = e.data["peer"]
            if subject in self.crashed:
                self.dead_counts[subject] = c = self.dead_counts.get(subject, 0) + 1
                self.dead_first.setdefault(subject, now)
                if subject not in self.dead_done and c >= self.live:
                    self.dead_done[subject] = now
            else:
                self.false_deaths.setdefault((subject, e.data["incarnation"]), now)
        elif kind == "leader.changed":
            region = e.data["region"]
            new = e.data["leader"]
            self.leader_now[pid] = new
            if self.recording and self.watchers.get(region) == pid and new != e.data["previous"]:
                self.leader_changes[region] = self.leader_changes.get(region, 0) + 1
            w = self.leader_watch.get(region)
            if w is not None and "agree" not in w:
                if "first" not in w and e.data["previous"] == w["victim"]:
                    w["first"] = now
                live = [p for p in self.by_region[region] if self.sim.peers[p].alive]
                names = {self.leader_now.get(p, "") for p in live}
                if len(names) == 1 and w["victim"] not in names and "" not in names:
                    w["agree"] = now


    def region_leaders(self) -> dict[str, str]:
        """The leader each region's first live peer names."""
        out = {}
        for r, peers in self.by_region.items():
            for p in peers:
                if self.sim.peers[p].alive:
                    out[r] = self.leader_now.get(p, "")
                    break
        return out

    def watch_regions(self) -> None:
        self.watchers = {}
        for r, peers in self.by_region.items():
            for p in peers:
                if self.sim.peers[p].alive:
                    self.watchers[r] = p
                    break

    def bytes_snapshot(self) -> dict[str, int]:
        return {p: self.sim.peers[p].bytes_sent for p in self.ids}


# --------------------------------------------------------------------------
# tasks


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))]


def task_full(seed: int, n: int, region_size: int, quick: bool, large: bool) -> dict[str, Any]:
    warm = 40.0
    base_s = 60.0 if (quick or large) else 180.0
    crash_s = 15.0
    crashes = 4 if (quick or large) else 10
    part_s, heal_s = 30.0, 20.0
    loss_s = 40.0 if quick else 90.0
    total = warm + base_s + crashes * crash_s + part_s + heal_s + loss_s
    t0 = time.time()
    w = World(seed, n, region_size, full=True, duration_s=total)
    sim = w.sim
    out: dict[str, Any] = {"seed": seed, "task": "full", "n": n, "regions": len(w.by_region)}
    build_s = time.time() - t0
    sim.run(warm)
    # -- base --------------------------------------------------------------
    w.watch_regions()
    before = w.bytes_snapshot()
    leaders_before = w.region_leaders()
    w.recording = True
    t_base = sim.now
    sim.run(t_base + base_s)
    w.recording = False
    after = w.bytes_snapshot()
    leaders_after = w.region_leaders()
    per_peer = [(after[p] - before[p]) / base_s for p in w.ids]
    steady_leaders = [l for r, l in leaders_after.items() if l and leaders_before.get(r) == l]
    out["spread"] = w.spread
    out["summary_spread"] = w.summary_spread
    out["bytes_per_peer_per_s"] = sum(per_peer) / len(per_peer)
    out["bytes_per_leader_per_s"] = [(after[l] - before[l]) / base_s for l in steady_leaders]
    out["leader_changes"] = sum(w.leader_changes.values())
    out["region_hours"] = len(w.by_region) * base_s / 3600.0
    out["regions_without_leader"] = sum(1 for l in leaders_after.values() if not l)
    # -- crash -------------------------------------------------------------
    rng = random.Random(derive_seed(seed, "victims"))
    leaders = sorted(l for l in w.region_leaders().values() if l)
    victims = rng.sample(leaders, min(len(leaders), crashes // 2))
    others = [p for p in w.ids if p not in victims and p not in leaders]
    victims += rng.sample(others, crashes - len(victims))
    t_crash0 = sim.now
    for k, v in enumerate(victims):
        at = t_crash0 + k * crash_s + rng.random()

        def crash(v=v, at=at):
            w.crashed[v] = sim.now
            w.live -= 1
            if v in leaders:
                w.leader_watch[w.region[v]] = {"victim": v, "crash": sim.now}
            sim.crash(v)

        sim.call_at(at, crash)
    sim.run(t_crash0 + crashes * crash_s + 5.0)
    out["detect"] = [w.dead_done[v] - w.crashed[v] for v in victims if v in w.dead_done]
    out["detect_missing"] = sum(1 for v in victims if v not in w.dead_done)
    out["member_spread"] = [w.dead_done[v] - w.dead_first[v] for v in victims if v in w.dead_done]
    out["leader_agreement"] = [x["agree"] - x["first"] for x in w.leader_watch.values() if "agree" in x and "first" in x]
    out["leader_failover"] = [x["agree"] - x["crash"] for x in w.leader_watch.values() if "agree" in x]
    out["leader_agreement_missing"] = sum(1 for x in w.leader_watch.values() if "agree" not in x)
    if large:
        # 10,000 peers: base and crash phases only (each phase is ~10 min of CPU here)
        return _finish(w, out, t0, build_s)
    # -- partition ---------------------------------------------------------
    live = [p for p in w.ids if sim.peers[p].alive]
    side_a = sorted(rng.sample(live, len(live) // 2))
    aset = set(side_a)
    side_b = [p for p in live if p not in aset]
    cuts = w.wan.partition(side_a, side_b)
    sim.run(sim.now + part_s)
    split = {r: len({w.leader_now.get(p, "") for p in ps if sim.peers[p].alive}) for r, ps in w.by_region.items()}
    out["regions_split_leaders"] = sum(1 for c in split.values() if c > 1)
    for c in cuts:
        w.wan.heal(c)
    t_heal = sim.now
    state = {"ok_at": None}

    def check():
        ok = True
        for r, ps in w.by_region.items():
            names = {w.leader_now.get(p, "") for p in ps if sim.peers[p].alive}
            if len(names) != 1 or "" in names:
                ok = False
                break
        if ok and state["ok_at"] is None:
            state["ok_at"] = sim.now
        elif not ok:
            state["ok_at"] = None
        if sim.now < t_heal + heal_s:
            sim.call_at(sim.now + 0.1, check)

    sim.call_at(t_heal, check)
    sim.run(t_heal + heal_s)
    out["heal"] = None if state["ok_at"] is None else state["ok_at"] - t_heal
    # -- loss 10% -----------------------------------------------------------
    sim.run(sim.now + 10.0)
    w.net.loss = 0.10
    w.spread = []
    w.pub = {}
    w.recording = True
    sim.run(sim.now + loss_s)
    w.recording = False
    out["spread_loss10"] = w.spread
    return _finish(w, out, t0, build_s)


def _finish(w: World, out: dict[str, Any], t0: float, build_s: float) -> dict[str, Any]:
    sim = w.sim
    st = sim.statistics()
    out["message_bytes_max"] = st["message_bytes_max"]
    out["encode_errors"] = st["encode_errors"]
    out["events"] = st["events"]
    out["sim_s"] = sim.now
    out["wall_s"] = time.time() - t0
    out["build_s"] = build_s
    stats: dict[str, float] = {}
    for p in w.ids:
        node = sim.peers[p].node
        if node is not None:
            for k, v in node.statistics().items():
                stats[k] = stats.get(k, 0) + v
    out["core_stats"] = {k: v for k, v in stats.items() if v}
    return out


def _slow_loop(w: World, pid: str, rng: random.Random) -> None:
    """One slow peer's troubles: a stall, a starved spell, or a clogged network; the next
    one Exp(mean 10 s) after this one ends (overlapping stalls would add up to an outage)."""
    sim = w.sim
    r = rng.random()
    if r < 1 / 3:
        end = sim.now + rng.uniform(0.1, 1.0)
        sim.pause(pid, end)  # GC pause, stopped process
    elif r < 2 / 3:
        end = sim.now + rng.uniform(2.0, 10.0)
        sim.slow(pid, rng.uniform(0.05, 0.3), end)  # starved CPU: every message and timer late
    else:
        end = sim.now + rng.uniform(0.2, 1.0)
        w.wan.clog([pid], end)  # its frames held, its timers on time
    sim.call_at(end + rng.expovariate(1 / 10.0), lambda: _slow_loop(w, pid, rng))


def task_false_deaths(seed: int, n: int, region_size: int, quick: bool, large: bool, kind: str) -> dict[str, Any]:
    warm = 10.0
    dur = 60.0 if quick else 180.0
    t0 = time.time()
    w = World(seed, n, region_size, full=False, plain=(kind == "fd_plain"))
    sim = w.sim
    rng = random.Random(derive_seed(seed, "slow", kind))
    if kind in ("fd_lifeguard", "fd_plain"):
        w.net.loss = 0.10
        for p in rng.sample(w.ids, round(0.04 * n)):
            sim.call_at(rng.uniform(0, 10.0), lambda p=p: _slow_loop(w, p, rng))
    else:
        w.net.loss = 0.20
    sim.run(warm)
    w.false_deaths = {}
    before = w.bytes_snapshot()
    sim.run(warm + dur)
    after = w.bytes_snapshot()
    st = sim.statistics()
    agg: dict[str, float] = {}
    for p in w.ids:
        for k, v in sim.peers[p].node.statistics().items():
            agg[k] = agg.get(k, 0) + v
    return {
        "seed": seed,
        "task": kind,
        "n": n,
        "false_deaths": len(w.false_deaths),
        "peer_hours": n * dur / 3600.0,
        "bytes_per_peer_per_s": sum(after[p] - before[p] for p in w.ids) / n / dur,
        "message_bytes_max": st["message_bytes_max"],
        "events": st["events"],
        "wall_s": time.time() - t0,
        "core_stats": {k: v for k, v in agg.items() if v},
    }


def run_task(args: tuple) -> dict[str, Any]:
    seed, task, n, region_size, quick, large = args
    if task == "full":
        r = task_full(seed, n, region_size, quick, large)
    else:
        r = task_false_deaths(seed, n, region_size, quick, large, task)
    print(f"  seed {seed} {task}: {r['wall_s']:.0f} s wall, {r['events']} events", file=sys.stderr, flush=True)
    return r


# --------------------------------------------------------------------------
# reference and report


def serf_spread_s(n: int, interval_s: float, fanout: int, loss: float = 0.0, fail: float = 0.0, converge: float = 0.9999) -> float:
    """Serf's convergence simulator (serf.io/docs/internals/simulator): the first round at which
    n / (1 + (n+1) e^(-contact n x)) reaches ``converge`` of n, contact = fanout/n (1-loss)(1-fail)/2."""
    contact = (fanout / n) * (1 - loss) * (1 - fail) * 0.5
    x = 0
    while x < 1000:
        infected = n / (1 + (n + 1) * math.exp(-contact * n * x))
        if infected / n >= converge:
            return x * interval_s
        x += 1
    return math.inf


def aggregate(results: list[dict[str, Any]], n: int) -> dict[str, Any]:
    full = [r for r in results if r["task"] == "full"]
    fd = {k: [r for r in results if r["task"] == k] for k in ("fd_lifeguard", "fd_plain", "fd_loss20")}

    def pooled(key: str) -> list[float]:
        return [x for r in full for x in r.get(key, [])]

    def rate(rs: list[dict[str, Any]]) -> float | None:
        hours = sum(r["peer_hours"] for r in rs)
        return None if not hours else 1000.0 * sum(r["false_deaths"] for r in rs) / hours

    mcfg = MembershipConfig()
    leaders_b = pooled("bytes_per_leader_per_s")
    heal = [r["heal"] for r in full if r.get("heal") is not None]
    region_hours = sum(r["region_hours"] for r in full)
    out: dict[str, Any] = {
        "n": n,
        "seeds": sorted({r["seed"] for r in results}),
        "regions": full[0]["regions"] if full else None,
        "spread_p99_s": _p(pooled("spread"), 0.99),
        "spread_p50_s": _p(pooled("spread"), 0.50),
        "spread_samples": len(pooled("spread")),
        "spread_p99_loss10_s": _p(pooled("spread_loss10"), 0.99),
        "summary_spread_p99_s": _p(pooled("summary_spread"), 0.99),
        "serf_spread_s": serf_spread_s(n, mcfg.gossip_interval_s, mcfg.gossip_fanout),
        "member_event_spread_p99_s": _p(pooled("member_spread"), 0.99),
        "detect_p99_s": _p(pooled("detect"), 0.99),
        "detect_p50_s": _p(pooled("detect"), 0.50),
        "detect_samples": len(pooled("detect")),
        "detect_missing": sum(r.get("detect_missing", 0) for r in full),
        "false_deaths_per_1000_peer_hours": rate(fd["fd_lifeguard"]),
        "false_deaths_loss20": sum(r["false_deaths"] for r in fd["fd_loss20"]) if fd["fd_loss20"] else None,
        "false_deaths_loss20_per_1000_peer_hours": rate(fd["fd_loss20"]),
        "plain_swim_false_deaths_per_1000_peer_hours": rate(fd["fd_plain"]),
        "false_death_peer_hours": {k: sum(r["peer_hours"] for r in v) for k, v in fd.items()},
        "false_deaths_counted": {k: sum(r["false_deaths"] for r in v) for k, v in fd.items()},
        "bytes_per_peer_per_s_mean": (sum(r["bytes_per_peer_per_s"] for r in full) / len(full)) if full else None,
        "bytes_per_leader_per_s_mean": (sum(leaders_b) / len(leaders_b)) if leaders_b else None,
        "bytes_per_peer_per_s_fd": {k: (sum(r["bytes_per_peer_per_s"] for r in v) / len(v)) if v else None for k, v in fd.items()},
        "message_bytes_max": max((r["message_bytes_max"] for r in results), default=None),
        "leader_agreement_s": _p(pooled("leader_agreement"), 0.99),
        "leader_agreement_samples": len(pooled("leader_agreement")),
        "leader_agreement_missing": sum(r.get("leader_agreement_missing", 0) for r in full),
        "leader_failover_s": _p(pooled("leader_failover"), 0.99),
        "leader_changes_per_region_hour": (sum(r["leader_changes"] for r in full) / region_hours) if region_hours else None,
        "leader_region_hours": region_hours,
        "leaders_per_region_after_heal_s": max(heal) if heal and len(heal) == len(full) else None,
        "heal_unresolved": sum(1 for r in full if r.get("heal") is None),
        "regions_split_leaders": sum(r.get("regions_split_leaders", 0) for r in full),
    }
    lg, pl = out["false_deaths_per_1000_peer_hours"], out["plain_swim_false_deaths_per_1000_peer_hours"]
    hours = out["false_death_peer_hours"]["fd_lifeguard"]
    # with no false death observed, the ratio is a lower bound: as if one had happened
    out["plain_over_lifeguard_is_lower_bound"] = bool(hours) and not lg
    if pl is None or not hours:
        out["plain_over_lifeguard"] = None
    else:
        out["plain_over_lifeguard"] = pl / (lg if lg else 1000.0 / hours)
    return out


TARGETS = [
    ("spread_p99_s", "<=", 1.5),
    ("bytes_per_peer_per_s_mean", "<=", 10_000),
    ("detect_p99_s", "<=", 5.0),
    ("false_deaths_loss20", "==", 0),
    ("false_deaths_per_1000_peer_hours", "<=", 1.0),
    ("plain_over_lifeguard", ">=", 100.0),
    ("leader_agreement_s", "<=", 2.0),
    ("leader_changes_per_region_hour", "<=", 1.0),
    ("leaders_per_region_after_heal_s", "<=", 5.0),
    ("message_bytes_max", "<=", 1200),
]


def verdict(value: Any, op: str, target: float) -> str:
    if value is None:
        return "n/a"
    ok = {"<=": value <= target, ">=": value >= target, "==": value == target}[op]
    return "met" if ok else "MISSED"


def table(agg: dict[str, Any]) -> str:
    lines = [f"gossip benchmark: N={agg['n']}, regions={agg['regions']}, seeds={agg['seeds']}", ""]
    targets = {k: (op, t) for k, op, t in TARGETS}
    for k, v in agg.items():
        if k in ("n", "seeds", "regions"):
            continue
        shown = f"{v:.3f}" if isinstance(v, float) else str(v)
        tgt = ""
        if k in targets:
            op, t = targets[k]
            tgt = f"  target {op} {t}: {verdict(v, op, t)}"
        lines.append(f"  {k:46s} {shown}{tgt}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--large", action="store_true", help="N = 10,000 (base and crash phases)")
    ap.add_argument("--n", type=int, default=None, help="override N")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 10; 1 with --large)")
    ap.add_argument("--seed0", type=int, default=1, help="first seed")
    ap.add_argument("--region-size", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="shorter phases (development)")
    ap.add_argument("--tasks", default="full,fd_lifeguard,fd_plain,fd_loss20", help="comma-separated tasks")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--raw", default=None, help="write per-task results to this JSON file")
    a = ap.parse_args(argv)
    n = a.n or (10_000 if a.large else 1000)
    seeds = a.seeds or (1 if a.large else 10)
    tasks = [t for t in a.tasks.split(",") if t]
    if a.large and a.tasks == ap.get_default("tasks"):
        tasks = ["full"]
    units = [(a.seed0 + i, t, n, a.region_size, a.quick, a.large) for i in range(seeds) for t in tasks]
    cmd = f"python bench/gossip.py --n {n} --seeds {seeds} --seed0 {a.seed0} --region-size {a.region_size} --tasks {','.join(tasks)}" + (
        " --quick" if a.quick else ""
    )
    print(f"seeds {a.seed0}..{a.seed0 + seeds - 1}; reproduce: {cmd}", file=sys.stderr, flush=True)
    t0 = time.time()
    if a.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(a.jobs) as pool:
            results = pool.map(run_task, units, chunksize=1)
    else:
        results = []
        for u in units:
            results.append(run_task(u))
            if a.raw:  # each task's result as it lands: a long run stopped early keeps what it measured
                with open(a.raw + ".partial.jsonl", "a") as f:
                    f.write(json.dumps(results[-1], default=str) + "\n")
    agg = aggregate(results, n)
    agg["wall_s"] = round(time.time() - t0, 1)
    if a.raw:
        with open(a.raw, "w") as f:
            json.dump({"args": vars(a), "results": results, "aggregate": agg}, f, indent=1, default=str)
    if a.json:
        print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in agg.items()}))
    else:
        print(table(agg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
