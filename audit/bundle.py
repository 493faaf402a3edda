"""Audit bundles: export from one or more logs, verify offline with only the keys.

A bundle is one file, a single canonical msgpack map, so that nothing in it
goes unchecked (a zip's timestamps and comments would)::

    format     "arcnet-audit-bundle/1"
    manifest   {job, logs: [{origin, peer, size, since_size, entries, cosigners}], views}
    trust      the trust roots: vkeys of every key that signs something here
    logs       one per log:
      origin       the log's origin (its checkpoint's first line)
      checkpoint   the signed checkpoint note, with witness cosignatures
      since        the checkpoint of the previous export (or None)
      consistency  consistency proof since -> checkpoint (concatenated hashes)
      entries      the entries' canonical bytes, in seq order
      -- a whole range (no job filter): every entry since the previous export --
      prefix       compact range of the entries before ``since`` (hashes)
      leaves       the leaf hash of every entry (hashes), so that a changed
                   entry is named, not just "root mismatch"
      -- selected entries (``job`` set) --
      proofs       one inclusion proof per entry (hashes)
    views      {"prov": PROV-JSON, "slsa": in-toto statement}, job bundles only

What :func:`verify_bundle` checks, with nothing but the bundle and the trusted
keys:

1. The file decodes, has exactly this schema, and re-encodes to exactly its
   own bytes (so every byte is one of the values below).
2. Every trust root is trusted by the caller and signs something here; every
   signature line of every checkpoint is by a trust root and verifies (a
   stricter rule than the note spec's "ignore unknown signatures": a bundle
   is a closed document, and a line nobody can check is a changed byte); each
   log's checkpoint is signed by the log's key (named by its origin) and has
   at least ``min_cosignatures`` witness cosignatures.
3. ``since`` is signed by the same log and ``consistency`` proves the
   checkpoint extends it (RFC 9162 2.1.4.2): the log did not rewrite what
   the previous export showed.
4. Every entry decodes canonically (:mod:`.entry`), is of a known kind with
   its required fields, belongs to the log (``peer`` is the log key's peer
   id), has the right seq, and times never decrease. A whole range must
   rebuild, from the prefix and the entries, exactly the signed root (and
   the prefix must rebuild the ``since`` root); selected entries must each
   have a valid inclusion proof to the signed root and carry the job id.
5. The manifest and the views are exactly what the verified contents give.

The :class:`Report` lists problems in order, and names the first bad entry
(log, seq) and why. One job's bundle stitches the entries of several logs
(its intake peer, custodians and executor; :func:`stitch_bundles` joins the
parts that those peers export of their own logs): selection by job id is the
exporter's; a verifier can check that every entry shown is genuine and in
its log, not that no entry was left out (no log commits to an index by job).

Knowingly left out: streaming (a bundle is read into memory: ~260 bytes per
entry for the benchmark's mix, 32 of them the leaf hash; ~260 MB for a
million); encryption of bundles.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import msgpack

from ..mesh import identity as _identity
from . import merkle
from . import kinds as _kinds
from .entry import _SCALARS, ENTRY_MAX_BYTES, Entry, EntryError, _plain_ok, decode_entry
from .log import AuditLog
from .note import COSIGNATURE_V1, ED25519, Checkpoint, NoteError, Verifier
from .views import build_views

__all__ = [
    "BUNDLE_FORMAT",
    "ExportError",
    "Problem",
    "Report",
    "bundle_checkpoints",
    "export_bundle",
    "load_trust",
    "stitch_bundles",
    "verify_bundle",
]

BUNDLE_FORMAT = "arcnet-audit-bundle/1"
BUNDLE_MAX_BYTES = 4 << 30  # 4 GiB: ~20 million entries
PROBLEMS_MAX = 100  # a report lists at most this many problems (the first ones)
LOGS_MAX = 4096


class ExportError(Exception):
    """An export that cannot be made as asked; the message says why."""


# ---------------------------------------------------------------------------
# trust


def _witness_key_from_name(name: str, key_id: bytes) -> Verifier | None:
    """Witness names end in the witness's peer id (see
    :func:`.witness.witness_name`), which embeds its key."""
    tail = name.rsplit("/", 1)[-1]
    try:
        pk = _identity.public_key_of(tail)
    except _identity.IdentityError:
        return None
    v = Verifier(name, pk, COSIGNATURE_V1)
    return v if v.key_id == key_id else None


def load_trust(source: str | os.PathLike[str] | Iterable[Any]) -> tuple[set[str], set[bytes]]:
    """Trusted keys as (vkeys, raw public keys).

    Accepts a trust file path or an iterable of: :class:`Verifier`, vkey
    text, peer ids (``12D3KooW...``), 64-hex-digit or raw 32-byte public keys.
    A vkey trusts that name, type and key; a bare key trusts the key under
    any name (the name is bound to the key by its key id anyway).
    """
    if isinstance(source, (str, os.PathLike)):
        items: Iterable[Any] = [ln.strip() for ln in Path(source).read_text().splitlines()]
    else:
        items = source
    vkeys: set[str] = set()
    raw: set[bytes] = set()
    for n, it in enumerate(items, 1):
        if isinstance(it, Verifier):
            vkeys.add(it.vkey())
        elif isinstance(it, bytes):
            if len(it) != 32:
                raise NoteError(f"trusted key {n}: a raw Ed25519 key is 32 bytes")
            raw.add(it)
        elif isinstance(it, str):
            s = it.strip()
            if not s or s.startswith("#"):
                continue
            if "+" in s:
                vkeys.add(Verifier.parse(s).vkey())
            elif s.startswith("12D3KooW"):
                try:
                    raw.add(_identity.public_key_of(s))
                except _identity.IdentityError as exc:
                    raise NoteError(f"trusted key {n}: {exc}") from None
            elif len(s) == 64:
                try:
                    raw.add(bytes.fromhex(s))
                except ValueError:
                    raise NoteError(f"trusted key {n}: not hex") from None
            else:
                raise NoteError(f"trusted key {n}: expected a vkey, a peer id or 64 hex digits")
        else:
            raise TypeError(f"cannot trust a {type(it).__name__}")
    return vkeys, raw


# ---------------------------------------------------------------------------
# export


def bundle_checkpoints(bundle: str | os.PathLike[str] | bytes) -> list[str]:
    """The checkpoint notes of a previous bundle: what ``--since`` takes."""
    data = bundle if isinstance(bundle, bytes) else Path(bundle).read_bytes()
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
        return [str(lg["checkpoint"]) for lg in obj["logs"]]
    except Exception as exc:
        raise ExportError(f"not an audit bundle ({type(exc).__name__})") from None


def _join(hashes: Sequence[bytes]) -> bytes:
    return b"".join(hashes)


def export_bundle(
    logs: Sequence[AuditLog],
    out: str | os.PathLike[str] | None = None,
    *,
    job: str | None = None,
    since: Iterable[str] = (),
    views: bool = True,
    witnesses: Iterable[Verifier] = (),
) -> bytes:
    """Build a bundle of ``logs`` at their latest checkpoints; write it to ``out``
    (atomically) if given, and return its bytes.

    ``job``: only the entries of that job (with inclusion proofs), and its
    views unless ``views`` is False. ``since``: checkpoint notes of a previous
    export (see :func:`bundle_checkpoints`), matched to logs by origin: only
    later entries are exported, with a consistency proof from it.
    ``witnesses``: vkeys of cosigners whose key cannot be read from their
    name (ARCNet witness names end in a peer id, which can).
    """
    if not logs:
        raise ExportError("nothing to export: give at least one log")
    if len(logs) > LOGS_MAX:
        raise ExportError(f"at most {LOGS_MAX} logs per bundle")
    known_witnesses = {(w.name, w.key_id): w for w in witnesses}
    since_by_origin: dict[str, Checkpoint] = {}
    for note in since:
        try:
            cp = Checkpoint.parse(note)
        except NoteError as exc:
            raise ExportError(f"--since: not a checkpoint ({exc})") from None
        prev = since_by_origin.get(cp.origin)
        if prev is None or cp.size > prev.size:
            since_by_origin[cp.origin] = cp
    origins = [lg.origin for lg in logs]
    if len(set(origins)) != len(origins):
        raise ExportError("the same log was given twice")

    trust: dict[str, Verifier] = {}
    out_logs: list[dict[str, Any]] = []
    man_logs: list[dict[str, Any]] = []
    job_entries: list[tuple[str, Entry]] = []
    for lg in logs:
        cp = lg.latest_checkpoint()
        if cp is None:
            raise ExportError(f"{lg.origin}: no checkpoint yet (the peer signs one every minute; or export with its key)")
        log_key = lg.verifier
        if not cp.verify(log_key):
            raise ExportError(f"{lg.origin}: its stored checkpoint does not verify with its own key")
        trust[log_key.vkey()] = log_key
        cosigners = []
        for sig in cp.signatures:
            if (sig.name, sig.key_id) == (log_key.name, log_key.key_id):
                continue
            w = known_witnesses.get((sig.name, sig.key_id)) or _witness_key_from_name(sig.name, sig.key_id)
            if w is None:
                raise ExportError(f"{lg.origin}: cosigner {sig.name} has no known key; pass it in witnesses")
            if not w.verify_line(sig, cp.text):
                raise ExportError(f"{lg.origin}: cosignature by {sig.name} does not verify")
            trust[w.vkey()] = w
            cosigners.append(sig.name)
        scp = since_by_origin.get(lg.origin)
        start = 0
        consistency = b""
        since_note = None
        if scp is not None:
            if not scp.verify(log_key):
                raise ExportError(f"{lg.origin}: the --since checkpoint is not signed by this log")
            if scp.size > cp.size:
                raise ExportError(f"{lg.origin}: the --since checkpoint ({scp.size}) is newer than the log's latest ({cp.size})")
            if lg.root(scp.size) != scp.root:
                raise ExportError(
                    f"{lg.origin}: the --since checkpoint is NOT in this log's history (size {scp.size}, different root): "
                    "the log has equivocated; keep both as evidence"
                )
            for sig in scp.signatures:  # every line must verify in the bundle too
                if (sig.name, sig.key_id) != (log_key.name, log_key.key_id):
                    w = known_witnesses.get((sig.name, sig.key_id)) or _witness_key_from_name(sig.name, sig.key_id)
                    if w is None or not w.verify_line(sig, scp.text):
                        raise ExportError(f"{lg.origin}: --since cosignature by {sig.name} cannot be verified")
                    trust[w.vkey()] = w
            start = scp.size
            consistency = _join(lg.consistency_proof(scp.size, cp.size))
            since_note = scp.note
        rec: dict[str, Any] = {
            "checkpoint": cp.note,
            "consistency": consistency,
            "entries": [],
            "leaves": b"",
            "origin": lg.origin,
            "prefix": b"",
            "proofs": [],
            "since": since_note,
        }
        if job is None:
            rec["entries"] = lg.read_entries(start, cp.size)
            rec["prefix"] = _join(lg.compact_range(start))
            rec["leaves"] = lg.leaf_hashes(start, cp.size)
        else:
            needle = job.encode()
            for seq, raw in lg.iter_entries(start, cp.size):
                if needle not in raw:  # cheap prefilter before decoding
                    continue
                e = decode_entry(raw)
                if e.job != job:
                    continue
                rec["entries"].append(raw)
                rec["proofs"].append(_join(lg.inclusion_proof(seq, cp.size)))
                job_entries.append((lg.origin, e))
        out_logs.append(rec)
        man_logs.append(
            {
                "cosigners": sorted(cosigners),
                "entries": len(rec["entries"]),
                "origin": lg.origin,
                "peer": lg.peer_id,
                "since_size": start,
                "size": cp.size,
            }
        )
    view_texts = build_views(job, job_entries) if (job is not None and views) else {}
    bundle = {
        "format": BUNDLE_FORMAT,
        "logs": out_logs,
        "manifest": {"job": job, "logs": man_logs, "views": sorted(view_texts)},
        "trust": sorted(trust),
        "views": dict(sorted(view_texts.items())),
    }
    data = msgpack.packb(bundle, use_bin_type=True)
    if out is not None:
        _write_atomic(out, data)
    return data


def _write_atomic(out: str | os.PathLike[str], data: bytes) -> None:
    path = Path(out)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stitch_bundles(
    parts: Sequence[bytes], out: str | os.PathLike[str] | None = None, *, views: bool = True
) -> bytes:
    """One bundle from several bundles of the same job (or several whole-range
    bundles), each exported by the peer that owns its logs.

    This is how one job's bundle gathers the logs of its intake peer,
    custodians and executor when no single machine holds them all: each peer
    exports its own part (:func:`export_bundle` with ``job``, usually without
    views), and the stitcher joins the parts' logs, manifest rows and trust
    roots, and builds the job's views over every part's entries. Nothing is
    re-signed or re-proved: each log record is copied as its owner made it,
    so the result verifies exactly when every part does. The caller decides
    which parts to trust (the peer stitching one job verifies each part
    against the key of the peer that sent it before calling this).
    ExportError for parts that cannot be joined (not bundles, different jobs,
    the same log twice).
    """
    if not parts:
        raise ExportError("nothing to stitch: give at least one bundle")
    job: Any = False  # not yet known (None is a valid value: whole-range bundles)
    out_logs: list[dict[str, Any]] = []
    man_logs: list[dict[str, Any]] = []
    trust: set[str] = set()
    origins: set[str] = set()
    job_entries: list[tuple[str, Entry]] = []
    for n, data in enumerate(parts):
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0, use_list=True)
            if obj["format"] != BUNDLE_FORMAT:
                raise ValueError(obj["format"])
            part_job = obj["manifest"]["job"]
            logs, rows = obj["logs"], obj["manifest"]["logs"]
            if len(logs) != len(rows):
                raise ValueError("manifest rows")
        except Exception as exc:  # msgpack and shape errors alike: not a bundle
            raise ExportError(f"part {n}: not an audit bundle ({type(exc).__name__})") from None
        if job is False:
            job = part_job
        elif part_job != job:
            raise ExportError(f"part {n}: a bundle of job {part_job!r}, not {job!r}")
        for lg, row in zip(logs, rows):
            if lg["origin"] in origins:
                raise ExportError(f"part {n}: log {lg['origin']} is already in the bundle")
            origins.add(lg["origin"])
            out_logs.append(lg)
            man_logs.append(row)
            if job is not None:
                for raw in lg["entries"]:
                    try:
                        job_entries.append((lg["origin"], decode_entry(raw)))
                    except EntryError as exc:
                        raise ExportError(f"part {n}: log {lg['origin']}: {exc}") from None
        trust.update(obj["trust"])
    if len(out_logs) > LOGS_MAX:
        raise ExportError(f"at most {LOGS_MAX} logs per bundle")
    view_texts = build_views(job, job_entries) if (job is not None and views) else {}
    bundle = {
        "format": BUNDLE_FORMAT,
        "logs": out_logs,
        "manifest": {"job": job, "logs": man_logs, "views": sorted(view_texts)},
        "trust": sorted(trust),
        "views": dict(sorted(view_texts.items())),
    }
    data = msgpack.packb(bundle, use_bin_type=True)
    if out is not None:
        _write_atomic(out, data)
    return data


# ---------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle. ``seq`` is set when it is about one entry."""

    where: str
    reason: str
    origin: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Report:
    ok: bool
    problems: list[Problem] = field(default_factory=list)
    first_bad_entry: Problem | None = None
    job: str | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    entries_verified: int = 0
    bundle_bytes: int = 0
    elapsed_s: float = 0.0
    truncated: bool = False  # more problems than PROBLEMS_MAX

    def to_json(self) -> dict[str, Any]:
        def p(x: Problem | None) -> dict[str, Any] | None:
            return None if x is None else {"where": x.where, "reason": x.reason, "origin": x.origin, "seq": x.seq}

        return {
            "ok": self.ok,
            "job": self.job,
            "problems": [p(x) for x in self.problems],
            "first_bad_entry": p(self.first_bad_entry),
            "logs": self.logs,
            "entries_verified": self.entries_verified,
            "bundle_bytes": self.bundle_bytes,
            "elapsed_s": round(self.elapsed_s, 4),
            "truncated": self.truncated,
        }


