"""Simulated WAN: geographic latency, jitter, bandwidth, loss, duplication, reordering, faults.

One-way delay of a frame of ``n`` bytes from site A to site B::

    queue    = wait for A's access link to finish the frames it already sends
    serial   = n * 8 / min(A.uplink, B.uplink)            (serialisation)
    propag.  = great_circle_km(A, B) * fibre_s_per_km * route_factor
    hops     = (hops_base + km / hop_km) * hop_s           (routers on the way)
    access   = 2 * access_s                                (last mile, both ends)
    jitter   = (propag. * jitter_fraction + jitter_s) * U(0, 1)

Light in fibre covers a kilometre in about 4.9 µs (refractive index ~1.47);
real routes are 1.3--2x longer than the great circle (a common planning
figure; measured US paths sit near 1.5). With the defaults Los Angeles to New
York (3,936 km) is about 31 ms one way, the figure public latency tables give
for that pair (RTT ~60--70 ms).

Each site's access link is a FIFO: a peer that sends a 4 MiB chunk over a
1 Gbit/s edge link holds that link for 34 ms, and its next frame waits. The
receive side is not queued (knowingly left out: incast at the receiver,
TCP congestion control, and per-path capacity in the core).

Faults, all deterministic (no randomness but the network's own seeded
``random.Random``, drawn in the order frames are sent):

* ``loss``, ``duplicate`` and ``reorder`` probabilities per frame (a
  reordered frame is held back by up to ``reorder_delay_s`` so later frames
  overtake it);
* **cuts**: directed sets of (sources, destinations) whose frames are
  dropped. A symmetric partition is two cuts; an asymmetric one is one (A
  cannot reach B, B still reaches A); isolating a region cuts it from
  everyone else both ways. Each active cut is one bit in two per-peer
  bitmasks, so checking a frame is two list lookups and an AND, whatever the
  number of peers;
* **clogs** (FoundationDB's term): frames from or to a clogged peer, or on a
  clogged directed link, are held -- not lost -- until the clog ends;
  ``throttle`` divides a peer's bandwidth instead.

Peers not given a site (tests, clients) get ``default_latency_s``.
"""

from __future__ import annotations

import math
import random
from math import acos as _acos
from dataclasses import dataclass
from typing import Iterable, Sequence

from .engine import Network
from .geo import EARTH_RADIUS_KM, Site

__all__ = ["WanConfig", "WanNetwork"]

_PI_R = math.pi * EARTH_RADIUS_KM


