"""Per-job views of audit entries: SLSA provenance (in-toto) and W3C PROV-JSON.

A job's entries, gathered from the logs of its submitter's intake peer, its
custodians and its executor, say who asked for what, who ran it, with which
model and inputs, what it produced and what energy it used. Two standard
vocabularies carry that to tools that do not know ARCNet:

* SLSA provenance v1 inside an in-toto Statement v1
  (``https://in-toto.io/Statement/v1``, predicate
  ``https://slsa.dev/provenance/v1``): the outputs are the subjects, the
  model and inputs are ``resolvedDependencies``, the executor is the builder,
  and every audit entry the view was built from is a byproduct named by its
  log and seq, with the SHA-256 of its exact bytes.
* PROV-JSON (W3C Note, 2013): the job is an activity, artifacts are entities
  (used / wasGeneratedBy), peers are agents (wasAssociatedWith, with their
  role).

A view is derived data. The exporter puts it in the bundle, and the verifier
builds it again from the verified entries and requires the same bytes, so a
view can be trusted exactly as far as the entries are. Both are rendered as
deterministic JSON (sorted keys, no spaces, ASCII), which is what makes the
byte comparison possible.

Knowingly left out: SLSA build levels (ARCNet makes no claim about the
hardening of the executor); PROV bundles and PROV-N.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
from typing import Any, Iterable, Sequence

from . import kinds as K
from .entry import Entry

__all__ = ["BUILD_TYPE", "VIEW_NAMES", "build_views", "prov_json", "slsa_provenance"]

BUILD_TYPE = "urn:arcnet:buildtype:job:v1"
VIEW_NAMES = ("prov", "slsa")
_ROLE_BY_KIND = {
    K.JOB_SUBMITTED: "intake",
    K.JOB_PLACED: "placer",
    K.JOB_STARTED: "executor",
    K.JOB_FINISHED: "executor",
    K.JOB_FAILED: "executor",
    K.JOB_REPLACED: "custodian",
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _jsonable(v: Any) -> Any:
    """Plain entry values as JSON values (bytes become ``base64:...`` text)."""
    if isinstance(v, bytes):
        return "base64:" + base64.b64encode(v).decode("ascii")
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _rfc3339(ms: int) -> str:
    t = _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _descriptor(ref: str, **annotations: str) -> dict[str, Any]:
    alg, _, digest = ref.partition(":")
    d: dict[str, Any] = {"name": ref, "digest": {alg: digest}}
    if annotations:
        d["annotations"] = dict(annotations)
    return d


def _ordered(entries: Iterable[tuple[str, Entry]]) -> list[tuple[str, Entry]]:
    # by time, then log, then seq: the same order for every exporter and verifier
    return sorted(entries, key=lambda oe: (oe[1].time_ms, oe[0], oe[1].seq))


def slsa_provenance(job: str, entries: Sequence[tuple[str, Entry]]) -> dict[str, Any] | None:
    """The in-toto Statement for ``job`` from (origin, entry) pairs, or None
    if no entry finished the job (a provenance needs a subject)."""
    items = _ordered(e for e in entries if e[1].job == job)
    finished = [e for o, e in items if e.kind == K.JOB_FINISHED]
    if not finished:
        return None
    last = finished[-1]
    man = last.data["manifest"]
    subjects = [_descriptor(r) for r in man.get("outputs", []) if K.is_ref(r)]
    deps = []
    if K.is_ref(man.get("model")):
        deps.append(_descriptor(man["model"], role="model"))
    deps += [_descriptor(r, role="input") for r in man.get("inputs", []) if K.is_ref(r)]
    spec: Any = None
    placement: list[Any] = []
    started = None
    for o, e in items:
        if e.kind == K.JOB_SUBMITTED and spec is None:
            spec = {"spec": _jsonable(e.data["spec"]), "submitter": e.data["submitter"], "intake": e.peer}
        elif e.kind == K.JOB_PLACED:
            placement.append({"placer": e.peer, "executor": e.data["executor"], "bid": _jsonable(e.data["bid"])})
        elif e.kind == K.JOB_REPLACED:
            placement.append({"custodian": e.peer, "previous": e.data["previous"], "executor": e.data["executor"], "reason": e.data["reason"]})
        elif e.kind == K.JOB_STARTED and e.peer == last.peer:
            started = e.time_ms
    metadata: dict[str, Any] = {"invocationId": job, "finishedOn": _rfc3339(last.time_ms)}
    if started is not None:
        metadata["startedOn"] = _rfc3339(started)
    internal: dict[str, Any] = {"placement": placement}
    for key in ("runtime", "energy_kwh", "started_ms", "finished_ms"):
        if key in man:
            internal[key] = man[key]
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"job": job, "request": spec},
                "internalParameters": internal,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": f"urn:arcnet:peer:{last.peer}"},
                "metadata": metadata,
                "byproducts": [
                    {
                        "name": f"{o}#{e.seq}",
                        "digest": {"sha256": hashlib.sha256(e.raw).hexdigest()},
                        "annotations": {"kind": e.kind},
                    }
                    for o, e in items
                ],
            },
        },
    }
    return statement


def prov_json(job: str, entries: Sequence[tuple[str, Entry]]) -> dict[str, Any] | None:
    """A PROV-JSON document for ``job``, or None if it has no entries."""
    items = _ordered(e for e in entries if e[1].job == job)
    if not items:
        return None
    act_id = f"job:{job}"
    activity: dict[str, Any] = {"prov:type": "arcnet:job"}
    agents: dict[str, dict[str, Any]] = {}
    entities: dict[str, dict[str, Any]] = {}
    used: dict[str, Any] = {}
    generated: dict[str, Any] = {}
    assoc: dict[str, Any] = {}
    roles: dict[str, set[str]] = {}

    def role(peer: str, r: str) -> None:
        roles.setdefault(peer, set()).add(r)

    for o, e in items:
        r = _ROLE_BY_KIND.get(e.kind)
        if r:
            role(e.peer, r)
        if e.kind == K.JOB_SUBMITTED:
            role(e.data["submitter"], "submitter")
        elif e.kind == K.JOB_STARTED and "prov:startTime" not in activity:
            activity["prov:startTime"] = _rfc3339(e.time_ms)
        elif e.kind == K.JOB_FINISHED:
            activity["prov:endTime"] = _rfc3339(e.time_ms)
            man = e.data["manifest"]
            if "energy_kwh" in man:
                activity["arcnet:energy_kwh"] = man["energy_kwh"]
            refs = ([("model", man["model"])] if K.is_ref(man.get("model")) else []) + [
                ("input", r) for r in man.get("inputs", []) if K.is_ref(r)
            ]
            for rl, ref in refs:
                entities.setdefault(f"artifact:{ref}", {"prov:type": "arcnet:artifact"})
                used[f"_:u{len(used)}"] = {"prov:activity": act_id, "prov:entity": f"artifact:{ref}", "prov:role": rl}
            for ref in man.get("outputs", []):
                if K.is_ref(ref):
                    entities.setdefault(f"artifact:{ref}", {"prov:type": "arcnet:artifact"})
                    generated[f"_:g{len(generated)}"] = {"prov:entity": f"artifact:{ref}", "prov:activity": act_id}
        elif e.kind == K.JOB_FAILED:
            activity["prov:endTime"] = _rfc3339(e.time_ms)
            activity["arcnet:error"] = e.data["error"]
        elif e.kind in (K.JOB_PLACED, K.JOB_REPLACED):
            role(e.data["executor"], "executor")
        entities[f"audit:{o}#{e.seq}"] = {
            "prov:type": "arcnet:audit-entry",
            "arcnet:kind": e.kind,
            "arcnet:sha256": hashlib.sha256(e.raw).hexdigest(),
        }
    for peer in sorted(roles):
        agents[f"peer:{peer}"] = {"prov:type": "prov:SoftwareAgent", "arcnet:roles": sorted(roles[peer])}
        for r in sorted(roles[peer]):
            assoc[f"_:a{len(assoc)}"] = {"prov:activity": act_id, "prov:agent": f"peer:{peer}", "prov:role": r}
    doc: dict[str, Any] = {
        "prefix": {
            "arcnet": "urn:arcnet:",
            "job": "urn:arcnet:job:",
            "peer": "urn:arcnet:peer:",
            "artifact": "urn:arcnet:artifact:",
            "audit": "urn:arcnet:audit:",
        },
        "activity": {act_id: activity},
        "agent": agents,
        "entity": entities,
    }
    if used:
        doc["used"] = used
    if generated:
        doc["wasGeneratedBy"] = generated
    if assoc:
        doc["wasAssociatedWith"] = assoc
    return doc


def build_views(job: str, entries: Sequence[tuple[str, Entry]]) -> dict[str, str]:
    """Every view that exists for ``job``, rendered: {"prov": json, "slsa": json}."""
    out = {}
    p = prov_json(job, entries)
    if p is not None:
        out["prov"] = _dumps(p)
    s = slsa_provenance(job, entries)
    if s is not None:
        out["slsa"] = _dumps(s)
    return out
