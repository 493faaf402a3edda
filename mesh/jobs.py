"""The job service: submissions in, tasks run through ONNX Runtime, results out.

This is the daemon-side glue between the placement core (sans-IO: custody,
bidding, awards), the blob service (artifacts move peer to peer) and the
runtime (:func:`arcnet.runtime.runners.run_job`).

**A job is content-addressed.** ``submit`` stores the job's inputs and a
*job document* (kind, model id, parameters, which input artifact is which)
as artifacts on the entry peer, and hands placement a
:class:`~arcnet.placement.messages.JobSpec` that names them. Whichever peer
wins the job fetches the document, the inputs and the model from whoever
holds them (each chunk verified), runs it, stores the outputs as a new
artifact, and reports its id. A re-placed job runs again elsewhere: the
output is content-addressed, so a duplicate run is harmless.

**The model catalog** lives on a directory of R peers chosen by rendezvous
hashing of the key ``catalog`` over the alive members (like the artifact
directory): ``model.publish`` stores the ONNX bytes as an artifact, signs a
catalog entry and registers it with those peers; ``model.ls`` and model
resolution at submit time ask them and merge what they answer. No peer is
special: when one leaves, the next in hash order takes its place and the
publishers' periodic re-registration refills it.

Control methods: ``submit``, ``jobs``, ``job.show``, ``result``,
``job.rerun``, ``model.publish``, ``model.ls``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio

from arcnet.gossip.stack import gossip_of
from arcnet.placement.core import PlacementCore, submit_event
from arcnet.placement.messages import ArtifactRef, Constraints, JobSpec, SpecEnvelope, Step
from arcnet.runtime.catalog import Catalog, CatalogError, describe, entry_from_bytes, entry_to_bytes, sign_meta
from arcnet.runtime.executor import Executor, ExecutorConfig
from arcnet.runtime.manifest import RunManifest, rerun
from arcnet.runtime.runners import Job, JobError, RunContext, run_job
from arcnet.blobstore.store import StoreError
from arcnet.runtime.store import content_id

from .core import Emit
from .peer import PeerContext, PeerDaemon, Service
from .wire import WireError, encode

__all__ = ["JobService"]

log = logging.getLogger("arcnet.jobs")

INLINE_MAX_BYTES = 900 * 1024  # inline bytes in one control request or reply
CATALOG_REPLICAS = 3
JOB_KINDS = ("online", "batch", "finetune", "workflow")
EVENTS_PER_JOB_MAX = 64
JOBS_TRACKED_MAX = 10_000


def _hrw_top(key: str, peers: list[str], r: int) -> list[str]:
    """The top-``r`` peers by rendezvous hash of ``key`` (deterministic for a membership view)."""
    def score(p: str) -> bytes:
        return hashlib.blake2b(f"{key}\0{p}".encode(), digest_size=8).digest()

    return sorted(peers, key=score, reverse=True)[:r]


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return msgpack.unpackb(msgpack.packb(data, use_bin_type=True, default=str), raw=False)


@dataclass
class _Tracked:
    job_id: str
    kind: str
    cls: str
    submitted_s: float
    state: str = "submitted"
    events: list[dict[str, Any]] = field(default_factory=list)
    output: str = ""
    attempts: int = 0
    executor: str = ""
    reasons: list[str] = field(default_factory=list)  # each failed attempt's error, oldest first
    error: str = ""  # why the job failed (the last attempt's error once custodians gave up)
    manifest: dict[str, Any] | None = None
    epochs: list[int] = field(default_factory=list)


class _BlobModels:
    """The runtime's ModelStore over this peer's blob store (model id -> artifact)."""

    def __init__(self, svc: "JobService"):
        self.svc = svc

    def __contains__(self, model_id: str) -> bool:
        """Held here, complete (the router prefers models a peer already has)."""
        aid = self.svc.model_artifacts.get(model_id)
        if aid is None:
            return False
        try:
            return bool(self.svc.blobs.store.is_complete(bytes.fromhex(aid)))
        except StoreError:
            return False

    def get(self, model_id: str) -> bytes:
        aid = self.svc.model_artifacts.get(model_id)
        if aid is None:
            raise KeyError(model_id)
        try:
            data = b"".join(self.svc.blobs.store.read_artifact(bytes.fromhex(aid)))
        except StoreError:  # known to the catalog, not (wholly) held here
            raise KeyError(model_id) from None
        if content_id(data) != model_id:
            raise KeyError(model_id)
        return data


class JobService(Service):
    name = "jobs"

    def __init__(self, node: Any, ctx: PeerContext, placement: PlacementCore, blobs: Any, *,
                 slots: int = 2, threads: int = 1):
        self.node = node
        self.ctx = ctx
        self.me = ctx.identity.peer_id
        self.placement = placement
        self.blobs = blobs
        self.g = gossip_of(node)
        self.executor = Executor(ExecutorConfig(intra_op_threads=threads))
        self.catalog = Catalog()
        self.model_artifacts: dict[str, str] = {}  # runtime model id -> artifact id (hex)
        self.directory: dict[str, tuple[bytes, str]] = {}  # (name@version) -> (entry bytes, artifact hex)
        self.jobs: dict[str, _Tracked] = {}
        self.limiter = trio.CapacityLimiter(slots)
        self.running: dict[tuple[str, int], trio.CancelScope] = {}
        self._status_waiters: dict[str, list[trio.Event]] = {}
        self._status_answers: dict[str, dict[str, Any]] = {}
        self._published: list[tuple[bytes, str]] = []  # this peer's catalog entries, re-registered
        self._send, self._recv = trio.open_memory_channel[dict[str, Any]](1024)
        self.counters = {"submitted": 0, "tasks_run": 0, "tasks_ok": 0, "tasks_failed": 0, "tasks_cancelled": 0,
                         "catalog_entries": 0, "results_served": 0}

    # -- wiring ----------------------------------------------------------

    def attach(self, daemon: PeerDaemon) -> None:
        from .transport import request_protocol

        self.daemon = daemon
        for name, fn in (("submit", self._ctl_submit), ("jobs", self._ctl_jobs), ("job.show", self._ctl_show),
                         ("result", self._ctl_result), ("job.rerun", self._ctl_rerun),
                         ("model.publish", self._ctl_publish), ("model.ls", self._ctl_model_ls)):
            daemon.register_control(name, fn)
        daemon.transport.set_request_handler(request_protocol("catalog"), self._handle_catalog)
        daemon.on_event("task.run", self._on_task_run)
        daemon.on_event("task.cancel", self._on_task_cancel)
        daemon.on_event("job.status", self._on_job_status)
        daemon.on_event("*", self._track)

    async def run(self, daemon: PeerDaemon) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._republish_loop)
            async for task in self._recv:
                nursery.start_soon(self._run_task, task)

    def statistics(self) -> dict[str, float]:
        s: dict[str, float] = dict(self.counters)
        s["running"] = len(self.running)
        s["provider_cuda"] = 1 if "CUDA" in str(self.executor.statistics().get("provider", "")) else 0
        return s

    # -- tracking job events (for `jobs` and `job show`) ------------------

    def _track(self, now: float, ev: Emit) -> None:
        if not (ev.kind.startswith("job.") or ev.kind.startswith("task.")):
            return
        job_id = ev.data.get("job")
        if not job_id:
            task = str(ev.data.get("task", ""))
            job_id = task.split("/", 1)[0] if task else ""
        t = self.jobs.get(job_id)
        if t is None:
            return
        rec = {"t": round(time.time(), 3), "event": ev.kind}
        rec.update({k: v for k, v in ev.data.items() if k not in ("spec", "manifest")})
        t.events.append(_plain(rec))
        del t.events[:-EVENTS_PER_JOB_MAX]
        k = ev.kind
        if ev.data.get("executor"):
            t.executor = str(ev.data["executor"])
        epoch = ev.data.get("epoch")
        if k in ("job.bid_won", "job.placed") and epoch is not None and epoch not in t.epochs:
            t.epochs.append(epoch)
            t.attempts = len(t.epochs)
        if k in ("job.bid_won", "job.placed"):
            t.state = "placed"
        elif k in ("job.started",):
            t.state = "running"
        elif k == "job.done":
            t.state = "done"
            t.output = str(ev.data.get("output", ""))
        elif k in ("job.failed", "job.rejected"):
            t.state = "failed"
            t.error = str(ev.data.get("error") or ev.data.get("reason") or "failed")[:200]
        elif k == "job.task_failed":
            t.reasons.append(str(ev.data.get("reason", ""))[:200])
            del t.reasons[:-16]
            if t.state not in ("done", "failed"):
                t.state = "re-placing"
        elif k == "job.waiting" and t.state == "submitted":
            t.state = "waiting"
        elif k == "task.replaced":
            t.state = "re-placing"

    def _on_job_status(self, now: float, ev: Emit) -> None:
        job_id = str(ev.data.get("job", ""))
        self._status_answers[job_id] = _plain(dict(ev.data))
        for e in self._status_waiters.pop(job_id, []):
            e.set()

    # -- submission ------------------------------------------------------

    async def _ctl_submit(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        from .control import ControlError

        kind = args.get("kind", "online")
        if kind not in JOB_KINDS:
            raise ControlError("bad_request", f"kind must be one of {', '.join(JOB_KINDS)}")
        cls = args.get("class") or {"online": "online", "batch": "batch", "finetune": "finetune",
                                     "workflow": "workflow"}[kind]
        project = str(args.get("project", "public"))
        params = args.get("params") or {}
        inputs = args.get("inputs") or {}
        if not isinstance(params, dict) or not isinstance(inputs, dict):
            raise ControlError("bad_request", "params and inputs must be maps")
        model_ref = str(args.get("model", ""))
        models: dict[str, str] = {}
        model_id = ""
        if model_ref:
            model_id, aid = await self.resolve_model(model_ref)
            models[model_id] = aid
        elif kind != "workflow":
            raise ControlError("bad_request", "a model is required (name, name@version or model id)")
        for step in (params.get("spec") or {}).get("steps", []) if kind == "workflow" else []:
            ref = step.get("model") if isinstance(step, dict) else None
            if ref and str(ref).startswith("task:"):
                # routed on the executor among every model of that task: ship them all
                await self.catalog_entries()
                for e in self.catalog.entries(str(ref)[5:]):
                    aid = self.model_artifacts.get(e.meta.model_id)
                    if aid:
                        models[e.meta.model_id] = aid
            elif ref:
                mid, aid = await self.resolve_model(str(ref))
                models[mid] = aid
        input_refs: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for name, value in sorted(inputs.items()):
            if isinstance(value, str) and value.startswith("artifact:"):
                aid = value.split(":", 1)[1]
                m = await self.blobs.fetch(aid)
                input_refs[name] = aid
                sizes[aid] = m.body.total_size
            elif isinstance(value, (bytes, bytearray)):
                aid, m = await self.blobs.put_bytes(bytes(value), name=f"input:{name}", project=project or "default")
                input_refs[name] = aid.hex()
                sizes[aid.hex()] = m.body.total_size
            else:
                raise ControlError("bad_request", f"input {name!r}: expected bytes or 'artifact:<id>'")
        nonce = secrets.token_hex(8)
        # the catalog entries travel with the job: the executor learns names, versions and
        # signatures without asking the directory (each entry is verified again there)
        entries = [entry_to_bytes(e) for e in (self.catalog.by_id(mid) for mid in sorted(models)) if e is not None]
        doc = {"v": 1, "kind": kind, "model": model_id, "params": params, "inputs": input_refs, "models": models,
               "catalog": entries,
               "project": project, "submitter": client, "gpu_strict": bool(args.get("gpu_strict", False)),
               "nonce": nonce}
        doc_bytes = msgpack.packb(doc, use_bin_type=True)
        job_id = "j-" + hashlib.blake2b(doc_bytes, digest_size=8).hexdigest()
        doc_aid, doc_m = await self.blobs.put_bytes(doc_bytes, name=f"jobdoc:{job_id}", project=project or "default")
        model_refs = []
        for mid, aid in sorted(models.items()):
            size = (await self.blobs.fetch(aid)).body.total_size
            model_refs.append(ArtifactRef(aid, size))
        data_refs = [ArtifactRef(doc_aid.hex(), doc_m.body.total_size)] + [
            ArtifactRef(a, sizes[a]) for a in sorted(set(input_refs.values()))]
        spec = JobSpec(
            job_id, cls, project[:64], client[:64], self.ctx.config.region,
            model_refs,
            data_refs,
            int(args.get("slots", 1)), float(args.get("run_s", 5.0)), float(args.get("deadline_s", 0.0)),
            float(args.get("latency_budget_s", 0.0)),
            Constraints([str(r) for r in args.get("regions", [])], [str(c) for c in args.get("capabilities", [])],
                        "site", 0.0),
            # the runtime runs a workflow's whole DAG in one run on one site (an agent loop
            # keeps its state local), so placement sees one step
            [Step("main", [], (data_refs + model_refs)[:32], int(args.get("slots", 1)), float(args.get("run_s", 5.0)),
                  "agent")]
            if cls == "workflow" else [],
        )
        authz = getattr(self.daemon, "authz", None)
        if authz is not None:  # the project's policy: allowed models, datasets and regions (residency)
            spec.constraints.regions = list(authz.check_submit(project, spec))
        try:
            SpecEnvelope(spec).validate()
        except WireError as exc:
            raise ControlError("bad_request", f"job spec: {exc}") from None
        if len(self.jobs) >= JOBS_TRACKED_MAX:
            del self.jobs[next(iter(self.jobs))]
        self.jobs[job_id] = _Tracked(job_id, kind, cls, time.time())
        self.counters["submitted"] += 1
        log.info("job %s (%s, model %s) submitted by %s", job_id, kind, model_ref or "-", client[-8:])
        self.daemon.inject(submit_event(spec))
        return {"job_id": job_id, "entry": self.me}

    # -- execution -------------------------------------------------------

    def _on_task_run(self, now: float, ev: Emit) -> None:
        try:
            self._send.send_nowait(dict(ev.data))
        except trio.WouldBlock:
            log.error("task queue full; refusing %s", ev.data.get("task"))
            self.daemon.inject(Emit("task.finished", {"task": ev.data.get("task"), "epoch": ev.data.get("epoch"),
                                                      "ok": False, "lost": True, "output": "",
                                                      "reason": "runtime queue full"}))

    def _on_task_cancel(self, now: float, ev: Emit) -> None:
        scope = self.running.get((str(ev.data.get("task")), int(ev.data.get("epoch", -1))))
        if scope is not None:
            self.counters["tasks_cancelled"] += 1
            scope.cancel()

    async def _run_task(self, task: dict[str, Any]) -> None:
        key = (str(task["task"]), int(task["epoch"]))
        job_id = str(task.get("job", ""))
        ok, output, reason, manifest = False, "", "", None
        with trio.CancelScope() as scope:
            self.running[key] = scope
            try:
                self.counters["tasks_run"] += 1
                async with self.limiter:
                    output, manifest = await self._execute(job_id, task)
                ok = True
            except (JobError, CatalogError, KeyError, ValueError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"[:200]
                log.warning("task %s failed: %s", key[0], reason)
            except Exception as exc:  # noqa: BLE001 - any failure fails the task, never the peer
                reason = f"{type(exc).__name__}: {exc}"[:200]
                log.exception("task %s failed", key[0])
            finally:
                self.running.pop(key, None)
        if scope.cancelled_caught:
            return  # cancelled by its custodians: nothing to report
        self.counters["tasks_ok" if ok else "tasks_failed"] += 1
        data: dict[str, Any] = {"job": job_id, "task": key[0], "epoch": key[1], "ok": ok, "output": output,
                                "reason": reason}
        if manifest is not None:
            data["manifest"] = manifest
        self.daemon.inject(Emit("task.finished", data))

    async def _execute(self, job_id: str, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        hints = [p for p in (task.get("entry"), *task.get("custodians", [])) if p]
        doc = None
        for cid, _size in task.get("artifacts", []):
            m = await self.blobs.fetch(cid, hints, pin=f"job:{job_id}")
            if m.body.name.startswith("jobdoc:"):
                doc = msgpack.unpackb(await self._read(cid), raw=False)
        if doc is None:
            raise JobError("the task names no job document")
        for mid, aid in doc.get("models", {}).items():
            self.model_artifacts[mid] = aid
        for e in doc.get("catalog", []):
            entry = entry_from_bytes(e)
            aid = doc.get("models", {}).get(entry.meta.model_id)
            if aid:
                self._remember(e, aid)
        inputs = {name: await self._read(aid) for name, aid in doc.get("inputs", {}).items()}
        job = Job(doc["kind"], doc.get("model", ""), doc.get("params", {}), job_id, doc.get("submitter", ""),
                  bool(doc.get("gpu_strict", False)))
        ctx = RunContext(self.executor, _BlobModels(self), self.catalog, self.me, self.ctx.identity,
                         doc.get("project", "public"))
        result = await trio.to_thread.run_sync(lambda: run_job(ctx, job, inputs))
        out_bytes = msgpack.packb({"outputs": result.outputs, "manifest": result.manifest.to_bytes()},
                                  use_bin_type=True)
        aid, _m = await self.blobs.put_bytes(out_bytes, name=f"output:{job_id}", project=doc.get("project") or "default")
        if job.kind == "finetune":
            await self._publish_finetuned(ctx, result)
        plain = result.manifest.to_plain()
        log.info("job %s ran here in %.0f ms (provider %s): output %s", job_id,
                 plain.get("timings_ms", {}).get("total", 0.0), plain.get("provider", "?"), aid.hex()[:16])
        return aid.hex(), plain

    async def _publish_finetuned(self, ctx: RunContext, result: Any) -> None:
        """A fine-tune's new model becomes a catalog version whose lineage names its parent."""
        from arcnet.runtime.runners import finetune_entry

        entry = finetune_entry(ctx, result, published_s=int(time.time()))
        m = entry.meta
        aid, _ = await self.blobs.put_bytes(result.outputs["model"], name=f"model:{m.name}@{m.version}", kind="model")
        entry_bytes = entry_to_bytes(entry)
        self._remember(entry_bytes, aid.hex())
        self._published.append((entry_bytes, aid.hex()))
        await self._register(entry_bytes, aid.hex())
        log.info("fine-tuned model %s@%s published (parent %s)", m.name, m.version, m.parent_id[:20])

    async def _read(self, aid: str) -> bytes:
        return await trio.to_thread.run_sync(lambda: b"".join(self.blobs.store.read_artifact(bytes.fromhex(aid))))

    # -- status and results ----------------------------------------------

    async def job_status(self, job_id: str, timeout_s: float = 3.0) -> dict[str, Any] | None:
        st = self.placement.status(job_id)
        if st is not None:
            return _plain(st)
        ev = trio.Event()
        self._status_waiters.setdefault(job_id, []).append(ev)
        self.daemon.inject(Emit("placement.query", {"job": job_id}))
        with trio.move_on_after(timeout_s):
            await ev.wait()
        return self._status_answers.pop(job_id, None)

    async def _ctl_jobs(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        rows = []
        for t in list(self.jobs.values())[-int(args.get("limit", 100)):]:
            rows.append({"job_id": t.job_id, "kind": t.kind, "class": t.cls, "state": t.state,
                         "executor": t.executor, "attempts": t.attempts, "output": t.output, "error": t.error,
                         "submitted_s": round(t.submitted_s, 3)})
        return {"jobs": rows}

    async def _ctl_show(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        from .control import ControlError

        job_id = str(args.get("job_id", ""))
        st = await self.job_status(job_id)
        t = self.jobs.get(job_id)
        if st is None and t is None:
            raise ControlError("not_found", f"no job {job_id!r} known to this peer or its custodians")
        out: dict[str, Any] = {"job_id": job_id, "custody": st or {}}
        if st and st.get("state"):
            out["state"] = st["state"]  # custody's word, when this peer did not track the job
        if st and st.get("error"):
            out["error"] = st["error"]
        if t is not None:
            if t.state in ("done", "failed") or out.get("state") not in ("done", "failed"):
                out["state"] = t.state  # this peer's event log, unless only custody knows it finished
            out.update({"kind": t.kind, "class": t.cls, "attempts": t.attempts,
                        "executor": t.executor, "output": t.output, "events": t.events,
                        "failures": list(t.reasons)})
            if t.error:
                out["error"] = t.error
            won = [e for e in t.events if e["event"] == "job.bid_won"]
            if won:
                out["placement"] = won[-1]
        return out

    async def _ctl_result(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        from .control import ControlError

        job_id = str(args.get("job_id", ""))
        st = await self.job_status(job_id)
        output = (st or {}).get("output") or (self.jobs[job_id].output if job_id in self.jobs else "")
        if not output:
            state = (st or {}).get("state") or (self.jobs[job_id].state if job_id in self.jobs else "unknown")
            error = (st or {}).get("error") or (self.jobs[job_id].error if job_id in self.jobs else "")
            if state == "failed":
                raise ControlError("unavailable", f"job {job_id} failed: {error or 'no reason given'}")
            raise ControlError("unavailable", f"job {job_id} has no result yet (state: {state})")
        await self.blobs.fetch(output, [(st or {}).get("executor", "")] if st and st.get("executor") else [])
        blob = await self._read(output)
        doc = msgpack.unpackb(blob, raw=False)
        self.counters["results_served"] += 1
        if len(blob) > INLINE_MAX_BYTES and args.get("path"):
            with open(args["path"], "wb") as f:
                f.write(blob)
            return {"job_id": job_id, "output": output, "path": args["path"], "bytes": len(blob)}
        if len(blob) > INLINE_MAX_BYTES:
            raise ControlError("refused", f"result is {len(blob)} bytes; fetch artifact {output} with `arcnet blob get`")
        return {"job_id": job_id, "output": output, "outputs": doc["outputs"],
                "manifest": RunManifest.from_bytes(doc["manifest"]).to_plain()}

    async def _ctl_rerun(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        """Re-run a finished job here from its run manifest and check the outputs bit for bit."""
        from .control import ControlError

        job_id = str(args.get("job_id", ""))
        res = await self._ctl_result(client, {"job_id": job_id})
        blob = await self._read(res["output"])
        doc = msgpack.unpackb(blob, raw=False)
        manifest = RunManifest.from_bytes(doc["manifest"])
        plain = manifest.to_plain()
        inputs_by_name = self._jobdoc_inputs(job_id)  # also learns the job's model artifacts
        for mid in {plain.get("model", "")} | {s.get("model", "") for s in plain.get("steps", [])}:
            if mid and mid not in self.model_artifacts:
                raise ControlError("unavailable", f"model {mid} of this job is not known here")
            if mid:
                await self.blobs.fetch(self.model_artifacts[mid])
        jobdoc_inputs = {n: await self._read(a) for n, a in inputs_by_name.items()}
        report = await trio.to_thread.run_sync(lambda: rerun(manifest, jobdoc_inputs, _BlobModels(self)))
        # compared twice: by the manifest's recorded output hashes, and byte for byte
        # with the stored outputs of the original run
        same = {n: report.outputs.get(n) == doc["outputs"].get(n) for n in doc["outputs"]}
        return {"job_id": job_id, "identical": report.matches and all(same.values()), "outputs": same,
                "mismatched": list(report.mismatched)}

    def _jobdoc_inputs(self, job_id: str) -> dict[str, str]:
        for row in self.blobs.store.list_artifacts():
            if getattr(row, "name", "") == f"jobdoc:{job_id}":
                doc = msgpack.unpackb(b"".join(self.blobs.store.read_artifact(row.id)), raw=False)
                for mid, aid in doc.get("models", {}).items():
                    self.model_artifacts[mid] = aid
                return dict(doc.get("inputs", {}))
        return {}

    # -- model catalog on a hashed directory ------------------------------

    def _catalog_peers(self) -> list[str]:
        peers = sorted(set(self.g.members.alive_peers()) | {self.me})
        return _hrw_top("catalog", peers, CATALOG_REPLICAS)

    async def _ctl_publish(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        from .control import ControlError

        model = args.get("model")
        if not isinstance(model, (bytes, bytearray)):
            raise ControlError("bad_request", "model: expected the ONNX bytes")
        model = bytes(model)
        name, version, task = str(args.get("name", "")), str(args.get("version", "1")), str(args.get("task", ""))
        if not name or not task:
            raise ControlError("bad_request", "name and task are required")
        model_id = content_id(model)
        try:
            meta = describe(model, name=name, version=version, task=task, model_id=model_id,
                            publisher=self.me, published_s=int(time.time()), project=str(args.get("project", "public")),
                            parent_id=str(args.get("parent", "")),
                            scores={k: float(v) for k, v in (args.get("scores") or {}).items()})
        except CatalogError as exc:
            raise ControlError("bad_request", str(exc)) from None
        entry = sign_meta(meta, self.ctx.identity)
        aid, _m = await self.blobs.put_bytes(model, name=f"model:{name}@{version}", kind="model",
                                             policy=str(args.get("policy", "cache")))
        entry_bytes = entry_to_bytes(entry)
        self._remember(entry_bytes, aid.hex())
        self._published.append((entry_bytes, aid.hex()))
        stored = await self._register(entry_bytes, aid.hex())
        log.info("model %s@%s published: %s (artifact %s), catalog on %d peers", name, version, model_id[:20],
                 aid.hex()[:16], stored)
        return {"model_id": model_id, "artifact": aid.hex(), "name": name, "version": version,
                "catalog_peers": stored}

    def _remember(self, entry_bytes: bytes, aid: str) -> None:
        entry = entry_from_bytes(entry_bytes)  # verifies the signature
        key = f"{entry.meta.name}@{entry.meta.version}"
        self.catalog.add(entry)
        self.directory.setdefault(key, (entry_bytes, aid))
        self.model_artifacts[entry.meta.model_id] = aid
        self.counters["catalog_entries"] = len(self.directory)

    async def _register(self, entry_bytes: bytes, aid: str) -> int:
        from .transport import TransportError, request_protocol

        req = msgpack.packb({"op": "put", "entry": entry_bytes, "artifact": aid}, use_bin_type=True)
        stored = 0
        for p in self._catalog_peers():
            if p == self.me:
                stored += 1
                continue
            try:
                await self.daemon.transport.request(p, request_protocol("catalog"), req, timeout_s=5)
                stored += 1
            except TransportError as exc:
                log.info("catalog peer %s unreachable: %s", p[-8:], exc)
        return stored

    async def _republish_loop(self) -> None:
        """Re-register this peer's models now and then: directory peers change with membership."""
        while True:
            await trio.sleep(30)
            self._published = self._published[-1000:]
            for entry_bytes, aid in list(self._published):
                await self._register(entry_bytes, aid)

    async def _handle_catalog(self, peer: str, payload: bytes) -> bytes:
        try:
            req = msgpack.unpackb(payload, raw=False, max_ext_len=0)
            op = req.get("op") if isinstance(req, dict) else None
        except Exception:  # noqa: BLE001 - malformed request: answer with an error
            op = None
        if op == "put":
            try:
                self._remember(bytes(req["entry"]), str(req["artifact"]))
            except (CatalogError, WireError, KeyError, TypeError, ValueError) as exc:
                return msgpack.packb({"ok": False, "error": str(exc)[:200]})
            return msgpack.packb({"ok": True})
        if op == "list":
            return msgpack.packb({"ok": True, "entries": [[e, a] for e, a in self.directory.values()]},
                                 use_bin_type=True)
        return msgpack.packb({"ok": False, "error": "unknown catalog request"})

    async def catalog_entries(self) -> list[tuple[bytes, str]]:
        from .transport import TransportError, request_protocol

        seen: dict[str, tuple[bytes, str]] = dict(self.directory)
        req = msgpack.packb({"op": "list"})
        for p in self._catalog_peers():
            if p == self.me:
                continue
            try:
                raw = await self.daemon.transport.request(p, request_protocol("catalog"), req, timeout_s=5)
                res = msgpack.unpackb(raw, raw=False)
            except (TransportError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
                continue
            for e, a in res.get("entries", []) if isinstance(res, dict) else []:
                try:
                    self._remember(bytes(e), str(a))
                except (CatalogError, WireError, ValueError):
                    continue
        seen.update(self.directory)
        return list(seen.values())

    async def resolve_model(self, ref: str) -> tuple[str, str]:
        """A model reference (id, name@version, name) -> (model id, artifact id hex)."""
        from .control import ControlError

        await self.catalog_entries()
        entry = self.catalog.resolve(ref)
        if entry is None:
            raise ControlError("not_found", f"model {ref!r} is not in the catalog (see `arcnet model ls`)")
        mid = entry.meta.model_id
        aid = self.model_artifacts.get(mid)
        if aid is None:
            raise ControlError("not_found", f"model {ref!r}: no artifact known for {mid}")
        return mid, aid

    async def _ctl_model_ls(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        entries = await self.catalog_entries()
        rows = []
        for e_bytes, aid in entries:
            m = entry_from_bytes(e_bytes).meta
            if args.get("task") and m.task != args["task"]:
                continue
            rows.append({"name": m.name, "version": m.version, "task": m.task, "model_id": m.model_id,
                         "artifact": aid, "parent": m.parent_id, "publisher": m.publisher[-8:]})
        rows.sort(key=lambda r: (r["name"], r["version"]))
        return {"models": rows}
