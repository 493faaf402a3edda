"""Abuse limits: token-bucket rates per peer per protocol, and caps on concurrent streams.

Sans-IO like the cores: every call takes ``now`` (seconds, any monotonic
clock: the daemon passes ``trio.current_time()``, the simulator its virtual
time, tests a number), so a limit behaves the same in all three and tests
never sleep. Every limit counts what it allowed and what it refused, per
protocol, in :meth:`statistics` (plain ints for the metrics endpoint).

* :class:`TokenBucket` -- ``rate_per_s`` tokens a second up to ``burst``;
  a request takes ``cost`` tokens or is refused (never queued: a refusal is
  cheap, and the protocols above are built for loss or retry).
* :class:`RateLimiter` -- one bucket per (peer, protocol), created on first
  use from the protocol's :class:`Rate` (or the default), kept in a bounded
  LRU (``peers_max`` buckets). An evicted bucket comes back full, which is
  at worst one burst more for a peer idle long enough to be evicted.
* :class:`StreamCap` -- at most ``total_max`` concurrent streams (or
  requests, or jobs) and ``peer_max`` per peer; ``acquire``/``release`` or
  ``with cap.hold(peer):``.
* :func:`limit_handler` -- wraps a transport request handler with both.

Prior art: the token bucket (Turner 1986; Linux ``tc tbf``), libp2p's
resource manager (per-peer and per-protocol stream limits), memberlist's
and chitchat's bounded queues.

Knowingly left out: fair queueing between peers (a refused request is not
queued), adaptive limits, and global byte-rate limits (the transport bounds
bytes in flight through its queues).
"""

from __future__ import annotations

import collections
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterator

__all__ = ["LimitExceeded", "Rate", "RateLimiter", "StreamCap", "TokenBucket", "limit_handler"]


class LimitExceeded(Exception):
    """A request over a limit; the message is one line naming the limit."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Rate:
    """``rate_per_s`` sustained, ``burst`` at once (both in requests or frames, or cost units)."""

    rate_per_s: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.rate_per_s >= 0 and self.burst >= 1):
            raise ValueError(f"need rate_per_s >= 0 and burst >= 1, got {self}")


class TokenBucket:
    """Tokens refill at ``rate_per_s`` up to ``burst``; starts full."""

    __slots__ = ("rate_per_s", "burst", "tokens", "updated")

    def __init__(self, rate_per_s: float, burst: float, now: float):
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:  # a clock that steps back never mints tokens
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
            self.updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are that many; False (nothing taken) otherwise."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def wait_s(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0 if now; inf if never)."""
        self._refill(now)
        short = cost - self.tokens
        if short <= 0:
            return 0.0
        if self.rate_per_s <= 0 or cost > self.burst:
            return float("inf")
        return short / self.rate_per_s


#: Defaults per protocol, sized for a ~1,000-site mesh where a peer hears from
#: tens of peers: SWIM sends a few messages a second per peer; gossip digests
#: a few; control and admission are human- or connection-rate.
DEFAULT_RATES: dict[str, Rate] = {
    "msg": Rate(200.0, 400.0),  # message frames of all protocols, per sending peer
    "admission": Rate(2.0, 10.0),
    "control": Rate(20.0, 50.0),
    "blob": Rate(200.0, 400.0),  # chunk requests
    "place": Rate(50.0, 100.0),
}


