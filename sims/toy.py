"""A toy core for exercising the simulator when the real protocol cores are not wanted.

Not a protocol: every ``interval_s`` each peer samples its energy reading,
sends a ping carrying its battery state of charge to one random peer, and
answers pings with acks. It gives the driver a realistic event mix (timers,
small messages both ways, persisted counters, sampler calls) at a known
rate -- about 3 events per peer per interval -- so engine and scenario
machinery can be tested and benchmarked on their own. Anything measured with
it is labelled "toy core".

State per peer is O(1): the peer list is shared by every core.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Hashable, Sequence

from arcnet.mesh.core import Persist, Send, Timers
from arcnet.mesh.node import Node
from arcnet.mesh.wire import U32, Float, Message

__all__ = ["ToyAck", "ToyCore", "ToyPing", "toy_factory"]


class ToyPing(Message, tag=0x7C01, protocol="simtoy"):
    seq = U32
    soc = Float(0.0, 1.0)


class ToyAck(Message, tag=0x7C02, protocol="simtoy"):
    seq = U32


class ToyCore:
    PERSIST_EVERY = 10  # ticks between persisted counters

    def __init__(self, me: str, peers: Sequence[str], rng: random.Random, disk: dict[str, bytes],
                 sampler: Callable[[float], dict] | None = None, interval_s: float = 1.0):
        assert interval_s > 0
        self.me = me
        self.peers = peers
        self.rng = rng
        self.sampler = sampler
        self.interval_s = interval_s
        self.t = Timers()
        self.seq = int(disk.get("seq", b"0"))
        self.acks = 0
        self.pings = 0
        self.soc = 0.0

    def start(self, now: float) -> list:
        return [self.t.set("tick", now + self.interval_s * self.rng.random())]

    def on_timer(self, now: float, timer: Hashable) -> list:
        if not self.t.fire(timer):
            return []
        self.seq = (self.seq + 1) & 0xFFFF_FFFF
        if self.sampler is not None:
            self.soc = min(1.0, max(0.0, float(self.sampler(now).get("battery_soc_fraction", 0.0))))
        out: list[Any] = []
        if self.seq % self.PERSIST_EVERY == 0:
            out.append(Persist("seq", str(self.seq).encode()))
        peers = self.peers
        if len(peers) > 1:
            target = peers[self.rng.randrange(len(peers))]
            if target != self.me:
                out.append(Send(target, ToyPing(self.seq, self.soc)))
        out.append(self.t.set("tick", now + self.interval_s))
        return out

    def on_message(self, now: float, sender: str, msg: Message) -> list:
        if type(msg) is ToyPing:
            self.pings += 1
            return [Send(sender, ToyAck(msg.seq))]
        self.acks += 1
        return []

    def next_deadline(self) -> float | None:
        return self.t.next_deadline()

    def statistics(self) -> dict[str, float]:
        return {"acks": self.acks, "pings": self.pings, "seq": self.seq}


def toy_factory(ctx: Any) -> Node:
    """Node factory for the scenario runner: one :class:`ToyCore` (``[peer.options] interval_s``)."""
    interval_s = float(ctx.options.get("interval_s", 1.0))
    core = ToyCore(ctx.peer_id, ctx.all_peers, ctx.rng, ctx.disk, ctx.sampler, interval_s)
    return Node(ctx.peer_id, {"simtoy": core})