class _Fail(Exception):
    """Stops verification of the current part (a problem was recorded)."""


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.truncated = False

    def add(self, where: str, reason: str, origin: str | None = None, seq: int | None = None) -> None:
        if len(self.problems) >= PROBLEMS_MAX:
            self.truncated = True
            return
        self.problems.append(Problem(where, reason, origin, seq))

    def fail(self, where: str, reason: str, origin: str | None = None, seq: int | None = None) -> "_Fail":
        self.add(where, reason, origin, seq)
        return _Fail()


_SCHEMA_TOP = ["format", "logs", "manifest", "trust", "views"]
_SCHEMA_LOG = ["checkpoint", "consistency", "entries", "leaves", "origin", "prefix", "proofs", "since"]
_SCHEMA_MANIFEST = ["job", "logs", "views"]


def _keys_exact(d: Any, keys: list[str], where: str, ck: _Checker) -> dict[str, Any]:
    if type(d) is not dict:
        raise ck.fail(where, "expected a map")
    if list(d) != keys:
        raise ck.fail(where, f"expected exactly the keys {keys} in that order, got {list(d)[:12]}")
    return d


def _typed(v: Any, t: type, where: str, ck: _Checker) -> Any:
    if type(v) is not t:
        raise ck.fail(where, f"expected {t.__name__}")
    return v


