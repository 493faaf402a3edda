"""Authorisation: which client may call which control method, in which project, on which data.

**Grants.** A client (the CLI, an application) has its own Ed25519 key. An
operator root key (:mod:`arcnet.mesh.admission`) signs a :class:`Grant` for
that client key: one project (or ``*`` for every project), a set of
capabilities (``submit``, ``read``, ``publish``, ``admin``), a validity
window and a serial number (revocable through the same revocation lists as
membership certificates, by serial or by client id).

**Signed control requests.** Every control request is a
:class:`SignedControl`: method, msgpack args, a random 64-bit nonce, the
client's wall-clock timestamp (ms), the peer id of the target peer, the
project, the client's grant, and the client's Ed25519 signature over all of
it (domain-separated). The peer calls :func:`verify_control` before it
dispatches: the signature must be by the key of the connection's
authenticated client id, the request must be meant for this peer, the
timestamp within ``±window_s`` of the peer's clock, the nonce not seen in
that window (:class:`ReplayWindow`), the grant valid and unrevoked, and the
method's capability (:data:`METHODS`, one table) granted for the project.
Nonces are remembered only for as long as their timestamp is acceptable, so
the replay store is bounded by the request rate times the window, and by
``entries_max`` (beyond which requests are refused, never forgotten early:
forgetting would let a replay through).

**Projects** are namespaces with a signed :class:`ProjectPolicy`: allowed
models, allowed datasets and allowed regions (data residency), plus whether
its artifacts are encrypted at rest. :meth:`Policy.check_submit` is called
at submission, :meth:`Policy.check_region` at placement (for each candidate
peer's region). An empty list means "no restriction" for that dimension;
a project without a policy has no restrictions beyond its grants.

Prior art: capability grants in the manner of SPKI/SDSI authorisation certificates and
SSH user certificates; AWS SigV4 for signing the request, its target, and
a timestamp with a bounded replay window; Kerberos' replay cache.

Knowingly left out: delegation (a client granting another), per-object
ACLs, rate limits per client (see :mod:`arcnet.mesh.limits`), and
confidentiality of arguments beyond what Noise gives the connection.
"""

from __future__ import annotations

import heapq
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import msgpack

from . import identity as _identity
from .admission import (
    KEY_ID,
    AdmissionError,
    RevocationSet,
    TrustStore,
    key_id,
    _atomic_write,
    _canonical,
    _when,
)
from .control import ARGS_MAX_BYTES, ControlError, ControlRequest, decode_args, encode_args
from .logs import RateLimitedLog
from .wire import (
    BOOL,
    DEFAULT_CODEC,
    PEER_ID,
    SIG,
    U8,
    U64,
    Bytes,
    Codec,
    Enum,
    List,
    Message,
    Optional,
    Str,
    WireError,
)

__all__ = [
    "ANY_PROJECT",
    "CAPABILITIES",
    "METHODS",
    "AuthzError",
    "Authorizer",
    "Grant",
    "GrantBody",
    "Policy",
    "PolicyBody",
    "PolicyError",
    "PolicyStore",
    "ProjectPolicy",
    "ReplayWindow",
    "SignedControl",
    "capability_for",
    "decode_grant",
    "decode_policy",
    "issue_grant",
    "sign_control",
    "sign_policy",
    "verify_control",
    "verify_grant",
]

log = logging.getLogger("arcnet.authz")

FORMAT = 1
CAPABILITIES = ("submit", "read", "publish", "admin")
ANY_PROJECT = "*"  # a grant for every project (operators)
PROJECT_MAX = 64
NAME_MAX = 64  # model and dataset ids (content ids or names)
REGION_MAX = 32

