"""What the audit log records: every entry kind, its required fields, in one table.

An entry says what *this* peer did or observed (the entry's ``peer`` field is
always the log's own peer id). The table below is the whole vocabulary;
:func:`check_data` is the one place that enforces it, on append and again in
the offline verifier. Fields not listed are allowed (a newer peer may add
some); listed fields must be present with the given type.

Field types are the plain values an entry can hold:

======== ============================================================
``T?``    a value of type T, or None
``str``   text; ``peer`` is a text that must be an Ed25519 peer id
``int``   integer; ``num`` is an int or a finite float
``bool``  true or false
``map``   a map with string keys; ``list`` a list
``ref``   an artifact reference: ``"<alg>:<hex digest>"`` text, e.g.
          ``"blake3:9f2c..."`` (the blob store's content address)
======== ============================================================

Jobs: every ``job.*`` entry carries ``job`` (the job id) so that one job's
entries can be pulled from the logs of its submitter, custodians and
executor (``arcnet audit export --job ID``). Artifact entries carry ``job``
when they happened on a job's behalf, and so do policy decisions.

The run manifest of ``job.finished`` is the record the SLSA and PROV views are
built from; its recognised keys are :data:`MANIFEST_FIELDS` (all optional,
others allowed).

Knowingly left out: per-kind upper bounds on each field (the entry as a whole
is bounded by ``ENTRY_MAX_BYTES`` in :mod:`.entry`); enumerations of reasons.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping

__all__ = [
    "ADMISSION_GRANTED",
    "ADMISSION_REFUSED",
    "ADMISSION_REVOKED",
    "ARTIFACT_EVICTED",
    "ARTIFACT_FETCHED",
    "ARTIFACT_PUBLISHED",
    "ARTIFACT_SERVED",
    "CHECKPOINT_WITNESSED",
    "JOB_FAILED",
    "JOB_FINISHED",
    "JOB_PLACED",
    "JOB_REPLACED",
    "JOB_STARTED",
    "JOB_SUBMITTED",
    "KINDS",
    "LEADER_CHANGED",
    "MANIFEST_FIELDS",
    "MEMBER_CHANGED",
    "POLICY_DECISION",
    "check_data",
]

JOB_SUBMITTED = "job.submitted"
JOB_PLACED = "job.placed"
JOB_STARTED = "job.started"
JOB_FINISHED = "job.finished"
JOB_FAILED = "job.failed"
JOB_REPLACED = "job.replaced"
ARTIFACT_PUBLISHED = "artifact.published"
ARTIFACT_FETCHED = "artifact.fetched"
ARTIFACT_SERVED = "artifact.served"
ARTIFACT_EVICTED = "artifact.evicted"
MEMBER_CHANGED = "member.changed"
LEADER_CHANGED = "leader.changed"
POLICY_DECISION = "policy.decision"
ADMISSION_GRANTED = "admission.granted"
ADMISSION_REFUSED = "admission.refused"
ADMISSION_REVOKED = "admission.revoked"
CHECKPOINT_WITNESSED = "checkpoint.witnessed"

# kind -> {field: type}; the required fields of each kind
KINDS: dict[str, dict[str, str]] = {
    # a client handed the job to this peer (the entry peer), which accepted it
    JOB_SUBMITTED: {"job": "str", "submitter": "peer", "spec": "map"},
    # this peer ran the auction; ``bid`` is the winning bid as received
    # (bidder, price and the facts it priced: queue, missing bytes, energy, health)
    JOB_PLACED: {"job": "str", "executor": "peer", "bid": "map"},
    JOB_STARTED: {"job": "str", "attempt": "int"},
    # the run manifest: model, inputs, outputs, energy, durations (MANIFEST_FIELDS)
    JOB_FINISHED: {"job": "str", "manifest": "map"},
    JOB_FAILED: {"job": "str", "error": "str"},
    # a custodian moved the job from a dead or stuck executor to a new one
    JOB_REPLACED: {"job": "str", "previous": "peer", "executor": "peer", "reason": "str"},
    ARTIFACT_PUBLISHED: {"artifact": "ref", "size_bytes": "int"},
    ARTIFACT_FETCHED: {"artifact": "ref", "size_bytes": "int", "sources": "list"},
    ARTIFACT_SERVED: {"artifact": "ref", "to": "peer", "size_bytes": "int"},
    ARTIFACT_EVICTED: {"artifact": "ref", "reason": "str"},
    # membership as this peer observed it: alive, suspect, dead, left
    MEMBER_CHANGED: {"member": "peer", "status": "str", "incarnation": "int"},
    LEADER_CHANGED: {"region": "str", "leader": "peer?"},  # None: the region has no leader
    # e.g. replication ("keep 3 copies in region eu-2"), energy gating, eviction
    POLICY_DECISION: {"policy": "str", "decision": "str", "subject": "str"},
    ADMISSION_GRANTED: {"subject": "peer", "operator": "peer", "expires_ms": "int"},
    ADMISSION_REFUSED: {"subject": "peer", "reason": "str"},
    ADMISSION_REVOKED: {"subject": "peer", "reason": "str"},
    # a witness cosigned another log's checkpoint (size and root as cosigned)
    CHECKPOINT_WITNESSED: {"origin": "str", "size": "int", "root": "str"},
}

# recognised keys of job.finished's manifest (all optional): what the SLSA and
# PROV views read
MANIFEST_FIELDS: dict[str, str] = {
    "model": "ref",  # the ONNX model artifact
    "inputs": "list",  # of refs
    "outputs": "list",  # of refs
    "runtime": "str",  # e.g. "onnxruntime 1.17 CUDA"
    "started_ms": "int",
    "finished_ms": "int",
    "energy_kwh": "num",
    "submitter": "peer",
}

_REF_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}:[0-9a-f]{16,128}$")
_PEER_RE = re.compile(r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$")
_PEERS_SEEN_MAX = 4096  # peer ids already matched (a log names few peers, often)
_peers_seen: set[str] = set()


def is_ref(value: Any) -> bool:
    return type(value) is str and _REF_RE.match(value) is not None


def is_peer(value: Any) -> bool:
    if type(value) is not str:
        return False
    if value in _peers_seen:
        return True
    if _PEER_RE.match(value) is None:
        return False
    if len(_peers_seen) >= _PEERS_SEEN_MAX:
        _peers_seen.clear()
    _peers_seen.add(value)
    return True


def _is_num(v: Any) -> bool:
    t = type(v)
    return t is int or (t is float and math.isfinite(v))


# field type -> a Python type checked with ``type(v) is T`` (fast), or a predicate
_EXACT = {"str": str, "int": int, "bool": bool, "map": dict, "list": list}
_PREDICATES = {"peer": is_peer, "ref": is_ref, "num": _is_num}


def _predicate(t: str) -> Callable[[Any], bool]:
    if t.endswith("?"):  # optional value: may be None
        inner = _predicate(t[:-1])
        return lambda v: v is None or inner(v)
    if t in _EXACT:
        want = _EXACT[t]
        return lambda v: type(v) is want
    return _PREDICATES[t]


def _type_ok(t: str, v: Any) -> bool:
    return _predicate(t)(v)


# compiled once: per kind, (exact-typed fields, predicate fields); a verifier
# checks a million entries, so this is on its hot path
_MISSING = object()
_COMPILED: dict[str, tuple[tuple[tuple[str, type], ...], tuple[tuple[str, str, Callable[[Any], bool]], ...]]] = {}
for _kind, _fields in KINDS.items():
    _COMPILED[_kind] = (
        tuple((n, _EXACT[t]) for n, t in _fields.items() if t in _EXACT),
        tuple((n, t, _predicate(t)) for n, t in _fields.items() if t not in _EXACT),
    )
_MANIFEST_CHECKS = tuple((n, t, _predicate(t)) for n, t in MANIFEST_FIELDS.items())


def check_data(kind: str, data: Mapping[str, Any]) -> str | None:
    """None if ``data`` suits ``kind``, else one line saying what is wrong."""
    compiled = _COMPILED.get(kind)
    if compiled is None:
        return f"unknown entry kind {str(kind)[:40]!r}"
    if type(data) is not dict:
        return f"{kind}: data must be a map"
    exact, preds = compiled
    get = data.get
    for name, want in exact:
        if type(get(name, _MISSING)) is not want:
            return f"{kind}: missing field {name!r}" if name not in data else f"{kind}: field {name!r} must be {KINDS[kind][name]}"
    for name, t, ok in preds:
        v = get(name, _MISSING)
        if v is _MISSING:
            return f"{kind}: missing field {name!r}"
        if not ok(v):
            return f"{kind}: field {name!r} must be {t}"
    if kind == JOB_FINISHED:
        man = data["manifest"]
        for name, t, ok in _MANIFEST_CHECKS:
            if name in man and not ok(man[name]):
                return f"{kind}: manifest field {name!r} must be {t}"
        for name in ("inputs", "outputs"):
            if name in man and not all(is_ref(r) for r in man[name]):
                return f"{kind}: manifest {name} must be artifact refs"
    return None