def _hashes(blob: bytes, where: str, ck: _Checker) -> list[bytes]:
    try:
        return merkle.split_hashes(blob, where)
    except ValueError as exc:
        raise ck.fail(where, str(exc)) from None


def _workers(requested: int | None) -> int:
    if requested is not None:
        return max(1, int(requested))
    import sys
    import threading

    if sys.platform != "linux" or threading.active_count() > 1:
        return 1  # forking a multi-threaded process is unsafe
    return max(1, min(os.cpu_count() or 1, WORKERS_MAX))


def verify_bundle(
    bundle: str | os.PathLike[str] | bytes,
    trusted_public_keys: Any,
    *,
    min_cosignatures: int = 0,
    workers: int | None = None,
) -> Report:
    """Verify a bundle offline; see the module docstring for what is checked.

    ``trusted_public_keys``: a trust file path or an iterable of keys (see
    :func:`load_trust`). ``min_cosignatures``: witness cosignatures each
    checkpoint needs (default 0: the log's own signature suffices).
    ``workers``: processes for checking large whole-range logs (default: one
    per CPU, up to 8, and only from a single-threaded process, since the
    workers are forked; 1 checks everything in this process).
    Never raises for a bad bundle: the report says what is wrong.
    """
    t0 = time.perf_counter()
    ck = _Checker()
    report = Report(ok=False)
    try:
        vkeys, raw_keys = load_trust(trusted_public_keys)
    except (NoteError, OSError) as exc:
        ck.add("trust", f"cannot read the trusted keys: {exc}")
        report.problems = ck.problems
        return report
    if isinstance(bundle, bytes):
        data = bundle
    else:
        try:
            size = os.path.getsize(bundle)
            if size > BUNDLE_MAX_BYTES:
                ck.add("bundle", f"{size} bytes exceeds the {BUNDLE_MAX_BYTES} byte limit")
                report.problems = ck.problems
                return report
            data = Path(bundle).read_bytes()
        except OSError as exc:
            ck.add("bundle", f"cannot read: {exc.strerror or exc}")
            report.problems = ck.problems
            return report
    report.bundle_bytes = len(data)
    gc_was = gc.isenabled()
    gc.disable()  # a million small objects: the collector would triple the time
    try:
        _verify(data, vkeys, raw_keys, min_cosignatures, ck, report, _workers(workers))
    except _Fail:
        pass
    finally:
        if gc_was:
            gc.enable()
    report.problems = ck.problems
    report.truncated = ck.truncated
    report.ok = not ck.problems
    report.first_bad_entry = next((p for p in ck.problems if p.seq is not None), None)
    report.elapsed_s = time.perf_counter() - t0
    return report


