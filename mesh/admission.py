"""Admission: who may be part of a mesh. Operator root keys, membership certificates, revocation.

A mesh has one or more **operator root keys** (Ed25519, made by ``arcnet ca
init``). Every peer's data directory holds the public halves as
``trust/*.pub``. A peer may join only with a **membership certificate**
(``peer.cert``) that a root key signed: it names the peer (its peer id, which
embeds its public key), its region and roles, a validity interval, a serial
number and the issuer's key id. Certificates are checked in one place
(:func:`verify_certificate`), which raises one :class:`AdmissionError` whose
``reason`` says which check failed: ``unknown_issuer``, ``bad_signature``,
``wrong_peer``, ``not_yet_valid``, ``expired``, ``revoked`` or ``malformed``.

**Revocation.** A root key signs a :class:`RevocationList` (peer ids and
serials, a version number). Lists are single-writer per issuer, so merging is
a per-issuer max on version (ties broken by the larger signature, so every
peer keeps the same list whatever the order it hears them in): a CRDT that can
be gossiped freely. :class:`RevocationSet` holds the newest list of each
issuer; ``revocations.bin`` in the data directory stores it.

**Proving it on a connection** (:class:`AdmissionGate`). Noise already
authenticates the remote's peer id; the gate adds "and a root key vouches for
that peer id". After a connection comes up each side, as verifier, sends an
``admission`` request carrying a fresh 32-byte nonce; the prover answers with
its certificate and an Ed25519 signature, by its own key, over
``domain || nonce || verifier id || prover id``. The verifier checks the
signature against the connection's authenticated peer id and the certificate
against its trust roots and revocations. The exchange is symmetric (both
sides verify), and it also carries each side's revocation versions so a peer
that hears of a newer list pulls it (and pushes lists it learns to its
admitted neighbours: epidemic broadcast over the connection graph).

Until a peer is admitted, :meth:`AdmissionGate.allowed` is False: the daemon
drops its message frames (counted) and the gate refuses its mesh requests.
A peer that presents a bad certificate is refused (counted, logged as a
warning) and disconnected at once. A connection that presents none (or does
not answer) may be a CLI client, which has a grant rather than a certificate:
it keeps its connection for ``grace_s`` so it can finish control requests, and
is then disconnected. Such a connection is quiet (DEBUG) while its grace runs
and, once it has made a control request, for good (counted as
``clients_connected``, not as refused); only one that neither presents a
certificate nor makes a control request before its grace runs out is counted
as refused and logged (one warning line). Expiry and revocation are re-checked
every ``sweep_interval_s`` for admitted peers too.

A data directory with no ``trust/*.pub`` runs **open** (development mode):
every peer is allowed, and the gate logs a warning at start.

Prior art: X.509 and SSH certificates (a CA key signing a subject key with a
validity window; sshd's ``TrustedUserCAKeys``), CRLs with a CRL number, and
challenge-response binding to a channel (RFC 5929 channel binding, in spirit).

Knowingly left out: certificate chains and intermediate CAs (a root signs
certificates directly), key rotation beyond "add a new root, revoke under the
old one", OCSP-style online status, and clock-skew tolerance beyond
``skew_s`` for ``not_before``.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import msgpack
import trio

from . import identity as _identity
from .control import ControlError
from .logs import RateLimitedLog
from .transport import TransportError, request_protocol
from .wire import (
    DEFAULT_CODEC,
    PEER_ID,
    SIG,
    U8,
    U64,
    Bytes,
    Codec,
    Enum,
    List,
    Map,
    Message,
    Optional,
    Str,
    WireError,
)

__all__ = [
    "ADMISSION_PROTOCOL",
    "REASONS",
    "ROLES",
    "AdmissionAck",
    "AdmissionError",
    "AdmissionGate",
    "AdmissionHello",
    "AdmissionProof",
    "CertBody",
    "Certificate",
    "RevocationBody",
    "RevocationBundle",
    "RevocationList",
    "RevocationPull",
    "RevocationSet",
    "TrustStore",
    "client_admission_handler",
    "decode_certificate",
    "decode_revocations",
    "issue_certificate",
    "key_id",
    "load_public_key",
    "sign_revocations",
    "verify_certificate",
]

log = logging.getLogger("arcnet.admission")

ADMISSION_PROTOCOL = "admission"  # request name: /arcnet/req/admission/1.0.0
FORMAT = 1
ROLES = ("site", "hpc", "edge")
REGION_MAX = 32
KEY_ID_BYTES = 8
ROOTS_MAX = 8  # trust roots per mesh; also revocation lists held (one per root)
REVOKED_PEERS_MAX = 4096  # per list: 4,096 x 54 B = 221 KB
REVOKED_SERIALS_MAX = 16384  # per list: 16,384 x 9 B = 147 KB; a list stays under the 1 MiB frame

#: Why a peer was refused; each is a counter (``refused_<reason>``) in statistics().
REASONS = (
    "malformed",  # the certificate or proof does not decode, or its fields are inconsistent
    "unknown_issuer",  # signed by a key that is not one of this mesh's roots
    "bad_signature",  # the certificate's or the proof's signature does not verify
    "wrong_peer",  # the certificate names another peer than the connection's
    "not_yet_valid",
    "expired",
    "revoked",
    "no_certificate",  # the peer answered the challenge without a certificate
    "unanswered",  # the peer did not answer the challenge (timeout, protocol not served)
)

# Refusals that may be a client (which has a grant, not a certificate) or a transient
# stream failure: the connection keeps its grace time ("unproven" until then), the refusal
# is counted and logged only if it makes no control request within it, and is not remembered.
_SOFT_REASONS = frozenset({"no_certificate", "unanswered"})

_CERT_DOMAIN = b"arcnet/cert/v1\0"
_REVOKE_DOMAIN = b"arcnet/revocations/v1\0"
_PROOF_DOMAIN = b"arcnet/admission-proof/v1\0"
_KEY_ID_DOMAIN = b"arcnet/key-id/v1\0"

KEY_ID = Bytes(KEY_ID_BYTES, KEY_ID_BYTES)
KEY_ID_HEX = Str(2 * KEY_ID_BYTES, 2 * KEY_ID_BYTES)


class AdmissionError(ValueError):
    """A certificate, revocation list or proof that does not admit; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason


def key_id(public_key: bytes) -> bytes:
    """The 8-byte id of an operator key: what certificates name as their issuer."""
    if len(public_key) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    return hashlib.sha256(_KEY_ID_DOMAIN + public_key).digest()[:KEY_ID_BYTES]


def _canonical(body: Message) -> bytes:
    """Canonical bytes of a nested body: the codec's msgpack array of its fields."""
    return msgpack.packb(body._to_fields(), use_bin_type=True)


# --------------------------------------------------------------------------
# messages (tags 0x0A00-0x0A0F certificates and revocations, 0x0A10-0x0A1F the exchange)


class CertBody(Message):
    """What a root key signs about a peer."""

    format = U8  # 1
    peer_id = PEER_ID  # embeds the peer's Ed25519 public key
    region = Str(REGION_MAX, 1)
    roles = List(Enum(*ROLES), len(ROLES))
    serial = U64  # random; revocation may name it
    not_before_s = U64  # Unix seconds
    expires_s = U64  # Unix seconds; valid while now < expires_s
    issuer = KEY_ID


class Certificate(Message, tag=0x0A01, protocol=ADMISSION_PROTOCOL):
    body = CertBody
    signature = SIG  # by the issuer over _CERT_DOMAIN + canonical body


class RevocationBody(Message):
    format = U8  # 1
    issuer = KEY_ID
    version = U64  # newer wins; ``arcnet ca revoke`` adds one
    issued_s = U64  # Unix seconds (informative)
    peers = List(PEER_ID, REVOKED_PEERS_MAX)  # certificates and grants of these ids
    serials = List(U64, REVOKED_SERIALS_MAX)  # certificates and grants with these serials


class RevocationList(Message, tag=0x0A02, protocol=ADMISSION_PROTOCOL):
    body = RevocationBody
    signature = SIG  # by the issuer over _REVOKE_DOMAIN + canonical body


class RevocationBundle(Message, tag=0x0A03, protocol=ADMISSION_PROTOCOL, channel="data"):
    """The contents of ``revocations.bin``: the newest list of each issuer."""

    lists = List(RevocationList, ROOTS_MAX)


class AdmissionHello(Message, tag=0x0A10, protocol=ADMISSION_PROTOCOL):
    """Verifier -> prover: prove your certificate over this nonce."""

    nonce = Bytes(32, 32)
    revocations = Map(KEY_ID_HEX, U64, ROOTS_MAX)  # issuer key id (hex) -> version the verifier holds


class AdmissionProof(Message, tag=0x0A11, protocol=ADMISSION_PROTOCOL):
    """Prover -> verifier: the certificate and a signature binding it to this connection."""

    certificate = Optional(Certificate)
    signature = SIG  # prover's key over _PROOF_DOMAIN + nonce + verifier id + prover id
    revocations = Map(KEY_ID_HEX, U64, ROOTS_MAX)


class RevocationPull(Message, tag=0x0A12, protocol=ADMISSION_PROTOCOL):
    """Ask for the list of ``issuer``; answered with a RevocationList or an AdmissionAck."""

    issuer = KEY_ID


class AdmissionAck(Message, tag=0x0A13, protocol=ADMISSION_PROTOCOL):
    """A short answer: a pushed list was taken, or a request was refused."""

    code = Enum("ok", "stale", "refused", "not_found", "bad_request")
    text = Str(200)


# --------------------------------------------------------------------------
# trust roots


def load_public_key(text: str, where: str = "key") -> bytes:
    """A public key from text: 64 hex characters or a peer id; ``#`` starts a comment."""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        token = line.split()[0]
        if token.startswith("12D3KooW"):
            try:
                return _identity.public_key_of(token)
            except _identity.IdentityError as exc:
                raise ValueError(f"{where}: {exc}") from None
        try:
            raw = bytes.fromhex(token)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"{where}: expected a public key (64 hex characters or a 12D3KooW... peer id)")
        return raw
    raise ValueError(f"{where}: empty (expected a public key)")


class TrustStore:
    """The operator root public keys of a mesh, by key id. Empty means an open mesh."""

    def __init__(self, public_keys: Iterable[bytes] = ()):
        self._keys: dict[bytes, bytes] = {}
        for pk in public_keys:
            self.add(pk)

    def add(self, public_key: bytes) -> bytes:
        if len(self._keys) >= ROOTS_MAX and key_id(public_key) not in self._keys:
            raise ValueError(f"at most {ROOTS_MAX} trust roots per mesh")
        kid = key_id(public_key)
        self._keys[kid] = bytes(public_key)
        return kid

    @classmethod
    def load_dir(cls, path: str | os.PathLike[str]) -> "TrustStore":
        """Every ``*.pub`` in ``path`` (a missing folder is an empty store)."""
        store = cls()
        folder = Path(path)
        if not folder.is_dir():
            return store
        for f in sorted(folder.glob("*.pub")):
            store.add(load_public_key(f.read_text(), str(f)))
        return store

    def key(self, kid: bytes) -> bytes | None:
        return self._keys.get(kid)

    def key_ids(self) -> list[bytes]:
        return sorted(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def verify(self, kid: bytes, message: bytes, signature: bytes) -> bool | None:
        """True/False for a known issuer; None if ``kid`` is not a root of this mesh."""
        pk = self._keys.get(kid)
        if pk is None:
            return None
        return _identity.verify(pk, message, signature)


# --------------------------------------------------------------------------
# certificates


def issue_certificate(
    root: _identity.Identity,
    peer_id: str,
    *,
    region: str,
    roles: Iterable[str],
    not_before_s: int,
    expires_s: int,
    serial: int | None = None,
) -> Certificate:
    """A certificate for ``peer_id`` signed by the operator key ``root``."""
    _identity.public_key_of(peer_id)  # IdentityError for anything but an Ed25519 peer id
    role_list = sorted(set(roles), key=ROLES.index) if all(r in ROLES for r in roles) else list(roles)
    if serial is None:
        serial = int.from_bytes(os.urandom(8), "big")
    body = CertBody(FORMAT, peer_id, region, role_list, serial, int(not_before_s), int(expires_s), key_id(root.public_key))
    body.validate()  # WireError for a bad region, role or number
    if body.expires_s <= body.not_before_s:
        raise ValueError("a certificate must expire after it becomes valid")
    return Certificate(body, root.sign(_CERT_DOMAIN + _canonical(body)))


def decode_certificate(data: bytes, codec: Codec = DEFAULT_CODEC) -> Certificate:
    """Decode ``peer.cert`` bytes (or a received certificate); AdmissionError("malformed") otherwise."""
    try:
        msg = codec.decode(data)
    except WireError as exc:
        raise AdmissionError("malformed", f"not a certificate: {exc}") from None
    if not isinstance(msg, Certificate):
        raise AdmissionError("malformed", f"not a certificate: a {type(msg).__name__} message")
    return msg


def verify_certificate(
    cert: Certificate,
    trust: TrustStore,
    *,
    now_s: float,
    peer_id: str | None = None,
    revocations: "RevocationSet | None" = None,
    skew_s: float = 60.0,
) -> CertBody:
    """Check ``cert`` and return its body; raise AdmissionError naming the first failed check.

    The order is fixed so each failure has one name: shape, issuer,
    signature (a forged certificate is reported as forged, whatever it
    claims), peer, validity window, revocation. ``skew_s`` tolerates an
    issuing machine whose clock runs ahead (``not_before`` only; expiry is
    exact).
    """
    body = cert.body
    if body.format != FORMAT:
        raise AdmissionError("malformed", f"certificate format {body.format} (this peer reads {FORMAT})")
    if len(set(body.roles)) != len(body.roles):
        raise AdmissionError("malformed", "certificate lists a role twice")
    ok = trust.verify(body.issuer, _CERT_DOMAIN + _canonical(body), cert.signature)
    if ok is None:
        raise AdmissionError("unknown_issuer", f"certificate issued by key {body.issuer.hex()}, which is not a root of this mesh")
    if not ok:
        raise AdmissionError("bad_signature", f"certificate of {body.peer_id[-8:]}: bad issuer signature")
    if peer_id is not None and body.peer_id != peer_id:
        raise AdmissionError("wrong_peer", f"certificate is for {body.peer_id[-8:]}, not for {peer_id[-8:]}")
    if now_s + skew_s < body.not_before_s:
        raise AdmissionError("not_yet_valid", f"certificate of {body.peer_id[-8:]} is valid from {_when(body.not_before_s)}")
    if now_s >= body.expires_s:
        raise AdmissionError("expired", f"certificate of {body.peer_id[-8:]} expired at {_when(body.expires_s)}")
    if revocations is not None and revocations.is_revoked(peer_id=body.peer_id, serial=body.serial):
        raise AdmissionError("revoked", f"certificate of {body.peer_id[-8:]} (serial {body.serial}) is revoked")
    return body


def _when(t_s: int) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_s))
    except (OverflowError, OSError, ValueError):
        return f"{t_s} (Unix seconds)"


