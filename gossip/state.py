"""State dissemination: every peer's signed, versioned key-value state (sans-IO).

Each peer *owns* a small key-value state -- its health, energy, cache
contents, region, position, capabilities, draining flag, leader claim --
and is the only writer of it: every write takes the next value of the
owner's version counter and is signed by the owner (Ed25519 over a
domain-separated encoding of owner, key, version and value). Holders merge
per key by version: the value with the higher version wins. That is a
single-writer CRDT (a map of last-writer-wins registers whose only writer is
the owner), so merging is commutative, associative and idempotent, and a
relay can neither forge nor roll back a value: an update with a bad
signature is *forged*, one at or below the version held is *replayed*
(benign duplicates, which gossip makes all the time, count here too); both
are rejected and counted. The verification function is injected: it is a
pure function of (peer id, bytes, signature), so the simulator memoises it.

Scale -- the structure, and why per-peer cost does not grow with N:

* **Membership is global** (``membership.py``): every peer knows every
  member, its address and its region. Probing costs are constant per peer.
* **Full state within a region.** A peer holds the full state of the peers
  of its own region and of no one else. When it publishes, it pushes the new
  entries straight to every live peer of its region (one hop: spread is one
  network delay), retransmits to those that did not ack within
  ``push_retry_s`` (a lost datagram costs one retry, not a gossip round) --
  or, with ``push_acks`` off (half the messages), lets the receiver pull
  what it missed when the next push does not extend what it holds --
  and every ``ae_interval_s`` runs a scuttlebutt exchange (digest, then
  deltas) with a random region peer to repair anything missed (a restart,
  a healed partition, a joiner). Cost per peer is proportional to the region
  size and the publish rate, not to N.
* **Compact summaries across regions.** The leader of each region (see
  ``leader.py``) publishes one ``summary`` key -- peers, free slots, solar,
  headroom, mean state of charge, GPU models, the region's most replicated
  artifacts -- in the *global* scope, which spreads by the same scuttlebutt
  exchange with random members anywhere (every ``global_ae_interval_s``).
  Digests are bounded: at most ``digest_entries_max`` owners per message,
  covering a contiguous range of owner-id prefixes, rotated exchange by
  exchange, so a digest never outgrows one message whatever the number of
  regions. A summary crosses the mesh in O(log N) exchanges.

Every message is at most 1,200 bytes encoded. Deltas send an owner's
entries in version order and may stop at any entry (the receiver's version
for that owner then names exactly the prefix it holds: scuttlebutt's rule),
so a delta never needs more than one message per owner and a response is at
most ``delta_messages_max`` messages.

Noisy readings are quantised (``FIELDS``: a quantum and a change threshold
per field) and a group is republished only when a field moved by its
threshold, or when the quantised value differs and the last publish is
``max_staleness_s`` old, and never more often than its
``*_min_interval_s``: the bandwidth a peer spends on its own noise is
bounded whatever the noise. A noisy group that changed but is not due rides
along with one that is (same push, so the two stay in phase).

Readings come from an injected sampler ``Callable[[float], dict]`` called
every ``sample_interval_s`` (``arcnet.mesh.samplers`` reads a file or a
command for a real site; the simulator reads its energy model). Field names
are the sampler's reading names (``FIELDS``); unknown readings are ignored.

Knowingly left out: deleting keys (the schema is fixed and small), state of
peers of other regions (ask them, or their leader's summary), and
confidentiality (state is public within the mesh).

Prior art: scuttlebutt reconciliation (van Renesse et al., "Efficient
reconciliation and flow control for anti-entropy protocols", 2008), and
quickwit's chitchat, which applies it to per-node key-value state.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Protocol, Sequence

import msgpack

from arcnet.mesh.core import Emit, Persist, Send, Timers
from arcnet.mesh.identity import PEER_ID_LEN
from arcnet.mesh.wire import BOOL, PEER_ID, U8, U64, Bytes, Codec, Message, Str, WireError

__all__ = [
    "FIELDS",
    "GLOBAL",
    "REGION",
    "MembershipView",
    "StateConfig",
    "StateCore",
    "StateView",
    "merge_entries",
    "signed_bytes",
]

REGION, GLOBAL = 0, 1  # scopes
MESSAGE_BYTES_MAX = 1200
KEY_MAX = 24
VALUE_BYTES_MAX = 768
KEYS_PER_OWNER_MAX = 32
PREFIX = slice(8, 20)  # 12 base58 chars of the key part of a peer id (~70 bits)
_DOMAIN = b"arcnet/state/v1\0"
_VERSION_KEY = "state.version"
_BLOB_MAX = MESSAGE_BYTES_MAX - 64
_OWNER_DELTA_OVERHEAD = 1 + 54 + 9 + 3  # [owner, since, entries-header]
# msgpack overhead around a blob, worst case (array, tag, version, scope, flags, ids, bin header)
_OVERHEAD_BYTES = 1 + 3 + 1 + 1 + 1 + 26 + 3 + 3

# --------------------------------------------------------------------------
# the schema: reading name -> (key, type, quantum, change threshold)
#
# One table, so every rule about a field is in one place. ``quantum`` rounds
# a reading (noise below it never reaches the wire); a group republishes when
# a field moves by ``threshold`` (in the field's unit). Types: f float,
# i int, b bool, s str, L list of str.

FIELDS: dict[str, tuple[str, str, float, float]] = {
    # health: what placement prices
    "health_score": ("health", "f", 0.05, 0.1),  # 0..1
    "cpu_slots_free": ("health", "i", 1, 2),
    "gpu_slots_free": ("health", "i", 1, 1),
    "queue_length": ("health", "i", 1, 4),
    "jobs_running": ("health", "i", 1, 2),
    # energy: what makes energy cheap or scarce (units in the names)
    "solar_kw": ("energy", "f", 5.0, 50.0),
    "battery_soc_fraction": ("energy", "f", 0.01, 0.05),
    "battery_kwh": ("energy", "f", 10.0, 200.0),
    "power_headroom_kw": ("energy", "f", 10.0, 50.0),
    "thermal_headroom_kw": ("energy", "f", 10.0, 50.0),
    "grid_price_per_kwh": ("energy", "f", 0.005, 0.02),
    "carbon_g_per_kwh": ("energy", "f", 5.0, 40.0),
    # capabilities: static, published on any change
    "gpu_model": ("caps", "s", 0, 0),
    "gpu_count": ("caps", "i", 1, 1),
    "memory_gb": ("caps", "f", 1.0, 1.0),
    "roles": ("caps", "L", 0, 0),  # any of "site", "hpc", "edge"
    # cache: the artifact ids held (compacted into a Bloom filter beyond cache_ids_max)
    "artifacts": ("cache", "L", 0, 0),
    "draining": ("draining", "b", 0, 0),
}

GROUPS: dict[str, tuple[str, ...]] = {}
for _name, (_key, *_r) in FIELDS.items():
    GROUPS.setdefault(_key, ())
    GROUPS[_key] = GROUPS[_key] + (_name,)
NOISY = ("health", "energy")  # rate-limited groups
ROLES = ("site", "hpc", "edge")
DEFAULTS: dict[str, Any] = {
    "health_score": 1.0,
    "cpu_slots_free": 0,
    "gpu_slots_free": 0,
    "queue_length": 0,
    "jobs_running": 0,
    "solar_kw": 0.0,
    "battery_soc_fraction": 0.0,
    "battery_kwh": 0.0,
    "power_headroom_kw": 0.0,
    "thermal_headroom_kw": 0.0,
    "grid_price_per_kwh": 0.0,
    "carbon_g_per_kwh": 0.0,
    "gpu_model": "",
    "gpu_count": 0,
    "memory_gb": 0.0,
    "roles": ["site"],
    "artifacts": [],
    "draining": False,
}
ARTIFACT_ID_MAX = 80
SCOPE_OF: dict[str, int] = {"summary": GLOBAL}  # every other key is regional


def signed_bytes(owner: str, key: str, version: int, value: bytes) -> bytes:
    """The exact bytes an owner signs for one entry."""
    return b"".join((_DOMAIN, owner.encode(), b"\0", key.encode(), b"\0", version.to_bytes(8, "big"), value))


# --------------------------------------------------------------------------
# wire messages (tags 0x0310-0x031F)
#
# Deltas travel as one msgpack blob: an array of owner deltas
# ``[owner, since, [[key, version, value, signature], ...]]`` (entries in
# ascending version; ``since``: the entries are every entry of that owner in
# that scope with a version above it, up to the last one sent). Digests are
# a blob ``[[prefix, version], ...]``. ``decode_deltas``/``decode_digest``
# check every field strictly.


class StateDelta(Message, tag=0x0311, protocol="state"):
    scope = U8
    ack = BOOL  # an eager push: ack the highest version you now hold
    deltas = Bytes(_BLOB_MAX)


class StateAck(Message, tag=0x0312, protocol="state"):
    owner = PEER_ID
    version = U64


class StateSyn(Message, tag=0x0313, protocol="state"):
    """Scuttlebutt digest of owners whose prefix is in [lo, hi] (inclusive)."""

    scope = U8
    lo = Str(12)
    hi = Str(12)
    digest = Bytes(_BLOB_MAX)


class StateSynAck(Message, tag=0x0314, protocol="state"):
    """Deltas for the initiator, and what the responder wants back (its versions)."""

    scope = U8
    want = Bytes(_BLOB_MAX)
    deltas = Bytes(_BLOB_MAX)


def _bad(what: str) -> WireError:
    return WireError(f"state: {what}")


def _unpack(blob: bytes) -> Any:
    n = len(blob)
    try:
        return msgpack.unpackb(blob, raw=False, use_list=False, max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises many types; all mean "not a blob"
        raise _bad(f"malformed blob: {type(exc).__name__}") from None


def _is_peer(p: Any) -> bool:
    return type(p) is str and len(p) == PEER_ID_LEN and p.startswith("12D3KooW")


def decode_deltas(blob: bytes) -> tuple:
    """((owner, since, ((key, version, value, sig), ...)), ...), strictly checked."""
    if not blob:
        return ()
    obj = _unpack(blob)
    if type(obj) is not tuple or len(obj) > 64:
        raise _bad("deltas: expected a list")
    for d in obj:
        if type(d) is not tuple or len(d) != 3:
            raise _bad("delta: expected [owner, since, entries]")
        owner, since, entries = d
        if not _is_peer(owner):
            raise _bad("delta: owner is not a peer id")
        if type(since) is not int or not 0 <= since < 1 << 64:
            raise _bad("delta: since out of range")
        if type(entries) is not tuple or len(entries) > KEYS_PER_OWNER_MAX:
            raise _bad("delta: entries")
        last = since
        for e in entries:
            if type(e) is not tuple or len(e) != 4:
                raise _bad("entry: expected [key, version, value, signature]")
            key, ver, val, sig = e
            if type(key) is not str or not 0 < len(key) <= KEY_MAX:
                raise _bad("entry: key")
            if type(ver) is not int or not last < ver < 1 << 64:
                raise _bad("entry: versions must ascend above since")
            if type(val) is not bytes or len(val) > VALUE_BYTES_MAX:
                raise _bad("entry: value")
            if type(sig) is not bytes or len(sig) != 64:
                raise _bad("entry: signature")
            last = ver
    return obj


def decode_digest(blob: bytes) -> tuple:
    if not blob:
        return ()
    obj = _unpack(blob)
    if type(obj) is not tuple or len(obj) > 128:
        raise _bad("digest: expected a list")
    for d in obj:
        if type(d) is not tuple or len(d) != 2 or type(d[0]) is not str or len(d[0]) != 12:
            raise _bad("digest: expected [prefix, version]")
        if type(d[1]) is not int or not 0 <= d[1] < 1 << 64:
            raise _bad("digest: version out of range")
    return obj


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _array_head(n: int) -> bytes:
    return bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")


# --------------------------------------------------------------------------
# values: encoding, validation, quantisation


def quantise(value: float, quantum: float) -> float:
    if quantum <= 0:
        return value
    return round(round(value / quantum) * quantum, 6)


def _check_value(key: str, v: Any) -> Any:
    """Validate a decoded value of a known key; returns the plain value or raises ValueError."""

    def num(x: Any) -> float:
        if type(x) is int:
            return float(x)
        if type(x) is not float or x != x or x in (math.inf, -math.inf):
            raise ValueError("number")
        return x

    def integer(x: Any) -> int:
        if type(x) is not int or not -(1 << 31) <= x < 1 << 31:
            raise ValueError("int")
        return x

    if key == "health":
        if type(v) is not tuple or len(v) != 5:
            raise ValueError("health")
        return (num(v[0]), integer(v[1]), integer(v[2]), integer(v[3]), integer(v[4]))
    if key == "energy":
        if type(v) is not tuple or len(v) != 7:
            raise ValueError("energy")
        return tuple(num(x) for x in v)
    if key == "caps":
        if type(v) is not tuple or len(v) != 4 or type(v[0]) is not str or len(v[0]) > 64:
            raise ValueError("caps")
        roles = v[3]
        if type(roles) is not tuple or len(roles) > 8 or any(r not in ROLES for r in roles):
            raise ValueError("roles")
        return (v[0], integer(v[1]), num(v[2]), roles)
    if key == "cache":
        if type(v) is not tuple or len(v) != 3:
            raise ValueError("cache")
        count, ids, bloom = v
        integer(count)
        if type(ids) is not tuple or any(type(i) is not str or len(i) > ARTIFACT_ID_MAX for i in ids):
            raise ValueError("cache ids")
        if bloom is not None and (type(bloom) is not bytes or not 8 <= len(bloom) <= 1024):
            raise ValueError("cache bloom")
        return v
    if key == "region":
        if type(v) is not str or len(v) > 64:
            raise ValueError("region")
        return v
    if key == "geo":
        if type(v) is not tuple or len(v) != 2:
            raise ValueError("geo")
        lat, lon = num(v[0]), num(v[1])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError("geo range")
        return (lat, lon)
    if key == "draining":
        if type(v) is not bool:
            raise ValueError("draining")
        return v
    if key == "lead":
        if type(v) is not tuple or len(v) != 3 or type(v[2]) is not bool:
            raise ValueError("lead")
        return (integer(v[0]), integer(v[1]), v[2])
    if key == "summary":
        if type(v) is not tuple or len(v) != 2 or type(v[0]) is not tuple:
            raise ValueError("summary")
        head = v[0]
        if len(head) != 9 or type(head[0]) is not str:
            raise ValueError("summary head")
        integer(head[1])
        for x in head[2:]:
            num(x)
        if type(v[1]) is not tuple or any(type(i) is not str or len(i) > ARTIFACT_ID_MAX for i in v[1]):
            raise ValueError("summary artifacts")
        return v
    return v  # a key this version does not know: kept, signed, not interpreted


def _bloom_positions(item: str, nbits: int, k: int) -> list[int]:
    h = hashlib.blake2b(item.encode(), digest_size=16).digest()
    a = int.from_bytes(h[:8], "big")
    b = int.from_bytes(h[8:], "big") | 1
    return [(a + i * b) % nbits for i in range(k)]


def bloom_of(items: Sequence[str], nbytes: int, k: int) -> bytes:
    bits = bytearray(nbytes)
    n = nbytes * 8
    for it in items:
        for pos in _bloom_positions(it, n, k):
            bits[pos >> 3] |= 1 << (pos & 7)
    return bytes(bits)


def bloom_has(bloom: bytes, item: str, k: int) -> bool:
    n = len(bloom) * 8
    return all(bloom[pos >> 3] >> (pos & 7) & 1 for pos in _bloom_positions(item, n, k))


def merge_entries(a: Mapping[str, tuple], b: Mapping[str, tuple]) -> dict[str, tuple]:
    """The CRDT merge of two holders' views of one owner: per key, the higher version wins.

    Entries are ``key -> (version, value, ...)``; versions of one owner are
    unique per write, so equal versions carry equal values.
    """
    out = dict(a)
    for k, e in b.items():
        mine = out.get(k)
        if mine is None or e[0] > mine[0]:
            out[k] = e
    return out


# --------------------------------------------------------------------------
# configuration


@dataclass
class StateConfig:
    """Knobs of the state core. None of them scales with N; the region size
    (R, the peers of one region) and the number of regions do appear."""

    sample_interval_s: float = 1.0
    """Seconds between sampler calls."""

    health_min_interval_s: float = 5.0
    """Seconds between two publishes of the health group (slots, queue)."""

    energy_min_interval_s: float = 15.0
    """Seconds between two publishes of the energy group. Bids price energy
    from fresh local readings; gossip only has to steer the search."""

    max_staleness_s: float = 60.0
    """A quantised change smaller than its threshold is published after this
    many seconds (so small drifts are not hidden forever)."""

    push_retry_s: float = 0.3
    """Seconds between retransmissions of an unacked eager push (more than a
    region's round-trip time)."""

    push_retries_max: int = 4
    """Retransmissions of an eager push (then anti-entropy repairs): at 10%
    loss a region peer still lacks an update after 1.2 s with probability
    ~1e-5 (push or ack lost five times in a row)."""

    push_acks: bool = True
    """Ask the region peers an eager push goes to for an ack, and retransmit
    to those that do not send one (``push_retry_s``). Off, half the messages
    of a publish go (the acks): a receiver that sees a gap in an owner's
    versions pulls the missing range from it when the owner's next push
    arrives, and anti-entropy (``ae_interval_s``) repairs the rest. Long,
    low-rate studies in the simulator turn this off."""

    push_fanout_max: int = 128
    """Region peers an eager push goes to (all, in regions up to this size;
    a random subset beyond, the rest learn by anti-entropy)."""

    ae_interval_s: float = 5.0
    """Seconds between scuttlebutt exchanges with a random region peer. Cost
    per peer: about one digest of R entries (~17 bytes each) per interval."""

    global_ae_interval_s: float = 5.0
    """Seconds between scuttlebutt exchanges of the global scope (region
    summaries) with a random member of any region."""

    digest_entries_max: int = 60
    """Owners per digest message; larger scopes are covered range by range."""

    delta_messages_max: int = 4
    """Delta messages one exchange may answer with."""

    cache_ids_max: int = 8
    """Artifact ids published as a list; beyond, a Bloom filter of all."""

    bloom_bytes: int = 512
    """Bloom filter size: 4,096 bits, 4 hashes: 0.1% false positives at 200
    artifacts, 2% at 500."""

    bloom_hashes: int = 4

    summary_interval_s: float = 10.0
    """Seconds between region summary refreshes by the leader."""

    summaries_per_region_max: int = 2
    """Summaries kept per region (the highest epochs); older ones dropped."""

    dead_state_retain_s: float = 60.0
    """Seconds the state of a dead region peer is kept before it is dropped."""

    message_bytes_max: int = MESSAGE_BYTES_MAX
    check_sizes: bool = True
    """Encode every built message and assert the size bound."""


# --------------------------------------------------------------------------
# storage


class _Entry:
    __slots__ = ("version", "value", "sig", "plain", "enc")

    def __init__(self, version: int, value: bytes, sig: bytes, plain: Any):
        self.version = version
        self.value = value
        self.sig = sig
        self.plain = plain
        self.enc: bytes | None = None  # cached msgpack of [key, version, value, sig]


class _Owner:
    __slots__ = ("peer", "keys", "maxv", "top", "region", "flat", "dead_since")

    def __init__(self, peer: str):
        self.peer = peer
        self.keys: dict[str, _Entry] = {}
        self.maxv = [0, 0]  # per scope: the version of the contiguous prefix held (what digests say)
        self.top = 0  # the newest version held (a gap below it is possible)
        self.region = ""
        self.flat: dict[str, Any] | None = None  # cached view.get() answer
        self.dead_since: float | None = None


class MembershipView(Protocol):
    """What the state core needs from membership (MembershipCore provides it)."""

    def region_peers(self) -> list[str]: ...

    def is_alive(self, peer: str) -> bool: ...

    def random_alive(self) -> str | None: ...

    def region_of(self, peer: str) -> str | None: ...


class StateView:
    """The read API other cores use (placement, leader): plain dicts and sorted lists."""

    def __init__(self, core: "StateCore"):
        self._core = core

    def get(self, peer: str) -> dict[str, Any] | None:
        """Current values of ``peer``'s state, flattened (the sampler's reading names plus
        region, lat, lon, artifacts_count, lead_epoch, lead_term, stable, version)."""
        o = self._core.owners.get(peer)
        if o is None or not o.keys:
            return None
        if o.flat is None:
            o.flat = _flatten(o, self._core.cfg)
        return o.flat

    def fields(self, peer: str, names: Sequence[str]) -> dict[str, Any] | None:
        """Some of :meth:`get`'s fields (those present), plus ``version``, without
        flattening the rest: for a core that reads a few fields of many peers often."""
        o = self._core.owners.get(peer)
        if o is None or not o.keys:
            return None
        flat = o.flat
        if flat is not None:
            return {n: flat[n] for n in names if n in flat} | {"version": flat["version"]}
        out: dict[str, Any] = {"version": o.top}
        keys = o.keys
        for n in names:
            where = _FIELD_AT.get(n)
            if where is None:
                continue
            e = keys.get(where[0])
            if e is None or e.plain is None:
                continue
            out[n] = e.plain if where[1] < 0 else e.plain[where[1]]
        return out

    def version(self, peer: str) -> int:
        """The newest version of ``peer``'s state held (0: none)."""
        o = self._core.owners.get(peer)
        return 0 if o is None else o.top

    def peers_in_region(self, region: str | None = None, *, alive_only: bool = True) -> list[str]:
        """Peers of ``region`` (default: mine) whose state we hold, sorted (live ones only by default)."""
        core = self._core
        region = core.region if region is None else region
        alive = core.membership.is_alive
        out = [p for p, o in core.owners.items() if o.region == region and o.maxv[REGION] and (not alive_only or alive(p))]
        out.sort()
        return out

    def holders_of(self, artifact_id: str, region: str | None = None) -> list[str]:
        """Live peers of the region (default: mine) that hold ``artifact_id`` (a Bloom filter
        may say yes wrongly, ~0.1-2% of the time: the fetcher verifies by hash anyway)."""
        core = self._core
        k = core.cfg.bloom_hashes
        out = []
        for p in self.peers_in_region(region):
            e = core.owners[p].keys.get("cache")
            if e is None or e.plain is None:
                continue
            _count, ids, bloom = e.plain
            if artifact_id in ids or (bloom is not None and bloom_has(bloom, artifact_id, k)):
                out.append(p)
        return out

    def summary(self, region: str) -> dict[str, Any] | None:
        """The freshest summary of ``region`` (highest leader epoch), or None."""
        best = self._core._summaries.get(region)
        if not best:
            return None
        return _summary_dict(*best[0])

    def summaries(self) -> dict[str, dict[str, Any]]:
        return {r: _summary_dict(*v[0]) for r, v in sorted(self._core._summaries.items()) if v}

    def regions_holding(self, artifact_id: str) -> list[str]:
        """Regions whose summary lists ``artifact_id`` among its most replicated artifacts."""
        return [r for r, s in self.summaries().items() if artifact_id in s["artifacts"]]

    @property
    def region_version(self) -> int:
        """Bumps whenever any state of my region changes (a cheap 'did anything change?')."""
        return self._core.region_version


_FLAT_NAMES: dict[str, tuple[str, ...]] = {
    "health": GROUPS["health"],
    "energy": GROUPS["energy"],
    "geo": ("lat", "lon"),
    "lead": ("lead_epoch", "lead_term", "stable"),
}


# flattened name -> (key, index in the key's tuple, or -1 for the whole value): StateView.fields
_FIELD_AT: dict[str, tuple[str, int]] = {n: (k, i) for k, names in _FLAT_NAMES.items() for i, n in enumerate(names)}
_FIELD_AT["draining"] = ("draining", -1)


def _flatten(o: _Owner, cfg: StateConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"peer": o.peer, "region": o.region, "version": o.top}
    flat_names = _FLAT_NAMES
    for key, e in o.keys.items():
        v = e.plain
        if v is None:
            continue
        names = flat_names.get(key)
        if names is not None:  # a tuple of named fields
            out.update(zip(names, v))
        elif key == "caps":
            out["gpu_model"], out["gpu_count"], out["memory_gb"] = v[0], v[1], v[2]
            out["roles"] = list(v[3])
        elif key == "cache":
            out["artifacts_count"] = v[0]
            out["artifacts"] = list(v[1]) if v[2] is None else None  # None: compacted, ask holders_of
        elif key == "draining":
            out["draining"] = v
        elif key not in ("region", "summary"):
            out[key] = v
    return out


_SUMMARY_NAMES = ("peers", "cpu_slots_free", "gpu_slots_free", "solar_kw", "power_headroom_kw", "battery_soc_fraction", "queue_length")


def _summary_dict(owner: str, head: tuple, artifacts: tuple) -> dict[str, Any]:
    out: dict[str, Any] = {"region": head[0], "epoch": head[1], "leader": owner}
    for name, x in zip(_SUMMARY_NAMES, head[2:]):
        out[name] = x
    out["peers"] = int(out["peers"])
    out["artifacts"] = list(artifacts)
    return out


def summary_value(region: str, epoch: int, stats: Mapping[str, float], artifacts: Sequence[str]) -> tuple:
    """The value of a ``summary`` key (the leader core builds it)."""
    return ((region, epoch) + tuple(float(stats.get(n, 0.0)) for n in _SUMMARY_NAMES), tuple(artifacts))


# --------------------------------------------------------------------------
# the core


class StateCore:
    """One peer's state: its own (sampled, signed, published) and its region's (merged)."""

    PROTOCOL = "state"

    def __init__(
        self,
        peer_id: str,
        *,
        rng: random.Random,
        membership: MembershipView,
        signer: Callable[[bytes], bytes],
        verify: Callable[[str, bytes, bytes], bool],
        sampler: Callable[[float], Mapping[str, Any]] | None = None,
        config: StateConfig | None = None,
        region: str = "",
        lat: float = 0.0,
        lon: float = 0.0,
        disk: Mapping[str, bytes] | None = None,
    ):
        cfg = config or StateConfig()
        if not 256 <= cfg.message_bytes_max <= MESSAGE_BYTES_MAX:
            raise ValueError(f"message_bytes_max must be in 256..{MESSAGE_BYTES_MAX}")
        self.me = peer_id
        self.cfg = cfg
        self.rng = rng
        self.membership = membership
        self.signer = signer
        self.verify = verify
        self.sampler = sampler
        self.region = region
        self.lat = lat
        self.lon = lon
        self.timers = Timers()
        self._codec = Codec(control_max_bytes=cfg.message_bytes_max)
        self._budget = cfg.message_bytes_max - _OVERHEAD_BYTES
        stored = (disk or {}).get(_VERSION_KEY)
        self.counter = int(stored) if stored else 0  # my version counter: never reused, even across restarts
        self.owners: dict[str, _Owner] = {}
        self._prefix: list[dict[str, str]] = [{}, {}]  # per scope: prefix -> owner
        self._mine = self._owner(peer_id)
        self._mine.region = region
        self._published: dict[str, tuple[float, dict[str, Any]]] = {}  # group -> (time, quantised fields)
        self._pending: dict[str, Any] = {}  # key -> plain value set by other cores, published at next flush
        self._force: dict[str, bool] = {}  # keys republished even if unchanged (after a self-heal)
        self._acked: dict[str, int] = {}  # region peer -> highest version of mine it acked
        self._gap_asked: dict[str, int] = {}  # owner -> newest version a gap pull was sent for
        self._push_round = 0
        self._push_tries = 0
        self._ae_cursor = ["", ""]
        self._summaries: dict[str, list[tuple[str, tuple, tuple]]] = {}
        self.region_version = 0
        # owners of my region whose state changed since the leader core last looked (its only consumer)
        self.region_dirty: dict[str, bool] = {}
        self.view = StateView(self)
        self.observer: Callable[[float, str, str, int], None] | None = None
        """Measurement hook (benchmarks): called (now, owner, key, version) for every accepted entry."""
        self._started = False
        self.stats = {
            "updates_accepted": 0,
            "updates_forged": 0,
            "updates_replayed": 0,
            "updates_invalid": 0,
            "updates_dead_owner": 0,
            "publishes": 0,
            "entries_published": 0,
            "pushes_sent": 0,
            "push_retries": 0,
            "gap_pulls": 0,
            "acks_received": 0,
            "syns_sent": 0,
            "deltas_sent": 0,
            "malformed": 0,
            "sampler_errors": 0,
            "self_heals": 0,
            "messages_built": 0,
            "message_bytes_max": 0,
        }

    # ------------------------------------------------------------------
    # API for other cores

    def set_local(self, key: str, value: Any) -> None:
        """Write one of my keys (leader claim, summary...); published at the next flush
        (the next sample tick, or at once on the next event the node delivers)."""
        if not 0 < len(key) <= KEY_MAX:
            raise ValueError(f"state key {key!r}: 1-{KEY_MAX} characters")
        packed = _pack(value)
        if len(packed) > VALUE_BYTES_MAX:
            raise ValueError(f"state value for {key!r} is {len(packed)} bytes encoded (limit {VALUE_BYTES_MAX})")
        try:
            _check_value(key, _unpack(packed))
        except ValueError as exc:
            raise ValueError(f"state value for {key!r} does not match its schema ({exc})") from None
        self._pending[key] = value

    def local(self, key: str) -> Any:
        """My current value of ``key`` (pending or published), or None."""
        if key in self._pending:
            return self._pending[key]
        e = self._mine.keys.get(key)
        return None if e is None else e.plain

    def statistics(self) -> dict[str, float]:
        s: dict[str, float] = dict(self.stats)
        s["owners"] = len(self.owners)
        s["version"] = self.counter
        s["summaries"] = sum(len(v) for v in self._summaries.values())
        return s

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    # ------------------------------------------------------------------
    # driver entry points

    def start(self, now: float) -> list:
        assert not self._started
        self._started = True
        cfg = self.cfg
        out: list = []
        static = {"region": self.region, "geo": (round(self.lat, 4), round(self.lon, 4))}
        for k, v in static.items():
            self._pending[k] = v
        out.extend(self._sample(now))
        r = self.rng.random
        out.append(self.timers.set("sample", now + cfg.sample_interval_s * (0.5 + r())))
        out.append(self.timers.set("ae", now + cfg.ae_interval_s * (0.2 + r())))
        out.append(self.timers.set("gae", now + cfg.global_ae_interval_s * (0.5 + r())))
        return out

    def on_timer(self, now: float, timer: Hashable) -> list:
        if not self.timers.fire(timer):
            return []
        cfg = self.cfg
        if timer == "sample":
            out = self._sample(now)
            out.append(self.timers.set("sample", now + cfg.sample_interval_s))
            return out
        if timer == "retry":
            return self._retry_push(now)
        if timer == "ae":
            out = [self.timers.set("ae", now + cfg.ae_interval_s * (0.75 + 0.5 * self.rng.random()))]
            peers = self.membership.region_peers()
            if peers:
                out.append(self._syn(peers[int(self.rng.random() * len(peers))], REGION))
            self._prune(now)
            return out
        if timer == "gae":
            out = [self.timers.set("gae", now + cfg.global_ae_interval_s * (0.75 + 0.5 * self.rng.random()))]
            t = self.membership.random_alive()
            if t is not None:
                out.append(self._syn(t, GLOBAL))
            return out
        return []

    def on_event(self, now: float, event: Emit) -> list:
        kind = event.kind
        out: list = []
        if kind == "member.alive":
            peer = event.data.get("peer")
            if peer and peer != self.me:
                o = self.owners.get(peer)
                returning = o is None or o.dead_since is not None or not o.maxv[REGION]
                if o is not None:
                    o.dead_since = None
                if returning and event.data.get("region") == self.region:
                    # a new or returning region peer: push it my whole state, and sync from it
                    out.extend(self._push_all_to(peer))
                    out.append(self._syn(peer, REGION))
        elif kind in ("member.dead", "member.left"):
            o = self.owners.get(event.data.get("peer", ""))
            if o is not None and o.dead_since is None:
                o.dead_since = now
                if o.region == self.region:
                    self.region_version += 1
                    self.region_dirty[o.peer] = True
        if self._pending:
            out.extend(self._flush(now))
        return out

    def on_message(self, now: float, sender: str, msg: Message) -> list:
        try:
            return self._on_message(now, sender, msg)
        except WireError:
            self.stats["malformed"] += 1
            return []

    def _on_message(self, now: float, sender: str, msg: Message) -> list:
        t = type(msg)
        out: list = []
        if t is StateDelta:
            deltas = decode_deltas(msg.deltas)
            tops = self._apply_deltas(now, msg.scope, deltas, out, sender)
            if msg.ack:
                for owner, top in tops:
                    out.append(Send(sender, self._msg(StateAck(owner, top))))
            elif msg.scope == REGION:
                self._pull_gap(sender, deltas, out)
            return out
        if t is StateAck:
            if msg.owner == self.me and msg.version > self._acked.get(sender, 0):
                self._acked[sender] = msg.version
                self.stats["acks_received"] += 1
            return out
        if t is StateSyn:
            scope = msg.scope
            if scope not in (REGION, GLOBAL):
                raise _bad("unknown scope")
            digest = decode_digest(msg.digest)
            want, deltas = self._answer(scope, msg.lo, msg.hi, digest)
            first = b""
            if deltas and len(want) + len(deltas[0]) + 16 <= self.cfg.message_bytes_max:
                first = deltas.pop(0)
            out.append(Send(sender, self._msg(StateSynAck(scope, want, first))))
            if first:
                self.stats["deltas_sent"] += 1
            for blob in deltas:
                out.append(Send(sender, self._msg(StateDelta(scope, False, blob))))
            self.stats["deltas_sent"] += len(deltas)
            return out
        if t is StateSynAck:
            scope = msg.scope
            if scope not in (REGION, GLOBAL):
                raise _bad("unknown scope")
            self._apply_deltas(now, scope, decode_deltas(msg.deltas), out, sender)
            want = decode_digest(msg.want)
            if want:
                blobs = self._deltas_for(scope, [(self._prefix[scope].get(p), v) for p, v in want])
                for blob in blobs:
                    out.append(Send(sender, self._msg(StateDelta(scope, False, blob))))
                self.stats["deltas_sent"] += len(blobs)
            return out
        return out

    # ------------------------------------------------------------------
    # sampling and publishing

    def _sample(self, now: float) -> list:
        readings: Mapping[str, Any] = {}
        if self.sampler is not None:
            try:
                readings = self.sampler(now) or {}
            except Exception:  # a broken sampler must not stop gossip; count it, keep last values
                self.stats["sampler_errors"] += 1
                readings = {}
        cfg = self.cfg
        held: list[tuple[str, dict[str, Any]]] = []  # noisy groups changed but not due
        noisy_due = False
        for group, names in GROUPS.items():
            last = self._published.get(group)
            if last is None:
                q = {n: _read(readings, n) for n in names}
            else:
                q = {n: (_read(readings, n) if n in readings else last[1][n]) for n in names}
            if last is not None:
                t_last, pub = last
                if q == pub:
                    continue
                if group in NOISY:
                    age = now - t_last
                    least = cfg.health_min_interval_s if group == "health" else cfg.energy_min_interval_s
                    if age < least:
                        if age >= least / 2:
                            held.append((group, q))
                        continue
                    moved = any(abs(q[n] - pub[n]) >= FIELDS[n][3] for n in names)
                    if not moved and age < cfg.max_staleness_s:
                        held.append((group, q))
                        continue
                    noisy_due = True
            self._published[group] = (now, q)
            self._pending[group] = self._group_value(group, q)
        if noisy_due:
            # a changed noisy group rides along with one that is due: the push is sent
            # anyway, and publishing both keeps their rhythms in phase (one push, not two)
            for group, q in held:
                self._published[group] = (now, q)
                self._pending[group] = self._group_value(group, q)
        return self._flush(now) if self._pending else []

    def _group_value(self, group: str, q: Mapping[str, Any]) -> Any:
        names = GROUPS[group]
        if group == "caps":
            return (q["gpu_model"], q["gpu_count"], q["memory_gb"], tuple(q["roles"]))
        if group == "cache":
            ids = q["artifacts"]
            cfg = self.cfg
            if len(ids) <= cfg.cache_ids_max:
                return (len(ids), tuple(ids), None)
            return (len(ids), (), bloom_of(ids, cfg.bloom_bytes, cfg.bloom_hashes))
        if group == "draining":
            return bool(q["draining"])
        return tuple(q[n] for n in names)

    def _flush(self, now: float) -> list:
        """Sign and store the pending writes (one version each), then push them."""
        pending = self._pending
        self._pending = {}
        force, self._force = self._force, {}
        mine = self._mine
        region_top = mine.maxv[REGION]  # a push extends this: versions of other scopes lie between
        fresh: list[tuple[str, _Entry]] = []
        for key, plain in pending.items():
            value = _pack(plain)
            if len(value) > VALUE_BYTES_MAX:
                raise ValueError(f"state value for {key!r} is {len(value)} bytes (limit {VALUE_BYTES_MAX})")
            old = mine.keys.get(key)
            if old is not None and old.value == value and key not in force:
                continue
            self.counter += 1
            v = self.counter
            sig = self.signer(signed_bytes(self.me, key, v, value))
            e = _Entry(v, value, sig, _check_value(key, _unpack(value)))
            mine.keys[key] = e
            mine.top = v
            scope = SCOPE_OF.get(key, REGION)
            mine.maxv[scope] = v
            fresh.append((key, e))
            force.pop(key, None)
            if key == "region":
                mine.region = e.plain
            if key == "summary":
                self._note_summary(mine.peer, e.plain)
        if not fresh:
            return []
        mine.flat = None
        self.region_version += 1
        self.region_dirty[self.me] = True
        self.stats["publishes"] += 1
        if self.observer is not None:
            for key, e in fresh:
                self.observer(now, self.me, key, e.version)
        self.stats["entries_published"] += len(fresh)
        out: list = [Persist(_VERSION_KEY, str(self.counter).encode())]
        regional = [(k, e) for k, e in fresh if SCOPE_OF.get(k, REGION) == REGION]
        if regional:
            out.extend(self._push(now, region_top))
        return out

    def _push(self, now: float, since: int) -> list:
        """Eager push of my regional entries above ``since`` (the new ones) to every live
        region peer (acked and retried, or gap-pulled by the receiver: ``push_acks``)."""
        peers = self.membership.region_peers()
        if not peers:
            return []
        cfg = self.cfg
        if len(peers) > cfg.push_fanout_max:
            peers = self.rng.sample(peers, cfg.push_fanout_max)
        # every regional entry above ``since`` is in this batch (the newest writes), split to fit messages
        acks = cfg.push_acks
        msgs = [self._msg(StateDelta(REGION, acks, blob)) for blob in self._deltas_for(REGION, [(self.me, since)], limit=64)]
        acked = self._acked
        out: list = []
        for p in peers:
            if p not in acked:
                acked[p] = since  # assume it held what we pushed before (anti-entropy covers it if not)
            for msg in msgs:
                out.append(Send(p, msg))
        self.stats["pushes_sent"] += len(peers) * len(msgs)
        if acks:
            self._push_tries = 0
            out.append(self.timers.set("retry", now + cfg.push_retry_s))
        return out

    def _retry_push(self, now: float) -> list:
        cfg = self.cfg
        top = self._mine.maxv[REGION]
        out: list = []
        self._push_tries += 1
        lagging = [p for p in self.membership.region_peers() if self._acked.get(p, top) < top]
        for p in lagging:
            blobs = self._deltas_for(REGION, [(self.me, self._acked[p])], limit=1)
            for blob in blobs:
                out.append(Send(p, self._msg(StateDelta(REGION, True, blob))))
        self.stats["push_retries"] += len(lagging)
        if lagging and self._push_tries < cfg.push_retries_max:
            out.append(self.timers.set("retry", now + cfg.push_retry_s))
        return out

    def _pull_gap(self, sender: str, deltas: tuple, out: list) -> None:
        """An unacked push from its owner that does not extend what we hold (we missed an
        earlier one): ask the owner for the missing range at once, with a ``want``
        (the second half of an exchange) rather than wait for anti-entropy."""
        asked = self._gap_asked
        for owner, _since, entries in deltas:
            if owner != sender or not entries:
                continue
            o = self.owners.get(owner)
            if o is None or o.dead_since is not None or not self.membership.is_alive(owner):
                continue  # not taken (an owner we hold as dead): nothing to pull
            held = o.maxv[REGION]
            newest = max(e[1] for e in entries)
            if held < newest and asked.get(owner, 0) < newest:  # once per gap: an answer never asks again
                asked[owner] = newest
                self.stats["gap_pulls"] += 1
                out.append(Send(sender, self._msg(StateSynAck(REGION, _pack([(owner[PREFIX], held)]), b""))))

    def _push_all_to(self, peer: str) -> list:
        blobs = self._deltas_for(REGION, [(self.me, 0)], limit=self.cfg.delta_messages_max)
        self._acked[peer] = self._mine.maxv[REGION]
        return [Send(peer, self._msg(StateDelta(REGION, False, b))) for b in blobs]

    # ------------------------------------------------------------------
    # receiving

    def _owner(self, peer: str) -> _Owner:
        o = self.owners.get(peer)
        if o is None:
            o = _Owner(peer)
            self.owners[peer] = o
            self._prefix[REGION][peer[PREFIX]] = peer
        return o

    def _apply_deltas(self, now: float, scope: int, deltas: tuple, out: list, sender: str = "") -> list[tuple[str, int]]:
        """Merge deltas; returns (owner, version now held) for each owner touched.

        A forged entry (not signed by its owner) is counted and reported as a
        ``state.forged`` event naming the peer that sent it, for the operator's log.
        """
        tops: list[tuple[str, int]] = []
        stats = self.stats
        verify = self.verify
        membership = self.membership
        for owner, since, entries in deltas:
            if owner == self.me:
                self._self_heal(entries, out)
                tops.append((owner, self._mine.maxv[scope]))
                continue
            o = self.owners.get(owner)
            if (o is not None and o.dead_since is not None) or (
                o is None and membership.region_of(owner) is not None and not membership.is_alive(owner)
            ):
                stats["updates_dead_owner"] += len(entries)
                continue
            fresh_owner = o is None
            if o is None:
                o = _Owner(owner)  # registered only once an entry of it verifies
            contiguous = o.maxv[scope] >= since
            top = o.maxv[scope]
            changed = False
            for key, ver, val, sig in entries:
                if SCOPE_OF.get(key, REGION) != scope:
                    stats["updates_invalid"] += 1
                    break
                e = o.keys.get(key)
                if e is not None and e.version >= ver:
                    stats["updates_replayed"] += 1
                    if ver > top and contiguous:
                        top = ver
                    continue
                if not verify(owner, signed_bytes(owner, key, ver, val), sig):
                    stats["updates_forged"] += 1
                    out.append(Emit("state.forged", {"sender": sender, "owner": owner, "key": key, "version": ver}))
                    break  # what follows cannot extend a verified prefix
                try:
                    plain = _check_value(key, _unpack(val))
                except (ValueError, WireError):
                    stats["updates_invalid"] += 1
                    plain = None  # signed by its owner, so kept (its version counts); not interpreted
                if e is None and len(o.keys) >= KEYS_PER_OWNER_MAX:
                    stats["updates_invalid"] += 1
                    break
                o.keys[key] = _Entry(ver, val, sig, plain)
                if ver > o.top:
                    o.top = ver
                stats["updates_accepted"] += 1
                changed = True
                if contiguous and ver > top:
                    top = ver
                if key == "region" and plain is not None:
                    o.region = plain
                elif key == "summary" and plain is not None:
                    self._note_summary(owner, plain)
                if self.observer is not None:
                    self.observer(now, owner, key, ver)
            if fresh_owner:
                if not changed:
                    continue
                self.owners[owner] = o
                self._prefix[REGION][owner[PREFIX]] = owner
            if top > o.maxv[scope]:
                o.maxv[scope] = top
            if scope == GLOBAL and "summary" not in o.keys:
                # its summary was evicted (an older epoch of a region): forget it entirely
                o.maxv[GLOBAL] = 0
                self._prefix[GLOBAL].pop(owner[PREFIX], None)
                if not o.keys and owner in self.owners and o.region != self.region:
                    del self.owners[owner]
                tops.append((owner, 0))
                continue
            if changed:
                o.flat = None
                if not o.region:
                    o.region = membership.region_of(owner) or ""
                if o.region == self.region:
                    self.region_version += 1
                    self.region_dirty[owner] = True
                if scope == GLOBAL:
                    self._prefix[GLOBAL][owner[PREFIX]] = owner
            tops.append((owner, o.maxv[scope]))
        return tops

    def _self_heal(self, entries: tuple, out: list) -> None:
        """Others hold versions of my state above my counter (I lost my disk): jump past
        them and republish everything, so my new writes are not taken for replays."""
        top = max((e[1] for e in entries), default=0)
        if top <= self.counter:
            return
        self.stats["self_heals"] += 1
        self.counter = top
        for key, e in self._mine.keys.items():
            self._pending.setdefault(key, e.plain)
            self._force[key] = True

    def _note_summary(self, owner: str, plain: tuple) -> None:
        head, arts = plain
        region, epoch = head[0], head[1]
        lst = [s for s in self._summaries.get(region, []) if s[0] != owner]
        lst.append((owner, head, arts))
        lst.sort(key=lambda s: (-s[1][1], s[0]))  # highest epoch first, peer id breaks ties
        keep = lst[: self.cfg.summaries_per_region_max]
        self._summaries[region] = keep
        kept = {s[0] for s in keep}
        for s in lst[len(keep):]:
            o = self.owners.get(s[0])
            if o is not None and s[0] not in kept and s[0] != self.me:
                # evicted: forget its global key so the digest stays bounded by regions
                e = o.keys.pop("summary", None)
                if e is not None:
                    o.maxv[GLOBAL] = 0
                    self._prefix[GLOBAL].pop(s[0][PREFIX], None)
                    if not o.keys and o.region != self.region:
                        del self.owners[s[0]]

    def _prune(self, now: float) -> None:
        """Drop the state of owners dead for dead_state_retain_s, and of strangers."""
        cut = now - self.cfg.dead_state_retain_s
        drop = [p for p, o in self.owners.items() if o.dead_since is not None and o.dead_since <= cut and p != self.me]
        acked = self._acked
        for p in [p for p in acked if not self.membership.is_alive(p)]:
            del acked[p]
        asked = self._gap_asked
        for p in [p for p in asked if not self.membership.is_alive(p)]:
            del asked[p]
        if drop:
            gone = set(drop)
            for region, lst in list(self._summaries.items()):
                self._summaries[region] = [x for x in lst if x[0] not in gone]
        for p in drop:
            o = self.owners.pop(p)
            self._prefix[REGION].pop(p[PREFIX], None)
            self._prefix[GLOBAL].pop(p[PREFIX], None)
            if o.region == self.region:
                self.region_version += 1
                self.region_dirty[p] = True

    # ------------------------------------------------------------------
    # scuttlebutt

    def _scope_owners(self, scope: int) -> list[str]:
        if scope == REGION:
            region = self.region
            return [p for p, o in self.owners.items() if o.region == region and o.dead_since is None and o.maxv[REGION]]
        # the summaries kept: at most summaries_per_region_max per region, so digests stay bounded
        owners = self.owners
        return [s[0] for lst in self._summaries.values() for s in lst if s[0] in owners and owners[s[0]].dead_since is None]

    def _syn(self, peer: str, scope: int) -> Send:
        """A digest of up to digest_entries_max owners: the next range of a rotating prefix cursor."""
        owners = sorted(self._scope_owners(scope), key=lambda p: p[PREFIX])
        cap = self.cfg.digest_entries_max
        lo, hi = "", "~" * 12  # '~' sorts after every base58 character
        if len(owners) > cap:
            cur = self._ae_cursor[scope]
            start = next((i for i, p in enumerate(owners) if p[PREFIX] >= cur), 0)
            chunk = owners[start : start + cap]
            if start > 0:
                lo = chunk[0][PREFIX]
            if start + cap < len(owners):
                hi = chunk[-1][PREFIX]
                self._ae_cursor[scope] = owners[start + cap][PREFIX]
            else:
                self._ae_cursor[scope] = ""
            owners = chunk
        items = [(p[PREFIX], self.owners[p].maxv[scope]) for p in owners]
        self.stats["syns_sent"] += 1
        return Send(peer, self._msg(StateSyn(scope, lo, hi, _pack(items))))

    def _answer(self, scope: int, lo: str, hi: str, digest: tuple) -> tuple[bytes, list[bytes]]:
        """Responder side: deltas the initiator lacks, and our versions where it is ahead."""
        index = self._prefix[scope]
        theirs: dict[str, int] = {}
        want: list[tuple[str, int]] = []
        for prefix, v in digest:
            owner = index.get(prefix)
            if owner is None or owner not in self.owners:
                want.append((prefix, 0))
                continue
            theirs[owner] = v
            mine = self.owners[owner].maxv[scope]
            if v > mine and self.owners[owner].dead_since is None:
                want.append((prefix, mine))
        send: list[tuple[str, int]] = []
        for p in self._scope_owners(scope):
            pre = p[PREFIX]
            if not lo <= pre <= hi:
                continue
            v = theirs.get(p, 0)
            if self.owners[p].maxv[scope] > v:
                send.append((p, v))
        want_blob = _pack(want[: self.cfg.digest_entries_max]) if want else b""
        return want_blob, self._deltas_for(scope, send)

    def _deltas_for(self, scope: int, wants: Sequence[tuple[str | None, int]], limit: int = 0) -> list[bytes]:
        """Delta blobs (each fits one message, at most ``limit``) for owners above the given versions.

        An owner's entries go in version order and may be cut after any
        entry: each owner delta is a prefix, as scuttlebutt requires.
        """
        limit = limit or self.cfg.delta_messages_max
        blobs: list[bytes] = []
        encs: list[bytes] = []
        used = 0
        budget = self._budget
        for owner, since in wants:
            o = self.owners.get(owner) if owner is not None else None
            if o is None:
                continue
            entries = [(k, e) for k, e in o.keys.items() if e.version > since and SCOPE_OF.get(k, REGION) == scope]
            entries.sort(key=lambda ke: ke[1].version)
            while entries:
                room = budget - used - _OWNER_DELTA_OVERHEAD
                part: list[tuple[str, _Entry]] = []
                size = 0
                for k, e in entries:
                    es = len(_entry_enc(k, e))
                    if size + es > room:
                        break
                    part.append((k, e))
                    size += es
                if not part or len(encs) >= 60:
                    if not encs:
                        break  # cannot happen: one entry always fits an empty message
                    blobs.append(_array_head(len(encs)) + b"".join(encs))
                    encs, used = [], 0
                    if len(blobs) >= limit:
                        return blobs
                    continue
                encs.append(self._delta_enc(owner, since, part))  # type: ignore[arg-type]
                used += size + _OWNER_DELTA_OVERHEAD
                since = part[-1][1].version
                entries = entries[len(part) :]
        if encs and len(blobs) < limit:
            blobs.append(_array_head(len(encs)) + b"".join(encs))
        return blobs

    @staticmethod
    def _delta_enc(owner: str, since: int, entries: list[tuple[str, _Entry]]) -> bytes:
        return b"".join((b"\x93", _pack(owner), _pack(since), _array_head(len(entries)), *(_entry_enc(k, e) for k, e in entries)))

    # ------------------------------------------------------------------

    def _msg(self, msg: Message) -> Message:
        self.stats["messages_built"] += 1
        if self.cfg.check_sizes:
            n = len(self._codec.encode(msg))
            assert n <= self.cfg.message_bytes_max, f"{type(msg).__name__} of {n} bytes"
            if n > self.stats["message_bytes_max"]:
                self.stats["message_bytes_max"] = n
        return msg


def _entry_enc(key: str, e: _Entry) -> bytes:
    enc = e.enc
    if enc is None:
        enc = e.enc = _pack((key, e.version, e.value, e.sig))
    return enc


def _read(readings: Mapping[str, Any], name: str) -> Any:
    """One reading, coerced to its type and quantised; the default if absent or unusable."""
    _key, kind, quantum, _thr = FIELDS[name]
    v = readings.get(name, DEFAULTS[name])
    try:
        if kind == "f":
            x = float(v)
            if x != x or x in (math.inf, -math.inf):
                return DEFAULTS[name]
            return quantise(x, quantum)
        if kind == "i":
            return int(v)
        if kind == "b":
            return bool(v)
        if kind == "s":
            return str(v)[:64]
        if kind == "L":
            items = [str(x)[:ARTIFACT_ID_MAX] for x in v]
            if name == "roles":
                items = [r for r in items if r in ROLES]
            return items
    except (TypeError, ValueError):
        pass
    return DEFAULTS[name]