#: method -> (capability, scope). Scope "project": the request's project must
#: be the grant's (or the grant is for "*"). Scope "mesh": any grant with the
#: capability will do, except that mesh-wide "admin" needs a "*" grant.
#: A method not listed needs mesh-wide admin: deny by default.
METHODS: dict[str, tuple[str, str]] = {
    "ping": ("read", "mesh"),
    "status": ("read", "mesh"),
    "peers": ("read", "mesh"),
    "statistics": ("read", "mesh"),
    "submit": ("submit", "project"),
    "cancel": ("submit", "project"),
    "jobs": ("read", "project"),
    "job": ("read", "project"),
    "result": ("read", "project"),
    "blob.get": ("read", "project"),
    "blob.list": ("read", "project"),
    "blob.stat": ("read", "project"),
    "model.list": ("read", "project"),
    "audit.export": ("read", "mesh"),
    "audit.checkpoint": ("read", "mesh"),
    "blob.put": ("publish", "project"),
    "blob.pin": ("publish", "project"),
    "model.publish": ("publish", "project"),
    "project.key": ("admin", "project"),
    "admission.revocations": ("admin", "mesh"),
    "ops.drain": ("admin", "mesh"),
    # the names the daemon's services register and the CLI calls (without these a project
    # client could not show its own job or list its artifacts: deny by default wants admin)
    "job.show": ("read", "project"),
    "job.rerun": ("submit", "project"),
    "model.ls": ("read", "project"),
    "blob.ls": ("read", "project"),
    "blob.fetch": ("read", "project"),
    "audit.keys": ("read", "mesh"),
    "blob.verify": ("admin", "mesh"),  # a scrub of this peer's whole store
    "drain": ("admin", "mesh"),
    "undrain": ("admin", "mesh"),
}

#: Why a request was refused; each is a counter (``refused_<reason>``) in statistics().
REASONS = (
    "malformed",  # args not a map, or a field out of shape
    "wrong_target",  # signed for another peer
    "stale",  # timestamp outside the window
    "bad_signature",  # not signed by the connection's client key
    "no_grant",
    "grant_unknown_issuer",
    "grant_bad_signature",
    "grant_wrong_client",  # the grant is for another client key
    "grant_not_yet_valid",
    "grant_expired",
    "grant_revoked",
    "forbidden_capability",  # the grant lacks the method's capability
    "forbidden_project",  # the grant (or the args) name another project
    "replayed",  # nonce already seen within the window
    "replay_full",  # the replay store is full: refused rather than forgotten
    "unsigned",  # a plain ControlRequest to a peer that requires signed ones
    "model_not_allowed",
    "dataset_not_allowed",
    "region_not_allowed",
)

_CODE_OF = {"stale": "refused", "replayed": "refused", "replay_full": "unavailable", "malformed": "bad_request"}

_GRANT_DOMAIN = b"arcnet/grant/v1\0"
_CONTROL_DOMAIN = b"arcnet/control/v1\0"
_POLICY_DOMAIN = b"arcnet/policy/v1\0"


class AuthzError(ControlError):
    """A refused control request (a :class:`ControlError`, so the daemon answers it as one).

    ``code`` is the control error code the client sees (``forbidden``,
    ``refused``, ``unavailable``, ``bad_request``); ``reason`` is one of
    REASONS and names the counter.
    """

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(_CODE_OF.get(reason, "forbidden"), message)
        self.reason = reason


class PolicyError(AuthzError):
    """A job or placement the project's policy forbids."""


# --------------------------------------------------------------------------
# messages (tags 0x0A20-0x0A2F)


class GrantBody(Message):
    format = U8  # 1
    client = PEER_ID  # the client's key, as a peer id
    project = Str(PROJECT_MAX, 1)  # or "*"
    caps = List(Enum(*CAPABILITIES), len(CAPABILITIES))
    serial = U64
    not_before_s = U64
    expires_s = U64
    issuer = KEY_ID


class Grant(Message, tag=0x0A20, protocol="authz"):
    body = GrantBody
    signature = SIG  # by the issuer over _GRANT_DOMAIN + canonical body


class SignedControl(Message, tag=0x0A21, protocol="control"):
    """A control request signed by the client key; replaces ControlRequest on a secured mesh."""

    method = Str(64, 1)
    args = Bytes(ARGS_MAX_BYTES)  # msgpack map, as in ControlRequest
    nonce = U64  # echoed in ControlResponse; replay protection
    timestamp_ms = U64  # client wall clock, Unix ms
    target = PEER_ID  # the peer this request is for
    project = Str(PROJECT_MAX)  # "" for mesh-scope methods
    grant = Optional(Grant)
    signature = SIG  # client key over _CONTROL_DOMAIN + signed_bytes()


