"""Workload classes: how each kind of job is cut into tasks and how it is priced.

=========  =============================================================
class      rule
=========  =============================================================
online     one task; latency budget; prefers a warm model near the
           submitter (its region first); never deferred for energy
batch      one task; a deadline; energy-steered, may wait for a window
finetune   one task on one site with the capacity (all slots on one site)
coupled    a gang on one site: one task holding every slot, never split
parallel   one task per input shard, placed independently, gathered
workflow   one task per step, placed when its inputs are done; steps of
           one ``loop`` stay on the site of the previous step if it bids
           within the loop tolerance
=========  =============================================================

A task's rendezvous key is its largest artifact, so the same model or
dataset keeps landing on the same few sites (which therefore cache it).

This module is pure functions over the wire types: custodians recompute a
job's tasks from its spec, so the record carries only task states.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .hashing import Eligibility
from .messages import ARTIFACTS_MAX, CLASSES, ArtifactRef, CustodyRecord, JobSpec, TaskSpec, TaskState

__all__ = [
    "POLICIES",
    "ClassPolicy",
    "SpecError",
    "eligibility",
    "initial_tasks",
    "job_error",
    "job_output",
    "ready_tasks",
    "task_deps",
    "task_spec",
    "validate",
]


class SpecError(ValueError):
    """A job spec that cannot be placed; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    name: str
    #: seconds of completion time one kWh of grid energy is worth (0: energy-blind)
    energy_weight_s_per_kwh: float
    #: may a bidder delay the start to wait for its own energy window
    may_defer: bool
    #: ask peers in the submitter's region first (when k of them are eligible)
    prefer_submitter_region: bool
    #: how the job becomes tasks: "one", "shards", "steps"
    split: str
    #: flexible jobs count toward the surplus-energy figure
    flexible: bool


POLICIES: dict[str, ClassPolicy] = {
    # 12 s per grid kWh: a 100 kW, 10-minute task (17 kWh) may wait up to
    # ~200 s longer to run on surplus instead of grid power.
    "online": ClassPolicy("online", 0.0, False, True, "one", False),
    "batch": ClassPolicy("batch", 12.0, True, False, "one", True),
    "finetune": ClassPolicy("finetune", 6.0, True, False, "one", True),
    "coupled": ClassPolicy("coupled", 6.0, False, False, "one", True),
    "parallel": ClassPolicy("parallel", 12.0, True, False, "shards", True),
    "workflow": ClassPolicy("workflow", 6.0, False, False, "steps", True),
}
assert tuple(POLICIES) == CLASSES

LOOP_TOLERANCE = 0.5  # a loop step stays put if its old site bids within +50% of the best


def validate(spec: JobSpec) -> None:
    """Raise :class:`SpecError` for a spec no peer could run."""
    if spec.cls == "parallel" and not spec.inputs:
        raise SpecError(f"job {spec.job_id}: a parallel job needs one input per shard")
    if spec.cls == "workflow":
        if not spec.steps:
            raise SpecError(f"job {spec.job_id}: a workflow needs at least one step")
        names = [s.name for s in spec.steps]
        if len(set(names)) != len(names):
            raise SpecError(f"job {spec.job_id}: workflow step names must be unique")
        seen: set[str] = set()
        for s in spec.steps:  # steps are listed in an order where deps come first
            for d in s.deps:
                if d not in seen:
                    raise SpecError(f"job {spec.job_id}: step {s.name} depends on {d}, which is not an earlier step")
            if s.slots < 1:
                raise SpecError(f"job {spec.job_id}: step {s.name} needs at least one slot")
            seen.add(s.name)
    elif spec.slots < 1:
        raise SpecError(f"job {spec.job_id}: needs at least one slot")
    if spec.cls != "workflow" and spec.steps:
        raise SpecError(f"job {spec.job_id}: only workflow jobs have steps")


def _key(artifacts: list[ArtifactRef], fallback: str) -> str:
    # the largest artifact (first on ties): the bytes we least want to move
    best = None
    for a in artifacts:
        if best is None or a.size_bytes > best.size_bytes:
            best = a
    return best.cid if best is not None else fallback


def _cap(arts: list[ArtifactRef]) -> list[ArtifactRef]:
    # a task names at most ARTIFACTS_MAX + 1 artifacts: keep the largest (they
    # decide locality); small ones are fetched on demand by the runtime
    if len(arts) <= ARTIFACTS_MAX + 1:
        return arts
    return sorted(arts, key=lambda a: (-a.size_bytes, a.cid))[: ARTIFACTS_MAX + 1]


