"""The canonical entry encoding: one msgpack array, one byte string per entry.

An audit entry is encoded once, when it is appended, and from then on its
bytes *are* the entry: they are what the Merkle leaf hashes, what the log file
stores, what a bundle carries and what a verifier decodes. Nothing ever
re-serialises an entry, so no encoder change can silently change a hash.

The encoding is a msgpack array of five fields in this fixed order::

    [seq, time_ms, kind, peer, data]

* ``seq``: u64, the entry's index in its log (= its Merkle leaf index)
* ``time_ms``: u64, the appending peer's wall clock, ms since the Unix epoch,
  never decreasing within a log
* ``kind``: one of :data:`.kinds.KINDS`
* ``peer``: the peer id of the log's owner (whose key signs its checkpoints)
* ``data``: a map of plain values (see :mod:`.kinds` for what each kind needs)

It is deterministic (the same values always give the same bytes): msgpack's
shortest forms (msgpack-python always picks them), str as str and bytes as
bin, floats always as float64, map keys sorted by code point (= UTF-8 byte
order), no ext types. Allowed values are None, bool, int in
[-2^63, 2^64), finite float, str, bytes, lists and string-keyed maps, nested
at most :data:`DEPTH_MAX` deep; an entry is at most :data:`ENTRY_MAX_BYTES`.

:func:`decode_entry` is strict: it rejects anything :func:`encode_entry` would
not have produced byte for byte, so a verifier knows a decoded entry means
exactly what its bytes say.
"""

from __future__ import annotations

import math
import threading
from typing import Any, NamedTuple

import msgpack

from . import kinds as _kinds

__all__ = [
    "DEPTH_MAX",
    "ENTRY_MAX_BYTES",
    "Entry",
    "EntryError",
    "canonical",
    "decode_entry",
    "encode_entry",
]

ENTRY_MAX_BYTES = 64 << 10  # 64 KiB: a run manifest with a few hundred artifact refs
DEPTH_MAX = 8
U64_MAX = (1 << 64) - 1
I64_MIN = -(1 << 63)

_packb = msgpack.packb  # a fresh Packer per call: safe from any thread
_local = threading.local()  # one Packer per thread for encode_entry (a Packer is not thread-safe)


def _pack_entry(obj: Any) -> bytes:
    p = getattr(_local, "packer", None)
    if p is None:
        p = _local.packer = msgpack.Packer()
    return p.pack(obj)


class EntryError(ValueError):
    """A value that cannot be an audit entry, or bytes that are not one."""