class PolicyBody(Message):
    format = U8  # 1
    project = Str(PROJECT_MAX, 1)
    version = U64  # newer wins
    models = List(Str(NAME_MAX, 1), 256)  # allowed model ids; empty = any
    datasets = List(Str(NAME_MAX, 1), 1024)  # allowed dataset ids; empty = any
    regions = List(Str(REGION_MAX, 1), 64)  # allowed regions (data residency); empty = any
    private = BOOL  # artifacts encrypted at rest with the project key
    issuer = KEY_ID


class ProjectPolicy(Message, tag=0x0A22, protocol="authz"):
    body = PolicyBody
    signature = SIG


# --------------------------------------------------------------------------
# grants


def issue_grant(
    root: _identity.Identity,
    client: str,
    *,
    project: str,
    caps: Iterable[str],
    not_before_s: int,
    expires_s: int,
    serial: int | None = None,
) -> Grant:
    """A grant for client key ``client`` (a peer id) signed by the operator key ``root``."""
    _identity.public_key_of(client)
    cap_list = sorted(set(caps), key=lambda c: CAPABILITIES.index(c) if c in CAPABILITIES else 99)
    if serial is None:
        serial = int.from_bytes(os.urandom(8), "big")
    body = GrantBody(FORMAT, client, project, cap_list, serial, int(not_before_s), int(expires_s), key_id(root.public_key))
    body.validate()
    if body.expires_s <= body.not_before_s:
        raise ValueError("a grant must expire after it becomes valid")
    return Grant(body, root.sign(_GRANT_DOMAIN + _canonical(body)))


def decode_grant(data: bytes, codec: Codec = DEFAULT_CODEC) -> Grant:
    try:
        msg = codec.decode(data)
    except WireError as exc:
        raise AuthzError("malformed", f"not a grant: {exc}") from None
    if not isinstance(msg, Grant):
        raise AuthzError("malformed", f"not a grant: a {type(msg).__name__} message")
    return msg


def verify_grant(
    grant: Grant,
    trust: TrustStore,
    *,
    now_s: float,
    client: str | None = None,
    revocations: RevocationSet | None = None,
    skew_s: float = 60.0,
) -> GrantBody:
    """Check a grant; AuthzError naming the first failed check (same order as certificates)."""
    body = grant.body
    if body.format != FORMAT or len(set(body.caps)) != len(body.caps):
        raise AuthzError("malformed", "grant: unknown format or a capability listed twice")
    ok = trust.verify(body.issuer, _GRANT_DOMAIN + _canonical(body), grant.signature)
    if ok is None:
        raise AuthzError("grant_unknown_issuer", f"grant issued by key {body.issuer.hex()}, not a root of this mesh")
    if not ok:
        raise AuthzError("grant_bad_signature", "grant: bad issuer signature")
    if client is not None and body.client != client:
        raise AuthzError("grant_wrong_client", f"grant is for client {body.client[-8:]}, not {client[-8:]}")
    if now_s + skew_s < body.not_before_s:
        raise AuthzError("grant_not_yet_valid", f"grant is valid from {_when(body.not_before_s)}")
    if now_s >= body.expires_s:
        raise AuthzError("grant_expired", f"grant expired at {_when(body.expires_s)}; ask an operator for a new one")
    if revocations is not None and revocations.is_revoked(peer_id=body.client, serial=body.serial):
        raise AuthzError("grant_revoked", f"grant (serial {body.serial}) is revoked")
    return body


def capability_for(method: str) -> tuple[str, str]:
    """(capability, scope) of a control method: the table entry, else mesh-wide admin."""
    return METHODS.get(method, ("admin", "mesh"))


# --------------------------------------------------------------------------
# signed control requests


def signed_bytes(msg: SignedControl) -> bytes:
    """What the client signs: every field but the signature; the grant by its signature."""
    grant_sig = msg.grant.signature if msg.grant is not None else b""
    return _CONTROL_DOMAIN + msgpack.packb(
        [msg.method, msg.args, msg.nonce, msg.timestamp_ms, msg.target, msg.project, grant_sig], use_bin_type=True
    )