# --------------------------------------------------------------------------
# revocation


def sign_revocations(
    root: _identity.Identity,
    *,
    version: int,
    peers: Iterable[str] = (),
    serials: Iterable[int] = (),
    issued_s: int = 0,
) -> RevocationList:
    """A revocation list of ``root``, version ``version`` (sorted, de-duplicated)."""
    body = RevocationBody(FORMAT, key_id(root.public_key), int(version), int(issued_s), sorted(set(peers)), sorted(set(serials)))
    body.validate()
    return RevocationList(body, root.sign(_REVOKE_DOMAIN + _canonical(body)))


def verify_revocations(rl: RevocationList, trust: TrustStore) -> RevocationBody:
    body = rl.body
    if body.format != FORMAT:
        raise AdmissionError("malformed", f"revocation list format {body.format} (this peer reads {FORMAT})")
    ok = trust.verify(body.issuer, _REVOKE_DOMAIN + _canonical(body), rl.signature)
    if ok is None:
        raise AdmissionError("unknown_issuer", f"revocation list issued by key {body.issuer.hex()}, not a root of this mesh")
    if not ok:
        raise AdmissionError("bad_signature", "revocation list: bad issuer signature")
    return body


def decode_revocations(data: bytes, codec: Codec = DEFAULT_CODEC) -> list[RevocationList]:
    """Decode a RevocationList or a RevocationBundle (``revocations.bin``); AdmissionError("malformed")."""
    try:
        msg = codec.decode(data)
    except WireError as exc:
        raise AdmissionError("malformed", f"not a revocation list: {exc}") from None
    if isinstance(msg, RevocationList):
        return [msg]
    if isinstance(msg, RevocationBundle):
        return list(msg.lists)
    raise AdmissionError("malformed", f"not a revocation list: a {type(msg).__name__} message")


class RevocationSet:
    """The newest revocation list of each issuer; a CRDT (per-issuer max on (version, signature)).

    ``merge`` is commutative, associative and idempotent, so lists can be
    gossiped in any order, any number of times, and every peer ends up with
    the same set.
    """

    def __init__(self) -> None:
        self._lists: dict[bytes, RevocationList] = {}
        self._peers: frozenset[str] = frozenset()
        self._serials: frozenset[int] = frozenset()

    def merge(self, rl: RevocationList, trust: TrustStore) -> bool:
        """Take ``rl`` if it is newer than what this set holds for its issuer; True if it changed.

        Raises AdmissionError for a list that is not signed by a root of ``trust``.
        """
        body = verify_revocations(rl, trust)
        held = self._lists.get(body.issuer)
        if held is not None and (held.body.version, held.signature) >= (body.version, rl.signature):
            return False
        self._lists[body.issuer] = rl
        self._reindex()
        return True

    def merge_set(self, other: "RevocationSet", trust: TrustStore) -> bool:
        changed = False
        for rl in other.lists():
            changed |= self.merge(rl, trust)
        return changed

    def _reindex(self) -> None:
        self._peers = frozenset(p for rl in self._lists.values() for p in rl.body.peers)
        self._serials = frozenset(s for rl in self._lists.values() for s in rl.body.serials)

    def is_revoked(self, *, peer_id: str | None = None, serial: int | None = None) -> bool:
        return (peer_id is not None and peer_id in self._peers) or (serial is not None and serial in self._serials)

    def get(self, issuer: bytes) -> RevocationList | None:
        return self._lists.get(issuer)

    def lists(self) -> list[RevocationList]:
        return [self._lists[k] for k in sorted(self._lists)]

    def versions(self) -> dict[str, int]:
        """Issuer key id (hex) -> version held: what the admission exchange advertises."""
        return {k.hex(): rl.body.version for k, rl in sorted(self._lists.items())}

    def statistics(self) -> dict[str, int]:
        return {"lists": len(self._lists), "peers": len(self._peers), "serials": len(self._serials)}

    def encode(self, codec: Codec = DEFAULT_CODEC) -> bytes:
        return codec.encode(RevocationBundle(self.lists()))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the set atomically (temp file, fsync, rename)."""
        _atomic_write(Path(path), self.encode())

    @classmethod
    def load(cls, path: str | os.PathLike[str], trust: TrustStore) -> "RevocationSet":
        """Read ``revocations.bin`` (missing: empty); AdmissionError for a malformed or forged list.

        A list from an issuer that is no longer a trust root is skipped with
        a warning (the root was retired; its revocations went with it).
        """
        rs = cls()
        p = Path(path)
        if not p.exists():
            return rs
        for rl in decode_revocations(p.read_bytes()):
            try:
                rs.merge(rl, trust)
            except AdmissionError as exc:
                if exc.reason != "unknown_issuer":
                    raise AdmissionError(exc.reason, f"{p}: {exc}") from None
                log.warning("%s: skipping a revocation list: %s", p, exc)
        return rs


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def proof_message(nonce: bytes, verifier: str, prover: str) -> bytes:
    """What a prover signs: binds its certificate to this verifier, this nonce, this connection's ids."""
    return _PROOF_DOMAIN + nonce + verifier.encode() + prover.encode()


