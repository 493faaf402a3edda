"""The ClusterView placement reads, over a peer's real gossip (membership + state).

Gossip holds two depths of knowledge (see :mod:`arcnet.gossip.state`):

* **members** (global): every alive or suspect peer, with its region;
* **full state** (own region only): health, slots free, queue, energy,
  capabilities, cache contents (a list, or a Bloom filter when large),
  draining -- and, for other regions, the region leader's **summary**
  (peers, free slots, solar, mean state of charge, most replicated artifacts).

:class:`GossipClusterView` maps both onto :class:`~.view.PeerFacts`. A peer
of another region gets its region's averages from the summary (or neutral
defaults before one arrived): good enough to choose whom to ask, since the
bids themselves are priced from each bidder's fresh local facts.

Mapping (gossip reading -> fact): ``gpu_count`` -> slots (``slots_default``
when 0), slots in use = slots - ``gpu_slots_free`` + ``queue_length``,
``health_score`` -> health, ``roles``, ``draining``, ``solar_kw``,
``battery_soc_fraction``, battery capacity = ``battery_kwh`` / soc, the draw
estimated as idle + busy slots x ``slot_kw``, ``artifacts`` (or the Bloom
filter) -> artifacts; capabilities are ``gpu`` and ``gpu:<model>`` when the
site has GPUs, plus ``extra_capabilities(peer)`` if given (the schema has no
free-form tags yet).

The membership version bumps on ``member.*`` events, which the placement
core forwards through :meth:`GossipClusterView.note_event`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from arcnet.gossip.state import bloom_has

from .view import PeerFacts

__all__ = ["GossipClusterView"]


class _Bloom:
    """``in`` over a peer's compacted cache listing (false positives ~1%: fine for a hint)."""

    __slots__ = ("bloom", "k")

    def __init__(self, bloom: bytes, k: int):
        self.bloom, self.k = bloom, k

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, str) and bloom_has(self.bloom, cid, self.k)


class GossipClusterView:
    def __init__(
        self,
        me: str,
        handle: Any,
        *,
        slots_default: int = 8,
        slot_kw: float = 100.0,
        idle_kw: float = 100.0,
        link_bps: float = 1.25e9,
        battery_hours: float = 2.0,
        extra_capabilities: Callable[[str], Sequence[str]] | None = None,
    ):
        # arcnet.gossip.stack.GossipHandle, or a function returning it (the
        # handle exists only once the node that bundles this core is built)
        self._handle = handle
        self.slots_default = slots_default
        self.slot_kw = slot_kw
        self.idle_kw = idle_kw
        self.link_bps = link_bps
        self.battery_hours = battery_hours
        self.me = me
        self.extra = extra_capabilities or (lambda p: ())
        self._version = 0
        self._alive: list[str] | None = None
        self._cache: dict[str, tuple[int, PeerFacts]] = {}  # peer -> (state version, facts)

    @property
    def h(self) -> Any:
        if callable(self._handle):
            self._handle = self._handle()
        return self._handle

    # -- ClusterView -----------------------------------------------------------

    def alive_peers(self) -> Sequence[str]:
        if self._alive is None:
            self._alive = sorted(self.h.members.alive_peers() + [self.me])
        return self._alive

    def membership_version(self) -> int:
        return self._version

    def note_event(self, kind: str) -> None:
        if kind in ("member.alive", "member.dead", "member.left"):
            self._version += 1
            self._alive = None

    def load_totals(self) -> tuple[int, int]:
        used = total = 0
        for p in self.alive_peers():
            f = self.facts(p)
            if f is not None:
                used += f.slots_used
                total += f.slots
        return used, total

    def facts(self, peer: str) -> PeerFacts | None:
        members = self.h.members
        if not members.is_alive(peer):
            return None
        view = self.h.view
        flat = view.get(peer)
        if flat is not None:
            v = int(flat.get("version", 0))
            hit = self._cache.get(peer)
            if hit is not None and hit[0] == v:
                return hit[1]
            f = self._from_state(peer, flat)
            self._cache[peer] = (v, f)
            return f
        region = members.region_of(peer) or ""
        return self._from_summary(peer, region, view.summary(region))

    # -- mapping -------------------------------------------------------------

    def _caps(self, peer: str, gpus: int, model: str) -> tuple[str, ...]:
        caps = []
        if gpus > 0:
            caps.append("gpu")
            if model:
                caps.append(f"gpu:{model}")
        caps.extend(self.extra(peer))
        return tuple(sorted(set(caps)))

    def _from_state(self, peer: str, s: dict[str, Any]) -> PeerFacts:
        gpus = int(s.get("gpu_count", 0) or 0)
        slots = gpus if gpus > 0 else self.slots_default
        free = int(s.get("gpu_slots_free", slots) or 0)
        used = max(0, slots - free) + int(s.get("queue_length", 0) or 0)
        soc = float(s.get("battery_soc_fraction", 0.0) or 0.0)
        stored = float(s.get("battery_kwh", 0.0) or 0.0)
        cap = stored / soc if soc > 0.01 else stored
        arts: Any = s.get("artifacts")
        if arts is None:  # compacted into a Bloom filter
            arts = self._bloom(peer)
        else:
            arts = frozenset(arts)
        return PeerFacts(
            peer,
            region=str(s.get("region", "")),
            roles=tuple(s.get("roles") or ("site",)),
            capabilities=self._caps(peer, gpus, str(s.get("gpu_model", "") or "")),
            slots=slots,
            slots_used=used,
            health=float(s.get("health_score", 1.0)),
            draining=bool(s.get("draining", False)),
            solar_kw=float(s.get("solar_kw", 0.0) or 0.0),
            draw_kw=self.idle_kw + max(0, slots - free) * self.slot_kw,
            battery_soc_fraction=soc,
            battery_kwh=cap,
            battery_kw=cap / self.battery_hours if self.battery_hours > 0 else 0.0,
            power_headroom_kw=float(s.get("power_headroom_kw", 0.0) or 0.0),
            slot_kw=self.slot_kw,
            link_bps=self.link_bps,
            artifacts=arts,
        )

    def _bloom(self, peer: str) -> Any:
        core = self.h.state
        o = core.owners.get(peer)
        e = o.keys.get("cache") if o is not None else None
        if e is None or e.plain is None or e.plain[2] is None:
            return frozenset()
        _count, ids, bloom = e.plain
        return _Bloom(bloom, core.cfg.bloom_hashes)

    def _from_summary(self, peer: str, region: str, summ: dict[str, Any] | None) -> PeerFacts:
        slots = self.slots_default
        if summ is None or summ.get("peers", 0) <= 0:
            return PeerFacts(peer, region=region, slots=slots, slot_kw=self.slot_kw, link_bps=self.link_bps)
        n = max(1, int(summ["peers"]))
        free = float(summ.get("gpu_slots_free", 0.0)) / n
        queue = float(summ.get("queue_length", 0.0)) / n
        used = max(0, round(slots - free + queue))
        return PeerFacts(
            peer,
            region=region,
            slots=slots,
            slots_used=used,
            solar_kw=float(summ.get("solar_kw", 0.0)) / n,
            draw_kw=self.idle_kw + max(0.0, slots - free) * self.slot_kw,
            battery_soc_fraction=float(summ.get("battery_soc_fraction", 0.0)),
            power_headroom_kw=float(summ.get("power_headroom_kw", 0.0)) / n,
            slot_kw=self.slot_kw,
            link_bps=self.link_bps,
            artifacts=frozenset(summ.get("artifacts") or ()),
        )