def sign_control(
    client: _identity.Identity,
    method: str,
    args: dict[str, Any] | bytes | None,
    *,
    target: str,
    grant: Grant | None,
    project: str = "",
    nonce: int | None = None,
    now_s: float | None = None,
) -> SignedControl:
    """Client side: a signed request for peer ``target``; encode it with the codec and send it.

    ``project`` defaults to the grant's project (unless that is ``*``).
    """
    if not isinstance(args, bytes):
        args = encode_args(args or {})
    if not project and grant is not None and grant.body.project != ANY_PROJECT:
        project = grant.body.project
    msg = SignedControl(
        method,
        args,
        secrets.randbits(64) if nonce is None else nonce,
        int((time.time() if now_s is None else now_s) * 1000),
        target,
        project,
        grant,
        b"\0" * 64,
    )
    msg.signature = client.sign(signed_bytes(msg))
    msg.validate()
    return msg


class ReplayWindow:
    """Nonces seen within the timestamp window, per client; bounded.

    An entry lives until its request's timestamp leaves the window (after
    which the timestamp check refuses the request anyway), so nothing a
    replay could use is ever forgotten. At ``entries_max`` entries in all, or
    ``client_entries_max`` for one client, new requests are refused
    (``replay_full``) until entries expire: fail closed.

    ``entries_max`` (200,000) at ~150 B an entry is ~30 MB; at a 30 s window
    it admits ~6,600 signed requests/s per peer, far above what one peer's
    control plane serves.
    """

    def __init__(self, window_s: float = 30.0, entries_max: int = 200_000, client_entries_max: int = 20_000):
        if not window_s > 0:
            raise ValueError("window_s must be positive")
        self.window_s = float(window_s)
        self.entries_max = int(entries_max)
        self.client_entries_max = int(client_entries_max)
        self._seen: dict[tuple[str, int], float] = {}
        self._heap: list[tuple[float, str, int]] = []
        self._per_client: dict[str, int] = {}

    def _expire(self, now_s: float) -> None:
        heap, seen = self._heap, self._seen
        while heap and heap[0][0] < now_s:
            _, client, nonce = heapq.heappop(heap)
            if seen.pop((client, nonce), None) is not None:
                left = self._per_client[client] - 1
                if left:
                    self._per_client[client] = left
                else:
                    del self._per_client[client]

    def check_timestamp(self, timestamp_ms: int, now_s: float) -> None:
        skew_s = timestamp_ms / 1000.0 - now_s
        if abs(skew_s) > self.window_s:
            raise AuthzError("stale", f"request timestamp is {skew_s:+.0f} s from this peer's clock "
                                      f"(window ±{self.window_s:g} s); check the client's clock")

    def check_and_record(self, client: str, nonce: int, timestamp_ms: int, now_s: float) -> None:
        """Raise AuthzError (stale, replayed, replay_full) or remember the nonce."""
        self.check_timestamp(timestamp_ms, now_s)
        self._expire(now_s)
        key = (client, nonce)
        if key in self._seen:
            raise AuthzError("replayed", f"nonce {nonce:#x} already used within the last {self.window_s:g} s")
        if len(self._seen) >= self.entries_max or self._per_client.get(client, 0) >= self.client_entries_max:
            raise AuthzError("replay_full", "too many recent requests to remember; retry in a few seconds")
        expires_s = timestamp_ms / 1000.0 + self.window_s
        self._seen[key] = expires_s
        self._per_client[client] = self._per_client.get(client, 0) + 1
        heapq.heappush(self._heap, (expires_s, client, nonce))

    def statistics(self) -> dict[str, int]:
        return {"entries": len(self._seen), "clients": len(self._per_client)}