@dataclass(frozen=True)
class WanConfig:
    """WAN model knobs. Units are in the names; defaults are for US fibre."""

    fibre_s_per_km: float = 4.9e-6  # light in glass: ~204,000 km/s
    route_factor: float = 1.5  # fibre route length / great-circle distance
    hop_s: float = 0.0001  # per router hop (queueing + forwarding), 100 µs
    hops_base: int = 4  # hops every path has (metro, edge routers)
    hop_km: float = 500.0  # one more hop per this many km
    access_s: float = 0.0002  # last mile, each end
    jitter_fraction: float = 0.03  # jitter up to this fraction of propagation delay
    jitter_s: float = 0.0002  # plus up to this much, whatever the distance
    loss: float = 0.0  # probability a frame is lost
    duplicate: float = 0.0  # probability a frame arrives twice
    reorder: float = 0.0  # probability a frame is held back
    reorder_delay_s: float = 0.02  # ... by up to this much
    default_latency_s: float = 0.02  # peers without a site
    default_uplink_gbps: float = 10.0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        for name in ("fibre_s_per_km", "hop_s", "access_s", "jitter_fraction", "jitter_s", "reorder_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.route_factor < 1.0:
            raise ValueError(f"route_factor must be >= 1, got {self.route_factor}")
        if self.hop_km <= 0 or self.default_uplink_gbps <= 0:
            raise ValueError("hop_km and default_uplink_gbps must be > 0")


class WanNetwork(Network):
    """The geographic WAN. ``sites`` maps peer id to its :class:`Site` (insertion order kept)."""

    def __init__(self, rng: random.Random, sites: dict[str, Site] | None = None, config: WanConfig | None = None):
        self.rng = rng
        self.config = config or WanConfig()
        self._index: dict[str, int] = {}
        self._peer_ids: list[str] = []
        self._xyz: list[tuple[float, float, float] | None] = []  # unit vector; None: no location
        self._bps: list[float] = []  # access link bits per second
        self._egress_free: list[float] = []  # when the access link finishes its queue
        self._out_bits: list[int] = []  # cuts where the peer is a source
        self._in_bits: list[int] = []  # cuts where the peer is a destination
        self._clog_until: list[float] = []
        self._throttle: list[float] = []  # bandwidth divisor (1: none)
        self._site: list[Site | None] = []
        self._cuts: dict[int, tuple[str, list[int], list[int]]] = {}  # bit -> (label, srcs, dsts)
        self._link_clogs: dict[tuple[int, int], float] = {}
        # compatibility with SimpleNetwork's knobs
        self.blocked: set[tuple[str, str]] = set()
        self.isolated: set[str] = set()
        self._frames = 0
        self._bytes = 0
        self._dropped_cut = 0
        self._dropped_loss = 0
        self._duplicated = 0
        self._reordered = 0
        self._held_clog = 0
        self._queued_s_total = 0.0
        self._clogged = False  # any clog or link clog ever set (skips the clog checks until then)
        self._throttled = False
        cfg = self.config
        self._faulty = (cfg.loss, cfg.duplicate, cfg.reorder)
        self._s_per_km = cfg.fibre_s_per_km * cfg.route_factor
        self._inv_hop_km = 1.0 / cfg.hop_km
        self._hops_base = cfg.hops_base
        self._hop_s = cfg.hop_s
        self._access2_s = 2 * cfg.access_s
        self._default_s = cfg.default_latency_s
        self._jitter_fraction = cfg.jitter_fraction
        self._jitter_s = cfg.jitter_s
        self._reorder_delay_s = cfg.reorder_delay_s
        for pid, site in (sites or {}).items():
            self.add(pid, site)

    # -- peers -----------------------------------------------------------

    def add(self, peer_id: str, site: Site | None) -> int:
        """Place a peer at a site (None: no location, default latency)."""
        if peer_id in self._index:
            raise ValueError(f"peer {peer_id} already placed")
        i = len(self._peer_ids)
        self._index[peer_id] = i
        self._peer_ids.append(peer_id)
        if site is None:
            self._xyz.append(None)
            self._bps.append(self.config.default_uplink_gbps * 1e9)
        else:
            self._xyz.append(site.unit_vector())
            self._bps.append(site.uplink_gbps * 1e9)
        self._site.append(site)
        self._egress_free.append(0.0)
        self._out_bits.append(0)
        self._in_bits.append(0)
        self._clog_until.append(0.0)
        self._throttle.append(1.0)
        return i

    def _i(self, peer_id: str) -> int:
        i = self._index.get(peer_id)
        if i is None:
            i = self.add(peer_id, None)
        return i

    def site_of(self, peer_id: str) -> Site | None:
        i = self._index.get(peer_id)
        return None if i is None else self._site[i]

    # -- the model -------------------------------------------------------

    def distance_km(self, src: str, dst: str) -> float:
        a, b = self._i(src), self._i(dst)
        return self._km(a, b)

    def _km(self, a: int, b: int) -> float:
        xa, xb = self._xyz[a], self._xyz[b]
        if xa is None or xb is None:
            return 0.0
        dot = xa[0] * xb[0] + xa[1] * xb[1] + xa[2] * xb[2]
        if dot >= 1.0:
            return 0.0
        if dot <= -1.0:
            return math.pi * EARTH_RADIUS_KM
        return math.acos(dot) * EARTH_RADIUS_KM

    def _base_s(self, a: int, b: int) -> float:
        cfg = self.config
        if self._xyz[a] is None or self._xyz[b] is None:
            return cfg.default_latency_s
        km = self._km(a, b)
        hops = cfg.hops_base + int(km / cfg.hop_km)
        return km * cfg.fibre_s_per_km * cfg.route_factor + hops * cfg.hop_s + 2 * cfg.access_s

    def one_way_s(self, src: str, dst: str, nbytes: int = 0) -> float:
        """Delay of a frame on idle links, without jitter (for reports and tests)."""
        a, b = self._i(src), self._i(dst)
        bps = min(self._bps[a] / self._throttle[a], self._bps[b] / self._throttle[b])
        return self._base_s(a, b) + nbytes * 8 / bps

    def transmit(self, now: float, src: str, dst: str, nbytes: int) -> Iterable[float]:
        # hot path (once per frame): locals over attributes, plain attributes over dict counters
        index = self._index
        a = index.get(src)
        if a is None:
            a = self.add(src, None)
        b = index.get(dst)
        if b is None:
            b = self.add(dst, None)
        self._frames += 1
        self._bytes += nbytes
        if self._out_bits[a] & self._in_bits[b]:
            self._dropped_cut += 1
            return ()
        if self.blocked or self.isolated:
            if src in self.isolated or dst in self.isolated or (src, dst) in self.blocked:
                self._dropped_cut += 1
                return ()
        r = self.rng.random
        loss, dup, reorder = self._faulty
        if loss and r() < loss:
            self._dropped_loss += 1
            return ()
        # access link: FIFO at the sender, at the path's bottleneck rate
        bps_a = self._bps[a]
        bps_b = self._bps[b]
        if self._throttled:
            bps_a /= self._throttle[a]
            bps_b /= self._throttle[b]
        start = self._egress_free[a]
        if start < now:
            start = now
        else:
            self._queued_s_total += start - now
        sent = start + nbytes * 8.0 / (bps_a if bps_a < bps_b else bps_b)
        self._egress_free[a] = sent
        xa = self._xyz[a]
        xb = self._xyz[b]
        if xa is not None and xb is not None:
            dot = xa[0] * xb[0] + xa[1] * xb[1] + xa[2] * xb[2]
            km = 0.0 if dot >= 1.0 else (_acos(dot) * EARTH_RADIUS_KM if dot > -1.0 else _PI_R)
            prop = km * self._s_per_km
            base = prop + (self._hops_base + int(km * self._inv_hop_km)) * self._hop_s + self._access2_s
        else:
            prop = base = self._default_s
        at = sent + base + (prop * self._jitter_fraction + self._jitter_s) * r()
        if reorder and r() < reorder:
            self._reordered += 1
            at += self._reorder_delay_s * r()
        if self._clogged:
            # clogs hold frames until they clear; then the frame still crosses the WAN
            hold = self._clog_until[a]
            if self._clog_until[b] > hold:
                hold = self._clog_until[b]
            if self._link_clogs:
                lc = self._link_clogs.get((a, b))
                if lc is not None and lc > hold:
                    hold = lc
            if hold > now:
                self._held_clog += 1
                if hold + base > at:
                    at = hold + base
        if dup and r() < dup:
            self._duplicated += 1
            return (at, at + (self._jitter_s + prop * self._jitter_fraction) * r() + 1e-6)
        return (at,)

    # -- faults ----------------------------------------------------------

    def _free_bit(self) -> int:
        bit = 0
        while bit in self._cuts:
            bit += 1
        return bit

    def cut(self, sources: Sequence[str], destinations: Sequence[str], label: str = "cut") -> int:
        """Drop every frame from ``sources`` to ``destinations`` (one direction). Returns the cut id."""
        bit = self._free_bit()
        mask = 1 << bit
        srcs = [self._i(p) for p in sources]
        dsts = [self._i(p) for p in destinations]
        for i in srcs:
            self._out_bits[i] |= mask
        for i in dsts:
            self._in_bits[i] |= mask
        self._cuts[bit] = (label, srcs, dsts)
        return bit

    def heal(self, cut_id: int) -> None:
        """Remove a cut made by :meth:`cut` (unknown ids are ignored: healing twice is harmless)."""
        entry = self._cuts.pop(cut_id, None)
        if entry is None:
            return
        mask = ~(1 << cut_id)
        for i in entry[1]:
            self._out_bits[i] &= mask
        for i in entry[2]:
            self._in_bits[i] &= mask

    def partition(self, side_a: Sequence[str], side_b: Sequence[str], *, symmetric: bool = True, label: str = "partition") -> list[int]:
        """Cut A from B (and B from A if symmetric). Returns the cut ids to heal."""
        ids = [self.cut(side_a, side_b, label + " a->b")]
        if symmetric:
            ids.append(self.cut(side_b, side_a, label + " b->a"))
        return ids

    def isolate(self, peers: Sequence[str], label: str = "isolate") -> list[int]:
        """Cut ``peers`` from every other known peer, both ways (a region's uplinks fail)."""
        inside = set(peers)
        outside = [p for p in self._peer_ids if p not in inside]
        return self.partition(list(peers), outside, symmetric=True, label=label)

    def clog(self, peers: Sequence[str], until: float) -> None:
        """Hold every frame from or to ``peers`` until ``until`` (virtual seconds)."""
        self._clogged = True
        for p in peers:
            i = self._i(p)
            if until > self._clog_until[i]:
                self._clog_until[i] = until

    def clog_link(self, src: str, dst: str, until: float) -> None:
        """Hold frames from ``src`` to ``dst`` (one direction) until ``until``."""
        self._clogged = True
        key = (self._i(src), self._i(dst))
        if until > self._link_clogs.get(key, 0.0):
            self._link_clogs[key] = until

    def unclog_expired(self, now: float) -> None:
        """Forget link clogs that ended (keeps the dict small on long runs)."""
        for key in [k for k, v in self._link_clogs.items() if v <= now]:
            del self._link_clogs[key]

    def throttle(self, peers: Sequence[str], factor: float) -> None:
        """Divide the access bandwidth of ``peers`` by ``factor`` (1 restores it)."""
        if factor < 1.0:
            raise ValueError("throttle factor must be >= 1")
        self._throttled = True
        for p in peers:
            self._throttle[self._i(p)] = factor

    def active_cuts(self) -> list[tuple[int, str, int, int]]:
        """(id, label, sources, destinations) of every active cut."""
        return [(bit, lab, len(s), len(d)) for bit, (lab, s, d) in sorted(self._cuts.items())]

    def reachable(self, src: str, dst: str) -> bool:
        """True if a frame from ``src`` to ``dst`` is not cut (loss aside)."""
        a, b = self._i(src), self._i(dst)
        if self._out_bits[a] & self._in_bits[b]:
            return False
        return not (src in self.isolated or dst in self.isolated or (src, dst) in self.blocked)

    def statistics(self) -> dict[str, float]:
        return {
            "frames": self._frames,
            "bytes": self._bytes,
            "dropped": self._dropped_cut + self._dropped_loss,
            "dropped_cut": self._dropped_cut,
            "dropped_loss": self._dropped_loss,
            "duplicated": self._duplicated,
            "reordered": self._reordered,
            "held_clog": self._held_clog,
            "queued_s_total": round(self._queued_s_total, 6),
            "cuts_active": len(self._cuts),
        }