def client_admission_handler(
    identity: _identity.Identity, codec: Codec = DEFAULT_CODEC
) -> Callable[[str, bytes], Awaitable[bytes]]:
    """A request handler for a client's transport (the CLI): answer challenges with "no certificate".

    Peers challenge every connection, clients included; a client that serves
    this answers at once (the peer then holds it for its control requests,
    see :meth:`AdmissionGate.guard`) instead of leaving the peer to find out
    from a failed stream, which libp2p logs as an error on the peer.
    """

    async def handler(peer_id: str, payload: bytes) -> bytes:
        try:
            msg = codec.decode(payload)
        except WireError as exc:
            return codec.encode(AdmissionAck("bad_request", str(exc)[:200]))
        if not isinstance(msg, AdmissionHello):
            return codec.encode(AdmissionAck("refused", "a client holds no revocation lists"))
        sig = identity.sign(proof_message(msg.nonce, peer_id, identity.peer_id))
        return codec.encode(AdmissionProof(None, sig, {}))

    return handler


# --------------------------------------------------------------------------
# the gate: admission on live connections


@dataclass
class _PeerState:
    gen: int  # connection generation: a challenge for an older connection is ignored
    connected_at: float  # trio clock
    deadline: float  # trio clock: disconnect at this time unless admitted (or held)
    state: str = "pending"  # pending | unproven (no certificate, within its grace: a client?) | admitted | refused
    reason: str = ""
    error: AdmissionError | None = None  # unproven: why, for the refusal if its grace runs out
    client: bool = False  # made a control request while not admitted: a client, never a refused peer
    body: CertBody | None = None
    decided: trio.Event | None = None


_COUNTERS = (
    "connections",  # connections the gate saw come up
    "challenges_sent",
    "challenge_retries",  # a challenge request failed on a live connection and was sent again
    "proofs_served",  # challenges this peer answered
    "admitted",
    *(f"refused_{r}" for r in REASONS),
    "clients_connected",  # connections without a certificate that made a control request (the CLI)
    "closed_unproven",  # closed within their grace time with no certificate and no control request
    "frames_dropped_unadmitted",  # message frames from peers refused or unknown to the gate
    "frames_dropped_pending",  # message frames from peers whose admission is still being decided
    "sends_refused",  # frames the daemon did not send to a refused peer
    "requests_refused_unadmitted",  # mesh requests from peers not admitted
    "disconnects_refused",  # disconnected at once: a bad certificate
    "disconnects_grace",  # disconnected when the grace time ran out unadmitted
    "disconnects_expired",  # an admitted peer whose certificate expired or was revoked
    "revocations_accepted",  # newer lists merged (from a peer, a file or a control request)
    "revocations_rejected",  # lists that did not verify
    "revocations_pulled",
    "revocations_pushed",
    "bad_requests",  # admission requests that did not decode
    "requests_rate_limited",  # admission requests over the limiter's rate (see attach)
)