def verify_control(
    msg: SignedControl,
    *,
    client: str,
    target: str,
    trust: TrustStore,
    replay: ReplayWindow,
    now_s: float,
    revocations: RevocationSet | None = None,
) -> tuple[str, GrantBody]:
    """Verify a signed control request before dispatching it: ``(client, grant body)`` or AuthzError.

    ``client`` is the connection's Noise-authenticated peer id and
    ``target`` this peer's id. Pure but for ``replay``, which records the
    nonce once everything else has passed (so forged requests cannot fill it).
    """
    if msg.target != target:
        raise AuthzError("wrong_target", f"request was signed for peer {msg.target[-8:]}, this is {target[-8:]}")
    replay.check_timestamp(msg.timestamp_ms, now_s)
    if not _identity.verify_peer(client, signed_bytes(msg), msg.signature):
        raise AuthzError("bad_signature", "request not signed by the connection's client key")
    if msg.grant is None:
        raise AuthzError("no_grant", "request carries no grant; ask an operator (`arcnet ca grant CLIENT_ID --project P`)")
    grant = verify_grant(msg.grant, trust, now_s=now_s, client=client, revocations=revocations)
    cap, scope = capability_for(msg.method)
    if cap not in grant.caps:
        raise AuthzError("forbidden_capability", f"{msg.method} needs the {cap!r} capability; the grant has {','.join(grant.caps) or 'none'}")
    if scope == "project":
        if not msg.project:
            raise AuthzError("forbidden_project", f"{msg.method} needs a project")
        if grant.project not in (msg.project, ANY_PROJECT):
            raise AuthzError("forbidden_project", f"grant is for project {grant.project!r}, not {msg.project!r}")
        try:
            args = decode_args(msg.args)
        except WireError as exc:
            raise AuthzError("malformed", str(exc)) from None
        named = args.get("project")
        if named is not None and named != msg.project:
            raise AuthzError("forbidden_project", f"args name project {str(named)[:64]!r}, the request is for {msg.project!r}")
    elif cap == "admin" and grant.project != ANY_PROJECT:
        raise AuthzError("forbidden_project", f"{msg.method} is mesh-wide: it needs an admin grant for project '*'")
    replay.check_and_record(client, msg.nonce, msg.timestamp_ms, now_s)
    return client, grant


# --------------------------------------------------------------------------
# project policies


def sign_policy(
    root: _identity.Identity,
    project: str,
    *,
    version: int,
    models: Iterable[str] = (),
    datasets: Iterable[str] = (),
    regions: Iterable[str] = (),
    private: bool = False,
) -> ProjectPolicy:
    body = PolicyBody(FORMAT, project, int(version), sorted(set(models)), sorted(set(datasets)),
                      sorted(set(regions)), bool(private), key_id(root.public_key))
    body.validate()
    return ProjectPolicy(body, root.sign(_POLICY_DOMAIN + _canonical(body)))


def decode_policy(data: bytes, codec: Codec = DEFAULT_CODEC) -> ProjectPolicy:
    try:
        msg = codec.decode(data)
    except WireError as exc:
        raise AuthzError("malformed", f"not a project policy: {exc}") from None
    if not isinstance(msg, ProjectPolicy):
        raise AuthzError("malformed", f"not a project policy: a {type(msg).__name__} message")
    return msg


def verify_policy(pp: ProjectPolicy, trust: TrustStore) -> PolicyBody:
    body = pp.body
    if body.format != FORMAT:
        raise AuthzError("malformed", f"policy format {body.format} (this peer reads {FORMAT})")
    ok = trust.verify(body.issuer, _POLICY_DOMAIN + _canonical(body), pp.signature)
    if ok is None:
        raise AuthzError("grant_unknown_issuer", f"policy of {body.project!r} issued by key {body.issuer.hex()}, not a root")
    if not ok:
        raise AuthzError("grant_bad_signature", f"policy of {body.project!r}: bad issuer signature")
    return body


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Field of a JobSpec-like object or of its plain-dict form."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _cids(refs: Any) -> list[str]:
    return [str(_get(r, "cid", r)) for r in (refs or [])]