def _verify(
    data: bytes, vkeys: set[str], raw_keys: set[bytes], min_cos: int, ck: _Checker, report: Report, workers: int
) -> None:
    if len(data) > BUNDLE_MAX_BYTES:
        raise ck.fail("bundle", "too large")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0, use_list=True)
    except Exception as exc:  # msgpack raises several types; all mean "not a bundle"
        raise ck.fail("bundle", f"not a bundle: cannot decode ({type(exc).__name__}: {str(exc)[:80]})") from None
    top = _keys_exact(obj, _SCHEMA_TOP, "bundle", ck)
    if top["format"] != BUNDLE_FORMAT:
        raise ck.fail("bundle", f"format is {str(top['format'])[:40]!r}, this verifier reads {BUNDLE_FORMAT!r}")
    # schema first, so that the canonical re-encoding below compares like with like
    manifest = _keys_exact(top["manifest"], _SCHEMA_MANIFEST, "manifest", ck)
    logs = _typed(top["logs"], list, "logs", ck)
    if not logs or len(logs) > LOGS_MAX:
        raise ck.fail("logs", f"expected 1..{LOGS_MAX} logs")
    for i, lg in enumerate(logs):
        _keys_exact(lg, _SCHEMA_LOG, f"logs[{i}]", ck)
        _typed(lg["origin"], str, f"logs[{i}].origin", ck)
        _typed(lg["checkpoint"], str, f"logs[{i}].checkpoint", ck)
        if lg["since"] is not None:
            _typed(lg["since"], str, f"logs[{i}].since", ck)
        for k in ("consistency", "prefix", "leaves"):
            _typed(lg[k], bytes, f"logs[{i}].{k}", ck)
        for k in ("entries", "proofs"):
            _typed(lg[k], list, f"logs[{i}].{k}", ck)
            if not all(type(x) is bytes for x in lg[k]):
                raise ck.fail(f"logs[{i}].{k}", "expected a list of bytes")
    trust = _typed(top["trust"], list, "trust", ck)
    views = _typed(top["views"], dict, "views", ck)
    if not all(type(v) is str for v in trust) or trust != sorted(set(trust)):
        raise ck.fail("trust", "expected a sorted list of distinct vkeys")
    if list(views) != sorted(views) or not all(type(v) is str for v in views.values()):
        raise ck.fail("views", "expected a sorted map of view texts")
    if msgpack.packb(obj, use_bin_type=True) != data:
        raise ck.fail("bundle", "not in canonical encoding (bytes differ from the re-encoded values)")

    # -- trust roots ----------------------------------------------------------
    roots: dict[tuple[str, bytes], Verifier] = {}
    for v in trust:
        try:
            ver = Verifier.parse(v)
        except NoteError as exc:
            raise ck.fail("trust", str(exc)) from None
        if ver.vkey() != v:
            raise ck.fail("trust", f"vkey {v[:40]!r} is not in canonical form")
        if v not in vkeys and ver.public_key not in raw_keys:
            raise ck.fail("trust", f"trust root {ver.name} is not among the keys you trust")
        roots[(ver.name, ver.key_id)] = ver
    used: set[tuple[str, bytes]] = set()

    job = manifest["job"]
    if job is not None and type(job) is not str:
        raise ck.fail("manifest.job", "expected text or nil")
    report.job = job
    sparse = job is not None
    origins_seen: set[str] = set()
    man_logs: list[dict[str, Any]] = []
    job_entries: list[tuple[str, Entry]] = []
    all_ok_logs = True
    for i, lg in enumerate(logs):
        origin = lg["origin"]
        where = f"log {origin}"
        if origin in origins_seen:
            raise ck.fail(where, "appears twice")
        origins_seen.add(origin)
        n_problems = len(ck.problems)
        try:
            summary = _verify_log(i, lg, roots, used, min_cos, sparse, job, ck, job_entries, workers)
        except _Fail:
            summary = None
        if summary is None or len(ck.problems) > n_problems:
            all_ok_logs = False
            report.logs.append({"origin": origin, "ok": False})
            man_logs.append({})
            continue
        report.entries_verified += summary["entries"]
        report.logs.append(dict(summary, ok=True))
        man_logs.append(summary)

    # -- trust roots used, manifest and views ------------------------------------
    if all_ok_logs:
        for key in roots:
            if key not in used:
                ck.add("trust", f"trust root {key[0]} signs nothing in this bundle")
        m_logs = manifest["logs"]
        if type(m_logs) is not list or len(m_logs) != len(man_logs):
            ck.add("manifest.logs", "does not list the bundle's logs")
        else:
            for i, (got, want) in enumerate(zip(m_logs, man_logs)):
                # compared as encoded: in Python True == 1 and 1.0 == 1, in the file they differ
                if msgpack.packb(got) != msgpack.packb(want):
                    ck.add(f"manifest.logs[{i}]", f"does not match the contents of log {want.get('origin')}")
        if manifest["views"] != sorted(views):
            ck.add("manifest.views", "does not list the bundle's views")
        if views and not sparse:
            ck.add("views", "only a job bundle carries views")
        elif views:  # optional, but when present they must be exactly what the entries make
            want_views = build_views(job, job_entries)
            if set(views) != set(want_views):
                ck.add("views", f"expected the views {sorted(want_views)}, found {sorted(views)}")
            for name in sorted(views):
                if name in want_views and views[name] != want_views[name]:
                    ck.add(f"views.{name}", "does not match the view the verified entries make")


