"""Wire codec: every message type declared once, encoded with msgpack, decoded strictly.

A message type is a class with a tag, a version and typed, bounded fields::

    class Ping(Message, tag=0x10, protocol="swim"):
        seq = U32
        target = PEER_ID
        gossip = List(Update, 8)

The class becomes a (mutable-by-convention-never) dataclass with those fields
in that order. On the wire a message is a msgpack array
``[tag, version, field1, field2, ...]``; a nested struct (a ``Message``
subclass with no tag) is the plain array of its fields.

Decoding is strict, in the manner of h11's and chitchat's codecs: the frame is
size-checked before parsing, msgpack's own length limits are set from the
frame size, and every field is type- and bound-checked. Anything wrong --
truncated or garbage bytes, an unknown tag, a wrong version, a wrong type, an
oversized string or list, a frame over the limit -- raises exactly one
exception type, :class:`WireError`, with a message naming the field. Nothing
else escapes :func:`decode` (a hypothesis test feeds it arbitrary bytes).

Limits: control frames (the default) are at most 1 MiB, data frames
(``channel="data"``, artifact chunks) at most 4 MiB. Both are settings of a
:class:`Codec`; the module-level :func:`decode` uses the defaults.

Relayed messages travel in a :class:`Signed` envelope: the origin signs the
exact encoded bytes of the inner message (domain-separated), relays forward
the envelope unchanged, and :func:`open_signed` verifies it against the
public key embedded in the origin's peer id. A relay cannot alter it.

Knowingly left out: schema evolution beyond "one version per tag" (a peer
that receives a version it does not know gets a clear error; rolling
upgrades add a new tag); maps with non-string keys.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

import msgpack

from . import identity as _identity

__all__ = [
    "BOOL",
    "BYTES32",
    "F64",
    "I64",
    "PEER_ID",
    "SIG",
    "U8",
    "U16",
    "U32",
    "U64",
    "Bytes",
    "Codec",
    "Enum",
    "Float",
    "Int",
    "List",
    "Map",
    "Message",
    "Optional",
    "Signed",
    "Str",
    "WireError",
    "decode",
    "encode",
    "message_types",
    "open_signed",
    "sign",
]

CONTROL_MAX_BYTES = 1 << 20  # 1 MiB: every protocol message but artifact data
DATA_MAX_BYTES = 4 << 20  # 4 MiB: a chunk of artifact data plus framing


class WireError(ValueError):
    """The only exception decoding raises: bytes that are not a valid message."""


# --------------------------------------------------------------------------
# field kinds: each validates a decoded value and converts it (nested structs)


class Kind:
    """A field type with bounds. ``check`` returns the value or raises WireError."""

    name = "?"

    def check(self, value: Any, where: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def plain(self, value: Any) -> Any:
        """The msgpack-ready form of a value (identity for scalars)."""
        return value

    # Message subclasses use kinds as class attributes; this keeps the class
    # body readable: ``seq = U32``.
    def __repr__(self) -> str:
        return self.name


def _fail(where: str, expected: str, value: Any) -> WireError:
    shown = type(value).__name__
    return WireError(f"{where}: expected {expected}, got {shown}")


class Int(Kind):
    def __init__(self, lo: int, hi: int, name: str | None = None):
        self.lo, self.hi = lo, hi
        self.name = name or f"int[{lo},{hi}]"

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not int:
            raise _fail(where, self.name, value)
        if not self.lo <= value <= self.hi:
            raise WireError(f"{where}: {value} out of range for {self.name}")
        return value


class Float(Kind):
    def __init__(self, lo: float = -math.inf, hi: float = math.inf, name: str | None = None):
        self.lo, self.hi = lo, hi
        self.name = name or "f64"

    def check(self, value: Any, where: str) -> Any:
        t = type(value)
        if t is int:
            value = float(value)
        elif t is not float:
            raise _fail(where, self.name, value)
        if value != value:  # NaN never crosses the wire: it breaks every comparison
            raise WireError(f"{where}: NaN is not allowed")
        if not self.lo <= value <= self.hi:
            raise WireError(f"{where}: {value} out of range for {self.name}")
        return value


class _Bool(Kind):
    name = "bool"

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not bool:
            raise _fail(where, "bool", value)
        return value


class Str(Kind):
    def __init__(self, max_len: int, min_len: int = 0):
        self.max_len, self.min_len = max_len, min_len
        self.name = f"str[..{max_len}]"

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not str:
            raise _fail(where, self.name, value)
        if not self.min_len <= len(value) <= self.max_len:
            raise WireError(f"{where}: string of length {len(value)} outside [{self.min_len}, {self.max_len}]")
        return value


class Bytes(Kind):
    def __init__(self, max_len: int, min_len: int = 0):
        self.max_len, self.min_len = max_len, min_len
        self.name = f"bytes[{min_len}..{max_len}]" if min_len != max_len else f"bytes[{max_len}]"

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not bytes:
            raise _fail(where, self.name, value)
        if not self.min_len <= len(value) <= self.max_len:
            raise WireError(f"{where}: {len(value)} bytes outside [{self.min_len}, {self.max_len}]")
        return value


class _PeerId(Kind):
    name = "peer_id"

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not str:
            raise _fail(where, "peer_id", value)
        if len(value) != _identity.PEER_ID_LEN or not value.startswith("12D3KooW"):
            raise WireError(f"{where}: not an Ed25519 peer id")
        return value


class Enum(Kind):
    """One of a fixed set of strings."""

    def __init__(self, *values: str):
        self.values = frozenset(values)
        self.name = "enum(" + "|".join(values) + ")"

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not str or value not in self.values:
            raise WireError(f"{where}: expected one of {sorted(self.values)}, got {str(value)[:40]!r}")
        return value


class Optional(Kind):
    def __init__(self, inner: Kind | type["Message"]):
        self.inner = _as_kind(inner)
        self.name = f"optional({self.inner.name})"

    def check(self, value: Any, where: str) -> Any:
        return None if value is None else self.inner.check(value, where)

    def plain(self, value: Any) -> Any:
        return None if value is None else self.inner.plain(value)


class List(Kind):
    def __init__(self, inner: Kind | type["Message"], max_items: int):
        self.inner = _as_kind(inner)
        self.max_items = max_items
        self.name = f"list[{self.inner.name}; ..{max_items}]"
        self._scalar = not isinstance(self.inner, (_Struct, List, Map, Optional))

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not list:
            raise _fail(where, self.name, value)
        if len(value) > self.max_items:
            raise WireError(f"{where}: {len(value)} items, at most {self.max_items}")
        chk = self.inner.check
        return [chk(v, f"{where}[{i}]") for i, v in enumerate(value)]

    def plain(self, value: Any) -> Any:
        if self._scalar:
            return value if type(value) is list else list(value)
        p = self.inner.plain
        return [p(v) for v in value]


class Map(Kind):
    """A map with string keys."""

    def __init__(self, key: Kind, value: Kind | type["Message"], max_items: int):
        self.key = key
        self.value = _as_kind(value)
        self.max_items = max_items
        self.name = f"map[{key.name}->{self.value.name}; ..{max_items}]"

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not dict:
            raise _fail(where, self.name, value)
        if len(value) > self.max_items:
            raise WireError(f"{where}: {len(value)} entries, at most {self.max_items}")
        kc, vc = self.key.check, self.value.check
        return {kc(k, f"{where}.key"): vc(v, f"{where}[{k!r}]") for k, v in value.items()}

    def plain(self, value: Any) -> Any:
        p = self.value.plain
        return {k: p(v) for k, v in value.items()}


class _Struct(Kind):
    """A nested message (a Message subclass without a tag)."""

    def __init__(self, cls: type["Message"]):
        self.cls = cls
        self.name = cls.__name__

    def check(self, value: Any, where: str) -> Any:
        return self.cls._from_fields(value, where)

    def plain(self, value: Any) -> Any:
        if not isinstance(value, self.cls):
            raise TypeError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        return value._to_fields()


def _as_kind(k: Kind | type["Message"]) -> Kind:
    if isinstance(k, Kind):
        return k
    if isinstance(k, type) and issubclass(k, Message):
        return _Struct(k)
    raise TypeError(f"not a field kind: {k!r}")


U8 = Int(0, 0xFF, "u8")
U16 = Int(0, 0xFFFF, "u16")
U32 = Int(0, 0xFFFF_FFFF, "u32")
U64 = Int(0, 0xFFFF_FFFF_FFFF_FFFF, "u64")
I64 = Int(-(1 << 63), (1 << 63) - 1, "i64")
F64 = Float()
BOOL = _Bool()
PEER_ID = _PeerId()
BYTES32 = Bytes(32, 32)
SIG = Bytes(64, 64)


# --------------------------------------------------------------------------
# messages

_REGISTRY: dict[int, type["Message"]] = {}


class Message:
    """Base of every wire message and nested struct.

    Subclass with ``tag=`` for a top-level message (registered, decodable on
    its own) or without for a nested struct. Class attributes that are
    :class:`Kind` instances (or Message subclasses) become the fields, in
    order. Optional ``protocol=`` names the core that handles the message and
    ``channel="data"`` raises the size limit to the data limit.
    """

    TAG: ClassVar[int | None] = None
    VERSION: ClassVar[int] = 1
    PROTOCOL: ClassVar[str] = ""
    CHANNEL: ClassVar[str] = "control"
    FIELDS: ClassVar[tuple[tuple[str, Kind], ...]] = ()

    def __init_subclass__(
        cls,
        tag: int | None = None,
        version: int = 1,
        protocol: str = "",
        channel: str = "control",
        **kw: Any,
    ) -> None:
        super().__init_subclass__(**kw)
        fields: list[tuple[str, Kind]] = []
        for name, value in list(vars(cls).items()):
            if name.startswith("_") or name.isupper():
                continue
            if isinstance(value, Kind) or (isinstance(value, type) and issubclass(value, Message)):
                fields.append((name, _as_kind(value)))
                delattr(cls, name)
        cls.FIELDS = tuple(fields)
        cls.TAG = tag
        cls.VERSION = version
        cls.PROTOCOL = protocol
        if channel not in ("control", "data"):
            raise ValueError(f"channel must be 'control' or 'data', not {channel!r}")
        cls.CHANNEL = channel
        cls.__annotations__ = {name: Any for name, _ in fields}
        dataclasses.dataclass(eq=True, repr=True)(cls)
        cls.__hash__ = None  # type: ignore[assignment]
        if tag is not None:
            if not 0 < tag < 0x10000:
                raise ValueError(f"{cls.__name__}: tag must be in 1..65535")
            if tag in _REGISTRY:
                raise ValueError(f"{cls.__name__}: tag {tag:#x} already used by {_REGISTRY[tag].__name__}")
            _REGISTRY[tag] = cls
        names = tuple(n for n, _ in fields)
        kinds = tuple(k for _, k in fields)
        plains = tuple(None if type(k) in (Int, Float, _Bool, Str, Bytes, _PeerId, Enum) else k.plain for k in kinds)
        cls._names = names  # type: ignore[attr-defined]
        cls._wheres = tuple(f"{cls.__name__}.{n}" for n in names)  # type: ignore[attr-defined]
        cls._kinds = kinds  # type: ignore[attr-defined]
        cls._plains = plains  # type: ignore[attr-defined]

    def _to_fields(self) -> list[Any]:
        out = []
        for name, p in zip(self._names, self._plains):  # type: ignore[attr-defined]
            v = getattr(self, name)
            out.append(v if p is None else p(v))
        return out

    @classmethod
    def _from_fields(cls, values: Any, where: str) -> "Message":
        if type(values) is not list:
            raise _fail(where, cls.__name__, values)
        names = cls._names  # type: ignore[attr-defined]
        if len(values) != len(names):
            raise WireError(f"{where}: {cls.__name__} has {len(names)} fields, got {len(values)}")
        if where == cls.__name__:  # a top-level message (the common case): field paths precomputed
            args = [k.check(v, w) for w, k, v in zip(cls._wheres, cls._kinds, values)]  # type: ignore[attr-defined]
        else:
            args = [k.check(v, f"{where}.{n}") for n, k, v in zip(names, cls._kinds, values)]  # type: ignore[attr-defined]
        return cls(*args)

    def validate(self) -> None:
        """Check this (locally built) message against its declaration; raises WireError."""
        self._from_fields(_roundtrip_plain(self._to_fields()), type(self).__name__)


def _roundtrip_plain(value: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


def message_types() -> dict[int, type[Message]]:
    """Every registered top-level message type, by tag."""
    return dict(_REGISTRY)


# --------------------------------------------------------------------------
# the codec


class Codec:
    """Encoder/decoder with size limits (bytes). One per peer; shared freely."""

    def __init__(self, control_max_bytes: int = CONTROL_MAX_BYTES, data_max_bytes: int = DATA_MAX_BYTES):
        if not 64 <= control_max_bytes <= data_max_bytes:
            raise ValueError("need 64 <= control_max_bytes <= data_max_bytes")
        self.control_max_bytes = control_max_bytes
        self.data_max_bytes = data_max_bytes

    def limit(self, cls: type[Message]) -> int:
        return self.data_max_bytes if cls.CHANNEL == "data" else self.control_max_bytes

    def encode(self, msg: Message) -> bytes:
        cls = type(msg)
        if cls.TAG is None:
            raise TypeError(f"{cls.__name__} is a nested struct, not a message")
        data = msgpack.packb([cls.TAG, cls.VERSION, *msg._to_fields()], use_bin_type=True)
        if len(data) > self.limit(cls):
            raise WireError(f"{cls.__name__}: encoded size {len(data)} exceeds limit {self.limit(cls)}")
        return data

    def decode(self, data: bytes) -> Message:
        if type(data) is not bytes:
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            else:
                raise WireError(f"frame: expected bytes, got {type(data).__name__}")
        n = len(data)
        if n > self.data_max_bytes:
            raise WireError(f"frame of {n} bytes exceeds the limit of {self.data_max_bytes}")
        if n == 0:
            raise WireError("empty frame")
        try:
            obj = msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
                max_str_len=n,
                max_bin_len=n,
                max_array_len=n,
                max_map_len=n,
                max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises many types; all mean "not a frame"
            raise WireError(f"malformed frame: {type(exc).__name__}: {exc}"[:200]) from None
        if type(obj) is not list or len(obj) < 2:
            raise WireError("malformed frame: expected [tag, version, ...fields]")
        tag, version = obj[0], obj[1]
        if type(tag) is not int:
            raise WireError("malformed frame: tag is not an integer")
        cls = _REGISTRY.get(tag)
        if cls is None:
            raise WireError(f"unknown message tag {tag}")
        if version != cls.VERSION:
            raise WireError(f"{cls.__name__}: unsupported version {version!r} (this peer speaks {cls.VERSION})")
        if n > self.limit(cls):
            raise WireError(f"{cls.__name__}: frame of {n} bytes exceeds the limit of {self.limit(cls)}")
        try:
            return cls._from_fields(obj[2:], cls.__name__)
        except WireError:
            raise
        except RecursionError:
            raise WireError(f"{cls.__name__}: nested too deeply") from None


DEFAULT_CODEC = Codec()


def encode(msg: Message) -> bytes:
    return DEFAULT_CODEC.encode(msg)


def decode(data: bytes) -> Message:
    return DEFAULT_CODEC.decode(data)


# --------------------------------------------------------------------------
# signed envelopes for relayed messages

_ENVELOPE_DOMAIN = b"arcnet/envelope/v1\0"


class Signed(Message, tag=0x01):
    """A message signed by its origin; relays forward it unchanged."""

    origin = PEER_ID
    payload = Bytes(CONTROL_MAX_BYTES - 256, 1)
    signature = SIG


def sign(ident: "_identity.Identity", msg: Message, codec: Codec = DEFAULT_CODEC) -> Signed:
    """Wrap ``msg`` in an envelope signed by ``ident``."""
    payload = codec.encode(msg)
    return Signed(ident.peer_id, payload, ident.sign(_ENVELOPE_DOMAIN + payload))


def open_signed(
    env: Signed,
    codec: Codec = DEFAULT_CODEC,
    verify: Callable[[str, bytes, bytes], bool] = _identity.verify_peer,
) -> Message:
    """Verify an envelope against its origin's key and decode the inner message.

    Raises :class:`WireError` if the signature does not verify or the inner
    bytes are not a valid message. ``verify`` may be replaced by a memoising
    twin in the simulator (verification is a pure function of its inputs).
    """
    if not verify(env.origin, _ENVELOPE_DOMAIN + env.payload, env.signature):
        raise WireError(f"envelope from {env.origin[-8:]}: bad signature")
    inner = codec.decode(env.payload)
    if isinstance(inner, Signed):
        raise WireError("envelope inside an envelope")
    return inner
