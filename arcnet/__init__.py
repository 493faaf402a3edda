"""ARCNet mesh: one compute fabric from many modular AI data-center sites.

Every site runs the same peer (``arcnet-peer``). Peers gossip health, energy
and cache contents, elect regional leaders from converged CRDT state, place
work by rendezvous hashing plus local bidding, move content-addressed
artifacts peer to peer, run models through ONNX Runtime, and keep a signed
audit log. See ``ARCHITECTURE.md`` in the docs for the design.

This module is only the package face: the version and a few public names.
Subsystems live in ``arcnet.mesh``, ``arcnet.gossip``, ``arcnet.placement``,
``arcnet.blobstore``, ``arcnet.runtime``, ``arcnet.native``, ``arcnet.audit``,
``arcnet.cli`` and ``arcnet.sims``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