def canonical(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with maps sorted by key; EntryError on a value that
    has no canonical encoding (NaN, a non-string key, an object, ...)."""
    if depth > DEPTH_MAX:
        raise EntryError(f"data nested deeper than {DEPTH_MAX}")
    t = type(value)
    if value is None or t is bool or t is str or t is bytes:
        return value
    if t is int:
        if not I64_MIN <= value <= U64_MAX:
            raise EntryError(f"integer {value} does not fit in 64 bits")
        return value
    if t is float:
        if not math.isfinite(value):
            raise EntryError("NaN and infinities have no canonical encoding")
        return value
    if t is list or t is tuple:
        return [canonical(v, depth + 1) for v in value]
    if t is dict:
        for k in value:
            if type(k) is not str:
                raise EntryError(f"map keys must be str, got {type(k).__name__}")
        out = {}
        for k in sorted(value):
            v = value[k]
            tv = type(v)
            # str, bytes, bool, None need no copy or check (the common case, inline)
            out[k] = v if (tv is str or tv is bytes or tv is bool or v is None) else canonical(v, depth + 1)
        return out
    raise EntryError(f"{t.__name__} is not a plain value (use str, int, float, bool, bytes, list, dict or None)")


def encode_entry(seq: int, time_ms: int, kind: str, peer: str, data: dict[str, Any]) -> bytes:
    """The canonical bytes of an entry; validates ``data`` against its kind."""
    if type(seq) is not int or not 0 <= seq <= U64_MAX:
        raise EntryError("seq must be a u64")
    if type(time_ms) is not int or not 0 <= time_ms <= U64_MAX:
        raise EntryError("time_ms must be a u64")
    if type(peer) is not str or not _kinds.is_peer(peer):
        raise EntryError("peer must be an Ed25519 peer id")
    data = canonical(data)
    problem = _kinds.check_data(kind, data)
    if problem:
        raise EntryError(problem)
    raw = _pack_entry([seq, time_ms, kind, peer, data])
    if len(raw) > ENTRY_MAX_BYTES:
        raise EntryError(f"entry of {len(raw)} bytes exceeds {ENTRY_MAX_BYTES}")
    return raw


class Entry(NamedTuple):
    """A decoded entry (a tuple: a verifier makes a million of them)."""

    seq: int
    time_ms: int
    kind: str
    peer: str
    data: dict[str, Any]
    raw: bytes  # the canonical bytes this entry was decoded from

    @property
    def job(self) -> str | None:
        j = self.data.get("job")
        return j if type(j) is str else None


_SCALARS = frozenset((str, int, bool, type(None), bytes))


def _plain_ok(v: Any, depth: int) -> bool:
    """True if a decoded value is plain (no ext types), finite, with sorted
    string map keys, at most DEPTH_MAX deep."""
    t = type(v)
    if t is dict:
        if depth >= DEPTH_MAX:
            return False
        keys = list(v)
        for k in keys:
            if type(k) is not str:
                return False
        if keys != sorted(keys):
            return False
        for x in v.values():
            if type(x) not in _SCALARS and not _plain_ok(x, depth + 1):
                return False
        return True
    if t is list:
        if depth >= DEPTH_MAX:
            return False
        for x in v:
            if type(x) not in _SCALARS and not _plain_ok(x, depth + 1):
                return False
        return True
    if t is float:
        return math.isfinite(v)
    return t in _SCALARS


_unpackb = msgpack.unpackb


def decode_entry(raw: bytes, peer: str | None = None) -> Entry:
    """Decode and check canonical bytes; EntryError names the first problem.

    Checks shape and types, that the bytes are exactly what
    :func:`encode_entry` makes of the decoded values, and the kind's required
    fields. With ``peer`` given, the entry must be that peer's; seq and time
    are left to the caller (it knows the log).
    """
    if len(raw) > ENTRY_MAX_BYTES:
        raise EntryError(f"entry of {len(raw)} bytes exceeds {ENTRY_MAX_BYTES}")
    try:
        obj = _unpackb(raw, max_ext_len=0)
    except Exception as exc:  # msgpack raises several types; all mean "not an entry"
        raise EntryError(f"not msgpack: {type(exc).__name__}") from None
    if type(obj) is not list or len(obj) != 5:
        raise EntryError("not a [seq, time_ms, kind, peer, data] array")
    seq, time_ms, kind, e_peer, data = obj
    if type(seq) is not int or seq < 0:
        raise EntryError("seq is not a u64")
    if type(time_ms) is not int or time_ms < 0:
        raise EntryError("time_ms is not a u64")
    if type(kind) is not str:
        raise EntryError("kind is not text")
    if type(data) is not dict:
        raise EntryError("data is not a map")
    if not _plain_ok(data, 1):
        raise EntryError("data is not canonical (unsorted keys, NaN or too deep)")
    if _packb(obj) != raw:
        raise EntryError("bytes are not the canonical encoding")
    if peer is not None and e_peer != peer:
        raise EntryError(f"entry of peer {str(e_peer)[:60]}, but this is the log of {peer}")
    if not _kinds.is_peer(e_peer):
        raise EntryError("peer is not an Ed25519 peer id")
    problem = _kinds.check_data(kind, data)
    if problem:
        raise EntryError(problem)
    return Entry(seq, time_ms, kind, e_peer, data, raw)