def task_ids(spec: JobSpec) -> list[str]:
    if spec.cls == "parallel":
        return [f"{spec.job_id}/s{i}" for i in range(len(spec.inputs))]
    if spec.cls == "workflow":
        return [f"{spec.job_id}/{s.name}" for s in spec.steps]
    return [f"{spec.job_id}/main"]


def task_deps(spec: JobSpec, task_id: str) -> list[str]:
    if spec.cls != "workflow":
        return []
    name = task_id.rsplit("/", 1)[1]
    for s in spec.steps:
        if s.name == name:
            return [f"{spec.job_id}/{d}" for d in s.deps]
    raise KeyError(task_id)


def initial_tasks(spec: JobSpec) -> list[TaskState]:
    return [TaskState(t, "pending", 0, None, "", 0.0, [], "") for t in task_ids(spec)]


def task_spec(spec: JobSpec, task_id: str, *, elapsed_s: float = 0.0) -> TaskSpec:
    """The task as bidders see it; ``elapsed_s`` since submission shortens the deadline."""
    deadline = max(1e-3, spec.deadline_s - elapsed_s) if spec.deadline_s > 0 else 0.0
    budget = max(1e-3, spec.latency_budget_s - elapsed_s) if spec.latency_budget_s > 0 else 0.0
    name = task_id.rsplit("/", 1)[1]
    if spec.cls == "workflow":
        for s in spec.steps:
            if s.name == name:
                arts = _cap(list(spec.artifacts) + list(s.artifacts))
                return TaskSpec(task_id, spec.job_id, spec.cls, _key(arts, task_id), arts, s.slots, s.run_s,
                                deadline, budget, spec.submitter_region, spec.constraints, s.loop)
        raise KeyError(task_id)
    if spec.cls == "parallel":
        i = int(name[1:])
        shard = spec.inputs[i]
        arts = list(spec.artifacts) + [shard]
        # the shard's own input is the key: shards spread and follow their data
        return TaskSpec(task_id, spec.job_id, spec.cls, shard.cid, arts, spec.slots, spec.run_s,
                        deadline, budget, spec.submitter_region, spec.constraints, "")
    arts = _cap(list(spec.artifacts) + list(spec.inputs))
    return TaskSpec(task_id, spec.job_id, spec.cls, _key(arts, task_id), arts, spec.slots, spec.run_s,
                    deadline, budget, spec.submitter_region, spec.constraints, "")


def eligibility(task: TaskSpec, *, region: str | None = None) -> Eligibility:
    """The static filter for a task; ``region`` narrows it to one region (if allowed)."""
    c = task.constraints
    regions = tuple(c.regions)
    if region is not None:
        # narrow to the submitter's region only where the allow-list permits it
        if not regions or region in regions:
            regions = (region,)
    return Eligibility(
        regions=regions,
        capabilities=tuple(sorted(set(c.capabilities))),
        role=c.role,
        health_min=c.health_min,
        slots_min=max(1, task.slots),
    )


def ready_tasks(record: CustodyRecord) -> list[str]:
    """Pending tasks whose dependencies are all done, in record order."""
    done = {t.task_id for t in record.tasks if t.state == "done"}
    out = []
    for t in record.tasks:
        if t.state == "pending" and all(d in done for d in task_deps(record.spec, t.task_id)):
            out.append(t.task_id)
    return out


def job_output(record: CustodyRecord) -> str:
    """The gathered output id once every task is done ('' before).

    One task: its output. Several (shards, steps): the content id of the
    manifest listing every task's output in record order, so whichever
    custodian gathers gets the same id.
    """
    if any(t.state != "done" for t in record.tasks):
        return ""
    if len(record.tasks) == 1:
        return record.tasks[0].output
    h = hashlib.blake2b(digest_size=32)
    for t in record.tasks:
        h.update(t.task_id.encode() + b"\0" + t.output.encode() + b"\n")
    return "b2:" + h.hexdigest()[:60]


def job_error(record: CustodyRecord) -> TaskState | None:
    """The first task custodians gave up on (state ``error``), or None: the job failed."""
    for t in record.tasks:
        if t.state == "error":
            return t
    return None
