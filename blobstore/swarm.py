"""Swarm fetch scheduling, sans-IO: which chunk to ask of which holder, and when.

One :class:`SwarmFetch` per artifact being fetched. It is told the signed
manifest, the chunks already here, and the holders (peer -> which chunks
they hold: from gossiped cache contents, the artifact's holder directory,
or their ``ChunkHave`` messages), and it returns effects, as every core
does (:mod:`arcnet.mesh.core`)::

    fx = fetch.start(now)
    fx = fetch.on_message(now, sender, msg)   # ChunkHave / ChunkData / ChunkMissing
    fx = fetch.on_timer(now, timer)           # request timeouts
    fetch.next_deadline()

The policy is BitTorrent's (Cohen, "Incentives build robustness in
BitTorrent", 2003), without tit-for-tat (peers of one mesh cooperate):

* **Parallel, bounded.** Requests go to every holder at once, at most
  ``inflight_per_holder_max`` outstanding per holder and ``inflight_max``
  in all, one chunk per request; a holder that answers faster frees its
  slots sooner and so serves more.
* **Rarest first.** Among the chunks a holder can serve, the one held by the
  fewest live holders goes first, ties broken by a random permutation drawn
  once from the injected ``random.Random`` (so fetchers spread over chunks,
  and a run is reproducible from its seed).
* **Partial holders** serve what their bitmap says; ``ChunkMissing`` clears a
  bit, ``ChunkHave`` sets bits as they gain chunks.
* **Timeouts re-issue elsewhere.** A request unanswered after
  ``request_timeout_s`` goes back to the queue and avoids that holder while
  another holds the chunk; ``timeouts_drop`` consecutive timeouts drop the
  holder. A holder that *keeps answering* (something from it arrived in the
  last ``request_timeout_s``) is not timed out: its requests wait, up to
  ``request_age_max_s`` each. A holder answers a session's requests in
  order, so a late answer there means a queue -- at the holder, or, with a
  busy fetcher, in the fetcher's own unread input -- not a dead holder; a
  re-issued request there would only have the chunk sent twice (the first
  copy, arriving after the timeout, is ignored as unsolicited), and with the
  origin as holder the seed's upload grows (tests/test_blobstore_swarm.py,
  busy fetchers).
* **Origins last.** A holder that joined complete (``add_holder`` without a
  bitmap: the publisher, a seed; ``origin=`` overrides) is asked only for
  chunks no live partial holder has (and, when the driver set an *origin
  share* with :meth:`SwarmFetch.set_origin_share`, only for chunks in that
  share: the chunks this fetcher is the one to bring into the swarm), so
  concurrent fetchers take each chunk from the origin about once and the
  rest from each other. Should the fetcher find nothing to ask of anyone
  (no request outstanding) for ``origin_grace_s``, origins are *opened*:
  asked for anything, rarest first, for ``inflight_per_holder_max`` requests
  (then held back again: a fetcher that keeps finding nothing elsewhere asks
  origins a few chunks per grace period, not all of them). With no partial holder and no share, origins are open at once (a
  fetch from complete holders only behaves as without the rule).
* **Endgame.** When every missing chunk is already requested, idle holders
  are asked for in-flight chunks too (at most ``endgame_duplicates_max``
  extra copies of a chunk); the first good copy wins, the other requests
  are cancelled (``ChunkCancel``).
* **Verify before accept.** Every ``ChunkData`` is decoded (bounded by the
  manifest's size) and its BLAKE3 compared to the manifest's chunk id
  before anything is committed; only data for an outstanding request is
  looked at. A holder that sends ``bad_chunks_ban`` (<= 3) bad chunks is
  banned for the rest of the fetch: its requests are re-issued and its
  later data ignored. So zero corrupt bytes reach the store.

Effects beyond the core contract: :class:`CommitChunk` asks the driver to
write a verified chunk to the store (``Store.put_chunk(..., verified=True)``)
before it performs the effects that follow, like ``Persist``. Events
(``Emit``): ``swarm.progress`` per committed chunk, ``swarm.bad_chunk``,
``swarm.holder_banned``, ``swarm.holder_dropped``, ``swarm.endgame``,
``swarm.stalled`` (no live holder has a missing chunk), ``swarm.origins_open``, ``swarm.done``.

Knowingly left out: choking and upload slots (the serving side bounds its
own work), pipelining several chunks per request message, bandwidth
estimation per holder beyond the in-flight bound, and asking holders for
their bitmaps (the driver passes what gossip or the directory says).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Sequence

from arcnet.mesh.core import Emit, Send, Timers
from arcnet.mesh.wire import Message

from .chunking import ChunkCodecError, chunk_id, decode_chunk
from .manifest import ManifestError, verify_manifest
from .messages import ChunkCancel, ChunkData, ChunkHave, ChunkMissing, ChunkRequest, Manifest

__all__ = ["CommitChunk", "SwarmConfig", "SwarmFetch"]


@dataclass(frozen=True, slots=True)
class CommitChunk:
    """Write this verified chunk to the store (stored form, as received) before later effects."""

    artifact: bytes
    index: int
    chunk_id: bytes
    codec: int
    data: bytes
    size: int
    sender: str


@dataclass(frozen=True)
class SwarmConfig:
    """Knobs of one fetch; units last in the names.

    ``inflight_per_holder_max`` (4): outstanding requests per holder; with
    1 MiB chunks and 50 ms round trips, 4 keep ~80 MB/s flowing from each.
    ``inflight_max`` (64): outstanding requests in all (memory: 64 MiB of
    chunks in flight at most). ``request_timeout_s`` (10 s): a 1 MiB chunk at
    1 MB/s still arrives. ``bad_chunks_ban`` (3, at most 3): bad chunks before
    a holder is banned. ``timeouts_drop`` (3): consecutive timeouts before a
    holder is dropped. ``endgame_duplicates_max`` (2): extra copies of one
    chunk asked for in endgame. ``origin_grace_s`` (3 s; 1 s let idle fetchers
    take 2.75× the artifact from the seed on a busy host): with nothing
    outstanding for this long, origins are asked for anything (see the
    module docstring). ``request_age_max_s`` (30 s; never less than
    ``request_timeout_s``): how long a request may wait on a holder that keeps answering
    (module docstring, "Timeouts").
    """

    inflight_per_holder_max: int = 4
    inflight_max: int = 64
    request_timeout_s: float = 10.0
    bad_chunks_ban: int = 3
    timeouts_drop: int = 3
    endgame_duplicates_max: int = 2
    origin_grace_s: float = 3.0
    request_age_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.bad_chunks_ban <= 3:
            raise ValueError("bad_chunks_ban must be 1..3")
        if self.inflight_per_holder_max < 1 or self.inflight_max < 1:
            raise ValueError("in-flight bounds must be >= 1")
        if self.request_timeout_s <= 0 or self.timeouts_drop < 1 or self.endgame_duplicates_max < 0:
            raise ValueError("request_timeout_s > 0, timeouts_drop >= 1, endgame_duplicates_max >= 0")
        if self.origin_grace_s < 0:
            raise ValueError("origin_grace_s must be >= 0")
        if self.request_age_max_s < 0:
            raise ValueError("request_age_max_s must be >= 0")


@dataclass
class _Holder:
    has: bytearray  # one byte per chunk: 1 if the holder has it
    order: int  # join order: iteration and tie-breaks, never hash order
    origin: bool = False  # joined complete (a seed, the publisher): asked last
    inflight: dict[int, float] = field(default_factory=dict)  # index -> when it was asked
    heard: float | None = None  # when the last answer (data or missing) from it arrived
    avoid: set[int] = field(default_factory=set)  # chunks that timed out here
    bad: int = 0
    timeouts: int = 0
    timeouts_in_row: int = 0
    chunks: int = 0
    bytes: int = 0
    state: str = "live"  # live | banned | dropped


def _bits_to_bytes(bitmap: bytes, n: int) -> bytearray:
    """One byte per chunk (0/1) from a ChunkHave bitmap (LSB first); bits past ``n`` are ignored."""
    out = bytearray(n)
    for i in range(min(n, len(bitmap) * 8)):
        if bitmap[i >> 3] >> (i & 7) & 1:
            out[i] = 1
    return out


class SwarmFetch:
    """The fetch of one artifact from many holders (see the module docstring)."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        rng: random.Random,
        have: Iterable[int] = (),
        config: SwarmConfig | None = None,
        artifact_id: bytes | None = None,
    ):
        try:
            self.artifact = verify_manifest(manifest, artifact_id)
        except ManifestError as exc:
            raise ValueError(str(exc)) from None
        self._aid_hex = self.artifact.hex()
        self.config = config or SwarmConfig()
        body = manifest.body
        self._refs = body.chunks
        n = self.n = len(body.chunks)
        self.total_bytes = body.total_size
        self._have = bytearray(n)
        self.bytes_have = 0
        for i in have:
            if 0 <= i < n and not self._have[i]:
                self._have[i] = 1
                self.bytes_have += self._refs[i].size
        self.chunks_have = sum(self._have)
        self._rank = list(range(n))
        rng.shuffle(self._rank)
        self._avail = [0] * n
        self._pavail = [0] * n  # live partial (non-origin) holders per chunk
        self._share: bytearray | None = None  # chunks origins may be asked for (None: all)
        self._origin_open = False
        self._origin_quota = 0  # requests origins may still take while opened
        self._idle_since: float | None = None
        self._holders: dict[str, _Holder] = {}
        self._joined = 0
        self._requests: dict[int, list[str]] = {}  # index -> holders asked (in order)
        self._inflight = 0  # requests outstanding to live holders
        # Chunks neither here nor requested, keyed (-availability, -rank, -index) in
        # ascending order: the rarest chunk is LAST, so taking it (the common case)
        # moves nothing in the list; iterate it reversed for rarest first.
        self._queue: list[tuple[int, int, int]] = sorted(self._key(i) for i in range(n) if not self._have[i])
        self._timers = Timers()
        self._started = False
        self._done_reported = False
        self._stalled = False
        self._endgame = False
        self._stats = dict.fromkeys(
            (
                "requests_sent", "chunks_committed", "bytes_committed", "bytes_received", "bad_chunks",
                "duplicate_chunks", "unsolicited_chunks", "timeouts", "missing_replies", "cancels_sent",
                "endgame_requests", "origin_requests", "origin_opens", "timeouts_deferred",
            ),
            0,
        )  # fmt: skip

    # -- queries --------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.chunks_have == self.n

    def missing(self) -> list[int]:
        return [i for i in range(self.n) if not self._have[i]]

    def holder_state(self, peer: str) -> str | None:
        h = self._holders.get(peer)
        return None if h is None else h.state

    def holder_useful(self, peer: str) -> bool:
        """A live holder that has a chunk this fetch still lacks (the driver swaps out
        sessions that are not, for peers that are)."""
        h = self._holders.get(peer)
        if h is None or h.state != "live":
            return False
        # one byte (0/1) per chunk in both: a chunk it has and we lack is a set bit of has & ~have
        return int.from_bytes(h.has, "big") & ~int.from_bytes(self._have, "big") != 0

    def holder_bad_chunks(self, peer: str) -> int:
        h = self._holders.get(peer)
        return 0 if h is None else h.bad

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def statistics(self) -> dict[str, float]:
        live = [h for h in self._holders.values() if h.state == "live"]
        assert self._inflight == sum(len(h.inflight) for h in self._holders.values()), "in-flight count drifted"
        out: dict[str, float] = {
            "chunks_total": self.n,
            "chunks_have": self.chunks_have,
            "bytes_total": self.total_bytes,
            "bytes_have": self.bytes_have,
            "holders_live": len(live),
            "holders_banned": sum(h.state == "banned" for h in self._holders.values()),
            "holders_dropped": sum(h.state == "dropped" for h in self._holders.values()),
            "inflight": self._inflight,
            "queued": len(self._queue),
            "endgame": int(self._endgame),
            "origins_open": int(self._origin_open),
        }
        out.update(self._stats)
        return out

    # -- availability bookkeeping ------------------------------------------------------

    def _key(self, i: int) -> tuple[int, int, int]:
        return (-self._avail[i], -self._rank[i], -i)

    def _queue_remove(self, i: int) -> None:
        key = self._key(i)
        k = bisect.bisect_left(self._queue, key)
        if k < len(self._queue) and self._queue[k] == key:
            del self._queue[k]

    def _queue_add(self, i: int) -> None:
        bisect.insort(self._queue, self._key(i))

    def _queued(self, i: int) -> bool:
        return not self._have[i] and i not in self._requests

    def _set_avail(self, i: int, delta: int) -> None:
        queued = self._queued(i)
        if queued:
            self._queue_remove(i)
        self._avail[i] += delta
        assert self._avail[i] >= 0
        if queued:
            self._queue_add(i)

    def _gain(self, h: _Holder, i: int) -> None:
        if not h.has[i]:
            h.has[i] = 1
            if not h.origin:
                self._pavail[i] += 1
            self._set_avail(i, +1)

    def _lose(self, h: _Holder, i: int) -> None:
        if h.has[i]:
            h.has[i] = 0
            if not h.origin:
                self._pavail[i] -= 1
            self._set_avail(i, -1)

    _REKEY_BULK = 64  # more changes than this at once: re-sort the queue instead of moving entries

    def _set_has(self, h: _Holder, bits: bytearray | bytes, value: int) -> None:
        """Set (value 1) or clear (0) ``h.has[i]`` wherever ``bits[i]``; keeps the queue keyed."""
        changed = [i for i in range(self.n) if bits[i] and h.has[i] != value]
        if len(changed) <= self._REKEY_BULK:
            for i in changed:
                (self._gain if value else self._lose)(h, i)
            return
        delta = 1 if value else -1
        for i in changed:
            h.has[i] = value
            self._avail[i] += delta
            assert self._avail[i] >= 0
            if not h.origin:
                self._pavail[i] += delta
        self._queue = sorted(self._key(-neg_i) for _, _, neg_i in self._queue)

    # -- holders ------------------------------------------------------------------------

    def add_holder(self, now: float, peer: str, bitmap: bytes | None = None, *, origin: bool | None = None) -> list[Any]:
        """A peer that holds the artifact (``bitmap`` None: all of it; else the ChunkHave bitmap).

        ``origin`` (default: whether it joins complete, ``bitmap`` None): asked
        last (see the module docstring). Set when the holder joins; a holder
        already live keeps its kind.
        """
        h = self._holders.get(peer)
        if h is not None and h.state == "banned":
            return []
        if h is None or h.state == "dropped":
            old = h
            self._joined += 1
            h = _Holder(bytearray(self.n), self._joined, origin=bitmap is None if origin is None else origin)
            if old is not None:
                h.bad = old.bad  # a dropped holder keeps its record of bad chunks
            self._holders[peer] = h
        has = bytearray(b"\x01" * self.n) if bitmap is None else _bits_to_bytes(bitmap, self.n)
        self._set_has(h, has, 1)
        return self._fill(now)

    def set_origin_share(self, now: float, share: bytes | None) -> list[Any]:
        """Chunks this fetcher may ask origins for while they are not open (a ChunkHave-style
        bitmap, LSB first; None: every chunk). The driver gives each of the peers fetching
        the artifact at once its own share (e.g. by rendezvous hash), so the origin sends
        each chunk about once; partial holders spread it from there."""
        self._share = None if share is None else _bits_to_bytes(share, self.n)
        return self._fill(now)

    def is_origin(self, peer: str) -> bool:
        h = self._holders.get(peer)
        return h is not None and h.origin

    def remove_holder(self, now: float, peer: str) -> list[Any]:
        """A holder left (dead, disconnected): its requests are re-issued elsewhere."""
        h = self._holders.get(peer)
        if h is None or h.state != "live":
            return []
        return self._retire(now, peer, h, "dropped", "left") + self._fill(now)

    def _retire(self, now: float, peer: str, h: _Holder, state: str, reason: str) -> list[Any]:
        fx: list[Any] = []
        for i in list(h.inflight):
            fx.extend(self._forget_request(i, peer))
        self._set_has(h, bytes(h.has), 0)
        h.state = state
        kind = "swarm.holder_banned" if state == "banned" else "swarm.holder_dropped"
        fx.append(Emit(kind, {"artifact": self._aid_hex, "peer": peer, "reason": reason, "bad_chunks": h.bad}))
        return fx

    # -- requests -----------------------------------------------------------------------

    def _forget_request(self, i: int, peer: str) -> list[Any]:
        """Drop the request for chunk i from peer (no message); requeue i if no other request for it is out."""
        fx: list[Any] = []
        h = self._holders[peer]
        if h.inflight.pop(i, None) is not None:
            self._inflight -= 1
        c = self._timers.cancel(("req", i, peer))
        if c is not None:
            fx.append(c)
        asked = self._requests.get(i)
        if asked is not None and peer in asked:
            asked.remove(peer)
            if not asked:
                del self._requests[i]
                if not self._have[i]:
                    self._queue_add(i)
        return fx

    def _request(self, now: float, peer: str, h: _Holder, i: int) -> list[Any]:
        ref = self._refs[i]
        at = now + self.config.request_timeout_s
        h.inflight[i] = now
        self._inflight += 1
        if i in self._requests:
            self._requests[i].append(peer)
        else:
            self._queue_remove(i)
            self._requests[i] = [peer]
        self._stats["requests_sent"] += 1
        if h.origin:
            self._stats["origin_requests"] += 1
        return [Send(peer, ChunkRequest(self.artifact, i, ref.id)), self._timers.set(("req", i, peer), at)]

    def _pick(self, peer: str, h: _Holder) -> int:
        """The rarest queued chunk this holder has; -1 if none."""
        fallback = -1
        for _, _, neg_i in reversed(self._queue):
            i = -neg_i
            if h.has[i]:
                if i in h.avoid and self._avail[i] > 1:
                    if fallback < 0:
                        fallback = i
                    continue
                return i
        return fallback if fallback >= 0 and self._avail[fallback] <= 1 else -1

    def _pick_origin(self, h: _Holder) -> int:
        """Origins last: the rarest queued chunk of the share that no live partial holder has; -1 if none."""
        share, pavail = self._share, self._pavail
        for _, _, neg_i in reversed(self._queue):
            i = -neg_i
            if h.has[i] and not pavail[i] and (share is None or share[i]) and i not in h.avoid:
                return i
        return -1

    def _origins_open(self) -> bool:
        if self._origin_open:
            return True
        if self._share is not None:
            return False
        return not any(h.state == "live" and not h.origin for h in self._holders.values())

    def _pick_endgame(self, peer: str, h: _Holder) -> int:
        """An in-flight chunk not yet asked of this holder, fewest copies asked first."""
        best, best_key = -1, None
        for i, asked in self._requests.items():
            if self._have[i] or not h.has[i] or peer in asked:
                continue
            if len(asked) > self.config.endgame_duplicates_max:
                continue
            key = (len(asked), self._rank[i])
            if best_key is None or key < best_key:
                best, best_key = i, key
        return best

    def _fill(self, now: float) -> list[Any]:
        """Issue requests until every live holder's slots (or the global bound) are used."""
        if not self._started or self.done:
            return []
        fx: list[Any] = []
        cfg = self.config
        progress = True
        # partial holders first, origins last (a stable sort keeps join order within each kind)
        order = sorted(self._holders.items(), key=lambda kv: kv[1].origin)
        spent: set[str] = set()  # holders with nothing to ask of them in this call
        while progress and self._inflight < cfg.inflight_max:
            progress = False
            open_ = self._origins_open()
            # one request per holder per round: load spreads over holders
            for peer, h in order:
                if h.state != "live" or len(h.inflight) >= cfg.inflight_per_holder_max or peer in spent:
                    continue
                if self._inflight >= cfg.inflight_max:
                    break
                if h.origin and not open_:
                    i = self._pick_origin(h)
                else:
                    i = self._pick(peer, h)
                    if i < 0 and self._requests and not self._servable_queued():
                        if not self._endgame:
                            self._endgame = True
                            fx.append(Emit("swarm.endgame", {"artifact": self._aid_hex, "missing": self.n - self.chunks_have}))
                        i = self._pick_endgame(peer, h)
                        if i >= 0:
                            self._stats["endgame_requests"] += 1
                if i < 0:
                    spent.add(peer)
                    continue
                if not h.origin and self._origin_open:
                    self._origin_open = False  # partial holders have work again: origins last again
                    open_ = self._origins_open()
                elif h.origin and self._origin_open:
                    self._origin_quota -= 1
                    if self._origin_quota <= 0:
                        self._origin_open = False  # held back again until the next idle grace period
                        open_ = self._origins_open()
                fx.extend(self._request(now, peer, h, i))
                progress = True
        fx.extend(self._check_idle(now))
        fx.extend(self._check_stalled())
        return fx

    def _check_idle(self, now: float) -> list[Any]:
        """Nothing outstanding while origins are held back: open them after ``origin_grace_s``."""
        fx: list[Any] = []
        waiting = (
            self._inflight == 0
            and not self.done
            and not self._origins_open()
            and any(h.state == "live" and h.origin for h in self._holders.values())
        )
        if not waiting:
            self._idle_since = None
            c = self._timers.cancel(("origin_open",))
            if c is not None:
                fx.append(c)
        elif self._idle_since is None:
            self._idle_since = now
            fx.append(self._timers.set(("origin_open",), now + self.config.origin_grace_s))
        return fx

    def _servable_queued(self) -> bool:
        """Some queued chunk has a live holder (the queue is sorted by availability)."""
        return bool(self._queue) and self._queue[0][0] < 0  # the most available one, first

    def _check_stalled(self) -> list[Any]:
        if self.done or self._requests:
            self._stalled = False
            return []
        if self._servable_queued():
            self._stalled = False
            return []
        if self._stalled:
            return []
        self._stalled = True
        return [Emit("swarm.stalled", {"artifact": self._aid_hex, "missing": self.n - self.chunks_have})]

    # -- the core interface -------------------------------------------------------------

    def start(self, now: float) -> list[Any]:
        """Begin requesting (holders may be added before or after)."""
        self._started = True
        if self.done:
            return self._report_done()
        return self._fill(now)

    def on_message(self, now: float, sender: str, msg: Message) -> Sequence[Any]:
        art = getattr(msg, "artifact", None)
        if art != self.artifact:
            return []
        if isinstance(msg, ChunkData):
            return self._on_data(now, sender, msg)
        if isinstance(msg, ChunkMissing):
            return self._on_missing(now, sender, msg)
        if isinstance(msg, ChunkHave):
            if msg.chunk_count != self.n:
                return []
            h = self._holders.get(sender)
            if h is not None and h.state == "live":
                # a have message only adds: a holder that lost a chunk says ChunkMissing
                self._set_has(h, _bits_to_bytes(msg.bitmap, self.n), 1)
                return self._fill(now)
            return self.add_holder(now, sender, msg.bitmap)
        return []

    def on_timer(self, now: float, timer: Hashable) -> Sequence[Any]:
        if not self._timers.fire(timer):
            return []
        if timer == ("origin_open",):
            self._idle_since = None
            if self._inflight or self.done:
                return self._fill(now)
            self._origin_open = True
            self._origin_quota = self.config.inflight_per_holder_max
            self._stats["origin_opens"] += 1
            fx: list[Any] = [Emit("swarm.origins_open", {"artifact": self._aid_hex, "missing": self.n - self.chunks_have})]
            return fx + self._fill(now)
        if not (isinstance(timer, tuple) and len(timer) == 3 and timer[0] == "req"):
            return []
        _, i, peer = timer
        h = self._holders.get(peer)
        if h is None or i not in h.inflight:
            return []
        cfg = self.config
        if h.heard is not None:
            # a holder that keeps answering: this request waits in a queue (its or ours), it is not lost
            age_max = max(cfg.request_age_max_s, cfg.request_timeout_s)
            later = min(h.heard + cfg.request_timeout_s, h.inflight[i] + age_max)
            if later > now:
                self._stats["timeouts_deferred"] += 1
                return [self._timers.set(("req", i, peer), later)]
        self._stats["timeouts"] += 1
        h.timeouts += 1
        h.timeouts_in_row += 1
        h.avoid.add(i)
        fx = self._forget_request(i, peer)
        fx.append(Emit("swarm.timeout", {"artifact": self._aid_hex, "peer": peer, "index": i}))
        if h.timeouts_in_row >= self.config.timeouts_drop and h.state == "live":
            fx.extend(self._retire(now, peer, h, "dropped", "timeouts"))
        fx.extend(self._fill(now))
        return fx

    def _on_missing(self, now: float, sender: str, msg: ChunkMissing) -> list[Any]:
        h = self._holders.get(sender)
        if h is None or h.state != "live" or msg.index not in h.inflight:
            return []
        self._stats["missing_replies"] += 1
        h.heard = now
        fx = self._forget_request(msg.index, sender)
        if msg.reason == "not_have":
            self._lose(h, msg.index)
        else:
            h.avoid.add(msg.index)
        fx.extend(self._fill(now))
        return fx

    def _on_data(self, now: float, sender: str, msg: ChunkData) -> list[Any]:
        h = self._holders.get(sender)
        i = msg.index
        if h is None or h.state != "live" or i not in h.inflight:
            # never asked (or asked of a banned holder, or cancelled): not even looked at
            self._stats["unsolicited_chunks"] += 1
            return []
        self._stats["bytes_received"] += len(msg.data)
        h.timeouts_in_row = 0
        h.heard = now
        fx = self._forget_request(i, sender)
        ref = self._refs[i]
        ok = msg.chunk_id == ref.id
        if ok:
            try:
                content = decode_chunk(msg.codec, msg.data, ref.size)
                ok = chunk_id(content) == ref.id
            except ChunkCodecError:
                ok = False
        if not ok:
            return fx + self._bad_chunk(now, sender, h, i)
        h.chunks += 1
        h.bytes += ref.size
        if self._have[i]:
            self._stats["duplicate_chunks"] += 1
            return fx + self._fill(now)
        self._queue_remove(i)  # _forget_request requeued it if this was the only copy asked for
        self._have[i] = 1
        self.chunks_have += 1
        self.bytes_have += ref.size
        self._stats["chunks_committed"] += 1
        self._stats["bytes_committed"] += ref.size
        fx.append(CommitChunk(self.artifact, i, ref.id, msg.codec, msg.data, ref.size, sender))
        # endgame: the other copies asked for are no longer wanted
        for other in list(self._requests.get(i, ())):
            fx.extend(self._forget_request(i, other))
            fx.append(Send(other, ChunkCancel(self.artifact, i)))
            self._stats["cancels_sent"] += 1
        fx.append(
            Emit(
                "swarm.progress",
                {
                    "artifact": self._aid_hex,
                    "index": i,
                    "peer": sender,
                    "chunks_have": self.chunks_have,
                    "chunks_total": self.n,
                    "bytes_have": self.bytes_have,
                    "bytes_total": self.total_bytes,
                },
            )
        )
        if self.done:
            fx.extend(self._report_done())
            for t in list(self._timers.names()):
                c = self._timers.cancel(t)
                if c is not None:
                    fx.append(c)
            return fx
        return fx + self._fill(now)

    def _bad_chunk(self, now: float, peer: str, h: _Holder, i: int) -> list[Any]:
        h.bad += 1
        self._stats["bad_chunks"] += 1
        h.avoid.add(i)
        fx: list[Any] = [Emit("swarm.bad_chunk", {"artifact": self._aid_hex, "peer": peer, "index": i, "bad_chunks": h.bad})]
        if h.bad >= self.config.bad_chunks_ban:
            fx.extend(self._retire(now, peer, h, "banned", "bad_chunks"))
        return fx + self._fill(now)

    def _report_done(self) -> list[Any]:
        if self._done_reported:
            return []
        self._done_reported = True
        return [
            Emit(
                "swarm.done",
                {
                    "artifact": self._aid_hex,
                    "chunks": self.n,
                    "bytes": self.total_bytes,
                    "bad_chunks": self._stats["bad_chunks"],
                    "duplicate_chunks": self._stats["duplicate_chunks"],
                },
            )
        ]

