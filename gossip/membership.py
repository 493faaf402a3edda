"""Membership and failure detection: SWIM with Lifeguard's refinements (sans-IO).

Every peer keeps the whole member list (membership is global: a peer may
place work in, and fetch from, any region) and learns of joins, failures and
departures by infection-style dissemination piggybacked on its probes and on
dedicated gossip messages while there is news.

SWIM (Das, Gupta, Motivala, DSN 2002) -- each probe round a peer pings one
member; without an ack it pings again at half ``probe_timeout_s``, and at
``probe_timeout_s`` pings a third time and asks ``indirect_checks`` other
members to ping the target for it (each pings twice); still nothing after
``indirect_timeout_s`` more and the target becomes *suspect*. A suspect
that does not refute within the suspicion timeout is declared *dead*.
Incarnation numbers order a member's states: only the member itself raises
its incarnation, to refute a suspicion (``alive`` at a higher incarnation
beats ``suspect`` and ``dead`` at a lower one). The whole state table is in
:meth:`MembershipCore._apply`.

Lifeguard (Dadgar, Phillips, Currey, 2018; hashicorp/memberlist) -- three
refinements:

* Local health multiplier (LHM): a peer that misses acks or nacks, or has to
  refute suspicions about itself, is probably the slow one; it stretches its
  own probe interval and timeouts by ``1 + lhm`` (``lhm`` in
  ``0..lhm_max``) instead of accusing healthy members.
* Dynamic suspicion timeout: a suspicion starts at the long
  ``suspicion_max`` and shrinks toward ``suspicion_min`` as independent
  confirmations (suspect messages from other members) arrive:
  ``max - (max - min) * log(C + 1) / log(K + 1)``. A crashed member is
  confirmed quickly by everyone who tries it; a member that merely lost a
  packet is not, so it has time to refute.
* Buddy system: the first member to suspect X tells X directly, and every
  ping to a suspect carries the suspicion first, so X refutes at once.

Refinements of our own (also off with ``plain_swim``), each for a reason:

* Probes are harder to fail by loss alone: an early direct retry, a third
  direct ping with the helpers, helpers that ping twice. A live member's
  probe fails with probability 2e-5 at 10% loss (plain SWIM: 1.5e-3).
* Witness probes: a helper whose relayed ping went unanswered probes the
  target itself, so a crash gathers its K confirmations within about one
  probe cycle and detection stays fast although suspicions start long.
* Last-chance probe: a suspicion that expires without K confirmations is
  checked by one more full probe (with the suspicion first in the ping)
  before this peer declares a death on its own; an answer postpones it.
* Corrections: a peer that sends a stale record (it missed a refutation or
  a death) gets the newer record back at once, instead of waiting for the
  epidemic tail to reach it.
* Fresh evidence beats hearsay: a death declared by others about a member
  this peer heard from within ``fresh_evidence_s`` becomes a suspicion here
  (the member refutes it); a crashed member has been silent far longer.

Structural additions (on in both modes: they speed detection and healing,
they cannot cause false deaths):

* Every other probe goes to the prober's successor on a ring of the members
  of its own region (ordered by peer id): every member is probed at least
  once every ``probe_interval_s * ring_probe_every`` by a nearby peer, which
  bounds the time until a crash is first noticed (random probing alone has
  an exponential tail: p99 = 4.6 probe periods).
* Dead members are kept for ``dead_retain_s`` and probed now and then (a
  share of rounds equal to the dead share of the list), the dead notice
  first in the ping, so the two sides of a healed partition find each other
  and refute; a member coming back triggers probes of the other dead at
  once. Then they are forgotten, leaving a tombstone (peer id, incarnation)
  for ``tombstone_retain_s``: a stale sync or gossip carrying ``alive`` at
  an incarnation at or below it is rejected and counted, so it cannot revive
  the member. Only the member itself, at a higher incarnation, can.
* The incarnation is persisted (``Persist("swim.incarnation")``) and raised
  on every boot, so a restarted peer rejoins with a higher incarnation; one
  that lost its disk refutes its death the first time it hears of it.
* Anti-entropy: every ``sync_interval_s`` a peer swaps one page of random
  member records with a random member (memberlist's push-pull, but a
  bounded page instead of the whole list: the per-peer cost stays constant).

Every message is at most ``message_bytes_max`` (1,200) bytes encoded: the
piggyback is filled against a byte budget computed from each update's exact
encoded size, and ``check_sizes`` asserts the bound on every message built.

Cost per peer: one probe (2 small messages) per ``probe_interval_s``, gossip
only while there is news, one sync page per ``sync_interval_s``: constant in
N. What does grow with N is the mesh-wide rate of membership *changes*
(every peer must hear of every join and death), which each peer relays
``retransmit_mult * ceil(log10(N + 1))`` times; keeping false suspicions
rare is what keeps that term small.

Events: ``member.alive`` / ``member.suspect`` / ``member.dead`` /
``member.left`` with ``peer``, ``incarnation``, ``addr``, ``region`` (and
``by``, the accuser, for suspect and dead). ``member.alive`` about this peer
itself means it refuted a suspicion.

Knowingly left out: Byzantine members (membership records are not signed: a
forged address only costs a failed dial, because the transport's handshake
proves the peer id; state is signed, see ``state.py``); Vivaldi
coordinates; memberlist's full-state TCP push-pull.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Mapping, Sequence

import msgpack

from arcnet.mesh.core import CancelTimer, Emit, Persist, Send, SetTimer, Timers
from arcnet.mesh.identity import PEER_ID_LEN
from arcnet.mesh.wire import BOOL, PEER_ID, U32, Bytes, Codec, Message, WireError

__all__ = [
    "ALIVE",
    "DEAD",
    "LEFT",
    "SUSPECT",
    "Member",
    "MembershipConfig",
    "MembershipCore",
    "decode_updates",
    "encode_updates",
]

ALIVE, SUSPECT, DEAD, LEFT = 0, 1, 2, 3
STATUS_NAMES = ("alive", "suspect", "dead", "left")
_EVENT = ("member.alive", "member.suspect", "member.dead", "member.left")

ADDR_MAX = 256  # a libp2p multiaddr with its /p2p/ suffix is ~120-200 chars
REGION_MAX = 64
UPDATES_MAX = 32  # per message; the byte budget is the real bound
MESSAGE_BYTES_MAX = 1200  # one datagram on any path with a 1,280-byte IPv6 MTU
_INCARNATION_KEY = "swim.incarnation"
_FIX_MAX = 4  # corrections sent back per message received


# --------------------------------------------------------------------------
# wire messages (tags 0x0300-0x030F)
#
# Member updates travel as one msgpack blob per message: an array of
# ``[kind, peer, incarnation, origin or nil, addr, region]``. ``kind`` is
# ALIVE/SUSPECT/DEAD/LEFT; ``origin`` names the accuser of a suspect/dead
# update (confirmations are counted per distinct origin); ``addr`` and
# ``region`` travel with alive updates and sync records and are empty
# otherwise. The blob is built from each update's cached encoding and
# decoded by :func:`decode_updates`, which checks every field as strictly
# as the codec would -- at a tenth of the cost of a nested struct list,
# which matters at 10,000 simulated peers.

Update = tuple  # (kind, peer, inc, origin, addr, region)
_BLOB_MAX = MESSAGE_BYTES_MAX - 64


class Ping(Message, tag=0x0301, protocol="swim"):
    seq = U32
    target = PEER_ID
    updates = Bytes(_BLOB_MAX)


class Ack(Message, tag=0x0302, protocol="swim"):
    seq = U32
    updates = Bytes(_BLOB_MAX)


class PingReq(Message, tag=0x0303, protocol="swim"):
    """Ask the receiver to ping ``target`` for us; ``witness``: probe it yourself if it stays silent."""

    seq = U32
    target = PEER_ID
    witness = BOOL
    updates = Bytes(_BLOB_MAX)


class Nack(Message, tag=0x0304, protocol="swim"):
    """Lifeguard: the helper is alive but the target did not answer it."""

    seq = U32


class Gossip(Message, tag=0x0305, protocol="swim"):
    updates = Bytes(_BLOB_MAX)


class SyncReq(Message, tag=0x0306, protocol="swim"):
    """Push one page of records; ask for one back (``join``: page ``cursor`` of the full list)."""

    join = BOOL
    cursor = U32
    records = Bytes(_BLOB_MAX)


class SyncPage(Message, tag=0x0307, protocol="swim"):
    join = BOOL
    cursor = U32  # next cursor when ``more``
    more = BOOL  # set on the last page of a batch only: ask for the next batch from ``cursor``
    records = Bytes(_BLOB_MAX)


# msgpack overhead of each message around its blob, worst case: array
# header, tag, version, seq, a peer id, a bool, the bin header, the blob's
# array header.
_OVERHEAD_BYTES = 1 + 3 + 1 + 5 + 54 + 1 + 3 + 3


def encode_update(u: Update) -> bytes:
    return msgpack.packb(u, use_bin_type=True)


def _blob(encs: list[bytes]) -> bytes:
    n = len(encs)
    if n == 0:
        return b""
    head = bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    return head + b"".join(encs)


def encode_updates(updates: Sequence[Update]) -> bytes:
    """The wire blob of a list of updates (tests and tools; cores use cached encodings)."""
    return _blob([encode_update(u) for u in updates])


def _bad(what: str) -> WireError:
    return WireError(f"member update: {what}")


def decode_updates(blob: bytes) -> list[Update]:
    """Strictly decode an update blob; raises :class:`WireError` on anything wrong."""
    if not blob:
        return []
    n = len(blob)
    try:
        obj = msgpack.unpackb(
            blob, raw=False, use_list=False, max_str_len=n, max_bin_len=0, max_array_len=n, max_map_len=0, max_ext_len=0
        )
    except Exception as exc:  # msgpack raises many types; all mean "not a blob"
        raise _bad(f"malformed: {type(exc).__name__}") from None
    if type(obj) is not tuple or len(obj) > UPDATES_MAX:
        raise _bad("expected a list of at most %d updates" % UPDATES_MAX)
    for u in obj:
        if type(u) is not tuple or len(u) != 6:
            raise _bad("expected [kind, peer, inc, origin, addr, region]")
        k, p, inc, o, a, g = u
        if type(k) is not int or not 0 <= k <= 3:
            raise _bad("kind out of range")
        if type(p) is not str or len(p) != PEER_ID_LEN or not p.startswith("12D3KooW"):
            raise _bad("peer is not an Ed25519 peer id")
        if type(inc) is not int or not 0 <= inc <= 0xFFFF_FFFF:
            raise _bad("incarnation out of range")
        if o is not None and (type(o) is not str or len(o) != PEER_ID_LEN or not o.startswith("12D3KooW")):
            raise _bad("origin is not an Ed25519 peer id")
        if type(a) is not str or len(a) > ADDR_MAX:
            raise _bad("addr is not a string of at most %d chars" % ADDR_MAX)
        if type(g) is not str or len(g) > REGION_MAX:
            raise _bad("region is not a string of at most %d chars" % REGION_MAX)
    return list(obj)


# --------------------------------------------------------------------------
# configuration


@dataclass
class MembershipConfig:
    """Knobs of the membership core. Defaults suit 10-10,000 sites over a WAN
    whose round-trip time stays under ~300 ms; N is the current member count.
    """

    probe_interval_s: float = 0.5
    """Seconds between probe rounds (times 1 + LHM). Constant in N: each
    member is probed about once per interval on average, at least once per
    ``probe_interval_s * ring_probe_every`` by its ring predecessor."""

    probe_timeout_s: float = 0.4
    """Seconds to wait for a direct ack before asking helpers (times 1 +
    LHM); a second ping goes at half of it. Must exceed twice the p99
    round-trip time between peers."""

    indirect_timeout_s: float = 0.5
    """Seconds to wait for an indirect (relayed) ack before suspecting
    (times 1 + LHM). Must exceed two round-trip times."""

    indirect_checks: int = 4
    """Members asked to ping a silent target (SWIM's k; each pings it twice,
    half a timeout apart). Constant in N. With d = 1 - (1-L)^2 the chance
    that a ping/ack round trip is lost at independent loss L, a helper path
    fails with h = 1 - (1-L)^2 (1 - d^2), and a probe of a live member
    (three direct pings, k helpers) with d^3 h^k: 2e-5 at L = 10%, 2e-3 at
    L = 20%. The helpers are asked only when the first two pings failed
    (4% of probes at 10% loss), so the extra traffic stays small."""

    ring_probe_every: int = 2
    """Every this many rounds the probe goes to the ring successor in the
    own region (0 disables ring probing)."""

    gossip_interval_s: float = 0.2
    """Seconds between dedicated gossip messages while there is news."""

    gossip_fanout: int = 3
    """Members each gossip round is sent to. Dissemination takes about
    log_{fanout+1}(N) + ln(N)/fanout rounds: ~1.4 s at 1,000, ~2 s at 10,000."""

    retransmit_mult: int = 4
    """Each update is relayed retransmit_mult * ceil(log10(N + 1)) times by
    every peer that learns it: 16 at 1,000 members, 20 at 10,000. A peer
    misses an update with probability about exp(-relays * (1 - loss))."""

    suspicion_mult: float = 2.0
    """suspicion_min = suspicion_mult * max(1, log10(N)) * gossip_interval_s:
    1.2 s at 1,000 members, 1.6 s at 10,000 (dissemination time grows with
    log N, so must the time a suspect has to refute)."""

    suspicion_max_mult: float = 6.0
    """suspicion_max = suspicion_max_mult * suspicion_min: the timeout of a
    suspicion nobody else confirms: 7.2 s at 1,000, 9.6 s at 10,000."""

    suspicion_confirmations: int = 3
    """Lifeguard's K: independent confirmations that shrink the timeout to
    suspicion_min (capped at N - 2 in small meshes)."""

    lhm_max: int = 8
    """Largest local health multiplier score (timeouts stretch up to 9x)."""

    sync_interval_s: float = 10.0
    """Seconds between anti-entropy page swaps with a random member. The
    page is bounded, so the cost is constant in N; a missed update is
    repaired within about N / (page records) sync intervals at worst."""

    sync_pages_max: int = 4
    """Pages a seed returns per join request (bounded burst)."""

    mass_suspicion_fraction: float = 0.02
    """With more than max(4, this * N) suspicions pending at once, witness
    and last-chance probes are skipped: that many at once is a partition or
    a mass failure, not a lossy path, and probing every suspect again would
    cost O(N) messages per peer. 20 at 1,000 members, 200 at 10,000."""

    fresh_evidence_s: float = 1.5
    """A death declared by others about a member we heard from directly
    within this many seconds becomes a suspicion here instead (Lifeguard
    mode): fresh evidence beats hearsay, and the member has time to refute.
    A crashed member has been silent for longer than any detection takes."""

    dead_retain_s: float = 86400.0
    """Seconds a dead or departed member is kept (and now and then probed, so
    a healed partition reunites) before it is forgotten: 24 h, as Serf's
    reconnect_timeout. It bounds the partition the mesh heals from by
    itself: after a longer one the two sides have forgotten each other (a
    45-minute partition with a 5-minute retention left the simulated mesh
    split for good). Memory: one small record per dead member; probe cost:
    the dead share of the member list, capped by dead_probe_share_max."""

    dead_probe_share_max: float = 0.5
    """Largest share of probe rounds spent on dead members; the share used
    is the dead fraction of the member list, capped here (after a partition
    heals half the list is dead and half the probes go across)."""

    tombstone_retain_s: float = 3600.0
    """Seconds the tombstone of a forgotten member blocks stale revivals."""

    tombstones_max: int = 100_000
    """Bound on tombstones kept (oldest dropped first)."""

    join_retry_s: float = 2.0
    """Seconds between join attempts to the seeds while no member is known."""

    probes_inflight_max: int = 4
    """Bound on concurrent probes (own rounds plus witness probes)."""

    broadcast_queue_max: int = 4096
    """Bound on queued updates; the most-transmitted are dropped first."""

    message_bytes_max: int = MESSAGE_BYTES_MAX
    """Encoded size bound of every message (bytes)."""

    check_sizes: bool = True
    """Encode every built message and assert the size bound (costs one encode
    per message; the simulator enforces the same bound in its codec)."""

    plain_swim: bool = False
    """True: SWIM as memberlist ran it before Lifeguard -- the benchmark's
    baseline. A direct ping; at probe_timeout_s one direct retry (the TCP
    fallback's part) and min(3, indirect_checks) helpers pinging once; a
    fixed suspicion timeout (suspicion_min). Off with it: LHM, nacks, the
    dynamic timeout, the buddy system, and our refinements (early retry,
    double-pinging helpers, witness and last-chance probes, corrections of
    stale senders, fresh evidence over hearsay). Ring and dead-member
    probing, which only speed detection and healing, stay."""


# --------------------------------------------------------------------------
# records


class Member:
    """One member as this peer sees it. Immutable by convention: a change
    makes a new object, so bootstrap records can be shared between peers."""

    __slots__ = ("peer", "inc", "status", "addr", "region")

    def __init__(self, peer: str, inc: int, status: int, addr: str, region: str):
        self.peer = peer
        self.inc = inc
        self.status = status
        self.addr = addr
        self.region = region

    def replace(self, inc: int, status: int) -> "Member":
        return Member(self.peer, inc, status, self.addr, self.region)

    def as_dict(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "incarnation": self.inc,
            "status": STATUS_NAMES[self.status],
            "addr": self.addr,
            "region": self.region,
        }

    def __repr__(self) -> str:
        return f"Member({self.peer[-6:]}, inc={self.inc}, {STATUS_NAMES[self.status]}, {self.region!r})"


class _Suspicion:
    __slots__ = ("inc", "start", "origin", "confirmers", "deadline", "checked")

    def __init__(self, inc: int, start: float, origin: str | None):
        self.inc = inc
        self.start = start
        self.origin = origin
        self.confirmers: dict[str, bool] = {} if origin is None else {origin: True}
        self.deadline = start
        self.checked = False  # the last-chance probe was made


class _Probe:
    __slots__ = ("seq", "target", "stage", "witness", "helpers", "expected_nacks", "nacks")

    def __init__(self, seq: int, target: str, witness: bool, helpers: int):
        self.seq = seq
        self.target = target
        self.stage = 0
        self.witness = witness
        self.helpers = helpers
        self.expected_nacks = 0
        self.nacks = 0


class _Broadcast:
    __slots__ = ("update", "enc", "transmits", "order")

    def __init__(self, update: Update, enc: bytes, order: int):
        self.update = update
        self.enc = enc
        self.transmits = 0
        self.order = order


# --------------------------------------------------------------------------
# the core


class MembershipCore:
    """SWIM + Lifeguard for one peer. Drive it with the core contract."""

    PROTOCOL = "swim"

    def __init__(
        self,
        peer_id: str,
        *,
        rng: random.Random,
        config: MembershipConfig | None = None,
        region: str = "",
        addr: str = "",
        seeds: Sequence[str] = (),
        disk: Mapping[str, bytes] | None = None,
        bootstrap: Iterable[Member] | Mapping[str, Member] = (),
    ):
        cfg = config or MembershipConfig()
        if len(addr) > ADDR_MAX or len(region) > REGION_MAX:
            raise ValueError(f"addr is at most {ADDR_MAX} chars and region at most {REGION_MAX}")
        if cfg.probe_interval_s <= 0 or cfg.probe_timeout_s <= 0 or cfg.indirect_timeout_s <= 0:
            raise ValueError("probe interval and timeouts must be positive")
        if not 256 <= cfg.message_bytes_max <= MESSAGE_BYTES_MAX:
            raise ValueError(f"message_bytes_max must be in 256..{MESSAGE_BYTES_MAX}")
        self.me = peer_id
        self.cfg = cfg
        self.rng = rng
        self.region = region
        self.addr = addr
        self.seeds = [s for s in seeds if s != peer_id]
        self.lifeguard = not cfg.plain_swim
        self._codec = Codec(control_max_bytes=cfg.message_bytes_max)
        self._budget = cfg.message_bytes_max - _OVERHEAD_BYTES
        stored = (disk or {}).get(_INCARNATION_KEY)
        # every boot gets a fresh incarnation, above any this peer ever used
        self.inc = (int(stored) + 1) if stored else 0
        self.timers = Timers()
        self.members: dict[str, Member] = {}
        self.alive: list[str] = []  # alive + suspect, excluding me (random picks, round-robin)
        self.local: list[str] = []  # alive + suspect in my region, sorted (the probe ring)
        self.dead: list[str] = []  # dead + left, retained
        self._dead_queue: list[tuple[float, str, int]] = []  # (since, peer, inc), time order
        self._dead_head = 0
        self.tombstones: dict[str, tuple[int, float]] = {}  # insertion (= time) order
        self.suspicions: dict[str, _Suspicion] = {}
        self.probes: dict[int, _Probe] = {}
        self.probing: dict[str, int] = {}
        self.relays: dict[int, list] = {}  # seq -> [origin, origin seq, target, witness, stage]
        self.queue: dict[str, _Broadcast] = {}  # subject -> newest update about it
        self._buckets: list[dict[str, _Broadcast]] = [{}]  # by transmit count, each in queue order
        self._order = 0
        self._seq = 0
        self._round = 0
        self.lhm = 0
        self._rr_len = 0
        self._rr_pos = 0
        self._rr_offset = 0
        self._rr_stride = 1
        self.joined = False
        self.has_left = False
        self._started = False
        # set by _merge: newer records than the sender had (it missed an update); sent back to it
        self._fix: list[Update] = []
        self._heard: dict[str, float] = {}  # members heard from directly, recently
        self._heal_burst = 0  # dead members to probe at once (set when one comes back)
        self.stats = {
            "probes": 0,
            "probes_failed": 0,
            "probe_retries": 0,
            "probes_indirect": 0,
            "witness_probes": 0,
            "pings_received": 0,
            "suspicions": 0,
            "confirmations": 0,
            "refutations": 0,
            "corrections_sent": 0,
            "last_chance_probes": 0,
            "deaths_declared": 0,
            "deaths_doubted": 0,
            "stale_rejected": 0,
            "misdirected": 0,
            "malformed": 0,
            "nacks_received": 0,
            "messages_built": 0,
            "message_bytes_max": 0,
            "broadcasts_dropped": 0,
            "forgotten": 0,
        }
        if isinstance(bootstrap, dict):
            # fast path (10,000 simulated peers): share the caller's immutable records (all alive)
            self.members = dict(bootstrap)
            self.members.pop(peer_id, None)
            self.alive = list(self.members)  # bootstrap records are all alive
            self.local = [p for p in self.alive if self.members[p].region == region]
        else:
            for m in bootstrap:
                if m.peer == self.me or m.peer in self.members:
                    continue
                self.members[m.peer] = m
                if m.status <= SUSPECT:
                    self.alive.append(m.peer)
                    if m.region == region:
                        self.local.append(m.peer)
        self.local.sort()
        self.joined = bool(self.members)

    # ------------------------------------------------------------------
    # read API (other cores and the daemon)

    def n(self) -> int:
        """Current member count, me included: what the N-scaled knobs use."""
        return len(self.alive) + 1

    def status_of(self, peer: str) -> str | None:
        if peer == self.me:
            return "left" if self.has_left else "alive"
        m = self.members.get(peer)
        return None if m is None else STATUS_NAMES[m.status]

    def is_alive(self, peer: str) -> bool:
        """Alive or suspect (a suspect may yet refute)."""
        if peer == self.me:
            return not self.has_left
        m = self.members.get(peer)
        return m is not None and m.status <= SUSPECT

    def member(self, peer: str) -> dict[str, Any] | None:
        if peer == self.me:
            return {"peer": self.me, "incarnation": self.inc, "status": self.status_of(peer), "addr": self.addr, "region": self.region}
        m = self.members.get(peer)
        return None if m is None else m.as_dict()

    def region_of(self, peer: str) -> str | None:
        if peer == self.me:
            return self.region
        m = self.members.get(peer)
        return None if m is None else m.region

    def alive_peers(self) -> list[str]:
        """Alive and suspect members except me, sorted by peer id."""
        return sorted(self.alive)

    def region_peers(self) -> list[str]:
        """Alive and suspect members of my own region except me, sorted (shared list: do not mutate)."""
        return self.local

    def members_in_region(self, region: str) -> list[str]:
        """Alive and suspect members of ``region``, me included if mine (O(N) scan), sorted."""
        if region == self.region:
            out = list(self.local)
        else:
            members = self.members
            out = [p for p in self.alive if members[p].region == region]
        if region == self.region and not self.has_left:
            out.append(self.me)
        out.sort()
        return out

    def regions(self) -> list[str]:
        seen: dict[str, bool] = {self.region: True}
        members = self.members
        for p in self.alive:
            seen[members[p].region] = True
        return sorted(seen)

    def random_alive(self) -> str | None:
        """A uniformly random alive/suspect member other than me (uses this core's rng)."""
        alive = self.alive
        if not alive:
            return None
        return alive[int(self.rng.random() * len(alive))]

    def suspicion_bounds(self) -> tuple[float, float]:
        """(suspicion_min, suspicion_max) in seconds for the current N."""
        cfg = self.cfg
        scale = max(1.0, math.log10(max(1, self.n())))
        lo = cfg.suspicion_mult * scale * cfg.gossip_interval_s
        return lo, cfg.suspicion_max_mult * lo

    def suspicion_timeout(self, confirmations: int) -> float:
        """Lifeguard's dynamic timeout for ``confirmations`` independent confirmations."""
        lo, hi = self.suspicion_bounds()
        if not self.lifeguard:
            return lo
        k = min(self.cfg.suspicion_confirmations, max(0, self.n() - 2))
        if k < 1:
            return lo
        frac = math.log(confirmations + 1) / math.log(k + 1)
        return max(lo, hi - frac * (hi - lo))

    def statistics(self) -> dict[str, float]:
        s: dict[str, float] = dict(self.stats)
        members = self.members
        s.update(
            {
                "members_alive": sum(1 for p in self.alive if members[p].status == ALIVE),
                "members_suspect": len(self.suspicions),
                "members_dead": len(self.dead),
                "tombstones": len(self.tombstones),
                "incarnation": self.inc,
                "lhm": self.lhm,
                "broadcast_queue": len(self.queue),
                "probes_inflight": len(self.probes),
            }
        )
        return s

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    # ------------------------------------------------------------------
    # driver entry points

    def start(self, now: float) -> list:
        assert not self._started, "start() called twice"
        self._started = True
        out: list = [Persist(_INCARNATION_KEY, str(self.inc).encode())]
        # first round at a random phase, so peers started together do not probe in lockstep
        out.append(self.timers.set("round", now + self.rng.random() * self.cfg.probe_interval_s))
        out.append(self.timers.set("sync", now + self.cfg.sync_interval_s * (0.5 + self.rng.random())))
        if not self.joined:
            out.extend(self._join(now))
        if self.inc > 0 and self.alive:
            # a restart: tell the mesh at once (our new incarnation beats any suspicion)
            self._queue(self._my_alive())
            out.extend(self._gossip_tick(now))
        return out

    def leave(self, now: float) -> list:
        """Depart gracefully: tell the mesh, stop probing."""
        if self.has_left:
            return []
        self._queue((LEFT, self.me, self.inc, self.me, "", ""))
        out: list = []
        for _ in range(self.cfg.gossip_fanout):
            t = self.random_alive()
            blob = self._piggyback(t)
            if t is None or not blob:
                break
            out.append(Send(t, self._msg(Gossip(blob))))
        self.has_left = True
        for name in list(self.timers.names()):
            c = self.timers.cancel(name)
            if c is not None:
                out.append(c)
        return out

    def on_timer(self, now: float, timer: Hashable) -> list:
        if not self.timers.fire(timer) or self.has_left:
            return []
        out = self._on_timer(now, timer)
        if self.queue and not self.timers.pending("gossip"):
            out.append(self.timers.set("gossip", now + self.cfg.gossip_interval_s * self.rng.random()))
        return out

    def on_message(self, now: float, sender: str, msg: Message) -> list:
        if self.has_left:
            return []
        self._fix = []
        self._heard[sender] = now
        try:
            out = self._on_message(now, sender, msg)
        except WireError:
            self.stats["malformed"] += 1
            return []
        if self._heal_burst:
            n, self._heal_burst = self._heal_burst, 0
            for _ in range(min(n, len(self.dead))):
                self._probe_dead(now, out)
        if self._fix:
            # the sender holds stale records (it missed a refutation or a death): correct it now
            self.stats["corrections_sent"] += 1
            out.append(Send(sender, self._msg(Gossip(self._piggyback(sender, self._fix)))))
            self._fix = []
        if self.queue and not self.timers.pending("gossip"):
            out.append(self.timers.set("gossip", now + self.cfg.gossip_interval_s * self.rng.random()))
        return out

    def _on_timer(self, now: float, timer: Hashable) -> list:
        if type(timer) is tuple:
            kind, arg = timer  # type: ignore[misc]
            if kind == "p":
                return self._probe_stage(now, arg)
            if kind == "r":
                return self._relay_timeout(now, arg)
            if kind == "s":
                return self._suspicion_expired(now, arg)
            return []
        if timer == "round":
            return self._round_tick(now)
        if timer == "gossip":
            return self._gossip_tick(now)
        if timer == "sync":
            return self._sync_tick(now)
        if timer == "join":
            return self._join(now)
        return []

    def _on_message(self, now: float, sender: str, msg: Message) -> list:
        t = type(msg)
        out: list = []
        if t is Ping:
            self.stats["pings_received"] += 1
            if msg.updates:
                self._merge(now, decode_updates(msg.updates), out)
            if msg.target != self.me:
                self.stats["misdirected"] += 1
                return out
            # corrections for a stale pinger ride first in the ack
            out.append(Send(sender, self._msg(Ack(msg.seq, self._piggyback(sender, self._fix)))))
            if self._fix:
                self.stats["corrections_sent"] += 1
                self._fix = []
            m = self.members.get(sender)
            if m is not None and m.status == DEAD:
                # a member we hold as dead is probing: tell it, so it refutes
                first = (DEAD, sender, m.inc, self.me, "", "")
                out.append(Send(sender, self._msg(Gossip(self._piggyback(sender, (first,))))))
            return out
        if t is Ack:
            if msg.updates:
                self._merge(now, decode_updates(msg.updates), out)
            seq = msg.seq
            probe = self.probes.get(seq)
            if probe is not None:
                self._probe_done(now, probe, out)
                return out
            relay = self.relays.pop(seq, None)
            if relay is not None:
                origin, oseq = relay[0], relay[1]
                c = self.timers.cancel(("r", seq))
                if c is not None:
                    out.append(c)
                out.append(Send(origin, self._msg(Ack(oseq, self._piggyback(origin)))))
            return out
        if t is Gossip:
            self._merge(now, decode_updates(msg.updates), out)
            return out
        if t is PingReq:
            if msg.updates:
                self._merge(now, decode_updates(msg.updates), out)
            if msg.target == self.me:
                self.stats["misdirected"] += 1
                return out
            seq = self._next_seq()
            # plain SWIM: one ping; ours: a second one at half the timeout, so one lost datagram cannot fail the relay
            self.relays[seq] = [sender, msg.seq, msg.target, msg.witness, 0 if self.lifeguard else 1]
            accusation = self._accusation(msg.target)
            out.append(Send(msg.target, self._msg(Ping(seq, msg.target, self._piggyback(msg.target, accusation)))))
            wait = self._scaled(self.cfg.probe_timeout_s)
            out.append(self.timers.set(("r", seq), now + (wait / 2 if self.lifeguard else wait)))
            return out
        if t is Nack:
            probe = self.probes.get(msg.seq)
            if probe is not None:
                probe.nacks += 1
                self.stats["nacks_received"] += 1
            return out
        if t is SyncReq:
            self._merge(now, decode_updates(msg.records), out)
            if msg.join:
                for cursor, more, records in self._join_pages(msg.cursor):
                    out.append(Send(sender, self._msg(SyncPage(True, cursor, more, records))))
            else:
                out.append(Send(sender, self._msg(SyncPage(False, 0, False, self._sample_records()))))
            return out
        if t is SyncPage:
            recs = decode_updates(msg.records)
            self._merge(now, recs, out)
            if msg.join and msg.more and recs and msg.cursor:
                # the seed sent a batch of pages; ask for the next batch after its last page
                out.append(Send(sender, self._msg(SyncReq(True, msg.cursor, b""))))
            return out
        return out

    # ------------------------------------------------------------------
    # probing

    def _scaled(self, seconds: float) -> float:
        return seconds * (1 + self.lhm)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF_FFFF
        return self._seq

    def _round_tick(self, now: float) -> list:
        cfg = self.cfg
        out: list = [self.timers.set("round", now + self._scaled(cfg.probe_interval_s))]
        self._round += 1
        self._expire(now)
        heard = self._heard
        if len(heard) > 64:
            cut = now - self.cfg.fresh_evidence_s
            self._heard = {p: t for p, t in heard.items() if t > cut}
        if len(self.probes) >= cfg.probes_inflight_max:
            return out
        dead = self.dead
        if dead:
            share = min(cfg.dead_probe_share_max, len(dead) / (len(dead) + len(self.alive)))
            if self.rng.random() < share:
                self._probe_dead(now, out)
                return out
        target = None
        every = cfg.ring_probe_every
        if every and self._round % every == 0 and self.local:
            target = self._ring_successor()
        if target is None or target in self.probing:
            target = self._round_robin()
        if target is None or target in self.probing:
            return out
        self._start_probe(now, target, False, out)
        return out

    def _ring_successor(self) -> str | None:
        local = self.local
        i = bisect.bisect_right(local, self.me)
        return local[i % len(local)]

    def _round_robin(self) -> str | None:
        alive = self.alive
        n = len(alive)
        if n == 0:
            return None
        if n != self._rr_len or self._rr_pos >= n:
            # a fresh pseudo-random permutation of the list: offset + i * stride (mod n)
            self._rr_len = n
            self._rr_pos = 0
            self._rr_offset = int(self.rng.random() * n)
            stride = 1
            if n > 2:
                for _ in range(16):
                    stride = 1 + int(self.rng.random() * (n - 1))
                    if math.gcd(stride, n) == 1:
                        break
                else:
                    stride = 1
            self._rr_stride = stride
        i = (self._rr_offset + self._rr_pos * self._rr_stride) % n
        self._rr_pos += 1
        return alive[i]

    def _accusation(self, target: str) -> tuple[Update, ...]:
        """Buddy system: a ping to a member we suspect carries the suspicion first."""
        if not self.lifeguard:
            return ()
        s = self.suspicions.get(target)
        if s is None:
            return ()
        return ((SUSPECT, target, s.inc, s.origin or self.me, "", ""),)

    def _start_probe(self, now: float, target: str, witness: bool, out: list, helpers: int = 0) -> None:
        seq = self._next_seq()
        probe = _Probe(seq, target, witness, helpers or self.cfg.indirect_checks)
        self.probes[seq] = probe
        self.probing[target] = seq
        self.stats["probes"] += 1
        if witness:
            self.stats["witness_probes"] += 1
        out.append(Send(target, self._msg(Ping(seq, target, self._piggyback(target, self._accusation(target))))))
        if not self.lifeguard:
            # plain SWIM: no early retry; at the timeout a retry (memberlist's TCP fallback) + k helpers
            probe.stage = 1
            out.append(self.timers.set(("p", seq), now + self.cfg.probe_timeout_s))
            return
        out.append(self.timers.set(("p", seq), now + self._scaled(self.cfg.probe_timeout_s) / 2))

    def _probe_dead(self, now: float, out: list) -> None:
        """Ping a retained dead member, telling it that it is dead: if it is
        alive (a healed partition, a long pause) it refutes and comes back."""
        dead = self.dead
        members = self.members
        target = None
        if self.rng.random() < 0.5:
            # prefer my own region: regional state and leaders heal first
            mine = [p for p in dead[-64:] if members[p].region == self.region]
            if mine:
                target = mine[int(self.rng.random() * len(mine))]
        if target is None:
            target = dead[int(self.rng.random() * len(dead))]
        m = members[target]
        if m.status != DEAD:
            return
        first = (DEAD, target, m.inc, self.me, "", "")
        out.append(Send(target, self._msg(Ping(self._next_seq(), target, self._piggyback(target, (first,))))))

    def _probe_stage(self, now: float, seq: int) -> list:
        probe = self.probes.get(seq)
        if probe is None:
            return []
        cfg = self.cfg
        out: list = []
        target = probe.target
        m = self.members.get(target)
        if m is None or m.status > SUSPECT:
            self._drop_probe(probe)
            return out
        if probe.stage == 0:
            # half the timeout and no ack: ping again (a lost ping or ack is the common case)
            probe.stage = 1
            self.stats["probe_retries"] += 1
            out.append(Send(target, self._msg(Ping(seq, target, self._piggyback(target, self._accusation(target))))))
            out.append(self.timers.set(("p", seq), now + self._scaled(cfg.probe_timeout_s) / 2))
            return out
        if probe.stage == 1:
            probe.stage = 2
            self.stats["probes_indirect"] += 1
            # still nothing: a third direct ping, and ask k helpers
            accusation = self._accusation(target)
            out.append(Send(target, self._msg(Ping(seq, target, self._piggyback(target, accusation)))))
            helpers = self._pick_helpers(target, probe.helpers if self.lifeguard else min(3, probe.helpers))
            witness = self.lifeguard and not probe.witness
            for h in helpers:
                out.append(Send(h, self._msg(PingReq(seq, target, witness, self._piggyback(h, accusation)))))
            probe.expected_nacks = len(helpers) if self.lifeguard else 0
            out.append(self.timers.set(("p", seq), now + self._scaled(cfg.indirect_timeout_s)))
            return out
        # the indirect stage expired: no ack at all
        self._drop_probe(probe)
        self.stats["probes_failed"] += 1
        if self.lifeguard:
            missed = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
            self._lhm_add(max(0, missed))
        self._suspect(now, target, out)
        return out

    def _probe_done(self, now: float, probe: _Probe, out: list) -> None:
        self._drop_probe(probe)
        c = self.timers.cancel(("p", probe.seq))
        if c is not None:
            out.append(c)
        if self.lifeguard:
            if self.lhm:
                self._lhm_add(-1)
            s = self.suspicions.get(probe.target)
            if s is not None and s.checked:
                # the last-chance probe was answered: it lives; wait for its refutation
                s.checked = False
                s.deadline = now + self.suspicion_timeout(max(0, len(s.confirmers) - 1))
                out.append(self.timers.set(("s", probe.target), s.deadline))

    def _drop_probe(self, probe: _Probe) -> None:
        self.probes.pop(probe.seq, None)
        if self.probing.get(probe.target) == probe.seq:
            del self.probing[probe.target]

    def _pick_helpers(self, target: str, k: int) -> list[str]:
        alive = self.alive
        n = len(alive)
        out: list[str] = []
        if n <= 1:
            return out
        r = self.rng.random
        for _ in range(4 * k):
            if len(out) >= k:
                break
            p = alive[int(r() * n)]
            if p != target and p not in out:
                out.append(p)
        return out

    def _relay_timeout(self, now: float, seq: int) -> list:
        relay = self.relays.get(seq)
        if relay is None:
            return []
        origin, oseq, target, witness, stage = relay
        out: list = []
        if stage == 0:
            relay[4] = 1
            out.append(Send(target, self._msg(Ping(seq, target, self._piggyback(target, self._accusation(target))))))
            out.append(self.timers.set(("r", seq), now + self._scaled(self.cfg.probe_timeout_s) / 2))
            return out
        del self.relays[seq]
        if self.lifeguard:
            out.append(Send(origin, self._msg(Nack(oseq))))
            if witness and self.is_alive(target) and target not in self.probing and not self._mass():
                if len(self.probes) < self.cfg.probes_inflight_max:
                    self._start_probe(now, target, True, out)
        return out

    def _mass(self) -> bool:
        """Many suspicions at once: a partition or a mass failure (see mass_suspicion_fraction)."""
        return len(self.suspicions) > max(4, self.cfg.mass_suspicion_fraction * self.n())

    def _lhm_add(self, delta: int) -> None:
        v = self.lhm + delta
        self.lhm = 0 if v < 0 else (self.cfg.lhm_max if v > self.cfg.lhm_max else v)

    # ------------------------------------------------------------------
    # suspicion

    def _suspect(self, now: float, target: str, out: list) -> None:
        m = self.members.get(target)
        if m is None or m.status > SUSPECT:
            return
        u = (SUSPECT, target, m.inc, self.me, "", "")
        if m.status == ALIVE:
            self.stats["suspicions"] += 1
            self._set_suspect(now, m, m.inc, self.me, out)
            self._queue(u)
            if self.lifeguard:
                # buddy system: the suspect hears it first, straight from us
                out.append(Send(target, self._msg(Gossip(self._piggyback(target, (u,))))))
        else:
            s = self.suspicions.get(target)
            if s is not None and self.me not in s.confirmers:
                # our own failed probe of a suspect is a confirmation by us
                self._confirm(now, target, self.me, out)
                self._queue(u)

    def _set_suspect(self, now: float, m: Member, inc: int, origin: str | None, out: list) -> None:
        peer = m.peer
        self.members[peer] = m.replace(inc, SUSPECT)
        s = _Suspicion(inc, now, origin)
        self.suspicions[peer] = s
        s.deadline = now + self.suspicion_timeout(0)
        out.append(self.timers.set(("s", peer), s.deadline))
        out.append(Emit("member.suspect", {"peer": peer, "incarnation": inc, "addr": m.addr, "region": m.region, "by": origin or ""}))

    def _confirm(self, now: float, peer: str, origin: str | None, out: list) -> bool:
        s = self.suspicions.get(peer)
        if s is None or origin is None or origin in s.confirmers:
            return False
        s.confirmers[origin] = True
        self.stats["confirmations"] += 1
        if not self.lifeguard:
            return True
        deadline = s.start + self.suspicion_timeout(len(s.confirmers) - 1)
        if deadline < s.deadline:
            s.deadline = max(now, deadline)
            out.append(self.timers.set(("s", peer), s.deadline))
        return True

    def _suspicion_expired(self, now: float, peer: str) -> list:
        s = self.suspicions.get(peer)
        m = self.members.get(peer)
        if s is None or m is None or m.status != SUSPECT or m.inc != s.inc:
            self.suspicions.pop(peer, None)
            return []
        out: list = []
        if self.lifeguard and not s.checked and len(s.confirmers) - 1 < self.cfg.suspicion_confirmations and not self._mass():
            # Unconfirmed: before declaring a death on our own, probe the suspect once
            # more (with the suspicion first in the ping). A member whose refutation we
            # missed answers with its new incarnation; a crashed one stays silent.
            s.checked = True
            self.stats["last_chance_probes"] += 1
            seq = self.probing.get(peer)
            if seq is not None:
                self._drop_probe(self.probes[seq])
            cfg = self.cfg
            self._start_probe(now, peer, True, out, helpers=2 * cfg.indirect_checks)
            s.deadline = now + self._scaled(cfg.probe_timeout_s + cfg.indirect_timeout_s) + cfg.gossip_interval_s
            out.append(self.timers.set(("s", peer), s.deadline))
            return out
        del self.suspicions[peer]
        self.stats["deaths_declared"] += 1
        self._queue((DEAD, peer, m.inc, self.me, "", ""))
        self._set_dead(now, m, m.inc, DEAD, self.me, out)
        return out

    def _set_dead(self, now: float, m: Member, inc: int, status: int, origin: str | None, out: list) -> None:
        assert m.status <= SUSPECT and status >= DEAD
        peer = m.peer
        self.members[peer] = m.replace(inc, status)
        self._remove_live(peer, m.region)
        self.dead.append(peer)
        if self.suspicions.pop(peer, None) is not None:
            c = self.timers.cancel(("s", peer))
            if c is not None:
                out.append(c)
        self._dead_queue.append((now, peer, inc))
        out.append(Emit(_EVENT[status], {"peer": peer, "incarnation": inc, "addr": m.addr, "region": m.region, "by": origin or ""}))

    def _remove_live(self, peer: str, region: str) -> None:
        self.alive.remove(peer)
        if region == self.region:
            local = self.local
            i = bisect.bisect_left(local, peer)
            if i < len(local) and local[i] == peer:
                del local[i]
        seq = self.probing.pop(peer, None)
        if seq is not None:
            self.probes.pop(seq, None)

    def _add_live(self, peer: str, region: str) -> None:
        self.alive.append(peer)
        if region == self.region:
            bisect.insort(self.local, peer)

    def _expire(self, now: float) -> None:
        """Forget members dead for dead_retain_s (leaving tombstones); drop old tombstones."""
        q = self._dead_queue
        if self._dead_head < len(q) and q[self._dead_head][0] <= now - self.cfg.dead_retain_s:
            cutoff = now - self.cfg.dead_retain_s
            while self._dead_head < len(q) and q[self._dead_head][0] <= cutoff:
                _, peer, inc = q[self._dead_head]
                self._dead_head += 1
                m = self.members.get(peer)
                if m is not None and m.status > SUSPECT and m.inc == inc:
                    del self.members[peer]
                    self.dead.remove(peer)
                    self.tombstones.pop(peer, None)
                    self.tombstones[peer] = (inc, now)
                    self.stats["forgotten"] += 1
            if self._dead_head > 256 and self._dead_head * 2 > len(q):
                del q[: self._dead_head]
                self._dead_head = 0
        tomb = self.tombstones
        if tomb:
            tcut = now - self.cfg.tombstone_retain_s
            tmax = self.cfg.tombstones_max
            while tomb:
                peer = next(iter(tomb))
                if tomb[peer][1] > tcut and len(tomb) <= tmax:
                    break
                del tomb[peer]

    # ------------------------------------------------------------------
    # merging updates (the state table, in one place)

    def _merge(self, now: float, updates: Sequence[Update], out: list) -> None:
        for u in updates:
            if self._apply(now, u, out):
                self._queue(u)

    def _apply(self, now: float, u: Update, out: list) -> bool:
        """Apply one update; True if it was news (then it is relayed).

        | held \\ update | alive(i)        | suspect(i)            | dead/left(i)    |
        | unknown        | add if i > tomb | add if it has region  | tombstone only  |
        | alive(j)       | i > j           | i >= j                | i >= j          |
        | suspect(j)     | i > j           | i > j; i == j confirm | i >= j          |
        | dead/left(j)   | i > j (revive)  | never                 | i > j, no event |
        """
        k, peer, inc, origin, addr, region = u
        if peer == self.me:
            self._about_me(now, k, inc, out)
            return False
        m = self.members.get(peer)
        if m is None:
            t = self.tombstones.get(peer)
            if k >= DEAD:
                if t is None or t[0] < inc:
                    self.tombstones.pop(peer, None)
                    self.tombstones[peer] = (inc, now)
                return False
            if k == SUSPECT and not region:
                return False  # a suspicion about a member we never heard of
            if t is not None:
                if inc <= t[0]:
                    self.stats["stale_rejected"] += 1
                    return False
                del self.tombstones[peer]
            m = Member(peer, inc, ALIVE, addr, region)
            self.members[peer] = m
            self._add_live(peer, region)
            out.append(Emit("member.alive", {"peer": peer, "incarnation": inc, "addr": addr, "region": region}))
            if k == SUSPECT:
                self._set_suspect(now, m, inc, origin, out)
            return True
        st = m.status
        if inc < m.inc or (k == ALIVE and inc == m.inc and st > SUSPECT):
            # the sender missed news about this member: send it our newer record
            if self.lifeguard and len(self._fix) < _FIX_MAX:
                self._fix.append(self._fix_record(m))
        if k == ALIVE:
            if inc <= m.inc:
                if st > SUSPECT:
                    self.stats["stale_rejected"] += 1
                return False
            addr = addr or m.addr
            region = region or m.region
            if st > SUSPECT:
                self.dead.remove(peer)
                self._add_live(peer, region)
                # a member we held dead is back: likely a healed partition; reach the other dead now
                self._heal_burst = 2
            else:
                if region != m.region:
                    self._remove_live(peer, m.region)
                    self._add_live(peer, region)
                if st == SUSPECT:
                    self.suspicions.pop(peer, None)
                    c = self.timers.cancel(("s", peer))
                    if c is not None:
                        out.append(c)
            self.members[peer] = Member(peer, inc, ALIVE, addr, region)
            out.append(Emit("member.alive", {"peer": peer, "incarnation": inc, "addr": addr, "region": region}))
            return True
        if k == SUSPECT:
            if st > SUSPECT or inc < m.inc:
                return False
            if st == SUSPECT and inc == m.inc:
                return self._confirm(now, peer, origin, out)
            self._set_suspect(now, m, inc, origin, out)
            return True
        # dead or left
        if inc < m.inc or (st > SUSPECT and inc <= m.inc):
            return False
        if k == DEAD and st == ALIVE and self.lifeguard and now - self._heard.get(peer, -1e18) < self.cfg.fresh_evidence_s:
            # we heard from it a moment ago: hearsay of its death becomes a suspicion it can refute
            self.stats["deaths_doubted"] += 1
            self._set_suspect(now, m, inc, origin, out)
            self._queue((SUSPECT, peer, inc, origin, "", ""))
            return False
        if st > SUSPECT:
            self.members[peer] = m.replace(inc, k)
            return True
        self._set_dead(now, m, inc, k, origin, out)
        return True

    def _about_me(self, now: float, kind: int, inc: int, out: list) -> None:
        if kind == ALIVE:
            if inc > self.inc:
                # someone holds a newer incarnation of me than I do (I lost my disk)
                self._refute(inc, out, accused=False)
            return
        if inc >= self.inc:
            self._refute(inc, out, accused=True)
        elif self.lifeguard and len(self._fix) < _FIX_MAX:
            self._fix.append(self._my_alive())

    def _refute(self, inc: int, out: list, accused: bool) -> None:
        self.inc = inc + 1
        out.append(Persist(_INCARNATION_KEY, str(self.inc).encode()))
        self._queue(self._my_alive())
        if accused:
            self.stats["refutations"] += 1
            if self.lifeguard:
                self._lhm_add(1)
        out.append(Emit("member.alive", {"peer": self.me, "incarnation": self.inc, "addr": self.addr, "region": self.region}))

    def _fix_record(self, m: Member) -> Update:
        if m.status == SUSPECT:
            s = self.suspicions.get(m.peer)
            return (SUSPECT, m.peer, m.inc, (s.origin if s is not None else None) or self.me, "", "")
        if m.status == ALIVE:
            return (ALIVE, m.peer, m.inc, None, m.addr, m.region)
        return (m.status, m.peer, m.inc, self.me, "", "")

    def _my_alive(self) -> Update:
        return (ALIVE, self.me, self.inc, None, self.addr, self.region)

    # ------------------------------------------------------------------
    # dissemination

    def _queue(self, u: Update) -> None:
        """Queue news for dissemination; newer news about the same member replaces older."""
        self._order += 1
        q = self.queue
        old = q.pop(u[1], None)
        if old is not None:
            self._buckets[old.transmits].pop(u[1], None)
        b = _Broadcast(u, encode_update(u), self._order)
        q[u[1]] = b
        self._buckets[0][u[1]] = b
        if len(q) > self.cfg.broadcast_queue_max:
            for bucket in reversed(self._buckets):  # drop the most-sent, oldest first
                if bucket:
                    peer = next(iter(bucket))
                    del bucket[peer]
                    del q[peer]
                    self.stats["broadcasts_dropped"] += 1
                    break

    def _transmit_limit(self) -> int:
        return self.cfg.retransmit_mult * max(1, math.ceil(math.log10(self.n() + 1)))

    def _sent(self, b: _Broadcast, limit: int) -> None:
        """Count one transmission of ``b``: move it up a bucket, or retire it at the limit."""
        peer = b.update[1]
        buckets = self._buckets
        del buckets[b.transmits][peer]
        b.transmits += 1
        if b.transmits >= limit:
            del self.queue[peer]
            return
        while len(buckets) <= b.transmits:
            buckets.append({})
        buckets[b.transmits][peer] = b

    def _piggyback(self, to: str | None, first: Sequence[Update] = ()) -> bytes:
        """The update blob for one message: fewest-sent first (newest first among
        equals), within the byte budget.

        ``first`` (a buddy-system suspicion, a dead notice) always goes first;
        with Lifeguard so does queued news that accuses the receiver itself.
        The queue is kept in buckets by transmit count, so building a message
        costs what it takes, not the length of the queue.
        """
        q = self.queue
        if not first and not q:
            return b""
        encs: list[bytes] = []
        budget = self._budget
        skip = None
        for u in first:
            e = encode_update(u)
            encs.append(e)
            budget -= len(e)
            skip = u[1]
        if not q:
            return _blob(encs)
        limit = self._transmit_limit()
        chosen: list[_Broadcast] = []
        if to is not None and skip is None and self.lifeguard:
            b = q.get(to)
            if b is not None and b.update[0] != ALIVE:
                encs.append(b.enc)
                budget -= len(b.enc)
                chosen.append(b)
                skip = to
        full = False
        misses = 0
        for bucket in self._buckets:
            if full:
                break
            for peer in reversed(bucket):
                b = bucket[peer]
                size = len(b.enc)
                if size > budget:
                    misses += 1
                    if budget < 64 or misses >= 8:  # nearly full: stop looking for a small one
                        full = True
                        break
                    continue
                if peer == skip:
                    continue
                encs.append(b.enc)
                budget -= size
                chosen.append(b)
                if len(encs) >= UPDATES_MAX:
                    full = True
                    break
        for b in chosen:
            self._sent(b, limit)
        return _blob(encs)

    def _gossip_tick(self, now: float) -> list:
        out: list = []
        for _ in range(self.cfg.gossip_fanout):
            if not self.queue:
                break
            t = self.random_alive()
            if t is None:
                break
            out.append(Send(t, self._msg(Gossip(self._piggyback(t)))))
        if self.queue:
            out.append(self.timers.set("gossip", now + self.cfg.gossip_interval_s))
        return out

    # ------------------------------------------------------------------
    # joining and anti-entropy

    def _join(self, now: float) -> list:
        out: list = []
        if self.alive or not self.seeds:
            self.joined = bool(self.alive)
            return out
        me = _blob([encode_update(self._my_alive())])
        for s in self.seeds[:3]:
            out.append(Send(s, self._msg(SyncReq(True, 0, me))))
        out.append(self.timers.set("join", now + self.cfg.join_retry_s))
        return out

    @staticmethod
    def _record(m: Member) -> Update:
        return (m.status, m.peer, m.inc, None, m.addr, m.region)

    def _join_pages(self, cursor: int) -> list[tuple[int, bool, bytes]]:
        """Up to sync_pages_max pages of alive/suspect records from ``cursor`` (me first)."""
        pages = []
        alive = self.alive
        members = self.members
        i = cursor
        more = False
        for _ in range(self.cfg.sync_pages_max):
            budget = self._budget
            encs: list[bytes] = []
            if i == 0:
                e = encode_update(self._my_alive())
                encs.append(e)
                budget -= len(e)
            while i < len(alive) and len(encs) < UPDATES_MAX:
                e = encode_update(self._record(members[alive[i]]))
                if len(e) > budget:
                    break
                encs.append(e)
                budget -= len(e)
                i += 1
            more = i < len(alive)
            pages.append((0, False, _blob(encs)))
            if not more:
                break
        if more:
            # only the batch's last page says "ask me for more from here": one request per
            # batch (asked after every page, a join would fan out into a request storm)
            pages[-1] = (i, True, pages[-1][2])
        return pages

    def _sample_records(self) -> bytes:
        """One page of random records (with a few dead ones): anti-entropy."""
        e = encode_update(self._my_alive())
        encs = [e]
        budget = self._budget - len(e)
        r = self.rng.random
        pool = self.alive
        picks = [pool[int(r() * len(pool))] for _ in range(min(len(pool), 12))]
        dead = self.dead
        picks.extend(dead[int(r() * len(dead))] for _ in range(min(len(dead), 3)))
        seen: dict[str, bool] = {}
        for p in picks:
            if p in seen:
                continue
            seen[p] = True
            e = encode_update(self._record(self.members[p]))
            if len(e) > budget:
                break
            encs.append(e)
            budget -= len(e)
        return _blob(encs)

    def _sync_tick(self, now: float) -> list:
        out: list = [self.timers.set("sync", now + self.cfg.sync_interval_s * (0.75 + 0.5 * self.rng.random()))]
        t = self.random_alive()
        if t is not None:
            out.append(Send(t, self._msg(SyncReq(False, 0, self._sample_records()))))
        elif self.seeds:
            out.extend(self._join(now))
        return out

    # ------------------------------------------------------------------

    def _msg(self, msg: Message) -> Message:
        """Every message built passes here: the size bound is asserted."""
        self.stats["messages_built"] += 1
        if self.cfg.check_sizes:
            n = len(self._codec.encode(msg))
            assert n <= self.cfg.message_bytes_max, f"{type(msg).__name__} of {n} bytes"
            if n > self.stats["message_bytes_max"]:
                self.stats["message_bytes_max"] = n
        return msg
