"""What placement reads about the mesh: a small, read-only cluster view.

Placement never talks to gossip directly. It reads a :class:`ClusterView`
(alive peers and each peer's facts, as the local gossip state knows them) and
hears membership changes as events (``member.dead``, ``member.alive`` ...)
through ``on_event``. An adapter over the real signed gossip state is a few
lines (:mod:`arcnet.placement.gossip_view` once ``arcnet.gossip.state``
exists); the simulator and the tests use :class:`MemoryView`.

The facts are what a peer publishes about itself (single-writer, so they are
as fresh as gossip makes them, typically a few seconds old at 1,000 peers):
region, roles, capabilities, slots and how many are in use, health, energy
(solar output, battery state of charge, power headroom), the artifacts it
caches, and whether it is draining. Brokers use them only to choose whom to
ask; the bids themselves are priced from fresh local facts.

Knowingly left out: per-link bandwidth between peer pairs (a peer states its
own link rate; a WAN model can refine it), history of past facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Collection, Protocol, Sequence

__all__ = ["ClusterView", "MemoryView", "PeerFacts"]

_EMPTY: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PeerFacts:
    """One peer's published facts. Units go last in names (STYLE)."""

    peer_id: str
    region: str = "default"
    #: roles this peer plays ("site", "hpc", "edge"); placement asks "site" peers by default
    roles: tuple[str, ...] = ("site",)
    #: capability tags ("gpu", "train", "fp8", ...): a job's required tags must all be present
    capabilities: tuple[str, ...] = ()
    #: schedulable slots (a slot is one GPU group, ~100 kW at a 1 MW site)
    slots: int = 8
    #: slots in use or promised (running + queued), as last published
    slots_used: int = 0
    #: weight for weighted rendezvous hashing: relative capacity (1.0 = a standard site)
    weight: float = 1.0
    #: 0 (failing) .. 1 (healthy): the peer's own health score
    health: float = 1.0
    draining: bool = False
    solar_kw: float = 0.0
    #: electrical draw now, kW (idle load plus running work)
    draw_kw: float = 0.0
    battery_soc_fraction: float = 0.0
    battery_kwh: float = 0.0
    #: largest battery discharge rate, kW
    battery_kw: float = 0.0
    #: seconds until the site expects a solar surplus window (-1: none within its forecast)
    surplus_window_in_s: float = -1.0
    #: how much more the site may draw before it hits its grid/breaker limit, kW
    power_headroom_kw: float = 1000.0
    #: kW one slot draws when busy
    slot_kw: float = 100.0
    #: the peer's WAN link rate for fetching artifacts, bytes per second
    link_bps: float = 1.25e9
    #: artifact ids this peer holds (any container with ``in``)
    artifacts: Collection[str] = _EMPTY
    #: artifact ids loaded warm (model in GPU memory): no load time
    warm: Collection[str] = _EMPTY


class ClusterView(Protocol):
    """The read interface placement needs. Implementations must be deterministic:
    ``alive_peers`` is sorted by peer id, never in set order."""

    def alive_peers(self) -> Sequence[str]:
        """Alive members (including this peer), sorted by peer id."""
        ...

    def facts(self, peer_id: str) -> PeerFacts | None:
        """The peer's facts, or None if unknown or not alive."""
        ...

    def membership_version(self) -> int:
        """Changes whenever the alive set or a static fact (region, roles,
        capabilities, slots, weight) changes; candidate indexes rebuild on it."""
        ...

    def load_totals(self) -> tuple[int, int]:
        """(slots used, slots in all) summed over alive peers: the bounded-load mean."""
        ...


class MemoryView:
    """An in-memory ClusterView for tests and the simulator.

    ``set`` replaces a peer's facts (a static change bumps the version),
    ``set_used`` updates only the slots in use (cheap: no version bump),
    ``kill``/``revive`` change membership.
    """

    def __init__(self, facts: Sequence[PeerFacts] = ()):
        self._facts = {}
        self._alive = []
        self._version = 0
        self._used_total = 0
        self._slots_total = 0
        self._dead: set[str] = set()
        for f in facts:
            self.set(f)

    # -- ClusterView ---------------------------------------------------------

    def alive_peers(self) -> Sequence[str]:
        return self._alive

    def facts(self, peer_id: str) -> PeerFacts | None:
        if peer_id in self._dead:
            return None
        return self._facts.get(peer_id)

    def membership_version(self) -> int:
        return self._version

    def load_totals(self) -> tuple[int, int]:
        return self._used_total, self._slots_total

    # -- updates -------------------------------------------------------------

    def set(self, f: PeerFacts) -> None:
        old = self._facts.get(f.peer_id)
        alive = f.peer_id not in self._dead
        if old is not None and alive:
            self._used_total -= old.slots_used
            self._slots_total -= old.slots
        self._facts[f.peer_id] = f
        if alive:
            self._used_total += f.slots_used
            self._slots_total += f.slots
        if old is None:
            self._rebuild_alive()
        elif (old.region, old.roles, old.capabilities, old.slots, old.weight) != (
            f.region,
            f.roles,
            f.capabilities,
            f.slots,
            f.weight,
        ):
            self._version += 1

    def update(self, peer_id: str, **changes: object) -> None:
        self.set(replace(self._facts[peer_id], **changes))  # type: ignore[arg-type]

    def set_used(self, peer_id: str, slots_used: int) -> None:
        old = self._facts[peer_id]
        if old.slots_used == slots_used:
            return
        if peer_id not in self._dead:
            self._used_total += slots_used - old.slots_used
        self._facts[peer_id] = replace(old, slots_used=slots_used)

    def kill(self, peer_id: str) -> None:
        if peer_id in self._dead or peer_id not in self._facts:
            return
        self._dead.add(peer_id)
        f = self._facts[peer_id]
        self._used_total -= f.slots_used
        self._slots_total -= f.slots
        self._rebuild_alive()

    def revive(self, peer_id: str) -> None:
        if peer_id not in self._dead:
            return
        self._dead.discard(peer_id)
        f = self._facts[peer_id]
        self._used_total += f.slots_used
        self._slots_total += f.slots
        self._rebuild_alive()

    def is_alive(self, peer_id: str) -> bool:
        return peer_id in self._facts and peer_id not in self._dead

    def _rebuild_alive(self) -> None:
        self._alive = sorted(p for p in self._facts if p not in self._dead)
        self._version += 1
