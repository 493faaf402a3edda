"""Every decoder of the mesh as a fuzz target: bytes in, a documented error type or a value out.

A target is a function ``fn(data: bytes) -> None`` that feeds ``data`` to a
decoder and lets only that decoder's documented error escape as "expected";
anything else (any other exception, a failed round-trip assertion) is a
crash, and an input that runs longer than the per-input limit is a hang.
:data:`TARGETS` maps a name to ``(fn, expected_errors, seeds)``, where
``seeds()`` returns valid encodings to start mutating from, so the fuzzer
reaches the checks behind a successful parse (signatures, time windows,
policy rules), not only the parser's front door.

Wire message types are discovered through :func:`arcnet.mesh.wire.message_types`
after importing every module that declares messages; each protocol gets a
structure-aware target (``wire.<protocol>``) that builds a frame
``[tag, version, <fuzzed fields>]`` so every type's field checks are
exercised, and ``wire`` takes raw bytes. Every successful wire decode must
round-trip: ``decode(encode(m)) == m``.

Deterministic: keys and ids come from fixed seeds; the clock is fixed.
"""

from __future__ import annotations

import importlib
import random
from typing import Any, Callable

import msgpack

# Modules that declare wire messages (their import registers the types). A
# module that is missing in this checkout is skipped, not an error.
MESSAGE_MODULES = (
    "arcnet.mesh.control",
    "arcnet.mesh.admission",
    "arcnet.mesh.authz",
    "arcnet.blobstore.crypt",
    "arcnet.blobstore.messages",
    "arcnet.gossip.membership",
    "arcnet.placement.messages",
    "arcnet.runtime.catalog",
)
for _m in MESSAGE_MODULES:
    try:
        importlib.import_module(_m)
    except ImportError:  # pragma: no cover - a subsystem not present in this checkout
        pass

from arcnet.mesh import wire  # noqa: E402
from arcnet.mesh.admission import (  # noqa: E402
    AdmissionError,
    RevocationSet,
    TrustStore,
    decode_certificate,
    decode_revocations,
    issue_certificate,
    sign_revocations,
    verify_certificate,
)
from arcnet.mesh.authz import (  # noqa: E402
    AuthzError,
    Authorizer,
    PolicyStore,
    ReplayWindow,
    decode_grant,
    decode_policy,
    issue_grant,
    sign_control,
    sign_policy,
    verify_grant,
)
from arcnet.mesh.control import ControlError, ControlResponse, decode_args, encode_args, parse_response  # noqa: E402
from arcnet.mesh.framing import FrameDecoder, FrameError, encode_frame  # noqa: E402
from arcnet.mesh.identity import Identity  # noqa: E402
from arcnet.mesh.wire import WireError  # noqa: E402

NOW_S = 1_700_000_000.0  # the fixed "wall clock" of every target
ROOT = Identity.from_seed(b"\x51" * 32)
PEER = Identity.from_seed(b"\x52" * 32)
CLIENT = Identity.from_seed(b"\x53" * 32)
TRUST = TrustStore([ROOT.public_key])
OUTSIDER = Identity.from_seed(b"\x54" * 32)  # revoked in _REVOKED
CODEC = wire.Codec()


class Target:
    __slots__ = ("name", "fn", "expected", "seeds", "doc")

    def __init__(self, name: str, fn: Callable[[bytes], None], expected: tuple[type[BaseException], ...],
                 seeds: Callable[[], list[bytes]], doc: str):
        self.name, self.fn, self.expected, self.seeds, self.doc = name, fn, expected, seeds, doc


TARGETS: dict[str, Target] = {}


