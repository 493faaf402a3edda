"""Discrete-event driver: thousands of peers' real cores in one process, on virtual time.

The event queue is a heap keyed by ``(time, seq)``; ``seq`` is a counter, so
ties break by insertion order and never by hash or ``id()``. Every run is a
pure function of its seed: the network draws latency and loss from its own
``random.Random``, each peer's cores get a ``random.Random`` derived from the
seed and the peer's index, and nothing iterates a set or a dict whose order
depends on ``PYTHONHASHSEED``.

Messages cross the simulated network as bytes: every ``Send`` is encoded
with the real codec (so the size limit holds here too), and decoded at the
receiver. The trace is a running SHA-256 over one line per event
(time, kind, peer, detail); :attr:`Simulator.trace_hash` is the run's
fingerprint, and ``trace_path`` writes the lines themselves.

Peers can crash (their timers and in-flight inbound messages are dropped,
their disk -- the records they asked to persist -- survives) and restart
(a new node is built by the factory, given the old disk).

The network model is pluggable (:class:`Network`): ``transmit`` returns the
delivery times for one frame (none if lost, two if duplicated). The default
is a fixed one-way latency with seeded jitter and loss; ``arcnet.sims.wan``
provides the geographic WAN model.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

from arcnet.mesh.core import CancelTimer, Emit, Persist, Send, SetTimer
from arcnet.mesh.node import Node, UnknownProtocol
from arcnet.mesh.wire import Codec, WireError

__all__ = ["Network", "SimpleNetwork", "Simulator", "derive_seed"]

_DELIVER, _TIMER, _CALL = 0, 1, 2


def derive_seed(seed: int, *parts: Any) -> int:
    """A 64-bit seed derived from ``seed`` and labels, independent of PYTHONHASHSEED."""
    h = hashlib.blake2b(repr((seed,) + parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


class Network:
    """How frames travel between peers. Override :meth:`transmit`."""

    def transmit(self, now: float, src: str, dst: str, nbytes: int) -> Iterable[float]:
        raise NotImplementedError

    def statistics(self) -> dict[str, float]:
        return {}


class SimpleNetwork(Network):
    """Fixed one-way latency plus uniform jitter, independent loss, and cut links.

    ``blocked`` holds directed (src, dst) pairs that drop everything (a
    partition is the set of pairs across it; an asymmetric one lists only
    one direction).
    """

    def __init__(self, rng: random.Random, latency_s: float = 0.02, jitter_s: float = 0.005, loss: float = 0.0):
        self.rng = rng
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.loss = loss
        self.blocked: set[tuple[str, str]] = set()
        self.isolated: set[str] = set()
        self.dropped = 0

    def transmit(self, now: float, src: str, dst: str, nbytes: int) -> Iterable[float]:
        if src in self.isolated or dst in self.isolated or (src, dst) in self.blocked:
            self.dropped += 1
            return ()
        r = self.rng.random
        if self.loss and r() < self.loss:
            self.dropped += 1
            return ()
        return (now + self.latency_s + self.jitter_s * r(),)

    def statistics(self) -> dict[str, float]:
        return {"dropped": self.dropped}


@dataclass
class SimPeer:
    peer_id: str
    index: int
    node: Node | None
    factory: Callable[["SimPeer"], Node]
    disk: dict[str, bytes] = field(default_factory=dict)
    timers: dict[Hashable, float] = field(default_factory=dict)
    generation: int = 0  # bumped on crash: stale heap entries are skipped
    alive: bool = True
    paused_until: float = 0.0  # a paused (starved) peer handles nothing before this time
    rng: random.Random | None = None


class Simulator:
    """Runs nodes on virtual time. Build, :meth:`add_peer` N times, :meth:`run`."""

    def __init__(
        self,
        seed: int,
        network: Network | None = None,
        *,
        codec: Codec | None = None,
        trace_path: str | None = None,
        on_effect: Callable[[float, str, Any], None] | None = None,
    ):
        self.seed = seed
        self.rng = random.Random(derive_seed(seed, "sim"))
        self.network = network if network is not None else SimpleNetwork(random.Random(derive_seed(seed, "net")))
        self.codec = codec or Codec()
        self.now = 0.0
        self.peers: dict[str, SimPeer] = {}
        self.order: list[str] = []  # peer ids in insertion order (never iterate a set)
        self._heap: list[tuple[float, int, int, Any, Any, Any, int]] = []
        self._seq = 0
        self._hash = hashlib.sha256()
        self._trace_file = open(trace_path, "w") if trace_path else None
        self.on_effect = on_effect
        self.invariants: list[Callable[["Simulator"], None]] = []
        self.events: list[tuple[float, str, Emit]] = []  # Emit effects, if keep_events
        self.keep_events = False
        self.counters = {
            "events": 0,
            "messages_sent": 0,
            "messages_delivered": 0,
            "messages_lost": 0,
            "bytes_sent": 0,
            "message_bytes_max": 0,
            "decode_errors": 0,
            "encode_errors": 0,
            "unrouted": 0,
        }
        self.bytes_sent_by_peer: dict[str, int] = {}

    # -- building --------------------------------------------------------

    def peer_rng(self, peer_id: str) -> random.Random:
        return self.peers[peer_id].rng  # type: ignore[return-value]

    def add_peer(self, peer_id: str, factory: Callable[[SimPeer], Node], *, start_at: float | None = None) -> SimPeer:
        """Register a peer; ``factory(simpeer)`` builds its node (again after each restart)."""
        if peer_id in self.peers:
            raise ValueError(f"duplicate peer {peer_id}")
        idx = len(self.order)
        p = SimPeer(peer_id, idx, None, factory, rng=random.Random(derive_seed(self.seed, "peer", idx)))
        self.peers[peer_id] = p
        self.order.append(peer_id)
        self.bytes_sent_by_peer[peer_id] = 0
        self.call_at(self.now if start_at is None else start_at, lambda: self._boot(p), f"boot {peer_id[-6:]}")
        return p

    def _boot(self, p: SimPeer) -> None:
        p.alive = True
        p.timers.clear()
        p.node = p.factory(p)
        self._apply(p, p.node.start(self.now))

    # -- scheduling ------------------------------------------------------

    def call_at(self, at: float, fn: Callable[[], None], label: str = "call") -> None:
        """Run ``fn()`` at virtual time ``at`` (faults, workload, probes)."""
        self._push(at, _CALL, fn, label, None, 0)

    def _push(self, at: float, kind: int, a: Any, b: Any, c: Any, gen: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, a, b, c, gen))

    # -- faults ----------------------------------------------------------

    def crash(self, peer_id: str, *, lose_disk: bool = False) -> None:
        p = self.peers[peer_id]
        if not p.alive:
            return
        p.alive = False
        p.node = None
        p.generation += 1
        p.timers.clear()
        if lose_disk:
            p.disk.clear()
        self._trace(f"crash {peer_id[-6:]} lose_disk={lose_disk}")

    def restart(self, peer_id: str) -> None:
        p = self.peers[peer_id]
        if p.alive:
            return
        p.generation += 1
        self._trace(f"restart {peer_id[-6:]}")
        self._boot(p)

    def pause(self, peer_id: str, until: float) -> None:
        """The peer handles nothing until ``until``; what arrives meanwhile waits (a starved process)."""
        self.peers[peer_id].paused_until = max(self.peers[peer_id].paused_until, until)
        self._trace(f"pause {peer_id[-6:]} until {until:.3f}")

    # -- running ---------------------------------------------------------

    def run(self, until: float, *, progress: Callable[[float], None] | None = None) -> None:
        heap = self._heap
        pop = heapq.heappop
        counters = self.counters
        next_progress = self.now + 60.0
        while heap and heap[0][0] <= until:
            at, _, kind, a, b, c, gen = pop(heap)
            self.now = at
            counters["events"] += 1
            if kind == _DELIVER:
                p = self.peers[a]
                if not p.alive or gen != p.generation:
                    continue
                if p.paused_until > at:
                    self._push(p.paused_until, kind, a, b, c, gen)
                    continue
                self._deliver(p, b, c)
            elif kind == _TIMER:
                p = self.peers[a]
                if not p.alive or gen != p.generation or p.timers.get(b) != c:
                    continue
                if p.paused_until > at:
                    p.timers[b] = p.paused_until
                    self._push(p.paused_until, _TIMER, a, b, p.paused_until, gen)
                    continue
                del p.timers[b]
                self._trace_fast(at, "T", p.index, b)
                self._apply(p, p.node.on_timer(at, b))  # type: ignore[union-attr]
            else:
                self._trace(f"call {b}")
                a()
            for check in self.invariants:
                check(self)
            if progress is not None and at >= next_progress:
                progress(at)
                next_progress = at + 60.0
        self.now = max(self.now, until)

    def _deliver(self, p: SimPeer, sender: str, data: bytes) -> None:
        try:
            msg = self.codec.decode(data)
        except WireError:
            self.counters["decode_errors"] += 1
            return
        self.counters["messages_delivered"] += 1
        self._trace_fast(self.now, "M", p.index, type(msg).__name__)
        try:
            effects = p.node.on_message(self.now, sender, msg)  # type: ignore[union-attr]
        except UnknownProtocol:
            self.counters["unrouted"] += 1
            return
        self._apply(p, effects)

    def _apply(self, p: SimPeer, effects: list) -> None:
        now = self.now
        for e in effects:
            t = type(e)
            if t is Send:
                try:
                    data = self.codec.encode(e.msg)
                except WireError:
                    self.counters["encode_errors"] += 1
                    raise
                n = len(data)
                c = self.counters
                c["messages_sent"] += 1
                c["bytes_sent"] += n
                if n > c["message_bytes_max"]:
                    c["message_bytes_max"] = n
                self.bytes_sent_by_peer[p.peer_id] += n
                dst = self.peers.get(e.to)
                if dst is None:
                    c["messages_lost"] += 1
                    continue
                times = self.network.transmit(now, p.peer_id, e.to, n)
                delivered = False
                for at in times:
                    delivered = True
                    self._push(at, _DELIVER, e.to, p.peer_id, data, dst.generation)
                if not delivered:
                    c["messages_lost"] += 1
            elif t is SetTimer:
                p.timers[e.timer] = e.at
                self._push(e.at, _TIMER, p.peer_id, e.timer, e.at, p.generation)
            elif t is CancelTimer:
                p.timers.pop(e.timer, None)
            elif t is Persist:
                if e.value is None:
                    p.disk.pop(e.key, None)
                else:
                    p.disk[e.key] = e.value
            elif t is Emit:
                self._trace_fast(now, "E", p.index, e.kind)
                if self.keep_events:
                    self.events.append((now, p.peer_id, e))
            if self.on_effect is not None:
                self.on_effect(now, p.peer_id, e)

    # -- trace -----------------------------------------------------------

    def _trace_fast(self, at: float, kind: str, index: int, detail: Any) -> None:
        line = f"{at:.6f} {kind} {index} {detail}\n"
        self._hash.update(line.encode())
        if self._trace_file is not None:
            self._trace_file.write(line)

    def _trace(self, text: str) -> None:
        self._trace_fast(self.now, "C", -1, text)

    @property
    def trace_hash(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._trace_file is not None:
            self._trace_file.close()
            self._trace_file = None

    def statistics(self) -> dict[str, float]:
        s = dict(self.counters)
        s.update({f"net.{k}": v for k, v in self.network.statistics().items()})
        s["now"] = self.now
        return s
