"""One peer's gossip stack: membership + state + leader bundled into a Node (sans-IO).

Both drivers build a peer's gossip the same way::

    node = build_gossip_node(identity, rng=rng, region="eu-west", addr=my_multiaddr,
                             seeds=[...], sampler=sampler, verify=verify_peer)

The daemon (``arcnet.mesh.peer``) drives the node over libp2p with the real
clock and registers each ``member.alive`` event's ``addr`` with its
transport; the simulator drives it on virtual time with a memoising
``verify``. Protocol names (and so message routing and timer namespaces):
``swim`` (membership), ``state`` (state dissemination), ``leader``.

Events the node emits (``Emit.kind`` and ``data``):

* ``member.alive`` / ``member.suspect`` / ``member.dead`` / ``member.left``:
  ``peer``, ``incarnation``, ``addr``, ``region`` (and ``by``, the accuser,
  for suspect/dead). ``member.alive`` about the peer itself means it refuted
  a suspicion (a new incarnation).
* ``leader.changed``: ``region``, ``leader`` ('' for none), ``epoch``,
  ``previous``.

Other cores read through :class:`GossipHandle` (``gossip_of(node)``):
``members`` (the membership core: ``status_of``, ``is_alive``,
``members_in_region``, ``member``...), ``view`` (state: ``get``,
``peers_in_region``, ``holders_of``, ``summary``...) and ``leader_of``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from arcnet.mesh.identity import Identity, verify_peer
from arcnet.mesh.node import Node

from .leader import LeaderConfig, LeaderCore
from .membership import Member, MembershipConfig, MembershipCore
from .state import StateConfig, StateCore, StateView

__all__ = ["GossipConfig", "GossipHandle", "build_gossip_node", "gossip_of"]


@dataclass
class GossipConfig:
    """All gossip knobs: see each part's docstrings for units, defaults and scaling."""

    membership: MembershipConfig = field(default_factory=MembershipConfig)
    state: StateConfig = field(default_factory=StateConfig)
    leader: LeaderConfig = field(default_factory=LeaderConfig)


@dataclass
class GossipHandle:
    """The read API of one peer's gossip, for its other cores and the daemon."""

    members: MembershipCore
    state: StateCore
    leader: LeaderCore

    @property
    def view(self) -> StateView:
        return self.state.view

    def leader_of(self, region: str | None = None) -> str | None:
        return self.leader.leader_of(region)


def build_gossip_node(
    identity: Identity,
    *,
    rng: random.Random,
    region: str,
    config: GossipConfig | None = None,
    lat: float = 0.0,
    lon: float = 0.0,
    addr: str = "",
    seeds: Sequence[str] = (),
    sampler: Callable[[float], Mapping[str, Any]] | None = None,
    verify: Callable[[str, bytes, bytes], bool] = verify_peer,
    disk: Mapping[str, bytes] | None = None,
    bootstrap: Iterable[Member] | Mapping[str, Member] = (),
    extra_cores: Mapping[str, Any] | None = None,
) -> Node:
    """Assemble the gossip cores of one peer into a :class:`Node`.

    identity   the peer's key: its peer id, and the signer of its state.
    rng        the peer's only source of randomness (split between cores).
    region     the peer's region name (the scope of full state and leadership).
    config     knobs (defaults suit 10-10,000 sites).
    lat, lon   the site's position, degrees (published in its state).
    addr       how to dial this peer (a libp2p multiaddr; '' in the simulator).
    seeds      peer ids to join through (the daemon registers their addresses
               with its transport beforehand).
    sampler    ``sampler(now) -> readings`` (``arcnet.mesh.samplers`` or the
               simulator's energy model); None publishes defaults.
    verify     ``verify(peer_id, message, signature) -> bool``: pure, so the
               simulator may memoise it.
    disk       what this peer persisted before (incarnation, state version).
    bootstrap  member records known to be current (the simulator's
               pre-converged start; the daemon passes none and joins).
    extra_cores more cores to bundle in the same node (placement...).
    """
    cfg = config or GossipConfig()
    peer_id = identity.peer_id
    # each core gets its own generator, derived from the peer's, so adding
    # draws in one core does not shift the others' sequences
    m_rng = random.Random(rng.getrandbits(64))
    s_rng = random.Random(rng.getrandbits(64))
    members = MembershipCore(
        peer_id, rng=m_rng, config=cfg.membership, region=region, addr=addr, seeds=seeds, disk=disk, bootstrap=bootstrap
    )
    state = StateCore(
        peer_id,
        rng=s_rng,
        membership=members,
        signer=identity.sign,
        verify=verify,
        sampler=sampler,
        config=cfg.state,
        region=region,
        lat=lat,
        lon=lon,
        disk=disk,
    )
    leader = LeaderCore(peer_id, state=state, membership=members, config=cfg.leader, region=region)
    cores: dict[str, Any] = {"swim": members, "state": state, "leader": leader}
    for name, core in (extra_cores or {}).items():
        if name in cores:
            raise ValueError(f"core name {name!r} is taken by gossip")
        cores[name] = core
    node = Node(peer_id, cores)
    node.gossip = GossipHandle(members, state, leader)  # type: ignore[attr-defined]
    return node


def gossip_of(node: Node) -> GossipHandle:
    """The gossip read API of a node built by :func:`build_gossip_node`."""
    return node.gossip  # type: ignore[attr-defined, no-any-return]