class AdmissionGate:
    """Admission on live connections, for the daemon (see the module docstring).

    Knobs:

    * ``grace_s`` (15 s): how long an unadmitted connection may stay up (a
      CLI client's control request must finish within it, unless the control
      handler is wrapped with :meth:`guard`). Bounds what an outsider can
      hold: at 1,024 connections, one grace time of idle sockets.
    * ``challenge_timeout_s`` (5 s): a prover must answer within this;
      ``challenge_attempts`` (3) tries while the connection is up, pausing
      ``challenge_retry_s`` (0.2 s), then twice that (py-libp2p 0.8.1 has
      been seen to lose the first streams of a connection set up while many
      others are, in one process under load).
    * ``hold_max_s`` (120 s): a guarded request keeps an unadmitted client
      connected at most this long after it connected.
    * ``sweep_interval_s`` (1 s): how often admitted peers' expiry and
      revocation are re-checked.
    * ``peers_max`` (4,096): peers tracked at once (above the transport's
      1,024 connections); beyond it new connections are refused.
    * ``refusal_memory_s`` (60 s): after a refusal for a bad certificate,
      :meth:`may_send` stays False for this long, so gossip does not redial
      the peer every round only to refuse it again (a reconnect from its
      side is still challenged: its certificate may have been renewed).
    * ``wall_clock``: Unix seconds for certificate validity (injectable);
      grace and timeouts use trio's clock.

    ``on_decision(kind, data)``, if set, is called (synchronously; it must
    not block) with the audit log's kinds: ``admission.granted``
    ``{subject, operator, expires_ms}``, ``admission.refused`` ``{subject,
    reason}`` (at once for a bad certificate; when its grace runs out for a
    connection with none that made no control request), ``admission.revoked``
    ``{subject, reason}`` (an admitted peer's certificate expired or was
    revoked while connected).
    """

    def __init__(
        self,
        identity: _identity.Identity,
        trust: TrustStore,
        certificate: Certificate | None = None,
        revocations: RevocationSet | None = None,
        *,
        revocations_path: str | os.PathLike[str] | None = None,
        grace_s: float = 15.0,
        challenge_timeout_s: float = 5.0,
        challenge_attempts: int = 3,
        challenge_retry_s: float = 0.2,
        hold_max_s: float = 120.0,
        sweep_interval_s: float = 1.0,
        peers_max: int = 4096,
        refusal_memory_s: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        codec: Codec = DEFAULT_CODEC,
        log_interval_s: float = 10.0,
    ):
        self.identity = identity
        self.peer_id = identity.peer_id
        self.trust = trust
        self.certificate = certificate
        self.revocations = revocations if revocations is not None else RevocationSet()
        self.revocations_path = Path(revocations_path) if revocations_path is not None else None
        self.grace_s = float(grace_s)
        self.challenge_timeout_s = float(challenge_timeout_s)
        self.challenge_attempts = max(1, int(challenge_attempts))
        self.challenge_retry_s = float(challenge_retry_s)
        self.hold_max_s = float(hold_max_s)
        self.sweep_interval_s = float(sweep_interval_s)
        self.peers_max = int(peers_max)
        self.refusal_memory_s = float(refusal_memory_s)
        self.wall_clock = wall_clock
        self.codec = codec
        self.transport: Any = None
        self._peers: dict[str, _PeerState] = {}
        self._holds: collections.Counter[str] = collections.Counter()
        self._gen = 0
        self._queue: collections.deque[tuple[str, int]] = collections.deque()  # (peer, gen) to challenge
        self._wake = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self._stats: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._badlog = RateLimitedLog(log, interval_s=log_interval_s)
        self._push_pending: set[bytes] = set()  # issuers whose list to push to neighbours
        self._pulling: set[tuple[str, bytes]] = set()  # (peer, issuer) pulls in flight: one each
        self.on_decision: Callable[[str, dict[str, Any]], None] | None = None
        # peer -> trio time until which sends to it are refused (it was refused recently); bounded
        self._recent_refusals: collections.OrderedDict[str, float] = collections.OrderedDict()
        if not self.trust:
            log.warning("no trust roots configured: this mesh is OPEN, any peer may join (development mode); "
                        "put operator root keys in <data dir>/trust/*.pub to require certificates")

    # -- construction ------------------------------------------------------

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike[str], identity: _identity.Identity, **kw: Any) -> "AdmissionGate":
        """Trust roots from ``trust/*.pub``, own certificate from ``peer.cert``, ``revocations.bin``.

        Raises AdmissionError (one line for the operator) if roots are
        configured but this peer's own certificate is missing, foreign,
        forged, expired or revoked: such a peer could not join anyway.
        """
        dd = Path(data_dir)
        try:
            trust = TrustStore.load_dir(dd / "trust")
        except ValueError as exc:
            raise AdmissionError("malformed", f"trust roots: {exc}") from None
        revocations = RevocationSet.load(dd / "revocations.bin", trust) if trust else RevocationSet()
        cert: Certificate | None = None
        cert_path = dd / "peer.cert"
        if cert_path.exists():
            cert = decode_certificate(cert_path.read_bytes())
        if trust:
            if cert is None:
                raise AdmissionError(
                    "no_certificate",
                    f"{cert_path}: no membership certificate, but {dd / 'trust'} has trust roots; ask an operator for "
                    f"one (`arcnet ca issue {identity.peer_id} --region R -o peer.cert`) and put it there",
                )
            wall = kw.get("wall_clock", time.time)
            try:
                verify_certificate(cert, trust, now_s=wall(), peer_id=identity.peer_id, revocations=revocations)
            except AdmissionError as exc:
                raise AdmissionError(exc.reason, f"{cert_path}: {exc}") from None
        return cls(identity, trust, cert, revocations, revocations_path=dd / "revocations.bin", **kw)

    @property
    def open(self) -> bool:
        """True when no trust roots are configured: everyone is allowed (development mode)."""
        return not self.trust

    # -- daemon hooks (synchronous) -------------------------------------------

    def attach(self, transport: Any, limiter: Any = None) -> None:
        """Serve the admission protocol on ``transport`` and follow its connections.

        Call before ``transport.run`` starts (so no connection is missed);
        chains any ``on_connect``/``on_disconnect`` already set. With a
        :class:`~arcnet.mesh.limits.RateLimiter`, admission requests over its
        ``admission`` rate are answered "refused" without any work (a
        challenge costs the prover a signature).
        """
        self.transport = transport
        handler = self.handle_request
        if limiter is not None:
            async def limited(peer_id: str, payload: bytes) -> bytes:
                if not limiter.allow(peer_id, ADMISSION_PROTOCOL, trio.current_time()):
                    self._stats["requests_rate_limited"] += 1
                    return self.codec.encode(AdmissionAck("refused", "rate limited"))
                return await self.handle_request(peer_id, payload)

            handler = limited
        transport.set_request_handler(request_protocol(ADMISSION_PROTOCOL), handler)
        prev_up, prev_down = transport.on_connect, transport.on_disconnect

        def on_connect(peer_id: str, addr: str | None) -> None:
            self.on_connect(peer_id, addr)
            if prev_up is not None:
                prev_up(peer_id, addr)

        def on_disconnect(peer_id: str) -> None:
            self.on_disconnect(peer_id)
            if prev_down is not None:
                prev_down(peer_id)

        transport.on_connect = on_connect
        transport.on_disconnect = on_disconnect

    def allowed(self, peer_id: str) -> bool:
        """May frames and mesh requests from ``peer_id`` be accepted now?"""
        if not self.trust:
            return True
        st = self._peers.get(peer_id)
        return st is not None and st.state == "admitted"

    def accept_frame(self, peer_id: str) -> bool:
        """``allowed``, counting a drop: the daemon's receive loop calls this for every frame."""
        if self.allowed(peer_id):
            return True
        st = self._peers.get(peer_id)
        if st is not None and st.state == "pending":
            # A member's first frames often race its admission: counted, not warned about (the
            # warning, rate-limited per kind, would otherwise be spent on members at every start).
            self._stats["frames_dropped_pending"] += 1
            return False
        self._stats["frames_dropped_unadmitted"] += 1
        self._badlog.warning("frame-unadmitted", "dropped a frame from unadmitted peer %s", peer_id)
        return False

    def may_send(self, peer_id: str) -> bool:
        """False only for a connected peer that was refused (sending would dial or reach an outsider).

        A peer not yet connected is allowed: the send dials it and the
        connection is then challenged like any other.
        """
        if not self.trust:
            return True
        st = self._peers.get(peer_id)
        refused = st is not None and st.state in ("refused", "unproven")
        if not refused and peer_id in self._recent_refusals:
            # Disconnected after a refusal: sending would dial it again, only to refuse it again.
            if self._recent_refusals[peer_id] > trio.current_time():
                refused = True
            else:
                del self._recent_refusals[peer_id]
        if refused:
            self._stats["sends_refused"] += 1
            return False
        return True

    def certificate_of(self, peer_id: str) -> CertBody | None:
        """The verified certificate body of an admitted peer (region and roles for placement)."""
        st = self._peers.get(peer_id)
        return st.body if st is not None and st.state == "admitted" else None

    def on_connect(self, peer_id: str, addr: str | None = None) -> None:
        self._stats["connections"] += 1
        if not self.trust:
            return
        if peer_id not in self._peers and len(self._peers) >= self.peers_max:
            self._refusal(peer_id, AdmissionError("unanswered", f"{self.peers_max} peers already tracked; refusing more"))
            self._disconnect_soon(peer_id, "disconnects_refused")
            return
        self._gen += 1
        now = trio.current_time()
        self._peers[peer_id] = _PeerState(self._gen, now, now + self.grace_s, decided=trio.Event())
        self._queue.append((peer_id, self._gen))
        self._wake.unpark_all()

    def on_disconnect(self, peer_id: str) -> None:
        st = self._peers.pop(peer_id, None)
        if st is None:
            return
        if st.state in ("pending", "unproven") and not st.client and st.deadline != float("inf"):
            # It left within its grace time, certificate-less and without a control request: not refused.
            self._stats["closed_unproven"] += 1
            log.debug("peer %s closed its connection within its grace time (no certificate, no control request)",
                      peer_id)
        if st.decided is not None:
            st.decided.set()  # wake waiters in require(): the answer is "no longer connected"

    # -- wrappers for request handlers ---------------------------------------------

    def require(self, handler: Callable[[str, bytes], Awaitable[bytes]]) -> Callable[[str, bytes], Awaitable[bytes]]:
        """Wrap a mesh request handler: wait for the requester's admission, refuse it if not admitted."""

        async def gated(peer_id: str, payload: bytes) -> bytes:
            if not self.trust:
                return await handler(peer_id, payload)
            st = self._peers.get(peer_id)
            if st is not None and st.state == "pending" and st.decided is not None:
                with trio.move_on_after(self.challenge_timeout_s + 1.0):
                    await st.decided.wait()
            if not self.allowed(peer_id):
                self._stats["requests_refused_unadmitted"] += 1
                self._badlog.warning("request-unadmitted", "refused a request from unadmitted peer %s", peer_id)
                return self.codec.encode(AdmissionAck("refused", "not admitted to this mesh"))
            return await handler(peer_id, payload)

        return gated

    def guard(self, handler: Callable[[str, bytes], Awaitable[bytes]]) -> Callable[[str, bytes], Awaitable[bytes]]:
        """Wrap the control handler: a client in the middle of a request is not disconnected for lack
        of a certificate (up to ``hold_max_s`` after it connected). Authorisation is authz's job."""

        async def held(peer_id: str, payload: bytes) -> bytes:
            st = self._peers.get(peer_id)
            if st is not None and not st.client and st.state != "admitted":
                # a client (it has a grant, not a certificate): not a refused peer, nothing to warn about
                st.client = True
                self._stats["clients_connected"] += 1
                log.debug("client %s connected (control request, no certificate)", peer_id)
            self._holds[peer_id] += 1
            try:
                return await handler(peer_id, payload)
            finally:
                self._holds[peer_id] -= 1
                if self._holds[peer_id] <= 0:
                    del self._holds[peer_id]

        return held

    # -- the admission protocol, prover and revocation side ------------------------

    async def handle_request(self, peer_id: str, payload: bytes) -> bytes:
        """Serve ``/arcnet/req/admission/1.0.0``."""
        try:
            msg = self.codec.decode(payload)
        except WireError as exc:
            self._stats["bad_requests"] += 1
            self._badlog.warning("admission-bad-request", "bad admission request from %s: %s", peer_id, exc)
            return self.codec.encode(AdmissionAck("bad_request", str(exc)[:200]))
        if isinstance(msg, AdmissionHello):
            self._stats["proofs_served"] += 1
            sig = self.identity.sign(proof_message(msg.nonce, peer_id, self.peer_id))
            self._note_versions(peer_id, msg.revocations)
            return self.codec.encode(AdmissionProof(self.certificate, sig, self.revocations.versions()))
        if isinstance(msg, RevocationPull):
            if not self.allowed(peer_id):
                self._stats["requests_refused_unadmitted"] += 1
                return self.codec.encode(AdmissionAck("refused", "not admitted to this mesh"))
            rl = self.revocations.get(msg.issuer)
            if rl is None:
                return self.codec.encode(AdmissionAck("not_found", f"no list of issuer {msg.issuer.hex()}"))
            return self.codec.encode(rl)
        if isinstance(msg, RevocationList):
            if not self.allowed(peer_id):
                self._stats["requests_refused_unadmitted"] += 1
                return self.codec.encode(AdmissionAck("refused", "not admitted to this mesh"))
            code, text = self.accept_revocations(msg, source=peer_id)
            return self.codec.encode(AdmissionAck(code, text))
        self._stats["bad_requests"] += 1
        return self.codec.encode(AdmissionAck("bad_request", f"unexpected {type(msg).__name__}"))

    def accept_revocations(self, rl: RevocationList, source: str = "local") -> tuple[str, str]:
        """Merge a list from anywhere (a peer, ``arcnet ca revoke`` through a control method, a file).

        Returns ``(code, text)``: ``ok`` if it was newer and is now in force
        (saved, pushed to neighbours, and every connected peer re-checked),
        ``stale`` if not newer, ``refused`` if it does not verify.
        """
        try:
            changed = self.revocations.merge(rl, self.trust)
        except AdmissionError as exc:
            self._stats["revocations_rejected"] += 1
            self._badlog.warning("revocations-rejected", "revocation list from %s rejected: %s", source, exc)
            return "refused", str(exc)[:200]
        if not changed:
            return "stale", f"already hold version >= {rl.body.version}"
        self._stats["revocations_accepted"] += 1
        log.info("revocation list of issuer %s version %d now in force (from %s)", rl.body.issuer.hex(), rl.body.version, source)
        if self.revocations_path is not None:
            try:
                self.revocations.save(self.revocations_path)
            except OSError as exc:
                log.error("could not save %s: %s", self.revocations_path, exc)
        self._push_pending.add(rl.body.issuer)
        self._recheck_all()
        self._wake.unpark_all()
        return "ok", f"version {rl.body.version} in force"

    async def ctl_revocations(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        """Control method ``admission.revocations`` (mesh-wide admin, see authz.METHODS).

        ``args["list"]``: the bytes of a revocations file (``arcnet ca
        revoke`` writes one). Each list is merged; a newer one is saved,
        enforced at once and pushed to admitted neighbours.
        """
        data = args.get("list")
        if type(data) is not bytes:
            raise ControlError("bad_request", "admission.revocations needs 'list': the bytes of a revocations file")
        try:
            lists = decode_revocations(data)
        except AdmissionError as exc:
            raise ControlError("bad_request", str(exc)) from None
        results = []
        for rl in lists:
            code, text = self.accept_revocations(rl, source=client)
            results.append({"issuer": rl.body.issuer.hex(), "version": rl.body.version, "code": code, "text": text})
        return {"results": results, "versions": self.revocations.versions()}

    def _note_versions(self, peer_id: str, versions: dict[str, int]) -> None:
        """A peer advertised its revocation versions: pull any that are newer (once admitted)."""
        mine = self.revocations.versions()
        for kid_hex, version in versions.items():
            try:
                kid = bytes.fromhex(kid_hex)
            except ValueError:
                continue
            key = (peer_id, kid)
            if (self.trust.key(kid) is not None and version > mine.get(kid_hex, -1) and self._nursery is not None
                    and key not in self._pulling and len(self._pulling) < self.peers_max):
                self._pulling.add(key)
                self._nursery.start_soon(self._pull, peer_id, kid)

    # -- running -----------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Challenge new connections, disconnect the unadmitted, re-check expiry; until cancelled."""
        if self.transport is None:
            raise RuntimeError("attach(transport) before run()")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.trust:
                for peer_id in self.transport.connected_peers():  # connections made before attach
                    if peer_id not in self._peers:
                        self.on_connect(peer_id, None)
            task_status.started()
            try:
                next_sweep = trio.current_time()
                while True:
                    while self._queue:
                        peer_id, gen = self._queue.popleft()
                        nursery.start_soon(self._challenge, peer_id, gen)
                    while self._push_pending:
                        nursery.start_soon(self._push, self._push_pending.pop())
                    now = trio.current_time()
                    if now >= next_sweep:
                        self._sweep(now)
                        next_sweep = now + self.sweep_interval_s
                    wake_at = min([next_sweep] + [st.deadline for st in self._peers.values() if st.state != "admitted"])
                    with trio.move_on_at(wake_at):
                        if not self._queue and not self._push_pending:
                            await self._wake.park()
                    self._sweep(trio.current_time())
            finally:
                self._nursery = None

    async def _challenge(self, peer_id: str, gen: int) -> None:
        st = self._peers.get(peer_id)
        if st is None or st.gen != gen:
            return
        reply = b""
        for attempt in range(self.challenge_attempts):
            # A fresh nonce per attempt: a proof is only ever good for the challenge it answers.
            nonce = os.urandom(32)
            hello = self.codec.encode(AdmissionHello(nonce, self.revocations.versions()))
            self._stats["challenges_sent"] += 1
            try:
                reply = await self.transport.request(peer_id, request_protocol(ADMISSION_PROTOCOL), hello,
                                                     timeout_s=self.challenge_timeout_s)
                break
            except TransportError as exc:
                st = self._peers.get(peer_id)
                # "protocol not supported" is an answer (a peer that does not speak admission), not a glitch
                if (attempt + 1 < self.challenge_attempts and st is not None and st.gen == gen
                        and self.transport.is_connected(peer_id) and "not supported" not in str(exc)):
                    # A stream can fail for reasons of its own on a live connection; one
                    # more try (after a pause) keeps a transient failure from refusing a member.
                    self._stats["challenge_retries"] += 1
                    await trio.sleep(self.challenge_retry_s * 2**attempt)
                    continue
                self._decide(peer_id, gen, AdmissionError("unanswered", f"did not answer the admission challenge: {exc}"))
                return
        try:
            proof = self.codec.decode(reply)
        except WireError as exc:
            self._decide(peer_id, gen, AdmissionError("malformed", f"admission proof: {exc}"))
            return
        if not isinstance(proof, AdmissionProof):
            self._decide(peer_id, gen, AdmissionError("malformed", f"admission proof: got a {type(proof).__name__}"))
            return
        if proof.certificate is None:
            self._decide(peer_id, gen, AdmissionError("no_certificate", "presented no membership certificate"))
            return
        if not _identity.verify_peer(peer_id, proof_message(nonce, self.peer_id, peer_id), proof.signature):
            self._decide(peer_id, gen, AdmissionError("bad_signature", "admission proof not signed by the connection's key"))
            return
        try:
            body = verify_certificate(proof.certificate, self.trust, now_s=self.wall_clock(), peer_id=peer_id,
                                      revocations=self.revocations)
        except AdmissionError as exc:
            self._decide(peer_id, gen, exc)
            return
        self._decide(peer_id, gen, None, body)
        self._note_versions(peer_id, proof.revocations)

    def _decide(self, peer_id: str, gen: int, err: AdmissionError | None, body: CertBody | None = None) -> None:
        st = self._peers.get(peer_id)
        if st is None or st.gen != gen:
            return  # that connection is gone; a newer one has its own challenge
        if st.state == "refused":
            return  # its grace ran out before the answer came: refused once, and being disconnected
        if err is None:
            st.state, st.body, st.reason = "admitted", body, ""
            self._stats["admitted"] += 1
            assert body is not None
            log.info("admitted peer %s (region %s, roles %s)", peer_id, body.region, ",".join(body.roles))
            root = self.trust.key(body.issuer)
            operator = _identity.peer_id_from_public_key(root) if root is not None else ""
            self._notify("admission.granted", {"subject": peer_id, "operator": operator, "expires_ms": body.expires_s * 1000})
        elif err.reason in _SOFT_REASONS:
            # No certificate, or no answer, may be a CLI client with a control request in
            # flight: it keeps the rest of its grace time, and is refused (counted, logged,
            # audited) only if it makes no control request within it (see _sweep).
            st.state, st.reason, st.error = "unproven", err.reason, err
            log.debug("peer %s is unproven (%s: %s): held for its grace time, as a client may be",
                      peer_id, err.reason, err)
        else:
            # A bad certificate is an outsider or an impostor: refuse it and cut it off now.
            st.state, st.reason = "refused", err.reason
            self._refusal(peer_id, err)
            self._notify("admission.refused", {"subject": peer_id, "reason": err.reason})
            st.deadline = trio.current_time()
            self._wake.unpark_all()
        if st.decided is not None:
            st.decided.set()

    def _notify(self, kind: str, data: dict[str, Any]) -> None:
        if self.on_decision is None:
            return
        try:
            self.on_decision(kind, data)
        except Exception:  # an audit hook must not break admission
            log.exception("admission on_decision hook failed on %s", kind)

    def _refusal(self, peer_id: str, err: AdmissionError) -> None:
        if err.reason not in _SOFT_REASONS:
            # Remembered only for a bad certificate: a peer that merely did not answer may be
            # a member behind a transient stream failure, and sending to it again is how it
            # gets a second chance.
            self._recent_refusals.pop(peer_id, None)
            self._recent_refusals[peer_id] = trio.current_time() + self.refusal_memory_s
            while len(self._recent_refusals) > self.peers_max:
                self._recent_refusals.popitem(last=False)
        self._stats[f"refused_{err.reason}"] += 1
        self._badlog.warning(f"refused-{err.reason}", "refused peer %s (%s): %s", peer_id, err.reason, err)

    def _recheck_all(self) -> None:
        """Re-verify every admitted peer now (after a revocation list changed)."""
        self._sweep(trio.current_time(), force=True)

    def _sweep(self, now: float, force: bool = False) -> None:
        wall = self.wall_clock()
        for peer_id, st in list(self._peers.items()):
            if st.state == "admitted":
                body = st.body
                assert body is not None
                if wall >= body.expires_s:
                    err = AdmissionError("expired", f"certificate of {peer_id[-8:]} expired while connected")
                elif self.revocations.is_revoked(peer_id=body.peer_id, serial=body.serial):
                    err = AdmissionError("revoked", f"certificate of {peer_id[-8:]} was revoked while connected")
                else:
                    continue
                st.state, st.reason, st.body = "refused", err.reason, None
                self._refusal(peer_id, err)
                self._notify("admission.revoked", {"subject": peer_id, "reason": err.reason})
                self._disconnect_soon(peer_id, "disconnects_expired")
                continue
            if now < st.deadline:
                continue
            if st.state in ("pending", "unproven"):
                if self._holds.get(peer_id) and now < st.connected_at + self.hold_max_s:
                    st.deadline = min(now + 1.0, st.connected_at + self.hold_max_s)
                    continue
                if st.client:
                    log.debug("client %s: grace time over, disconnecting", peer_id)
                else:
                    # neither a certificate nor a control request within its grace: refused now
                    err = st.error or AdmissionError(
                        "unanswered", f"did not answer the admission challenge within its grace time ({self.grace_s:g} s)")
                    st.state, st.reason, st.error = "refused", err.reason, None
                    self._refusal(peer_id, err)
                    self._notify("admission.refused", {"subject": peer_id, "reason": err.reason})
                self._disconnect_soon(peer_id, "disconnects_grace")
            else:
                self._disconnect_soon(peer_id, "disconnects_refused")
            st.deadline = float("inf")  # once; a reconnect starts a new state

    def _disconnect_soon(self, peer_id: str, counter: str) -> None:
        self._stats[counter] += 1
        if self._nursery is not None and self.transport is not None:
            self._nursery.start_soon(self._disconnect, peer_id)

    async def _disconnect(self, peer_id: str) -> None:
        try:
            await self.transport.disconnect(peer_id)
        except TransportError as exc:
            log.debug("disconnect %s: %s", peer_id, exc)

    async def _pull(self, peer_id: str, issuer: bytes) -> None:
        try:
            await self._pull_once(peer_id, issuer)
        finally:
            self._pulling.discard((peer_id, issuer))

    async def _pull_once(self, peer_id: str, issuer: bytes) -> None:
        # The advertiser is trusted only once admitted; wait for the decision.
        st = self._peers.get(peer_id)
        if st is not None and st.state == "pending" and st.decided is not None:
            with trio.move_on_after(self.challenge_timeout_s + 1.0):
                await st.decided.wait()
        if not self.allowed(peer_id):
            return
        try:
            reply = await self.transport.request(peer_id, request_protocol(ADMISSION_PROTOCOL),
                                                 self.codec.encode(RevocationPull(issuer)),
                                                 timeout_s=self.challenge_timeout_s)
            msg = self.codec.decode(reply)
        except (TransportError, WireError) as exc:
            log.debug("revocation pull from %s: %s", peer_id, exc)
            return
        if isinstance(msg, RevocationList):
            self._stats["revocations_pulled"] += 1
            self.accept_revocations(msg, source=peer_id)

    async def _push(self, issuer: bytes) -> None:
        rl = self.revocations.get(issuer)
        if rl is None or self.transport is None:
            return
        payload = self.codec.encode(rl)
        for peer_id in [p for p, st in self._peers.items() if st.state == "admitted"]:
            try:
                await self.transport.request(peer_id, request_protocol(ADMISSION_PROTOCOL), payload,
                                             timeout_s=self.challenge_timeout_s)
                self._stats["revocations_pushed"] += 1
            except TransportError as exc:
                log.debug("revocation push to %s: %s", peer_id, exc)

    # -- reporting ---------------------------------------------------------------

    def statistics(self) -> dict[str, int]:
        """Counters since start plus gauges: plain ints for the metrics endpoint."""
        out = dict(self._stats)
        states = collections.Counter(st.state for st in self._peers.values())
        out["open_mode"] = int(not self.trust)
        out["trust_roots"] = len(self.trust)
        out["peers_pending"] = states["pending"]
        out["peers_admitted"] = states["admitted"]
        out["peers_unproven"] = states["unproven"]  # no certificate, within their grace time (clients, mostly)
        out["peers_refused"] = states["refused"]
        out["held_clients"] = len(self._holds)
        # for alerting before this peer's own certificate runs out (-1: none)
        out["own_cert_expires_in_s"] = (
            int(self.certificate.body.expires_s - self.wall_clock()) if self.certificate is not None else -1
        )
        out.update({f"revocation_{k}": v for k, v in self.revocations.statistics().items()})
        return out