@dataclass(frozen=True)
class Policy:
    """A project's rules. Empty ``models``/``datasets``/``regions`` mean "no restriction"."""

    project: str
    models: frozenset[str] = frozenset()
    datasets: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    private: bool = False
    version: int = 0

    @classmethod
    def from_body(cls, body: PolicyBody) -> "Policy":
        return cls(body.project, frozenset(body.models), frozenset(body.datasets), frozenset(body.regions),
                   body.private, body.version)

    def check_region(self, region: str) -> None:
        """Placement: may this project's data and work be in ``region``? PolicyError if not."""
        if self.regions and region not in self.regions:
            raise PolicyError("region_not_allowed", f"project {self.project!r} may not use region {region!r} "
                                                    f"(allowed: {', '.join(sorted(self.regions))})")

    def allows_region(self, region: str) -> bool:
        return not self.regions or region in self.regions

    def check_submit(self, job: Any) -> list[str]:
        """Submission: check a JobSpec (object or plain dict); return the effective region allow-list.

        The model is the first artifact of the job and of each workflow step;
        the other artifacts are datasets. Inputs are the submitter's own data
        and are not matched against ``datasets``. The job's region
        constraints must all be allowed; the returned list (the job's
        regions, or the policy's when the job names none; empty = anywhere)
        is what placement must honour.
        """
        project = _get(job, "project", "")
        if project != self.project:
            raise PolicyError("forbidden_project", f"job is for project {str(project)[:64]!r}, policy is {self.project!r}")
        groups = [_cids(_get(job, "artifacts"))] + [_cids(_get(s, "artifacts")) for s in (_get(job, "steps") or [])]
        for cids in groups:
            if not cids:
                continue
            if self.models and cids[0] not in self.models:
                raise PolicyError("model_not_allowed", f"model {cids[0][:64]!r} is not allowed in project {self.project!r}")
            for cid in cids[1:]:
                if self.datasets and cid not in self.datasets:
                    raise PolicyError("dataset_not_allowed", f"dataset {cid[:64]!r} is not allowed in project {self.project!r}")
        constraints = _get(job, "constraints")
        wanted = [str(r) for r in (_get(constraints, "regions") or [])] if constraints is not None else []
        for r in wanted:
            self.check_region(r)
        if wanted:
            return sorted(set(wanted))
        return sorted(self.regions)


class PolicyStore:
    """Signed project policies, newest version per project (a CRDT like revocation lists)."""

    def __init__(self, trust: TrustStore, projects_max: int = 10_000):
        self.trust = trust
        self.projects_max = projects_max
        self._signed: dict[str, ProjectPolicy] = {}
        self._policies: dict[str, Policy] = {}

    def merge(self, pp: ProjectPolicy) -> bool:
        body = verify_policy(pp, self.trust)
        held = self._signed.get(body.project)
        if held is not None and (held.body.version, held.signature) >= (body.version, pp.signature):
            return False
        if held is None and len(self._signed) >= self.projects_max:
            raise AuthzError("malformed", f"more than {self.projects_max} project policies")
        self._signed[body.project] = pp
        self._policies[body.project] = Policy.from_body(body)
        return True

    def get(self, project: str) -> Policy:
        """The project's policy; an unrestricted one if it has none."""
        return self._policies.get(project) or Policy(project)

    def signed(self, project: str) -> ProjectPolicy | None:
        return self._signed.get(project)

    def projects(self) -> list[str]:
        return sorted(self._signed)

    @classmethod
    def load_dir(cls, path: str | os.PathLike[str], trust: TrustStore) -> "PolicyStore":
        """Every ``*.policy`` in ``path`` (a missing folder: none)."""
        store = cls(trust)
        folder = Path(path)
        if folder.is_dir():
            for f in sorted(folder.glob("*.policy")):
                try:
                    store.merge(decode_policy(f.read_bytes()))
                except AuthzError as exc:
                    raise AuthzError(exc.reason, f"{f}: {exc}") from None
        return store

    def save(self, folder: str | os.PathLike[str], project: str) -> None:
        pp = self._signed[project]
        _atomic_write(Path(folder) / f"{_file_safe(project)}.policy", DEFAULT_CODEC.encode(pp))


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


# --------------------------------------------------------------------------
# the daemon's object


