"""A transport in its own OS process, for tests that cross a process boundary.

    python tests/transport_peer.py SEED_HEX [LIFETIME_S]

Starts a :class:`~arcnet.mesh.transport.Libp2pTransport` with the identity of
the 32-byte seed on 127.0.0.1 (port 0), prints ``LISTEN <multiaddr>`` on one
line, then:

* echoes every message frame back to its sender as ``b"echo:" + frame``
  (the sender is the authenticated peer id, not anything in the frame);
* serves ``/arcnet/req/whoami/1.0.0``: the response is the requester's peer id;
* on the frame ``b"quit"``, prints ``STATS <statistics as JSON>`` and exits 0.

It exits by itself after LIFETIME_S (default 30) so a failed test never
leaves it behind.
"""

from __future__ import annotations

import json
import sys

import trio

from arcnet.mesh.identity import Identity
from arcnet.mesh.transport import Libp2pTransport, request_protocol


async def main(seed: bytes, lifetime_s: float) -> int:
    transport = Libp2pTransport(Identity.from_seed(seed))

    async def whoami(peer_id: str, payload: bytes) -> bytes:
        return peer_id.encode()

    transport.set_request_handler(request_protocol("whoami"), whoami)
    with trio.move_on_after(lifetime_s):
        async with trio.open_nursery() as nursery:
            await nursery.start(transport.run)
            print("LISTEN", transport.listen_addrs()[0], flush=True)
            while True:
                sender, frame = await transport.receive()
                if frame == b"quit":
                    print("STATS", json.dumps(transport.statistics()), flush=True)
                    nursery.cancel_scope.cancel()
                    return 0
                transport.send_nowait(sender, b"echo:" + frame)
    print("lifetime over", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(trio.run(main, bytes.fromhex(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 30.0))