def _verify_log(
    i: int,
    lg: dict[str, Any],
    roots: dict[tuple[str, bytes], Verifier],
    used: set[tuple[str, bytes]],
    min_cos: int,
    sparse: bool,
    job: str | None,
    ck: _Checker,
    job_entries: list[tuple[str, Entry]],
    workers: int,
) -> dict[str, Any] | None:
    origin = lg["origin"]
    where = f"log {origin}"
    # -- the checkpoint --------------------------------------------------------
    try:
        cp = Checkpoint.parse(lg["checkpoint"])
    except NoteError as exc:
        raise ck.fail(f"{where} checkpoint", str(exc), origin) from None
    if cp.note != lg["checkpoint"]:
        raise ck.fail(f"{where} checkpoint", "not in canonical form", origin)
    if cp.origin != origin:
        raise ck.fail(f"{where} checkpoint", f"is for origin {cp.origin!r}", origin)
    log_keys = [v for v in roots.values() if v.name == origin and v.sig_type == ED25519]
    if len(log_keys) != 1:
        raise ck.fail(where, f"needs exactly one trust root named by its origin, found {len(log_keys)}", origin)
    log_key = log_keys[0]
    peer = log_key.peer_id
    cosigners = _check_signatures(cp, log_key, roots, used, f"{where} checkpoint", origin, ck)
    if len(cosigners) < min_cos:
        raise ck.fail(f"{where} checkpoint", f"{len(cosigners)} witness cosignatures, policy needs {min_cos}", origin)
    # -- since and consistency ---------------------------------------------------
    start = 0
    since_root = merkle.EMPTY_ROOT
    if lg["since"] is not None:
        try:
            scp = Checkpoint.parse(lg["since"])
        except NoteError as exc:
            raise ck.fail(f"{where} since", str(exc), origin) from None
        if scp.note != lg["since"] or scp.origin != origin:
            raise ck.fail(f"{where} since", "not a canonical checkpoint of this log", origin)
        _check_signatures(scp, log_key, roots, used, f"{where} since", origin, ck)
        if scp.size > cp.size:
            raise ck.fail(f"{where} since", f"size {scp.size} is beyond the checkpoint's {cp.size}", origin)
        proof = _hashes(lg["consistency"], f"{where} consistency", ck)
        if not merkle.verify_consistency(scp.size, cp.size, scp.root, cp.root, proof):
            raise ck.fail(
                f"{where} consistency",
                f"the checkpoint (size {cp.size}) does not extend the previous export's (size {scp.size}): "
                "the log rewrote its history, or the proof is damaged",
                origin,
            )
        start, since_root = scp.size, scp.root
    elif lg["consistency"]:
        raise ck.fail(f"{where} consistency", "a consistency proof without a previous checkpoint", origin)
    # -- entries ---------------------------------------------------------------
    entries: list[bytes] = lg["entries"]
    if sparse:
        if lg["prefix"] or lg["leaves"]:
            raise ck.fail(where, "a job bundle carries inclusion proofs, not prefix or leaves", origin)
        _verify_sparse(origin, peer, cp, start, entries, lg["proofs"], job, ck, job_entries)
    else:
        if lg["proofs"]:
            raise ck.fail(where, "a whole-range bundle carries no inclusion proofs", origin)
        _verify_range(origin, peer, cp, start, since_root, lg["prefix"], lg["leaves"], entries, ck, workers)
    return {
        "cosigners": sorted(cosigners),
        "entries": len(entries),
        "origin": origin,
        "peer": peer,
        "since_size": start,
        "size": cp.size,
    }