def target(name: str, expected: tuple[type[BaseException], ...], seeds: Callable[[], list[bytes]] = lambda: []):
    def register(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        TARGETS[name] = Target(name, fn, expected, seeds, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else name)
        return fn

    return register


# --------------------------------------------------------------------------
# valid example values, for seeds


def _example(kind: Any, rng: random.Random) -> Any:
    """A valid value of a wire field kind (small, deterministic for ``rng``)."""
    from arcnet.mesh.wire import BOOL, PEER_ID, Bytes, Enum, Float, Int, List, Map, Optional, Str

    if isinstance(kind, Int):
        return rng.choice([kind.lo, kind.hi, max(kind.lo, min(kind.hi, 1))])
    if isinstance(kind, Float):
        lo = kind.lo if kind.lo != float("-inf") else -1e9
        hi = kind.hi if kind.hi != float("inf") else 1e9
        return rng.choice([lo, hi, (lo + hi) / 2])
    if kind is BOOL:
        return rng.random() < 0.5
    if isinstance(kind, Str):
        n = min(kind.max_len, max(kind.min_len, 3))
        return "".join(rng.choice("abcXYZ019-_.") for _ in range(n))
    if isinstance(kind, Bytes):
        n = min(kind.max_len, max(kind.min_len, 4))
        return bytes(rng.randrange(256) for _ in range(n))
    if kind is PEER_ID:
        return rng.choice([ROOT.peer_id, PEER.peer_id, CLIENT.peer_id])
    if isinstance(kind, Enum):
        return rng.choice(sorted(kind.values))
    if isinstance(kind, Optional):
        return None if rng.random() < 0.3 else _example(kind.inner, rng)
    if isinstance(kind, List):
        return [_example(kind.inner, rng) for _ in range(min(kind.max_items, rng.randrange(3)))]
    if isinstance(kind, Map):
        return {_example(kind.key, rng): _example(kind.value, rng) for _ in range(min(kind.max_items, rng.randrange(3)))}
    if hasattr(kind, "cls"):
        return example_message(kind.cls, rng)
    raise AssertionError(f"no example for {kind!r}")


def example_message(cls: type, rng: random.Random) -> Any:
    return cls(*[_example(k, rng) for _, k in cls.FIELDS])


def _by_protocol() -> dict[str, list[type]]:
    groups: dict[str, list[type]] = {}
    for tag, cls in sorted(wire.message_types().items()):
        if cls.__module__.startswith(("arcnet.sims", "tests", "test_")):
            continue  # toy and test messages
        groups.setdefault(cls.PROTOCOL or "envelope", []).append(cls)
    return groups


def _wire_seeds(classes: list[type]) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for cls in classes:
        for _ in range(3):
            try:
                out.append(CODEC.encode(example_message(cls, rng)))
            except WireError:
                pass
    return out


# --------------------------------------------------------------------------
# the wire codec


def _roundtrip(msg: Any) -> None:
    again = CODEC.decode(CODEC.encode(msg))
    assert again == msg, f"{type(msg).__name__} does not round-trip"


@target("wire", (WireError,), lambda: _wire_seeds([c for cs in _by_protocol().values() for c in cs]))
def fuzz_wire(data: bytes) -> None:
    """mesh.wire.decode on raw bytes (every registered message type)."""
    _roundtrip(CODEC.decode(data))


def _structured(classes: list[type]) -> Callable[[bytes], None]:
    def fn(data: bytes) -> None:
        if len(data) < 2:
            return
        cls = classes[data[0] % len(classes)]
        nfields = max(0, len(cls.FIELDS) + (data[1] % 3) - 1)  # right count, one short, one over
        head = msgpack.packb(cls.TAG) + msgpack.packb(cls.VERSION)
        n = nfields + 2
        arr = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
        _roundtrip(CODEC.decode(arr + head + data[2:]))

    fn.classes = classes  # type: ignore[attr-defined]  # what it covers (the suite checks every type is)
    return fn


def _structured_seeds(classes: list[type]) -> Callable[[], list[bytes]]:
    def seeds() -> list[bytes]:
        out = []
        for frame in _wire_seeds(classes):
            obj = msgpack.unpackb(frame, raw=False)
            idx = next(i for i, c in enumerate(classes) if c.TAG == obj[0])
            fields = b"".join(msgpack.packb(f, use_bin_type=True) for f in obj[2:])
            out.append(bytes([idx, 1]) + fields)
        return out

    return seeds


for _proto, _classes in _by_protocol().items():
    TARGETS[f"wire.{_proto}"] = Target(
        f"wire.{_proto}", _structured(_classes), (WireError,), _structured_seeds(_classes),
        f"wire decode of {_proto} messages ({', '.join(c.__name__ for c in _classes)}), fields fuzzed",
    )


@target("wire.open_signed", (WireError,), lambda: [CODEC.encode(wire.sign(PEER, example_message(c, random.Random(1))))
                                                 for c in _by_protocol().get("control", [])])
def fuzz_open_signed(data: bytes) -> None:
    """mesh.wire.open_signed: a Signed envelope's signature check and inner decode."""
    env = CODEC.decode(data)
    if isinstance(env, wire.Signed):
        wire.open_signed(env)


# --------------------------------------------------------------------------
# framing and control


def _framing_seeds() -> list[bytes]:
    return [bytes([200, 3]) + encode_frame(b"hello") + encode_frame(b"") + encode_frame(b"x" * 50),
            bytes([10, 1]) + encode_frame(b"0123456789")]


@target("framing", (FrameError,), _framing_seeds)
def fuzz_framing(data: bytes) -> None:
    """mesh.framing.FrameDecoder: feed in pieces, take frames, close."""
    if len(data) < 2:
        return
    dec = FrameDecoder(data[0] * 4)
    step = data[1] % 17 + 1
    body = data[2:]
    frames = []
    for i in range(0, len(body), step):
        dec.feed(body[i : i + step])
        while (f := dec.next_frame()) is not None:
            frames.append(f)
    consumed = b"".join(encode_frame(f) for f in frames)
    assert body.startswith(consumed), "frames are not a prefix of the stream"
    assert len(consumed) + dec.buffered_bytes + (4 if dec._need is not None else 0) == len(body), "bytes lost"
    dec.close()


@target("control.args", (WireError,), lambda: [encode_args({"a": 1, "b": [1, 2, "x"], "c": {"d": b"e"}}), encode_args({})])
def fuzz_control_args(data: bytes) -> None:
    """mesh.control.decode_args: a request's msgpack argument map."""
    out = decode_args(data)
    assert isinstance(out, dict)


@target("control.response", (ControlError,), lambda: [
    CODEC.encode(ControlResponse(7, True, "ok", "", encode_args({"x": 1}))),
    CODEC.encode(ControlResponse(7, False, "forbidden", "no", b"")),
])
def fuzz_control_response(data: bytes) -> None:
    """mesh.control.parse_response: the CLI's decoder of a peer's reply."""
    parse_response(data, 7, CODEC)


# --------------------------------------------------------------------------
# admission and authorisation


def _cert_seeds() -> list[bytes]:
    good = issue_certificate(ROOT, PEER.peer_id, region="eu", roles=["site"], not_before_s=int(NOW_S) - 10,
                             expires_s=int(NOW_S) + 1000, serial=5)
    other = issue_certificate(PEER, CLIENT.peer_id, region="us", roles=["site", "hpc"], not_before_s=0, expires_s=10)
    return [CODEC.encode(good), CODEC.encode(other)]


_REVOKED = RevocationSet()
_REVOKED.merge(sign_revocations(ROOT, version=1, peers=[OUTSIDER.peer_id], serials=[9]), TRUST)


@target("admission.certificate", (AdmissionError,), _cert_seeds)
def fuzz_certificate(data: bytes) -> None:
    """mesh.admission: decode_certificate + verify_certificate (issuer, signature, peer, window, revocation)."""
    cert = decode_certificate(data)
    verify_certificate(cert, TRUST, now_s=NOW_S, peer_id=PEER.peer_id, revocations=_REVOKED)


@target("admission.revocations", (AdmissionError,), lambda: [
    CODEC.encode(sign_revocations(ROOT, version=3, peers=[PEER.peer_id], serials=[1, 2])),
    RevocationSet().encode(),
])
def fuzz_revocations(data: bytes) -> None:
    """mesh.admission: decode_revocations + RevocationSet.merge (signature, version order)."""
    rs = RevocationSet()
    for rl in decode_revocations(data):
        rs.merge(rl, TRUST)


def _grant_seeds() -> list[bytes]:
    return [CODEC.encode(issue_grant(ROOT, CLIENT.peer_id, project="p", caps=["submit", "read"],
                                     not_before_s=int(NOW_S) - 10, expires_s=int(NOW_S) + 1000, serial=3))]


@target("authz.grant", (AuthzError,), _grant_seeds)
def fuzz_grant(data: bytes) -> None:
    """mesh.authz: decode_grant + verify_grant."""
    verify_grant(decode_grant(data), TRUST, now_s=NOW_S, client=CLIENT.peer_id, revocations=_REVOKED)


_GRANT = decode_grant(_grant_seeds()[0])


_AUTHZ = Authorizer(TRUST, _REVOKED, wall_clock=lambda: NOW_S, log_interval_s=1e9)


def _control_seeds() -> list[bytes]:
    out = []
    for method, args in (("submit", {"project": "p", "job": {"x": 1}}), ("status", {}), ("blob.put", {"project": "q"})):
        out.append(CODEC.encode(sign_control(CLIENT, method, args, target=PEER.peer_id, grant=_GRANT, project="p",
                                             nonce=11, now_s=NOW_S)))
    return out


@target("authz.control", (AuthzError, WireError), _control_seeds)
def fuzz_signed_control(data: bytes) -> None:
    """mesh.authz: a control request through Authorizer.authorize (signature, window, replay, grant, capability)."""
    _AUTHZ.replay = ReplayWindow()  # each input starts fresh: a crash must reproduce from its input alone
    msg = CODEC.decode(data)
    _AUTHZ.authorize(msg, client=CLIENT.peer_id, target=PEER.peer_id)


_JOB = {"project": "p", "artifacts": [{"cid": "m1"}, {"cid": "d1"}], "constraints": {"regions": ["eu"]},
        "steps": [{"artifacts": [{"cid": "m2"}]}]}


@target("authz.policy", (AuthzError,), lambda: [
    CODEC.encode(sign_policy(ROOT, "p", version=2, models=["m1", "m2"], datasets=["d1"], regions=["eu"], private=True))
])
def fuzz_policy(data: bytes) -> None:
    """mesh.authz: decode_policy + PolicyStore.merge + Policy.check_submit/check_region."""
    store = PolicyStore(TRUST)
    pp = decode_policy(data)
    store.merge(pp)
    pol = store.get(pp.body.project)
    pol.check_region("eu")
    pol.check_submit({**_JOB, "project": pp.body.project})


# --------------------------------------------------------------------------
# encryption at rest


def _crypt_targets() -> None:
    from arcnet.blobstore.crypt import CryptError, Decryptor, ProjectKey, WrappedKey, encrypt, unwrap_key, wrap_key

    key = ProjectKey(b"\x61" * 32)

    @target("crypt.decrypt", (CryptError,), lambda: [encrypt(key, b"hello world" * 20, "p", segment_bytes=64),
                                                     encrypt(key, b"", "p", segment_bytes=16)])
    def fuzz_decrypt(data: bytes) -> None:
        """blobstore.crypt.Decryptor: header, segment framing, authentication, truncation."""
        d = Decryptor(key, "p")
        step = 1 + (data[0] if data else 0)
        for i in range(0, len(data), step):
            d.feed(data[i : i + step])
        d.close()

    @target("crypt.unwrap", (CryptError, WireError), lambda: [CODEC.encode(wrap_key(key, PEER.peer_id, "p"))])
    def fuzz_unwrap(data: bytes) -> None:
        """blobstore.crypt.unwrap_key on a decoded WrappedKey."""
        msg = CODEC.decode(data)
        if isinstance(msg, WrappedKey):
            unwrap_key(msg, PEER)


_crypt_targets()


# --------------------------------------------------------------------------
# other subsystems' decoders (each registered only if its module is present)


def _optional_targets() -> None:
    try:
        from arcnet.gossip.membership import decode_updates
    except ImportError:  # pragma: no cover
        decode_updates = None
    if decode_updates is not None:
        def _gossip_seeds() -> list[bytes]:
            try:
                from arcnet.gossip.membership import encode_updates

                return [encode_updates([(0, PEER.peer_id, 3, CLIENT.peer_id, "/ip4/127.0.0.1/tcp/4001", "eu"),
                                        (1, CLIENT.peer_id, 0, PEER.peer_id, "", "us")])]
            except Exception:  # the helper's shape may change; seeds are optional
                return []

        @target("gossip.updates", (WireError,), _gossip_seeds)
        def fuzz_gossip_updates(data: bytes) -> None:
            """gossip.membership.decode_updates: piggybacked membership updates."""
            decode_updates(data)

    try:
        from arcnet.blobstore.manifest import ManifestError, build_manifest, decode_manifest, encode_manifest
    except ImportError:  # pragma: no cover
        decode_manifest = None
    if decode_manifest is not None:
        def _manifest_seeds() -> list[bytes]:
            try:
                m = build_manifest(PEER, name="n", chunks=[(b"\x01" * 32, 10, 0), (b"\x02" * 32, 5, 1)], total_size=15,
                                   total_hash=b"\x03" * 32, chunking="fixed:16")
                return [encode_manifest(m)]
            except Exception:
                return []

        @target("blobstore.manifest", (ManifestError,), _manifest_seeds)
        def fuzz_manifest(data: bytes) -> None:
            """blobstore.manifest.decode_manifest: decode, id and publisher signature."""
            decode_manifest(data)

    try:
        from arcnet.blobstore.chunking import ChunkCodecError, decode_chunk, encode_chunk
    except ImportError:  # pragma: no cover
        decode_chunk = None
    if decode_chunk is not None:
        def _chunk_seeds() -> list[bytes]:
            codec, stored = encode_chunk(b"abcd" * 1000)
            return [bytes([codec]) + (4000).to_bytes(2, "big") + stored, bytes([0, 0, 5]) + b"hello"]

        @target("blobstore.chunk", (ChunkCodecError,), _chunk_seeds)
        def fuzz_chunk(data: bytes) -> None:
            """blobstore.chunking.decode_chunk: raw and zstd stored chunks, size-bounded."""
            if len(data) < 3:
                return
            decode_chunk(data[0] % 3, data[3:], int.from_bytes(data[1:3], "big"))

    try:
        from arcnet.audit.entry import EntryError, decode_entry, encode_entry
    except ImportError:  # pragma: no cover
        decode_entry = None
    if decode_entry is not None:
        @target("audit.entry", (EntryError,), lambda: [
            encode_entry(1, 1000, "job.started", PEER.peer_id, {"job": "j", "attempt": 1}),
            encode_entry(2, 1001, "admission.refused", PEER.peer_id, {"subject": CLIENT.peer_id, "reason": "expired"}),
        ])
        def fuzz_audit_entry(data: bytes) -> None:
            """audit.entry.decode_entry: one signed log entry's canonical bytes."""
            decode_entry(data)

    try:
        from arcnet.runtime.manifest import ManifestError as RunManifestError
        from arcnet.runtime.manifest import RunManifest
    except ImportError:  # pragma: no cover
        RunManifest = None
    if RunManifest is not None:
        def _run_manifest_seeds() -> list[bytes]:
            try:
                m = RunManifest(job="j", kind="batch", model="blake3:" + "a" * 64, model_name="m", model_version="1",
                                provider="CPUExecutionProvider", runtime="onnxruntime 1 cpu", settings={"threads": 1},
                                native="fallback", input_names=["x"], inputs=["blake3:" + "b" * 64], output_names=["y"],
                                outputs=["blake3:" + "c" * 64], params={}, peer=PEER.peer_id, submitter="c",
                                started_ms=1, finished_ms=2, timings_ms={"run": 1.0}, power_w=1.0, energy_j=1.0,
                                energy_kwh=0.0)
                return [m.to_bytes()]
            except Exception:
                return []

        @target("runtime.manifest", (RunManifestError,), _run_manifest_seeds)
        def fuzz_run_manifest(data: bytes) -> None:
            """runtime.manifest.RunManifest.from_bytes: a job run's manifest."""
            RunManifest.from_bytes(data)


_optional_targets()


def run_one(name: str, data: bytes) -> None:
    """Run target ``name`` on ``data``; expected errors are swallowed, anything else propagates."""
    t = TARGETS[name]
    try:
        t.fn(data)
    except t.expected:
        pass
