"""Gossip: membership and failure detection, signed state, regional leaders (all sans-IO).

* :mod:`.membership` -- SWIM with Lifeguard's refinements: who is alive,
  their addresses and regions (global: every peer knows every member).
* :mod:`.state` -- each peer's signed, versioned key-value state (health,
  energy, cache, capabilities...), full within a region, summarised across
  regions; scuttlebutt anti-entropy plus an acked eager push.
* :mod:`.leader` -- the leader of a region as a pure function of converged
  state, with epochs and a switching margin.
* :mod:`.stack` -- ``build_gossip_node``: the three cores of one peer in a
  :class:`~arcnet.mesh.node.Node`, for the daemon and the simulator alike.

Message tags 0x0300-0x03FF belong to this package.
"""