def _check_signatures(
    cp: Checkpoint,
    log_key: Verifier,
    roots: dict[tuple[str, bytes], Verifier],
    used: set[tuple[str, bytes]],
    where: str,
    origin: str,
    ck: _Checker,
) -> list[str]:
    """Every line must verify by a trust root; the log's must be there. Returns cosigner names."""
    have_log = False
    cosigners = []
    seen = set()
    for sig in cp.signatures:
        key = (sig.name, sig.key_id)
        if key in seen:
            raise ck.fail(where, f"two signatures by {sig.name}", origin)
        seen.add(key)
        v = roots.get(key)
        if v is None:
            raise ck.fail(where, f"signature by {sig.name} ({sig.key_id.hex()}) is not by a trust root of this bundle", origin)
        if not v.verify_line(sig, cp.text):
            raise ck.fail(where, f"signature by {sig.name} does not verify", origin)
        used.add(key)
        if v is log_key:
            have_log = True
        elif v.sig_type == COSIGNATURE_V1:
            cosigners.append(v.name)
        else:
            raise ck.fail(where, f"{sig.name} signs as a log, not as a witness", origin)
    if not have_log:
        raise ck.fail(where, "not signed by the log's key", origin)
    return cosigners


# A whole range is checked in chunks of CHUNK_ENTRIES aligned to absolute
# leaf indices, so a complete chunk is a subtree of the final tree: each chunk
# yields its first problem, its time span, whether its leaf hashes match the
# listed ones, and its subtree root (or, for the ragged chunks at either end,
# its leaf hashes). Chunks run in worker processes when there are many (the
# entry checks are pure Python: ~5 us each), and are merged in order into a
# compact range. The same function runs in-process for small bundles.
CHUNK_HEIGHT = 16
CHUNK_ENTRIES = 1 << CHUNK_HEIGHT  # 65,536
PARALLEL_MIN_ENTRIES = 4 * CHUNK_ENTRIES
WORKERS_MAX = 8
_FORKED: tuple[list[bytes], bytes, str, int] | None = None  # inherited by forked workers


