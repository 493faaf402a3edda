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
fingerprint, and ``trace_path`` writes the lines themselves (``.gz`` paths
are written gzip-compressed). Lines are hashed and written in batches: the
hash of a concatenation does not depend on how it was cut, so batching
changes nothing but the speed.

Faults the driver itself models (the network's faults live in the
:class:`Network`, see ``arcnet.sims.wan``; the timeline that schedules them
in ``arcnet.sims.faults``):

* **crash** -- timers and in-flight inbound messages are dropped. The disk
  (the records the peer asked to persist) survives, unless the crash also
  loses it: ``lose_disk`` wipes it (a replaced drive), ``lose_unsynced``
  rolls back the writes of the last ``unsynced_window_s`` seconds (a disk
  whose write cache acknowledged an fsync it had not done -- the storage
  fault FoundationDB's and TigerBeetle's simulators inject).
* **restart** -- a new node is built by the factory and given the old disk.
* **pause** -- the peer handles nothing until a time; what arrives waits (a
  stopped process, a long GC pause).
* **slow** -- every message and timer reaches the peer ``delay_s`` late until
  a time (a starved CPU, a swapping host).
* **clock** -- each peer may have its own clock: ``local = base_local +
  rate * (t - base_true)``, set by :meth:`Simulator.set_clock` with a step
  (offset) and a drift (ppm). The ``now`` a peer's cores see, and the times
  of the timers they set, are on that local clock; the heap stays on true
  time. A backward step makes the peer's clock go back, which the daemon's
  monotonic clock never does: use it to test code that compares times across
  peers, not one peer's own timers.

Memory per peer is a small slotted record, one ``random.Random`` (about
2.5 KiB of Mersenne-Twister state), the peer's pending timers and disk, and
a journal of its last ``unsynced_window_s`` seconds of writes; the heap holds
what is in flight. 10,000 peers of the driver alone take well under 100 MiB.

Knowingly left out: message processing time (a handler runs in zero virtual
time), disk latency, and corruption of synced data.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import io
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

from arcnet.mesh.core import CancelTimer, Emit, Persist, Send, SetTimer
from arcnet.mesh.node import Node, UnknownProtocol
from arcnet.mesh.wire import Codec, WireError

__all__ = ["Network", "SimPeer", "SimpleNetwork", "Simulator", "derive_seed"]

# heap entry kinds; the *_LATE twins were already deferred once for a slow peer
# (ordered so the loop tests ranges: deliveries are the commonest event, then timers)
_DELIVER, _DELIVER_LATE, _TIMER, _TIMER_LATE, _CALL = 0, 1, 2, 3, 4
assert (_DELIVER, _DELIVER_LATE, _TIMER, _TIMER_LATE) == (0, 1, 2, 3)  # the run loop tests these as literals

_heappush = heapq.heappush

TRACE_BATCH_LINES = 4096  # lines buffered before hashing/writing (memory: ~200 KiB)
REPR_CACHE_MAX = 4096  # distinct timer names whose trace text is memoised


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


