"""Codec properties: every registered message round-trips; arbitrary bytes only raise WireError."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.mesh import wire
from arcnet.mesh.identity import Identity
from arcnet.mesh.wire import (
    BOOL,
    F64,
    PEER_ID,
    U8,
    U32,
    Bytes,
    Codec,
    Enum,
    Float,
    Int,
    List,
    Map,
    Message,
    Optional,
    Signed,
    Str,
    WireError,
)

# Import every module that declares messages so the registry is complete.
import arcnet.mesh.control  # noqa: F401
import importlib
import pkgutil

for _pkg in ("arcnet.gossip", "arcnet.placement", "arcnet.blobstore", "arcnet.runtime", "arcnet.audit"):
    try:
        mod = importlib.import_module(_pkg)
    except ImportError:
        continue
    for info in pkgutil.iter_modules(mod.__path__):
        if info.name in ("messages",) or info.name.endswith("_messages"):
            importlib.import_module(f"{_pkg}.{info.name}")


class _Inner(Message):
    peer = PEER_ID
    n = U8


class _Sample(Message, tag=0x7E01, protocol="test"):
    seq = U32
    name = Str(16)
    blob = Bytes(8)
    ok = BOOL
    x = F64
    kind = Enum("a", "b")
    items = List(_Inner, 3)
    extra = Optional(U32)
    attrs = Map(Str(8), Float(0, 1), 4)


PEERS = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(4)]


def _strategy_for(kind):
    if isinstance(kind, Int):
        return st.integers(kind.lo, kind.hi)
    if isinstance(kind, Float):
        lo = None if kind.lo == float("-inf") else kind.lo
        hi = None if kind.hi == float("inf") else kind.hi
        return st.floats(lo, hi, allow_nan=False)
    if kind is BOOL:
        return st.booleans()
    if isinstance(kind, Str):
        return st.text(min_size=kind.min_len, max_size=min(kind.max_len, 40)).filter(
            lambda s: kind.min_len <= len(s) <= kind.max_len
        )
    if isinstance(kind, Bytes):
        return st.binary(min_size=kind.min_len, max_size=min(kind.max_len, 64))
    if kind is PEER_ID:
        return st.sampled_from(PEERS)
    if isinstance(kind, Enum):
        return st.sampled_from(sorted(kind.values))
    if isinstance(kind, Optional):
        return st.none() | _strategy_for(kind.inner)
    if isinstance(kind, List):
        return st.lists(_strategy_for(kind.inner), max_size=min(kind.max_items, 4))
    if isinstance(kind, Map):
        return st.dictionaries(_strategy_for(kind.key), _strategy_for(kind.value), max_size=min(kind.max_items, 4))
    if hasattr(kind, "cls"):
        return _message_strategy(kind.cls)
    raise AssertionError(f"no strategy for {kind!r}")


def _message_strategy(cls):
    return st.builds(cls, *[_strategy_for(k) for _, k in cls.FIELDS])


ALL_TYPES = sorted(wire.message_types().items())


@pytest.mark.parametrize("tag,cls", ALL_TYPES, ids=[c.__name__ for _, c in ALL_TYPES])
def test_every_message_type_round_trips(tag, cls):
    codec = Codec()

    @settings(max_examples=40)
    @given(_message_strategy(cls))
    def check(msg):
        try:
            data = codec.encode(msg)
        except WireError:
            return  # a generated value over the frame limit is refused, not mangled
        assert codec.decode(data) == msg

    check()


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_wire_error(data):
    try:
        wire.decode(data)
    except WireError:
        pass


_plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.sampled_from([t for t, _ in ALL_TYPES]), st.integers(0, 3), st.lists(_plain, max_size=12))
def test_well_formed_msgpack_with_wrong_fields_only_raises_wire_error(tag, version, fields):
    data = msgpack.packb([tag, version, *fields], use_bin_type=True)
    try:
        wire.decode(data)
    except WireError:
        pass


def test_specific_errors_are_clear():
    ok = _Sample(1, "n", b"b", True, 0.5, "a", [_Inner(PEERS[0], 1)], None, {"k": 0.1})
    data = wire.encode(ok)
    assert wire.decode(data) == ok
    with pytest.raises(WireError, match="unknown message tag"):
        wire.decode(msgpack.packb([0x7EFF, 1]))
    with pytest.raises(WireError, match="unsupported version"):
        wire.decode(msgpack.packb([0x7E01, 9]))
    bad = [0x7E01, 1, "x", "n", b"b", True, 0.5, "a", [], None, {}]
    with pytest.raises(WireError, match=r"_Sample.seq: expected u32, got str"):
        wire.decode(msgpack.packb(bad, use_bin_type=True))
    too_many = [0x7E01, 1, 1, "n", b"b", True, 0.5, "a", [[PEERS[0], 1]] * 4, None, {}]
    with pytest.raises(WireError, match="at most 3"):
        wire.decode(msgpack.packb(too_many, use_bin_type=True))
    with pytest.raises(WireError, match="empty frame"):
        wire.decode(b"")
    with pytest.raises(WireError, match="malformed"):
        wire.decode(data[:-3])
    bool_as_int = [0x7E01, 1, True, "n", b"b", True, 0.5, "a", [], None, {}]
    with pytest.raises(WireError, match="expected u32, got bool"):
        wire.decode(msgpack.packb(bool_as_int, use_bin_type=True))
    nan = [0x7E01, 1, 1, "n", b"b", True, float("nan"), "a", [], None, {}]
    with pytest.raises(WireError, match="NaN"):
        wire.decode(msgpack.packb(nan, use_bin_type=True))


def test_size_limits_are_configurable():
    small = Codec(control_max_bytes=128, data_max_bytes=256)
    big = _Sample(1, "n" * 16, b"b" * 8, True, 0.5, "a", [_Inner(PEERS[0], 1)] * 3, 5, {"k": 0.1})
    data = wire.encode(big)
    assert len(data) > 128
    with pytest.raises(WireError, match="exceeds the limit"):
        small.decode(data)
    with pytest.raises(WireError, match="exceeds limit"):
        small.encode(big)
    with pytest.raises(WireError, match="exceeds the limit"):
        small.decode(b"\x00" * 300)


def test_signed_envelope_cannot_be_altered_by_a_relay():
    origin = Identity.from_seed(b"\x01" * 32)
    relay = Identity.from_seed(b"\x02" * 32)
    msg = _Sample(1, "n", b"b", True, 0.5, "a", [], None, {})
    env = wire.sign(origin, msg)
    assert wire.open_signed(wire.decode(wire.encode(env))) == msg
    # a relay that changes the payload or claims to be the origin is caught
    tampered = _Sample(2, "n", b"b", True, 0.5, "a", [], None, {})
    forged = Signed(origin.peer_id, wire.encode(tampered), env.signature)
    with pytest.raises(WireError, match="bad signature"):
        wire.open_signed(forged)
    resigned = Signed(origin.peer_id, wire.encode(tampered), relay.sign(b"arcnet/envelope/v1\0" + wire.encode(tampered)))
    with pytest.raises(WireError, match="bad signature"):
        wire.open_signed(resigned)
    flipped = bytearray(env.payload)
    flipped[-1] ^= 1
    with pytest.raises(WireError):
        wire.open_signed(Signed(env.origin, bytes(flipped), env.signature))