class RateLimiter:
    """Token buckets per (peer, protocol), bounded; counters per protocol."""

    def __init__(
        self,
        rates: dict[str, Rate] | None = None,
        default: Rate = Rate(50.0, 100.0),
        peers_max: int = 10_000,
    ):
        if peers_max < 1:
            raise ValueError("peers_max must be at least 1")
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        self.default = default
        self.peers_max = peers_max
        self._buckets: collections.OrderedDict[tuple[str, str], TokenBucket] = collections.OrderedDict()
        self._allowed: collections.Counter[str] = collections.Counter()
        self._refused: collections.Counter[str] = collections.Counter()
        self._evicted = 0

    def allow(self, peer: str, protocol: str, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` from the (peer, protocol) bucket; False (and a counter) if over the rate."""
        key = (peer, protocol)
        bucket = self._buckets.get(key)
        if bucket is None:
            rate = self.rates.get(protocol, self.default)
            bucket = TokenBucket(rate.rate_per_s, rate.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.peers_max:
                self._buckets.popitem(last=False)
                self._evicted += 1
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now, cost):
            self._allowed[protocol] += 1
            return True
        self._refused[protocol] += 1
        return False

    def check(self, peer: str, protocol: str, now: float, cost: float = 1.0) -> None:
        """Like :meth:`allow`, raising LimitExceeded when refused."""
        if not self.allow(peer, protocol, now, cost):
            raise LimitExceeded("rate", f"peer {peer[-8:]}: {protocol} over its rate limit")

    def forget(self, peer: str) -> None:
        """Drop a peer's buckets (it disconnected)."""
        for key in [k for k in self._buckets if k[0] == peer]:
            del self._buckets[key]

    def statistics(self) -> dict[str, int]:
        out: dict[str, int] = {"buckets": len(self._buckets), "buckets_evicted": self._evicted}
        for proto in sorted(set(self._allowed) | set(self._refused)):
            out[f"allowed.{proto}"] = self._allowed[proto]
            out[f"refused.{proto}"] = self._refused[proto]
        return out


class StreamCap:
    """At most ``total_max`` concurrent holders, ``peer_max`` per peer.

    The transport's own bound is 256 streams per connection (yamux) and
    ``requests_inbound_max`` handlers; this cap is per protocol, so one busy
    protocol cannot take every slot (e.g. blob serving 64 of the 128).
    """

    def __init__(self, name: str, total_max: int, peer_max: int):
        if not 1 <= peer_max <= total_max:
            raise ValueError("need 1 <= peer_max <= total_max")
        self.name = name
        self.total_max = total_max
        self.peer_max = peer_max
        self._active: dict[str, int] = {}
        self._total = 0
        self._stats = {"acquired": 0, "refused_total": 0, "refused_peer": 0, "high_water": 0}

    def try_acquire(self, peer: str) -> bool:
        mine = self._active.get(peer, 0)
        if self._total >= self.total_max:
            self._stats["refused_total"] += 1
            return False
        if mine >= self.peer_max:
            self._stats["refused_peer"] += 1
            return False
        self._active[peer] = mine + 1
        self._total += 1
        self._stats["acquired"] += 1
        if self._total > self._stats["high_water"]:
            self._stats["high_water"] = self._total
        return True

    def release(self, peer: str) -> None:
        mine = self._active.get(peer, 0)
        if mine <= 0:
            raise RuntimeError(f"{self.name}: release without acquire for {peer[-8:]}")
        if mine == 1:
            del self._active[peer]
        else:
            self._active[peer] = mine - 1
        self._total -= 1

    @contextmanager
    def hold(self, peer: str) -> Iterator[None]:
        """``with cap.hold(peer):`` -- raises LimitExceeded if over the cap."""
        if not self.try_acquire(peer):
            raise LimitExceeded("streams", f"{self.name}: too many concurrent streams ({'total' if self._total >= self.total_max else 'from ' + peer[-8:]})")
        try:
            yield
        finally:
            self.release(peer)

    def active(self, peer: str | None = None) -> int:
        return self._total if peer is None else self._active.get(peer, 0)

    def statistics(self) -> dict[str, int]:
        return {**self._stats, "active": self._total, "peers": len(self._active)}


def limit_handler(
    handler: Callable[[str, bytes], Awaitable[bytes]],
    protocol: str,
    *,
    clock: Callable[[], float],
    limiter: RateLimiter | None = None,
    cap: StreamCap | None = None,
    refusal: Callable[[LimitExceeded], bytes],
) -> Callable[[str, bytes], Awaitable[bytes]]:
    """Wrap a transport request handler with a rate limit and a concurrency cap.

    ``clock`` gives ``now`` (the daemon: ``trio.current_time``). Over a
    limit, the wrapper answers ``refusal(exc)``: the protocol's own "busy"
    reply (e.g. an encoded ControlResponse with code ``unavailable``). It
    does not raise: the transport logs a raising handler with a traceback,
    and a flooding peer must not flood the log.
    """

    async def limited(peer: str, payload: bytes) -> bytes:
        try:
            if limiter is not None:
                limiter.check(peer, protocol, clock())
            if cap is None:
                return await handler(peer, payload)
            with cap.hold(peer):
                return await handler(peer, payload)
        except LimitExceeded as exc:
            return refusal(exc)

    return limited