@dataclass(slots=True)
class SimPeer:
    peer_id: str
    index: int
    node: Node | None
    factory: Callable[["SimPeer"], Node]
    disk: dict[str, bytes] = field(default_factory=dict)
    # timer name -> due time on the true clock, or (true, local) when the two differ
    timers: dict[Hashable, Any] = field(default_factory=dict)
    generation: int = 0  # bumped on crash: stale heap entries are skipped
    alive: bool = True
    paused_until: float = 0.0  # a paused (starved) peer handles nothing before this time
    rng: random.Random | None = None
    slow_s: float = 0.0  # while slow, every message and timer reaches the peer this late
    slow_until: float = 0.0
    # local clock: None is the true clock; else (base_true, base_local, rate)
    clock: tuple[float, float, float] | None = None
    # (true time, key, previous value or None) of recent writes, for lose_unsynced
    journal: deque | None = None
    crashes: int = 0
    restarts: int = 0
    bytes_sent: int = 0
    messages_sent: int = 0
    meta: dict[str, Any] | None = None  # free slot for the builder (site, region...)

    def local_time(self, t: float) -> float:
        """The peer's clock reading at true time ``t``."""
        c = self.clock
        if c is None:
            return t
        return c[1] + c[2] * (t - c[0])

    def true_time(self, local: float) -> float:
        """The true time at which the peer's clock reads ``local``."""
        c = self.clock
        if c is None:
            return local
        return c[0] + (local - c[1]) / c[2]


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
        unsynced_window_s: float = 1.0,
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
        self._trace_buf: list[str] = []
        self._trace_file: Any = None
        if trace_path:
            if str(trace_path).endswith(".gz"):
                raw = gzip.open(trace_path, "wb", compresslevel=1)
                self._trace_file = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")  # type: ignore[arg-type]
            else:
                self._trace_file = open(trace_path, "w", encoding="utf-8", newline="\n")
        self.on_effect = on_effect
        # called with (now, peer_id, emit) for every Emit: cheaper than on_effect for checkers and reports
        self.on_emit: Callable[[float, str, Emit], None] | None = None
        self.invariants: list[Callable[["Simulator"], None]] = []
        self.events: list[tuple[float, str, Emit]] = []  # Emit effects, if keep_events
        self.keep_events = False
        # How far back a lose_unsynced crash rolls the disk (seconds); 0 keeps no journal.
        self.unsynced_window_s = unsynced_window_s
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
            "timers_fired": 0,
            "deferred_paused": 0,
            "deferred_slow": 0,
            "writes_lost": 0,
        }
        self._repr_cache: dict[Any, str] = {}
        self._messages_lost = 0
        self._message_bytes_max = 0
        self._stopped = False

    # -- building --------------------------------------------------------

    def peer_rng(self, peer_id: str) -> random.Random:
        return self.peers[peer_id].rng  # type: ignore[return-value]

    def add_peer(self, peer_id: str, factory: Callable[[SimPeer], Node], *, start_at: float | None = None) -> SimPeer:
        """Register a peer; ``factory(simpeer)`` builds its node (again after each restart)."""
        if peer_id in self.peers:
            raise ValueError(f"duplicate peer {peer_id}")
        idx = len(self.order)
        # not alive until it boots: frames that reach it earlier are dropped, as by a host not yet up
        p = SimPeer(peer_id, idx, None, factory, alive=False, rng=random.Random(derive_seed(self.seed, "peer", idx)))
        self.peers[peer_id] = p
        self.order.append(peer_id)
        self.call_at(self.now if start_at is None else start_at, lambda: self._first_boot(p), f"boot {peer_id[-6:]}")
        return p

    def _first_boot(self, p: SimPeer) -> None:
        if p.node is None and p.crashes == 0 and p.restarts == 0:
            self._boot(p)

    def _boot(self, p: SimPeer) -> None:
        p.alive = True
        p.timers.clear()
        p.node = p.factory(p)
        self._apply(p, p.node.start(p.local_time(self.now)))

    # -- scheduling ------------------------------------------------------

    def call_at(self, at: float, fn: Callable[[], None], label: str = "call") -> None:
        """Run ``fn()`` at virtual time ``at`` (faults, workload, probes)."""
        self._push(at, _CALL, fn, label, None, 0)

    def _push(self, at: float, kind: int, a: Any, b: Any, c: Any, gen: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, a, b, c, gen))

    def pending_events(self) -> int:
        """Entries in the event heap (including stale ones not yet skipped)."""
        return len(self._heap)

    def stop(self) -> None:
        """Make :meth:`run` return after the current event (the clock stays where it is)."""
        self._stopped = True

    def deliver_event(self, peer_id: str, event: Emit) -> bool:
        """Hand an outside event (a client request, a job submission) to a peer's node now.

        Returns False if the peer is down. The node's effects are performed
        like any other (sends, timers, persists, emits).
        """
        p = self.peers[peer_id]
        if not p.alive or p.node is None:
            return False
        self._trace(f"event {peer_id[-6:]} {event.kind}")
        self._apply(p, p.node.on_event(p.local_time(self.now), event))
        return True

    # -- faults ----------------------------------------------------------

    def crash(self, peer_id: str, *, lose_disk: bool = False, lose_unsynced: bool = False) -> None:
        """Stop a peer: drop its timers and inbound messages; optionally lose (part of) its disk."""
        p = self.peers[peer_id]
        if not p.alive:
            return
        p.alive = False
        p.node = None
        p.generation += 1
        p.crashes += 1
        p.timers.clear()
        lost = 0
        if lose_disk:
            lost = len(p.disk)
            p.disk.clear()
        elif lose_unsynced and p.journal:
            horizon = self.now - self.unsynced_window_s
            j = p.journal
            while j and j[-1][0] > horizon:  # undo newest first
                _, key, old = j.pop()
                lost += 1
                if old is None:
                    p.disk.pop(key, None)
                else:
                    p.disk[key] = old
        if p.journal is not None:
            p.journal.clear()
        self.counters["writes_lost"] += lost
        self._trace(f"crash {peer_id[-6:]} lose_disk={lose_disk} lose_unsynced={lose_unsynced} lost={lost}")

    def restart(self, peer_id: str) -> None:
        p = self.peers[peer_id]
        if p.alive:
            return
        p.generation += 1
        p.restarts += 1
        self._trace(f"restart {peer_id[-6:]}")
        self._boot(p)

    def pause(self, peer_id: str, until: float) -> None:
        """The peer handles nothing until ``until``; what arrives meanwhile waits (a starved process)."""
        self.peers[peer_id].paused_until = max(self.peers[peer_id].paused_until, until)
        self._trace(f"pause {peer_id[-6:]} until {until:.3f}")

    def slow(self, peer_id: str, delay_s: float, until: float) -> None:
        """Until ``until``, every message and timer reaches the peer ``delay_s`` late."""
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        p = self.peers[peer_id]
        p.slow_s = delay_s
        p.slow_until = until
        self._trace(f"slow {peer_id[-6:]} {delay_s:.3f}s until {until:.3f}")

    def set_clock(self, peer_id: str, *, step_s: float = 0.0, drift_ppm: float = 0.0) -> None:
        """From now on the peer's clock is ``step_s`` ahead of where it was and runs ``drift_ppm`` fast.

        The peer's pending timers keep their local deadlines, so they move on
        the true clock (a timer due in 10 s of local time on a clock running
        fast fires sooner in true time).
        """
        rate = 1.0 + drift_ppm * 1e-6
        if not rate > 0.0:
            raise ValueError("drift_ppm must be > -1e6")
        p = self.peers[peer_id]
        now = self.now
        old_local_now = p.local_time(now)
        p.clock = None if (step_s == 0.0 and drift_ppm == 0.0 and p.clock is None) else (now, old_local_now + step_s, rate)
        self._trace(f"clock {peer_id[-6:]} step={step_s:.6f} drift_ppm={drift_ppm:.3f}")
        if not p.alive or not p.timers:
            return
        gen = p.generation
        for timer, due in list(p.timers.items()):  # dict order: insertion order
            local_at = due[1] if type(due) is tuple else due
            true_at = max(now, p.true_time(local_at))
            entry = (true_at, local_at)
            p.timers[timer] = entry
            self._push(true_at, _TIMER, peer_id, timer, entry, gen)

    # -- running ---------------------------------------------------------

    def run(
        self,
        until: float,
        *,
        progress: Callable[[float], None] | None = None,
        progress_interval_s: float = 60.0,
    ) -> None:
        """Process every event due at or before ``until`` (virtual seconds)."""
        heap = self._heap
        pop = heapq.heappop
        push = heapq.heappush
        peers = self.peers
        invariants = self.invariants
        tb = self._trace_buf
        tb_append = tb.append
        rc = self._repr_cache
        counters = self.counters
        events = 0
        timers_fired = 0
        delivered = 0
        decode_errors = 0
        unrouted = 0
        decode = self.codec.decode
        apply = self._apply
        next_progress = self.now + progress_interval_s
        batch_lines = TRACE_BATCH_LINES
        self._stopped = False
        try:
            while heap and heap[0][0] <= until:
                at, _, kind, a, b, c, gen = pop(heap)
                self.now = at
                events += 1
                if kind <= 1:  # _DELIVER, _DELIVER_LATE (literals: no global lookups in the hot loop)
                    p = peers[a]
                    if gen != p.generation or not p.alive:
                        continue
                    if p.paused_until > at:
                        self._seq += 1
                        push(heap, (p.paused_until, self._seq, kind, a, b, c, gen))
                        counters["deferred_paused"] += 1
                        continue
                    if p.slow_until > at and kind == 0 and p.slow_s > 0.0:  # 0: _DELIVER
                        self._seq += 1
                        push(heap, (at + p.slow_s, self._seq, _DELIVER_LATE, a, b, c, gen))
                        counters["deferred_slow"] += 1
                        continue
                    try:
                        msg = decode(c)
                    except WireError:
                        decode_errors += 1
                        continue
                    delivered += 1
                    tb_append("%.6f M %d %s\n" % (at, p.index, type(msg).__name__))  # %-format: ~25% faster than an f-string
                    ck = p.clock
                    try:
                        effects = p.node.on_message(at if ck is None else ck[1] + ck[2] * (at - ck[0]), b, msg)  # type: ignore[union-attr]
                    except UnknownProtocol:
                        unrouted += 1
                        continue
                    apply(p, effects)
                elif kind <= 3:  # _TIMER, _TIMER_LATE
                    p = peers[a]
                    if gen != p.generation or not p.alive or p.timers.get(b) != c:
                        continue
                    if p.paused_until > at:
                        due = p.paused_until if p.clock is None and type(c) is not tuple else (
                            p.paused_until,
                            c[1] if type(c) is tuple else c,
                        )
                        p.timers[b] = due
                        self._seq += 1
                        push(heap, (p.paused_until, self._seq, kind, a, b, due, gen))
                        counters["deferred_paused"] += 1
                        continue
                    if p.slow_until > at and kind == 2 and p.slow_s > 0.0:  # 2: _TIMER
                        later = at + p.slow_s
                        due = (later, c[1] if type(c) is tuple else c)
                        p.timers[b] = due
                        self._seq += 1
                        push(heap, (later, self._seq, _TIMER_LATE, a, b, due, gen))
                        counters["deferred_slow"] += 1
                        continue
                    del p.timers[b]
                    ck = p.clock
                    if ck is None:
                        now_local = at
                    else:
                        now_local = ck[1] + ck[2] * (at - ck[0])
                    if type(c) is tuple and c[1] > now_local:
                        now_local = c[1]  # never fire before the local deadline (float round trip)
                    timers_fired += 1
                    text = rc.get(b)
                    if text is None:
                        text = repr(b)
                        if len(rc) >= REPR_CACHE_MAX:
                            rc.clear()
                        rc[b] = text
                    tb_append("%.6f T %d %s\n" % (at, p.index, text))
                    node = p.node
                    apply(p, node.on_timer(now_local, b))  # type: ignore[union-attr]
                    # Ask for the next deadline as the daemon does after every step: cores' Timers
                    # drop the stale entries of fired and moved timers only then, and a simulator
                    # that never asked would let those heaps grow for the whole run.
                    if p.node is node:
                        node.next_deadline()  # type: ignore[union-attr]
                else:
                    self._trace(f"call {b}")
                    a()
                if len(tb) >= batch_lines:
                    self._flush_trace()
                if invariants:
                    for check in invariants:
                        check(self)
                if progress is not None and at >= next_progress:
                    progress(at)
                    next_progress = at + progress_interval_s
                if self._stopped:
                    break
        finally:
            counters["events"] += events
            counters["timers_fired"] += timers_fired
            counters["messages_delivered"] += delivered
            counters["decode_errors"] += decode_errors
            counters["unrouted"] += unrouted
            self._sync_counters()
        if not self._stopped:
            self.now = max(self.now, until)

    def _apply(self, p: SimPeer, effects: list) -> None:
        if not effects:
            return
        now = self.now
        on_effect = self.on_effect
        heap = self._heap
        push = _heappush
        last_msg: Any = None  # one message sent to many peers (an eager push) is encoded once
        data = b""
        for e in effects:
            t = type(e)
            if t is Send:
                msg = e.msg
                if msg is not last_msg:
                    try:
                        data = self.codec.encode(msg)
                    except WireError:
                        self.counters["encode_errors"] += 1
                        raise
                    last_msg = msg
                n = len(data)
                p.messages_sent += 1
                p.bytes_sent += n
                if n > self._message_bytes_max:
                    self._message_bytes_max = n
                to = e.to
                dst = self.peers.get(to)
                if dst is None:
                    self._messages_lost += 1
                else:
                    times = self.network.transmit(now, p.peer_id, to, n)
                    if type(times) is not tuple and type(times) is not list:
                        times = tuple(times)  # any iterable (a generator) is allowed
                    if times:
                        gen = dst.generation
                        src = p.peer_id
                        for at in times:
                            self._seq += 1
                            push(heap, (at, self._seq, _DELIVER, to, src, data, gen))
                    else:
                        self._messages_lost += 1
            elif t is SetTimer:
                if p.clock is None:
                    due: Any = e.at
                    at = e.at
                else:
                    at = p.true_time(e.at)
                    if at < now:
                        at = now
                    due = (at, e.at)
                p.timers[e.timer] = due
                self._seq += 1
                push(heap, (at, self._seq, _TIMER, p.peer_id, e.timer, due, p.generation))
            elif t is CancelTimer:
                p.timers.pop(e.timer, None)
            elif t is Persist:
                window = self.unsynced_window_s
                if window > 0.0:
                    j = p.journal
                    if j is None:
                        j = p.journal = deque()
                    j.append((now, e.key, p.disk.get(e.key)))
                    horizon = now - window
                    while j[0][0] < horizon:
                        j.popleft()
                if e.value is None:
                    p.disk.pop(e.key, None)
                else:
                    p.disk[e.key] = e.value
            elif t is Emit:
                self._trace_buf.append("%.6f E %d %s\n" % (now, p.index, e.kind))
                if self.keep_events:
                    self.events.append((now, p.peer_id, e))
                if self.on_emit is not None:
                    self.on_emit(now, p.peer_id, e)
            if on_effect is not None:
                on_effect(now, p.peer_id, e)

    @property
    def bytes_sent_by_peer(self) -> dict[str, int]:
        """Bytes each peer has sent (encoded frames), in peer insertion order."""
        return {pid: self.peers[pid].bytes_sent for pid in self.order}

    # -- trace -----------------------------------------------------------

    def _trace_fast(self, at: float, kind: str, index: int, detail: Any) -> None:
        self._trace_buf.append(f"{at:.6f} {kind} {index} {detail}\n")

    def _trace(self, text: str) -> None:
        self._trace_buf.append(f"{self.now:.6f} C -1 {text}\n")

    def trace_note(self, text: str) -> None:
        """Add a line to the trace (and the hash): fault and workload drivers say what they did."""
        self._trace(text)

    def _flush_trace(self) -> None:
        buf = self._trace_buf
        if not buf:
            return
        chunk = "".join(buf)
        buf.clear()
        self._hash.update(chunk.encode())
        if self._trace_file is not None:
            self._trace_file.write(chunk)

    @property
    def trace_hash(self) -> str:
        self._flush_trace()
        return self._hash.hexdigest()

    def close(self) -> None:
        self._flush_trace()
        if self._trace_file is not None:
            self._trace_file.close()
            self._trace_file = None

    def _sync_counters(self) -> None:
        """Fold the per-peer send counters (kept on each peer: cheaper in the hot path) into ``counters``."""
        c = self.counters
        peers = self.peers
        c["messages_sent"] = sum(peers[pid].messages_sent for pid in self.order)
        c["bytes_sent"] = sum(peers[pid].bytes_sent for pid in self.order)
        c["messages_lost"] = self._messages_lost
        c["message_bytes_max"] = self._message_bytes_max

    def statistics(self) -> dict[str, float]:
        self._sync_counters()
        s = dict(self.counters)
        s.update({f"net.{k}": v for k, v in self.network.statistics().items()})
        s["now"] = self.now
        s["heap_entries"] = len(self._heap)
        s["peers_alive"] = sum(1 for pid in self.order if self.peers[pid].alive)
        return s
