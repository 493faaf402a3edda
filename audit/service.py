"""The audit log inside a running peer: what it records, its checkpoints, its witnesses.

:class:`AuditService` is the daemon-side service (see
:class:`~arcnet.mesh.peer.Service`) that keeps this peer's
:class:`~arcnet.audit.log.AuditLog` in ``DATA_DIR/audit``, signed with the
peer's own key. It does four things.

**Records.** It hears every event the cores emit (``daemon.on_event("*")``)
and appends the ones an auditor needs, as the kinds of :mod:`.kinds`. The
whole mapping is the table :data:`EVENT_MAP` below (event name -> entry kind,
and how the fields are filled):

====================== ================== =====================================
event (emitted by)     entry kind         notes
====================== ================== =====================================
member.alive/suspect/  member.changed     ``status`` is the event's last word;
dead/left (gossip)                        region, addr and accuser kept
leader.changed         leader.changed     ``leader`` None when the region has none
job.submitted (entry)  job.submitted      spec and submitter read from the
                                          placement core's record, else filled
                                          (see below)
job.accepted           policy.decision    policy "custody", decision "accepted"
job.rejected/duplicate policy.decision    policy "intake"
job.bid_won (entry)    job.placed         ``bid``: the winning bid's figures
custody.placed         job.placed         a custodian's own auction
job.placed (entry)     job.placed         only when this peer ran no auction for
                                          that (task, epoch): ``bid`` then holds
                                          only the bidder (the auction is in the
                                          placing peer's log)
task.replaced          job.replaced       ``reason`` "executor lost" (the event
                                          carries none); bid figures kept
job.started (entry)    job.started        ``attempt``: the epoch's attempt number
task.run (executor)    job.started        role "executor", with the entry peer and
                                          custodians (from the placement core);
                                          remembers task -> job
task.finished          job.finished or    ``manifest``: the runtime's run manifest
                       job.failed         when the event carries one, else the
                                          output ref; recognised manifest keys
                                          that do not type-check are moved under
                                          ``unchecked``
job.task_failed,       job.failed         ``error`` = the event's reason
job.failed
job.done               policy.decision    policy "intake", decision "done"
custody.done           policy.decision    policy "custody", decision "done"
custody.repaired       policy.decision    policy "custody", decision "repaired"
job.waiting            policy.decision    policy "placement", decision "waiting"
task.accepted/refused  policy.decision    policy "executor"
swarm.done             artifact.fetched   ``sources`` when the event has them
artifact.*,            the same kind      passed through (services and the
admission.*,                              admission hook use the audit vocabulary)
policy.decision
====================== ================== =====================================

Everything else (progress, probes, the job-status answers) is not recorded.
An event that lacks a field its kind requires gets what this peer knows
(e.g. ``job.submitted`` without a spec gets ``{"job_id", "custodians"}`` and
this peer as submitter when the spec's submitter is not a peer id, keeping
the given one as ``submitter_name``); an event that still does not fit is
counted (``entries_refused``) and logged, never raised. Events that
services hand to the cores with ``daemon.inject`` (the runtime's
``task.finished``) are heard too. Services that do not emit at all (the
blob server, admission) call :meth:`AuditService.record` with an audit kind
directly, or :meth:`AuditService.observe` with an event; :func:`audit_of`
finds the service on a daemon.

**Checkpoints.** A trio task calls :meth:`AuditLog.maybe_checkpoint` every
tick: a signed checkpoint at most every ``checkpoint_interval_s`` (or every
``checkpoint_every_entries``), only when the log grew; ``audit.checkpoint``
signs one on demand.

**Witnessing** (c2sp.org/tlog-witness over libp2p, request protocol
``witness``). After each new checkpoint, and again every
``witness_interval_s`` until they answer, the peer offers its latest
checkpoint, with a consistency proof from the size that witness last
cosigned, to ``witnesses`` alive peers chosen by rendezvous hash of (log,
peer) over the gossip membership (so each log keeps the same witnesses while
they live). A witness runs :meth:`Witness.add_checkpoint`, persists its state
(``DATA_DIR/audit/witness.bin``, written and fsync'ed before the answer
leaves), appends ``checkpoint.witnessed`` to its own log and answers with its
cosignature line; the log stores it with :meth:`AuditLog.add_cosignature`.
A peer can ask only for its own log to be witnessed (the origin must be the
requester's, whose peer id the Noise handshake proved). Equivocation
evidence becomes a ``policy.decision`` entry (policy "witness", decision
"equivocation", both notes) and a counter. Since witnessing appends to the
witness's log, a quiet mesh still grows each log by about ``witnesses``
entries per interval: the price of every log vouching for the others.

**Export.** ``audit.export`` (control) builds a bundle of this peer's log at
a freshly signed and witnessed checkpoint; with ``job`` it stitches the job's
entries from its other peers: the intake peer, custodians and executors named
in this log's entries of the job and in the placement core's record, plus any
``peers`` given. Each is asked over request protocol ``audit`` for a job
bundle of its own log; each part is checked against the key of the peer that
sent it, and :func:`.bundle.stitch_bundles` joins them. A bundle of at most
``export_inline_max_bytes`` comes back in the reply; a larger one is written
to ``path`` on the peer's machine.

Knowingly left out: witnesses comparing notes with each other (a split view
shown to disjoint witness sets is caught only when an auditor holds both);
authorisation of the ``audit`` request beyond mesh membership.

Configuration: the ``[audit]`` table of ``config.toml`` sets the knobs of
:class:`AuditConfig`; ``ARCNET_AUDIT_*`` environment variables override it
(tests, benchmarks; see :meth:`AuditConfig.from_env`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import msgpack
import trio

from ..mesh import identity as _identity
from ..mesh.control import ControlError
from ..mesh.core import Emit
from ..mesh.logs import RateLimitedLog
from ..mesh.peer import DaemonError, PeerDaemon, Service
from . import kinds as K
from .bundle import ExportError, export_bundle, stitch_bundles, verify_bundle
from .entry import EntryError, decode_entry
from .log import AuditLog, AuditLogError, default_origin
from .note import COSIGNATURE_V1, ED25519, Checkpoint, NoteError, Verifier
from .witness import Conflict, Cosigned, Equivocation, Rejected, Witness, WitnessError, witness_name, witness_signer

__all__ = ["AUDIT_PROTOCOL", "AuditConfig", "AuditService", "EVENT_MAP", "WITNESS_PROTOCOL", "audit_of"]

log = logging.getLogger("arcnet.audit")

WITNESS_PROTOCOL = "witness"  # request: offer a checkpoint for cosigning
AUDIT_PROTOCOL = "audit"  # request: a job bundle of the answering peer's own log
WITNESS_FILE = "witness.bin"
WITNESS_FORMAT = "arcnet-audit-witness/1"
WITNESS_REQUEST_MAX_BYTES = 32 << 10  # a note (16 KiB at most) and a proof (128 hashes: 4 KiB)
AUDIT_REQUEST_MAX_BYTES = 256 << 10  # a job id and up to SINCE_MAX checkpoint notes
PART_MAX_BYTES = 4 << 20  # one peer's part of a job bundle (the transport's frame limit)
SINCE_MAX = 16  # previous checkpoints one export request may name
JOB_ID_MAX = 256
TASK_JOBS_MAX = 65_536  # task -> job map for runtime events that name only the task
PLACED_SEEN_MAX = 65_536  # (job, task, epoch) this peer placed by its own auction


@dataclass(frozen=True)
class AuditConfig:
    """The audit service's knobs. Units in the names; defaults suit 10-10,000 peers.

    * ``checkpoint_interval_s`` (60 s): at most this long between a log's
      growth and its next signed checkpoint. Each checkpoint is a few hundred
      bytes and one fsync, whatever the mesh size.
    * ``checkpoint_every_entries`` (10,000): sign sooner when this many
      entries arrive.
    * ``witness_interval_s`` (60 s): how often a checkpoint that is not yet
      cosigned by every chosen witness is offered again.
    * ``witnesses`` (2): peers asked to cosign each checkpoint. Each peer
      also witnesses about as many logs as this (rendezvous hashing spreads
      the load), so the cost per peer does not grow with the mesh.
    * ``request_timeout_s`` (10 s): one witness or export request to a peer.
    * ``export_inline_max_bytes`` (900 KiB): largest bundle returned in a
      control reply (the control protocol carries up to 1 MiB); larger ones
      are written to a path on the peer's machine.
    * ``stitch_peers_max`` (16): other peers asked for their part of one job.
    * ``witnessed_logs_max`` (4,096): logs this peer keeps witness state for.
    * ``tick_s`` (1 s): how often the checkpoint timer looks.
    """

    checkpoint_interval_s: float = 60.0
    checkpoint_every_entries: int = 10_000
    witness_interval_s: float = 60.0
    witnesses: int = 2
    request_timeout_s: float = 10.0
    export_inline_max_bytes: int = 900 << 10
    stitch_peers_max: int = 16
    witnessed_logs_max: int = 4096
    tick_s: float = 1.0

    ENV_PREFIX = "ARCNET_AUDIT_"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 base: Mapping[str, Any] | None = None) -> "AuditConfig":
        """``base`` (the ``[audit]`` table of ``config.toml``, already validated by
        :func:`arcnet.mesh.config.load_config`) over the defaults, each overridden by
        ``ARCNET_AUDIT_<FIELD>`` when set (e.g. ``ARCNET_AUDIT_CHECKPOINT_INTERVAL_S=1``;
        for tests and benchmarks). ``witness_interval_s``, unless given, follows
        ``checkpoint_interval_s``. A bad variable is a DaemonError."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = dict(base or {})
        for f in dataclasses.fields(cls):
            raw = env.get(cls.ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            try:
                v = float(raw) if f.type in ("float", float) else int(raw)
            except ValueError:
                raise DaemonError(f"{cls.ENV_PREFIX}{f.name.upper()}={raw!r}: expected a number") from None
            if v < 0 or (v != v):
                raise DaemonError(f"{cls.ENV_PREFIX}{f.name.upper()}={raw!r}: must not be negative")
            values[f.name] = v
        if "witness_interval_s" not in values and "checkpoint_interval_s" in values:
            values["witness_interval_s"] = values["checkpoint_interval_s"]
        return cls(**values)


def audit_of(daemon: PeerDaemon) -> "AuditService | None":
    """The audit service of a running daemon, if it has one."""
    for svc in daemon.services:
        if isinstance(svc, AuditService):
            return svc
    return None


# ---------------------------------------------------------------------------
# events -> entries


def _peer_or(value: Any, fallback: str) -> str:
    return value if K.is_peer(value) else fallback


def _int(value: Any, default: int = 0) -> int:
    return value if type(value) is int else default


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _ref(value: Any) -> str | None:
    """An artifact reference from a ref or a bare BLAKE3 hex digest."""
    if K.is_ref(value):
        return value
    if isinstance(value, str) and K.is_ref(f"blake3:{value}"):
        return f"blake3:{value}"
    return None


def _job_of_task(task: str) -> str:
    # task ids are "<job id>/<name>" (placement.classes)
    return task.rsplit("/", 1)[0] if "/" in task else task


def _attempt(epoch: int) -> int:
    """The attempt number of a placement epoch (``placement.custody.epoch_of``:
    the attempt above the placing peer's tag bits)."""
    from ..placement import custody

    return epoch >> custody._TAG_BITS


def _bid(d: Mapping[str, Any], executor: str) -> dict[str, Any]:
    bid: dict[str, Any] = {"bidder": executor}
    for k in ("cost_s", "completion_s", "surplus_fraction", "fetch_bytes", "bids", "asked", "near_best", "rounds"):
        if k in d:
            bid[k] = d[k]
    return bid


def _fit_manifest(man: Mapping[str, Any]) -> dict[str, Any]:
    """The run manifest with recognised keys that do not type-check moved to
    ``unchecked`` (e.g. an empty submitter, which is not a peer id)."""
    out = dict(man)
    bad: dict[str, Any] = {}
    for name in K.MANIFEST_FIELDS:
        if name in out and K.check_data(K.JOB_FINISHED, {"job": "x", "manifest": {name: out[name]}}):
            bad[name] = out.pop(name)
    if bad:
        out["unchecked"] = bad
    return out


def _policy(policy: str, decision: str, subject: str, **more: Any) -> dict[str, Any]:
    return {"policy": policy, "decision": decision, "subject": subject or "?", **more}


# each mapper: (service, event data) -> (kind, data) or None (not recorded)
Mapper = Callable[["AuditService", Mapping[str, Any]], "tuple[str, dict[str, Any]] | None"]


def _member(status: str) -> Mapper:
    def m(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
        peer = d.get("peer")
        if not K.is_peer(peer):
            return None
        data = {"member": peer, "status": status, "incarnation": _int(d.get("incarnation")),
                "region": _text(d.get("region")), "addr": _text(d.get("addr"))}
        if d.get("by"):
            data["by"] = _text(d.get("by"))
        return K.MEMBER_CHANGED, data

    return m


def _leader(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    leader = d.get("leader") or None
    return K.LEADER_CHANGED, {"region": _text(d.get("region"), "?"), "leader": leader if K.is_peer(leader) else None,
                              "epoch": _int(d.get("epoch")), "previous": _text(d.get("previous")) or None}


def _submitted(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    job = _text(d.get("job"), "?")
    custodians = [c for c in d.get("custodians") or [] if K.is_peer(c)]
    spec = svc._job_spec(job)
    if spec is None:
        spec = {"job_id": job}
    data = {"job": job, "custodians": custodians, "spec": spec}
    who = d.get("submitter") or spec.get("submitter")
    data["submitter"] = _peer_or(who, svc.peer_id)
    if who and not K.is_peer(who):
        data["submitter_name"] = _text(who)
    return K.JOB_SUBMITTED, data


def _placed_by_auction(role: str) -> Mapper:
    def m(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
        job, executor = _text(d.get("job"), "?"), d.get("executor")
        if not K.is_peer(executor):
            return None
        svc._placed_seen(job, _text(d.get("task")), _int(d.get("epoch")))
        return K.JOB_PLACED, {"job": job, "executor": executor, "bid": _bid(d, executor), "task": _text(d.get("task")),
                              "epoch": _int(d.get("epoch")), "role": role}

    return m


def _placed_observed(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    job, task, epoch, executor = _text(d.get("job"), "?"), _text(d.get("task")), _int(d.get("epoch")), d.get("executor")
    if not K.is_peer(executor) or svc._was_placed_here(job, task, epoch):
        return None  # this peer's own auction was recorded with its bid already
    return K.JOB_PLACED, {"job": job, "executor": executor, "bid": {"bidder": executor}, "task": task, "epoch": epoch,
                          "role": "observed"}


def _replaced(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    job, executor, previous = _text(d.get("job"), "?"), d.get("executor"), d.get("previous")
    if not K.is_peer(executor) or not K.is_peer(previous):
        return None
    svc._placed_seen(job, _text(d.get("task")), _int(d.get("epoch")))
    return K.JOB_REPLACED, {"job": job, "previous": previous, "executor": executor,
                            "reason": _text(d.get("reason"), "executor lost"), "task": _text(d.get("task")),
                            "epoch": _int(d.get("epoch")), "bid": _bid(d, executor)}


def _started(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    epoch = _int(d.get("epoch"))
    data = {"job": _text(d.get("job"), "?"), "attempt": _attempt(epoch), "task": _text(d.get("task")), "epoch": epoch,
            "role": "entry"}
    if K.is_peer(d.get("executor")):
        data["executor"] = d["executor"]
    return K.JOB_STARTED, data


def _task_run(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    task = _text(d.get("task"))
    job = _text(d.get("job")) or _job_of_task(task)
    svc._remember_task(task, job)
    epoch = _int(d.get("epoch"))
    data: dict[str, Any] = {"job": job, "attempt": _attempt(epoch), "task": task, "epoch": epoch, "role": "executor"}
    for k in ("cls", "slots", "run_s"):
        if k in d:
            data[k] = d[k]
    arts = [_ref(a[0]) if isinstance(a, (list, tuple)) and a else _ref(a) for a in d.get("artifacts") or []]
    data["artifacts"] = [a for a in arts if a]
    # who to report to: what lets an export from the executor find the job's other peers
    entry, custodians = d.get("entry"), d.get("custodians")
    if entry is None or custodians is None:
        entry, custodians = svc._work_peers(task, epoch)
    if K.is_peer(entry):
        data["entry"] = entry
    data["custodians"] = [c for c in custodians or [] if K.is_peer(c)]
    return K.JOB_STARTED, data


def _task_finished(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    task = _text(d.get("task"))
    job = _text(d.get("job")) or svc._job_of(task)
    epoch = _int(d.get("epoch"))
    if not d.get("ok", True):
        return K.JOB_FAILED, {"job": job, "error": _text(d.get("reason")) or _text(d.get("error")) or "failed",
                              "task": task, "epoch": epoch}
    man = d.get("manifest")
    if isinstance(man, Mapping):
        manifest = _fit_manifest(man)
    else:
        out = _ref(d.get("output"))
        manifest = {"outputs": [out]} if out else {"output": _text(d.get("output"))}
    return K.JOB_FINISHED, {"job": job, "manifest": manifest, "task": task, "epoch": epoch}


def _failed(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    data = {"job": _text(d.get("job"), "?"), "error": _text(d.get("reason")) or _text(d.get("error")) or "failed"}
    for k in ("task", "epoch", "executor"):
        if d.get(k):
            data[k] = d[k]
    return K.JOB_FAILED, data


def _custody(decision: str, policy: str = "custody", subject_key: str = "job") -> Mapper:
    def m(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        subject = _text(d.get(subject_key))
        more = {k: v for k, v in d.items() if k not in ("policy", "decision", "subject")}
        if "job" not in more and subject_key == "task" and subject:
            more["job"] = svc._job_of(subject)
        return K.POLICY_DECISION, _policy(policy, decision, subject, **more)

    return m


def _swarm_done(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    ref = _ref(d.get("artifact"))
    if ref is None:
        return None
    data: dict[str, Any] = {"artifact": ref, "size_bytes": _int(d.get("bytes")),
                            "sources": [s for s in d.get("sources") or [] if isinstance(s, str)]}
    if d.get("job"):
        data["job"] = _text(d.get("job"))
    return K.ARTIFACT_FETCHED, data


def _passthrough(kind: str) -> Mapper:
    def m(svc: "AuditService", d: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        data = dict(d)
        if "artifact" in data and _ref(data["artifact"]):
            data["artifact"] = _ref(data["artifact"])
        return kind, data

    return m


EVENT_MAP: dict[str, Mapper] = {
    "member.alive": _member("alive"),
    "member.suspect": _member("suspect"),
    "member.dead": _member("dead"),
    "member.left": _member("left"),
    "leader.changed": _leader,
    "job.submitted": _submitted,
    "job.accepted": _custody("accepted"),
    "job.rejected": _custody("rejected", "intake"),
    "job.duplicate": _custody("duplicate", "intake"),
    "job.bid_won": _placed_by_auction("entry"),
    "custody.placed": _placed_by_auction("custodian"),
    "job.placed": _placed_observed,
    "task.replaced": _replaced,
    "job.started": _started,
    "task.run": _task_run,
    "task.finished": _task_finished,
    "job.task_failed": _failed,
    "job.failed": _failed,
    "job.done": _custody("done", "intake"),
    "custody.done": _custody("done"),
    "custody.repaired": _custody("repaired"),
    "job.waiting": _custody("waiting", "placement"),
    "task.accepted": _custody("accepted", "executor", "task"),
    "task.refused": _custody("refused", "executor", "task"),
    "swarm.done": _swarm_done,
}
for _kind in (K.ARTIFACT_PUBLISHED, K.ARTIFACT_FETCHED, K.ARTIFACT_SERVED, K.ARTIFACT_EVICTED, K.POLICY_DECISION,
              K.ADMISSION_GRANTED, K.ADMISSION_REFUSED, K.ADMISSION_REVOKED):
    EVENT_MAP[_kind] = _passthrough(_kind)


# ---------------------------------------------------------------------------
# helpers


def _log_key(peer_id: str) -> Verifier:
    return Verifier(default_origin(peer_id), _identity.public_key_of(peer_id), ED25519)


def _witness_key(peer_id: str) -> Verifier:
    return Verifier(witness_name(peer_id), _identity.public_key_of(peer_id), COSIGNATURE_V1)


def _peer_of_origin(origin: str) -> str | None:
    prefix = default_origin("")
    if not origin.startswith(prefix):
        return None
    peer = origin[len(prefix):]
    return peer if K.is_peer(peer) else None


def _rendezvous(origin: str, peer: str) -> bytes:
    return hashlib.blake2b(f"{origin}\n{peer}".encode(), digest_size=16).digest()


def _log_only(cp: Checkpoint, key: Verifier) -> str:
    """The checkpoint with only the log's own signature (what a witness is offered)."""
    sig = cp.signature_by(key)
    assert sig is not None, "a stored checkpoint is signed by its log"
    return Checkpoint(cp.origin, cp.size, cp.root, cp.text, (sig,)).note


def _unpack_map(payload: bytes, limit: int, what: str) -> dict[str, Any]:
    if len(payload) > limit:
        raise ValueError(f"{what}: {len(payload)} bytes exceeds {limit}")
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as exc:  # any msgpack failure means a malformed request
        raise ValueError(f"{what}: malformed ({type(exc).__name__})") from None
    if type(obj) is not dict:
        raise ValueError(f"{what}: expected a map")
    return obj


def _since_notes(value: Any) -> list[str]:
    """``since`` as a control or request argument: checkpoint notes (a list of
    text, or one text); a previous bundle's bytes are read for theirs."""
    if value is None:
        return []
    if isinstance(value, bytes):
        from .bundle import bundle_checkpoints

        try:
            return bundle_checkpoints(value)[:SINCE_MAX]
        except ExportError as exc:
            raise ControlError("bad_request", f"since: {exc}") from None
    if isinstance(value, str):
        value = [value]
    if type(value) is not list or len(value) > SINCE_MAX or not all(isinstance(v, str) for v in value):
        raise ControlError("bad_request", f"since: expected up to {SINCE_MAX} checkpoint notes")
    return value


# ---------------------------------------------------------------------------
# the service


class AuditService(Service):
    """This peer's audit log, checkpoints, witness and exports (see the module docstring)."""

    name = "audit"

    def __init__(self, node: Any, ctx: Any, config: AuditConfig | None = None, *, gossip: Any = None):
        self.node = node
        self.ctx = ctx
        self.config = config or AuditConfig()  # the daemon passes config.toml [audit] + environment
        self.identity = ctx.identity
        self.peer_id: str = ctx.identity.peer_id
        self.dir = Path(ctx.config.data_dir) / "audit"
        self.gossip = gossip
        self.log: AuditLog | None = None
        self.daemon: PeerDaemon | None = None
        self.witness = Witness(witness_signer(self.identity))
        self._wlock: trio.Lock | None = None  # orders witness-state writes
        self._cplock: trio.Lock | None = None  # one checkpoint + witness round at a time
        self._witness_sizes: dict[str, int] = {}  # witness peer -> size it last cosigned of this log
        self._task_jobs: dict[str, str] = {}
        self._placed: dict[tuple[str, str, int], None] = {}
        self._badlog = RateLimitedLog(log)
        self._next_witness_at = 0.0
        self.counts = {
            "events_recorded": 0,
            "entries_refused": 0,
            "equivocations": 0,
            "witness_requests_out": 0,
            "witness_cosigned": 0,
            "witness_failures": 0,
            "witness_accusations": 0,
            "witness_requests_in": 0,
            "witnessed_for_others": 0,
            "witness_refused": 0,
            "export_requests_in": 0,
            "exports": 0,
            "stitch_failures": 0,
        }

    # -- Service ----------------------------------------------------------

    def attach(self, daemon: PeerDaemon) -> None:
        from ..mesh.transport import request_protocol

        self.daemon = daemon
        if self.gossip is None:
            try:
                from ..gossip.stack import gossip_of

                self.gossip = gossip_of(self.node)
            except AttributeError:
                self.gossip = None
        c = self.config
        try:
            self.log = AuditLog.open(
                self.dir, self.identity,
                checkpoint_interval_s=c.checkpoint_interval_s,
                checkpoint_every_entries=max(1, int(c.checkpoint_every_entries)),
            )
        except AuditLogError as exc:
            raise DaemonError(f"audit log: {exc}") from None
        self._restore_witness()
        self._wlock = trio.Lock()
        self._cplock = trio.Lock()
        daemon.on_event("*", self.observe)
        daemon.register_control("audit.checkpoint", self._ctl_checkpoint)
        daemon.register_control("audit.export", self._ctl_export)
        daemon.register_control("audit.keys", self._ctl_keys)
        daemon.transport.set_request_handler(request_protocol(WITNESS_PROTOCOL), self._on_witness_request)
        daemon.transport.set_request_handler(request_protocol(AUDIT_PROTOCOL), self._on_audit_request)
        log.info("audit log %s: %d entries, checkpoint at %d", self.dir, self.log.size,
                 self.log.latest_checkpoint().size if self.log.latest_checkpoint() else 0)

    async def run(self, daemon: PeerDaemon) -> None:
        c = self.config
        tick = max(0.05, min(c.tick_s, c.checkpoint_interval_s / 2 or c.tick_s, c.witness_interval_s / 2 or c.tick_s))
        while True:
            await trio.sleep(tick)
            try:
                await self._tick(daemon.now())
            except (AuditLogError, OSError) as exc:
                self._badlog.warning("tick", "audit checkpoint failed: %s", exc)
            except Exception:  # a bug here must not take the peer down; the next tick tries again
                log.exception("audit: checkpoint or witness round failed")

    async def _tick(self, now: float) -> None:
        assert self.log is not None and self._cplock is not None
        async with self._cplock:
            before = self.log.latest_checkpoint()
            await trio.to_thread.run_sync(self.log.maybe_checkpoint, now)
            after = self.log.latest_checkpoint()
            fresh = after is not None and (before is None or after.size != before.size)
            if fresh or now >= self._next_witness_at:
                self._next_witness_at = now + self.config.witness_interval_s
                await self._witness_round()

    def close(self) -> None:
        if self.log is None:
            return
        try:
            self.log.close()  # commits what is pending and fsyncs
        except AuditLogError as exc:
            log.error("audit log: close failed: %s", exc)
        self.log = None

    def statistics(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.counts)
        if self.log is not None:
            st = self.log.statistics()
            out.update(
                entries=st["size"],
                durable_entries=st["durable_size"],
                bytes=st["file_bytes"],
                checkpoints=st["checkpoints_signed"],
                checkpoint_size=st["checkpoint_size"],
                checkpoint_cosignatures=st["checkpoint_cosignatures"],
                cosignatures=st["cosignatures_added"],
                commits=st["commits"],
                torn_bytes_dropped=st["torn_bytes_dropped"],
            )
        out.update({f"witness_{k}": v for k, v in self.witness.statistics().items()})
        return out

    # -- recording ----------------------------------------------------------

    def observe(self, now: float, event: Emit) -> None:
        """Record ``event`` if it is one that matters (see :data:`EVENT_MAP`)."""
        mapper = EVENT_MAP.get(event.kind)
        if mapper is None:
            return
        data = event.data if isinstance(event.data, Mapping) else {}
        try:
            mapped = mapper(self, data)
        except Exception as exc:  # a mapping bug must not break the event loop
            self.counts["entries_refused"] += 1
            self._badlog.warning(f"map-{event.kind}", "audit: cannot map event %s: %s", event.kind, exc)
            return
        if mapped is not None:
            self.record(*mapped)

    def record(self, kind: str, data: dict[str, Any]) -> int | None:
        """Append an entry of an audit ``kind`` (not blocking); its seq, or None
        if it does not fit its kind (counted and logged)."""
        if self.log is None:
            return None
        try:
            seq = self.log.append(kind, data)
        except EntryError as exc:
            seq = self._record_smaller(kind, data, exc)
            if seq is None:
                return None
        except AuditLogError as exc:
            self.counts["entries_refused"] += 1
            self._badlog.warning("append", "audit: cannot append %s: %s", kind, exc)
            return None
        self.counts["events_recorded"] += 1
        return seq

    def _record_smaller(self, kind: str, data: dict[str, Any], exc: EntryError) -> int | None:
        # an entry over the size limit (a huge spec or manifest) keeps its
        # required fields, with the big maps cut down to their scalar members
        assert self.log is not None
        if "exceeds" in str(exc):
            small = {k: ({kk: vv for kk, vv in v.items() if isinstance(vv, (str, int, float, bool)) and len(str(vv)) < 256}
                         if isinstance(v, dict) else v)
                     for k, v in data.items() if k in K.KINDS.get(kind, {}) or not isinstance(v, (dict, list))}
            small["truncated"] = True
            try:
                return self.log.append(kind, small)
            except (EntryError, AuditLogError):
                pass
        self.counts["entries_refused"] += 1
        self._badlog.warning(f"refused-{kind}", "audit: %s entry refused: %s", kind, exc)
        return None

    def _remember_task(self, task: str, job: str) -> None:
        self._task_jobs.pop(task, None)
        self._task_jobs[task] = job
        if len(self._task_jobs) > TASK_JOBS_MAX:
            del self._task_jobs[next(iter(self._task_jobs))]

    def _job_of(self, task: str) -> str:
        return self._task_jobs.get(task) or _job_of_task(task) or "?"

    def _placed_seen(self, job: str, task: str, epoch: int) -> None:
        self._placed[(job, task, epoch)] = None
        if len(self._placed) > PLACED_SEEN_MAX:
            del self._placed[next(iter(self._placed))]

    def _was_placed_here(self, job: str, task: str, epoch: int) -> bool:
        return (job, task, epoch) in self._placed

    def _placement(self) -> Any:
        cores = getattr(self.node, "cores", {}) or {}
        return cores.get("place")

    def _work_peers(self, task: str, epoch: int) -> tuple[str | None, list[str]]:
        """(entry, custodians) of a task this peer runs, from the placement core's
        executor (``task.run`` does not carry them)."""
        core = self._placement()
        try:
            w = core.executor.work.get((task, epoch)) if core is not None else None
            return (w.entry, list(w.custodians)) if w is not None else (None, [])
        except Exception:  # the placement core's internals changed: record what the event says
            return None, []

    def _job_spec(self, job: str) -> dict[str, Any] | None:
        """The job's spec as plain values, from the placement core's record (the
        ``job.submitted`` event carries only the id and custodians)."""
        core = self._placement()
        try:
            ent = core.custody.entries.get(job) if core is not None else None
            spec = ent.record.spec if ent is not None else None
            return dataclasses.asdict(spec) if spec is not None else None
        except Exception:  # the placement core's internals changed: record what the event says
            return None

    # -- witnessing: this log asks -------------------------------------------

    def _alive_peers(self) -> list[str]:
        g = self.gossip
        if g is None:
            return []
        try:
            return [p for p in g.members.alive_peers() if p != self.peer_id and K.is_peer(p)]
        except Exception:
            return []

    def _is_member(self, peer: str) -> bool:
        g = self.gossip
        if g is None:
            return True
        try:
            return g.members.member(peer) is not None
        except Exception:
            return False

    def chosen_witnesses(self) -> list[str]:
        """The alive peers asked to cosign this log: the top ``witnesses`` by
        rendezvous hash of (log, peer), so they change only when one leaves."""
        assert self.log is not None
        origin = self.log.origin
        peers = sorted(self._alive_peers(), key=lambda p: (_rendezvous(origin, p), p))
        return peers[: max(0, int(self.config.witnesses))]

    async def _witness_round(self) -> list[str]:
        """Offer the latest checkpoint to the chosen witnesses that have not
        cosigned it; returns the names of those that cosigned now."""
        assert self.log is not None
        cp = self.log.latest_checkpoint()
        if cp is None:
            return []
        done: list[str] = []
        targets = [w for w in self.chosen_witnesses() if cp.signature_by(_witness_key(w)) is None]
        if not targets:
            return []
        async with trio.open_nursery() as nursery:
            for w in targets:
                nursery.start_soon(self._ask_witness, w, cp, done)
        return done

    async def _ask_witness(self, w: str, cp: Checkpoint, done: list[str]) -> None:
        from ..mesh.transport import TransportError, request_protocol

        assert self.log is not None and self.daemon is not None
        note = _log_only(cp, self.log.verifier)
        old = self._witness_sizes.get(w, 0)
        for _ in range(2):  # a Conflict names the size to prove from: one retry
            if old > cp.size:
                self.counts["witness_failures"] += 1
                self._badlog.warning("witness-ahead", "audit: witness %s holds size %d of this log, above %d",
                                     w[-8:], old, cp.size)
                return
            proof = self.log.consistency_proof(old, cp.size) if 0 < old < cp.size else []
            payload = msgpack.packb({"note": note, "old_size": old, "proof": proof}, use_bin_type=True)
            self.counts["witness_requests_out"] += 1
            try:
                resp = await self.daemon.transport.request(
                    w, request_protocol(WITNESS_PROTOCOL), payload, timeout_s=self.config.request_timeout_s,
                    response_max_bytes=WITNESS_REQUEST_MAX_BYTES)
                r = _unpack_map(resp, WITNESS_REQUEST_MAX_BYTES, "witness reply")
            except (TransportError, ValueError) as exc:
                self.counts["witness_failures"] += 1
                self._badlog.warning(f"witness-{w}", "audit: witness %s did not answer: %s", w[-8:], exc)
                return
            result = r.get("result")
            if result == "cosigned" and isinstance(r.get("line"), str):
                try:
                    await trio.to_thread.run_sync(self.log.add_cosignature, cp.size, r["line"], _witness_key(w))
                except (NoteError, AuditLogError) as exc:
                    self.counts["witness_failures"] += 1
                    self._badlog.warning(f"cosig-{w}", "audit: bad cosignature from %s: %s", w[-8:], exc)
                    return
                self._witness_sizes[w] = cp.size
                self.counts["witness_cosigned"] += 1
                done.append(witness_name(w))
                return
            if result == "conflict" and type(r.get("known_size")) is int:
                old = r["known_size"]
                continue
            if result == "equivocation":
                self.counts["witness_accusations"] += 1
                log.error("audit: witness %s says this log equivocated: %s", w, _text(r.get("reason"))[:200])
                return
            self.counts["witness_failures"] += 1
            self._badlog.warning(f"wrej-{w}", "audit: witness %s refused: %s", w[-8:], _text(r.get("reason"))[:200])
            return

    # -- witnessing: this peer cosigns -----------------------------------------

    async def _on_witness_request(self, peer: str, payload: bytes) -> bytes:
        self.counts["witness_requests_in"] += 1
        try:
            req = _unpack_map(payload, WITNESS_REQUEST_MAX_BYTES, "witness request")
            note, old, proof = req.get("note"), req.get("old_size"), req.get("proof")
            if not isinstance(note, str) or type(old) is not int or old < 0 or type(proof) is not list:
                raise ValueError("witness request: expected note, old_size and proof")
            cp = Checkpoint.parse(note)
        except (ValueError, NoteError) as exc:
            self.counts["witness_refused"] += 1
            return self._reply({"result": "rejected", "reason": str(exc)[:200]})
        if cp.origin != default_origin(peer):
            # a peer asks for its own log only: the Noise handshake proved who it is
            self.counts["witness_refused"] += 1
            return self._reply({"result": "rejected", "reason": "a peer may only offer its own log's checkpoints"})
        if not self._is_member(peer):
            self.counts["witness_refused"] += 1
            return self._reply({"result": "rejected", "reason": "not a member of this peer's view of the mesh"})
        if self.witness.latest(cp.origin) is None and self.witness.statistics()["logs"] >= self.config.witnessed_logs_max:
            self.counts["witness_refused"] += 1
            return self._reply({"result": "rejected", "reason": "this witness watches as many logs as it may"})
        self.witness.add_log(_log_key(peer))
        before = self.witness.latest(cp.origin)
        out = self.witness.add_checkpoint(time.time(), note, old, proof)
        if isinstance(out, Cosigned):
            if before != (out.size, out.root):
                # the new state is on disk before the cosignature leaves
                await self._persist_witness()
                self.record(K.CHECKPOINT_WITNESSED, {"origin": out.origin, "size": out.size, "root": out.root.hex()})
            self.counts["witnessed_for_others"] += 1
            return self._reply({"result": "cosigned", "line": out.line})
        if isinstance(out, Conflict):
            return self._reply({"result": "conflict", "known_size": out.known_size})
        if isinstance(out, Equivocation):
            self.counts["equivocations"] += 1
            log.error("audit: log %s equivocated: %s", out.origin, out.reason)
            self.record(K.POLICY_DECISION, _policy(
                "witness", "equivocation", out.origin, log=peer, proven=out.proven, reason=out.reason,
                first=out.first, second=out.second))
            return self._reply({"result": "equivocation", "reason": out.reason[:200], "proven": out.proven})
        assert isinstance(out, Rejected)
        self.counts["witness_refused"] += 1
        return self._reply({"result": "rejected", "reason": out.reason[:200]})

    @staticmethod
    def _reply(obj: dict[str, Any]) -> bytes:
        return msgpack.packb(obj, use_bin_type=True)

    def _witness_path(self) -> Path:
        return self.dir / WITNESS_FILE

    async def _persist_witness(self) -> None:
        assert self._wlock is not None
        async with self._wlock:
            snap = self.witness.snapshot()  # taken under the lock: the newest state wins
            data = msgpack.packb({"format": WITNESS_FORMAT, "logs": snap}, use_bin_type=True)
            await trio.to_thread.run_sync(self._write_witness, data)

    def _write_witness(self, data: bytes) -> None:
        path = self._witness_path()
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _restore_witness(self) -> None:
        path = self._witness_path()
        if not path.exists():
            return
        try:
            obj = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=True, max_ext_len=0)
            if type(obj) is not dict or obj.get("format") != WITNESS_FORMAT or type(obj.get("logs")) is not dict:
                raise ValueError("not a witness state file")
            for origin in obj["logs"]:
                peer = _peer_of_origin(origin)
                if peer is None:
                    raise ValueError(f"unknown origin {origin[:80]!r}")
                self.witness.add_log(_log_key(peer))
            self.witness.restore(obj["logs"])
        except (OSError, ValueError, KeyError, TypeError, NoteError, WitnessError) as exc:
            raise DaemonError(
                f"{path}: damaged witness state ({exc}); move it aside to start (this peer then trusts the logs "
                "it witnesses on first use again)"
            ) from None

    # -- checkpoints and export: control ---------------------------------------

    async def checkpoint_now(self, *, witness: bool = True, witness_timeout_s: float | None = None) -> Checkpoint:
        """Sign a checkpoint over every entry so far and (by default) have it
        witnessed now, waiting at most ``witness_timeout_s`` for the witnesses
        (default ``request_timeout_s``); returns the stored checkpoint with the
        cosignatures it gathered."""
        assert self.log is not None and self._cplock is not None
        async with self._cplock:
            await trio.to_thread.run_sync(self.log.checkpoint)
            if witness:
                with trio.move_on_after(witness_timeout_s or self.config.request_timeout_s):
                    await self._witness_round()
            cp = self.log.latest_checkpoint()
        assert cp is not None
        return cp

    async def _ctl_checkpoint(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        cp = await self.checkpoint_now(witness=bool(args.get("witness", True)))
        key = self.log.verifier  # type: ignore[union-attr]
        cosigners = [s.name for s in cp.signatures if (s.name, s.key_id) != (key.name, key.key_id)]
        return {"checkpoint": cp.note, "origin": cp.origin, "size": cp.size, "cosigners": cosigners,
                "witnesses": [witness_name(w) for w in self.chosen_witnesses()]}

    async def _ctl_keys(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        assert self.log is not None
        return {"peer_id": self.peer_id, "log_vkey": self.log.verifier.vkey(),
                "witness_vkey": _witness_key(self.peer_id).vkey()}

    async def _ctl_export(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        assert self.log is not None
        self.counts["exports"] += 1
        job = args.get("job")
        if job is not None and (not isinstance(job, str) or not 0 < len(job) <= JOB_ID_MAX):
            raise ControlError("bad_request", f"job: expected an id of 1..{JOB_ID_MAX} characters")
        since = _since_notes(args.get("since"))
        peers = args.get("peers") or []
        if type(peers) is not list or not all(K.is_peer(p) for p in peers):
            raise ControlError("bad_request", "peers: expected a list of peer ids")
        views = bool(args.get("views", True))
        path = args.get("path")
        if path is not None and not isinstance(path, str):
            raise ControlError("bad_request", "path: expected a file path on the peer's machine")
        await self.checkpoint_now(witness=bool(args.get("witness", True)))
        unreachable: dict[str, str] = {}
        try:
            if job is None:
                data = await trio.to_thread.run_sync(lambda: export_bundle([self.log], job=None, since=since))
            else:
                data, unreachable = await self._export_job(job, since, peers, views)
        except (ExportError, NoteError) as exc:
            raise ControlError("bad_request", str(exc)) from None
        result: dict[str, Any] = {"bytes": len(data), "job": job, "unreachable": unreachable}
        result["logs"] = await trio.to_thread.run_sync(
            lambda: [row["origin"] for row in msgpack.unpackb(data, raw=False)["manifest"]["logs"]])
        if path:
            p = Path(path)
            if not p.is_absolute():
                raise ControlError("bad_request", "path: must be absolute (a file on the peer's machine)")
            from .bundle import _write_atomic

            try:
                await trio.to_thread.run_sync(_write_atomic, p, data)
            except OSError as exc:
                raise ControlError("refused", f"cannot write {p}: {exc.strerror or exc}") from None
            result["path"] = str(p)
            return result
        if len(data) > self.config.export_inline_max_bytes:
            raise ControlError(
                "refused",
                f"the bundle is {len(data):,} bytes, over the {self.config.export_inline_max_bytes:,} a reply carries; "
                "pass path (an absolute file path on the peer's machine)",
            )
        result["bundle"] = data
        return result

    # -- job export: stitching ---------------------------------------------------

    def _job_peers(self, job: str, own_part: bytes, extra: list[str]) -> list[str]:
        """The other peers that took part in ``job``: named in this log's
        entries of the job, in the placement record, or given."""
        found: list[str] = list(extra)
        obj = msgpack.unpackb(own_part, raw=False)
        for lg in obj["logs"]:
            for raw in lg["entries"]:
                d = decode_entry(raw).data
                for k in ("custodians",):
                    found.extend(p for p in d.get(k) or [] if isinstance(p, str))
                for k in ("executor", "previous", "entry"):
                    if isinstance(d.get(k), str):
                        found.append(d[k])
                bid = d.get("bid")
                if isinstance(bid, dict) and isinstance(bid.get("bidder"), str):
                    found.append(bid["bidder"])
        core = self._placement()
        try:
            st = core.status(job) if core is not None else None
        except Exception:
            st = None
        if st:
            found.append(st.get("entry", ""))
            found.extend(st.get("custodians") or [])
            found.extend(t.get("executor", "") for t in st.get("tasks") or [])
        out: list[str] = []
        for p in found:
            if K.is_peer(p) and p != self.peer_id and p not in out and (p in extra or self._is_member(p)):
                out.append(p)
        return out[: self.config.stitch_peers_max]

    async def _export_job(self, job: str, since: list[str], extra: list[str], views: bool) -> tuple[bytes, dict[str, str]]:
        own = await trio.to_thread.run_sync(lambda: export_bundle([self.log], job=job, since=since, views=False))
        peers = self._job_peers(job, own, extra)
        parts: dict[str, bytes] = {}
        unreachable: dict[str, str] = {}

        async def fetch(p: str) -> None:
            try:
                parts[p] = await self._fetch_part(p, job, since)
            except (ValueError, ExportError) as exc:
                self.counts["stitch_failures"] += 1
                unreachable[p] = str(exc)[:200]

        async with trio.open_nursery() as nursery:
            for p in peers:
                nursery.start_soon(fetch, p)
        ordered = [own] + [parts[p] for p in sorted(parts)]
        data = await trio.to_thread.run_sync(lambda: stitch_bundles(ordered, views=views))
        return data, unreachable

    async def _fetch_part(self, peer: str, job: str, since: list[str]) -> bytes:
        from ..mesh.transport import TransportError, request_protocol

        assert self.daemon is not None
        payload = msgpack.packb({"job": job, "since": since}, use_bin_type=True)
        try:
            part = await self.daemon.transport.request(
                peer, request_protocol(AUDIT_PROTOCOL), payload,
                timeout_s=self.config.request_timeout_s + 5, response_max_bytes=PART_MAX_BYTES)
        except TransportError as exc:
            raise ValueError(str(exc)) from None
        # the part must be that peer's own log, signed by its key, and sound
        # on its own; witness keys are read from their names (peer ids)
        try:
            obj = msgpack.unpackb(part, raw=False, strict_map_key=True, max_ext_len=0)
            trust = obj["trust"]
            origins = [lg["origin"] for lg in obj["logs"]]
        except Exception as exc:  # not even a bundle
            raise ValueError(f"not an audit bundle ({type(exc).__name__})") from None
        if origins != [default_origin(peer)]:
            raise ValueError("its part holds logs other than its own")
        keys: list[str] = []
        for v in trust:
            try:
                ver = Verifier.parse(v)
            except NoteError as exc:
                raise ValueError(f"bad trust root: {exc}") from None
            owner = ver.peer_id
            if ver.sig_type == ED25519 and ver.vkey() == _log_key(peer).vkey():
                keys.append(v)
            elif ver.sig_type == COSIGNATURE_V1 and ver.name == witness_name(owner):
                keys.append(v)
            else:
                raise ValueError(f"unexpected trust root {ver.name}")
        report = await trio.to_thread.run_sync(lambda: verify_bundle(part, keys, workers=1))
        if not report.ok:
            raise ValueError(f"its part does not verify: {report.problems[0]}")
        if report.job != job:
            raise ValueError("its part is not of this job")
        return part

    async def _on_audit_request(self, peer: str, payload: bytes) -> bytes:
        """Another peer stitching a job asks for this log's entries of it."""
        self.counts["export_requests_in"] += 1
        req = _unpack_map(payload, AUDIT_REQUEST_MAX_BYTES, "audit request")
        job = req.get("job")
        if not isinstance(job, str) or not 0 < len(job) <= JOB_ID_MAX:
            raise ValueError("audit request: expected a job id")
        if not self._is_member(peer):
            raise ValueError("audit request: not a member of this peer's view of the mesh")
        try:
            since = _since_notes(req.get("since"))
        except ControlError as exc:
            raise ValueError(str(exc)) from None
        # only checkpoints of this log are of use here
        mine = self.log.origin  # type: ignore[union-attr]
        since = [n for n in since if n.startswith(mine + "\n")]
        # within the stitcher's patience: its request waits request_timeout_s + 5 s
        await self.checkpoint_now(witness=True, witness_timeout_s=self.config.request_timeout_s / 2)
        return await trio.to_thread.run_sync(lambda: export_bundle([self.log], job=job, since=since, views=False))