class Authorizer:
    """Trust roots, revocations, the replay window and policies, with counters, for the daemon.

    Share ``revocations`` with the AdmissionGate (one revocation list revokes
    both certificates and grants). ``open`` (no trust roots) accepts plain
    ControlRequests from anyone: development mode.
    """

    def __init__(
        self,
        trust: TrustStore,
        revocations: RevocationSet | None = None,
        policies: PolicyStore | None = None,
        *,
        replay: ReplayWindow | None = None,
        wall_clock: Any = time.time,
        log_interval_s: float = 10.0,
    ):
        self.trust = trust
        self.revocations = revocations if revocations is not None else RevocationSet()
        self.policies = policies if policies is not None else PolicyStore(trust)
        self.replay = replay if replay is not None else ReplayWindow()
        self.wall_clock = wall_clock
        self._stats: dict[str, int] = {"accepted": 0, "accepted_unsigned_open": 0,
                                       **{f"refused_{r}": 0 for r in REASONS}}
        self._badlog = RateLimitedLog(log, interval_s=log_interval_s)

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike[str], revocations: RevocationSet | None = None,
                      **kw: Any) -> "Authorizer":
        """Trust roots from ``trust/*.pub``, policies from ``projects/*.policy``."""
        dd = Path(data_dir)
        try:
            trust = TrustStore.load_dir(dd / "trust")
        except ValueError as exc:
            raise AuthzError("malformed", f"trust roots: {exc}") from None
        if revocations is None:
            try:
                revocations = RevocationSet.load(dd / "revocations.bin", trust) if trust else RevocationSet()
            except AdmissionError as exc:
                raise AuthzError("malformed", f"{dd / 'revocations.bin'}: {exc}") from None
        return cls(trust, revocations, PolicyStore.load_dir(dd / "projects", trust), **kw)

    @property
    def open(self) -> bool:
        return not self.trust

    def authorize(self, msg: Message, *, client: str, target: str) -> tuple[str, bytes, int, str, GrantBody | None]:
        """The daemon's one call per control request: ``(method, args, nonce, project, grant)``.

        ``msg`` is the decoded request (SignedControl, or ControlRequest on an
        open mesh). Raises AuthzError (a ControlError) when refused; counts
        and logs (rate-limited) every refusal.
        """
        if isinstance(msg, SignedControl):
            if self.open:
                # Development mode: no roots to check grants against; the signature still must hold.
                if not _identity.verify_peer(client, signed_bytes(msg), msg.signature):
                    self._refused(client, AuthzError("bad_signature", "request not signed by the connection's client key"))
                self._stats["accepted_unsigned_open"] += 1
                return msg.method, msg.args, msg.nonce, msg.project, None
            _, grant = self.verify(msg, client=client, target=target)
            return msg.method, msg.args, msg.nonce, msg.project, grant
        if isinstance(msg, ControlRequest):
            if self.open:
                self._stats["accepted_unsigned_open"] += 1
                return msg.method, msg.args, msg.nonce, "", None
            self._refused(client, AuthzError("unsigned", "this mesh requires signed control requests: "
                                                         "get a grant (`arcnet ca grant`) and a current client"))
        raise AuthzError("malformed", f"expected a control request, got {type(msg).__name__}")

    def verify(self, msg: SignedControl, *, client: str, target: str) -> tuple[str, GrantBody]:
        try:
            out = verify_control(msg, client=client, target=target, trust=self.trust, replay=self.replay,
                                 now_s=self.wall_clock(), revocations=self.revocations)
        except AuthzError as exc:
            self._refused(client, exc)
        self._stats["accepted"] += 1
        return out

    def _refused(self, client: str, exc: AuthzError) -> None:
        self._stats[f"refused_{exc.reason}"] += 1
        self._badlog.warning(f"authz-{exc.reason}", "control request from %s refused (%s): %s", client, exc.reason, exc)
        raise exc

    def policy(self, project: str) -> Policy:
        return self.policies.get(project)

    def check_submit(self, project: str, job: Any) -> list[str]:
        """``policy(project).check_submit(job)`` with the refusal counted and logged."""
        try:
            return self.policy(project).check_submit(job)
        except AuthzError as exc:
            self._refused(str(_get(job, "submitter", "?")), exc)
            raise  # unreachable: _refused raises

    def check_region(self, project: str, region: str) -> None:
        try:
            self.policy(project).check_region(region)
        except AuthzError as exc:
            self._refused(project, exc)

    def statistics(self) -> dict[str, int]:
        out = dict(self._stats)
        out.update({f"replay_{k}": v for k, v in self.replay.statistics().items()})
        out["projects"] = len(self.policies.projects())
        out["open_mode"] = int(self.open)
        return out