def _chunk_spans(start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    a = start
    while a < end:
        b = min(end, (a // CHUNK_ENTRIES + 1) * CHUNK_ENTRIES)
        spans.append((a, b))
        a = b
    return spans


def _chunk_ok_fast(part: list[bytes], peer: str, a: int) -> tuple[int, int] | None:
    """The checks of :func:`decode_entry` plus seq and time order, done column
    by column (C-level loops, each distinct key set, peer id and artifact ref
    checked once): ~3x faster than entry by entry. Returns (first time, last
    time) if every entry passes, None if any fails; the caller then finds the
    first failure entry by entry. It must never pass what decode_entry fails.
    """
    if not part:
        return (-1, -1)
    if max(map(len, part)) > ENTRY_MAX_BYTES:
        return None
    try:
        # plain unpackb (C, no keyword arguments): ext types decode to objects
        # that the type checks below reject, as max_ext_len=0 would
        objs = list(map(msgpack.unpackb, part))
    except Exception:  # msgpack raises several types; the slow path names it
        return None
    if set(map(type, objs)) != {list} or set(map(len, objs)) != {5}:
        return None
    seqs = [o[0] for o in objs]
    if set(map(type, seqs)) != {int} or seqs != list(range(a, a + len(part))):
        return None
    times = [o[1] for o in objs]
    if set(map(type, times)) != {int} or times[0] < 0 or times != sorted(times):
        return None
    if {o[3] for o in objs} != {peer}:
        return None
    by_kind: dict[Any, list[Any]] = {}
    for o in objs:
        by_kind.setdefault(o[2], []).append(o[4])
    for kind, datas in by_kind.items():
        if type(kind) is not str or kind not in _kinds.KINDS:
            return None
        if set(map(type, datas)) != {dict}:
            return None
        fields = _kinds.KINDS[kind]
        exact, preds = _kinds._COMPILED[kind]
        exact_of = dict(exact)
        pred_of = {name: ok for name, _t, ok in preds}
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for d in datas:  # by key set, in encoded order
            groups.setdefault(tuple(d), []).append(d)
        for keys, group in groups.items():
            if set(map(type, keys)) - {str} or list(keys) != sorted(keys) or not all(f in keys for f in fields):
                return None
            for k in keys:  # column by column
                col = [d[k] for d in group]
                types = set(map(type, col))
                want = exact_of.get(k)
                if want is not None and types != {want}:
                    return None
                ok = pred_of.get(k)
                if ok is not None:
                    try:
                        distinct = set(col)
                    except TypeError:  # unhashable where a peer id or ref belongs
                        return None
                    if not all(map(ok, distinct)):
                        return None
                if not types <= _SCALARS:  # maps, lists, floats: the full check
                    if not all(_plain_ok(v, 2) for v in col if type(v) not in _SCALARS):
                        return None
        if kind == _kinds.JOB_FINISHED and any(_kinds.check_data(kind, d) for d in datas):
            return None
    pack = msgpack.Packer().pack  # one Packer for the chunk: msgpack.packb makes one per call
    if list(map(pack, objs)) != part:
        return None
    return times[0], times[-1]


def _check_chunk(entries: list[bytes], leaves: bytes, peer: str, start: int, a: int, b: int) -> tuple[Any, ...]:
    """Check entries ``[a, b)`` (seq numbers; the list starts at ``start``)."""
    problem = None
    part = entries[a - start : b - start]
    fast = _chunk_ok_fast(part, peer, a)
    if fast is not None:
        first_t, last_t = fast
        part_slow: list[bytes] = []
    else:
        first_t = last_t = -1
        part_slow = part
    prev = 0
    for j, raw in enumerate(part_slow):
        try:
            e = decode_entry(raw, peer)
        except EntryError as exc:
            problem = (a + j, str(exc))
            break
        if e.seq != a + j:
            problem = (a + j, f"seq is {e.seq}, expected {a + j}")
            break
        if e.time_ms < prev:
            problem = (a + j, "time goes backwards")
            break
        if first_t < 0:
            first_t = e.time_ms
        prev = last_t = e.time_ms
    if fast is None and problem is None:  # cannot happen: the fast checks are a subset
        problem = (a, "failed a check (internal: the fast and slow entry checks disagree)")
    hashes = merkle.leaf_hashes(part)
    joined = b"".join(hashes)
    leaves_match = joined == leaves[(a - start) * 32 : (b - start) * 32]
    if b - a == CHUNK_ENTRIES:  # aligned and complete: a subtree of the final tree
        node: Any = merkle.root_from_leaf_hashes(hashes)
    else:
        node = joined
    return problem, first_t, last_t, leaves_match, node


def _check_chunk_forked(span: tuple[int, int]) -> tuple[Any, ...]:
    assert _FORKED is not None
    entries, leaves, peer, start = _FORKED
    return _check_chunk(entries, leaves, peer, start, span[0], span[1])


def _run_chunks(entries: list[bytes], leaves: bytes, peer: str, start: int, workers: int) -> list[tuple[Any, ...]]:
    spans = _chunk_spans(start, start + len(entries))
    if workers > 1 and len(spans) > 1:
        global _FORKED
        import concurrent.futures
        import multiprocessing

        _FORKED = (entries, leaves, peer, start)
        try:
            ctx = multiprocessing.get_context("fork")
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(spans)), mp_context=ctx) as pool:
                return list(pool.map(_check_chunk_forked, spans))
        except (OSError, ValueError, concurrent.futures.process.BrokenProcessPool):
            pass  # no processes to be had: do it here
        finally:
            _FORKED = None
    return [_check_chunk(entries, leaves, peer, start, a, b) for a, b in spans]


def _verify_range(
    origin: str,
    peer: str,
    cp: Checkpoint,
    start: int,
    since_root: bytes,
    prefix_blob: bytes,
    leaves_blob: bytes,
    entries: list[bytes],
    ck: _Checker,
    workers: int,
) -> None:
    where = f"log {origin}"
    n = len(entries)
    if start + n != cp.size:
        raise ck.fail(where, f"{n} entries from seq {start} do not reach the checkpoint size {cp.size}", origin)
    prefix = _hashes(prefix_blob, f"{where} prefix", ck)
    if len(prefix) != bin(start).count("1"):
        raise ck.fail(f"{where} prefix", f"a compact range of {start} leaves has {bin(start).count('1')} hashes", origin)
    if start and merkle.root_from_compact_range(start, prefix, []) != since_root:
        raise ck.fail(f"{where} prefix", "does not rebuild the previous checkpoint's root", origin)
    if len(leaves_blob) != 32 * n:
        raise ck.fail(f"{where} leaves", f"expected {n} leaf hashes", origin)
    results = _run_chunks(entries, leaves_blob, peer, start, workers if n >= PARALLEL_MIN_ENTRIES else 1)
    # merge: the first structural problem, time order across chunks, the root
    bad_structure = None
    prev_t = 0
    cr = merkle.CompactRange(start, prefix)
    leaves_match = True
    for (a, _b), (problem, first_t, last_t, match, node) in zip(_chunk_spans(start, cp.size), results):
        if bad_structure is None:
            if problem is not None and (first_t < 0 or first_t >= prev_t):
                bad_structure = problem
            elif first_t >= 0 and first_t < prev_t:
                bad_structure = (a, "time goes backwards")
            if last_t >= 0:
                prev_t = last_t
        leaves_match = leaves_match and match
        if len(node) == 32 and _b - a == CHUNK_ENTRIES:
            cr.append_subtree(CHUNK_HEIGHT, node)
        else:
            for k in range(0, len(node), 32):
                cr.append_leaf_hash(node[k : k + 32])
    root = cr.root()
    bad_hash = None
    if root != cp.root or not leaves_match:
        # the slow path, only for a bad bundle: name the entry that differs
        computed = merkle.leaf_hashes(entries)
        listed = merkle.split_hashes(leaves_blob)
        listed_ok = merkle.root_from_compact_range(start, prefix, listed) == cp.root
        first_diff = next((j for j in range(n) if computed[j] != listed[j]), None)
        if listed_ok and first_diff is not None:
            bad_hash = (start + first_diff, "its bytes do not hash to the leaf the signed tree holds (the entry was altered)")
        elif root == cp.root:
            ck.add(f"{where} leaves", "the leaf hash index was altered (the entries themselves match the signed root)", origin)
        else:
            ck.add(
                where,
                f"entries {start}..{cp.size - 1} do not rebuild the signed root, and the leaf index was altered too, "
                "so the bad entry cannot be named",
                origin,
            )
    # the earlier of the two; at the same entry the structural reason says more
    first = bad_structure if bad_hash is None or (bad_structure is not None and bad_structure[0] <= bad_hash[0]) else bad_hash
    if first is not None:
        seq, why = first
        ck.add(f"{where} entry {seq}", why, origin, seq)


def _verify_sparse(
    origin: str,
    peer: str,
    cp: Checkpoint,
    start: int,
    entries: list[bytes],
    proofs: list[bytes],
    job: str | None,
    ck: _Checker,
    job_entries: list[tuple[str, Entry]],
) -> None:
    where = f"log {origin}"
    if len(proofs) != len(entries):
        raise ck.fail(where, f"{len(entries)} entries but {len(proofs)} inclusion proofs", origin)
    prev_seq = start - 1
    prev_time = 0
    for raw, proof_blob in zip(entries, proofs):
        try:
            e = decode_entry(raw, peer)
        except EntryError as exc:
            raise ck.fail(f"{where} entry after seq {prev_seq}", str(exc), origin, prev_seq + 1) from None
        ew = f"{where} entry {e.seq}"
        if e.seq <= prev_seq:
            raise ck.fail(ew, f"out of order (after seq {prev_seq})", origin, e.seq)
        if e.seq >= cp.size:
            raise ck.fail(ew, f"beyond the checkpoint size {cp.size}", origin, e.seq)
        if e.time_ms < prev_time:
            raise ck.fail(ew, "time goes backwards", origin, e.seq)
        if e.job != job:
            raise ck.fail(ew, f"not an entry of job {job!r}", origin, e.seq)
        proof = _hashes(proof_blob, f"{ew} proof", ck)
        if not merkle.verify_inclusion(merkle.leaf_hash(raw), e.seq, cp.size, proof, cp.root):
            raise ck.fail(ew, "its inclusion proof does not lead to the signed root (entry or proof altered)", origin, e.seq)
        prev_seq, prev_time = e.seq, e.time_ms
        job_entries.append((origin, e))
