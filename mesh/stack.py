"""What a daemon peer runs: the node factory that assembles this peer's cores.

The same cores run in the simulator (``arcnet.sims``) with other wiring; this
is the daemon's wiring: it takes the :class:`~arcnet.mesh.peer.PeerContext`
(identity, config, persisted records, address, bootstrap peers) and returns
a :class:`~arcnet.mesh.node.Node`.
"""

from __future__ import annotations

from .node import Node
from .peer import PeerContext

__all__ = ["build_node"]


def build_node(ctx: PeerContext) -> Node:
    cores: dict = {}
    return Node(ctx.identity.peer_id, cores)
