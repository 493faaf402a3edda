"""The blob store: content-addressed artifacts on disk and their transfer between peers.

* :mod:`.chunking` -- fixed chunks for weights, FastCDC for datasets and
  checkpoints, BLAKE3 chunk ids, zstd per chunk when it pays;
* :mod:`.manifest` -- signed manifests and artifact ids;
* :mod:`.store` -- the on-disk store (atomic group commits, verify on read,
  pins, quota with LRU eviction, GC, resumable partial artifacts);
* :mod:`.messages` -- wire messages (tags 0x0600-0x06FF);
* :mod:`.swarm` -- the sans-IO swarm scheduler (rarest first, endgame, bans);
* :mod:`.bulk` -- the fast data path (plain TCP, one-time tickets, sendfile);
* :mod:`.fetch` -- a trio driver running the swarm core over bulk sessions.

Submodules are imported on use: the simulator imports the swarm core
without trio or sockets.
"""
