"""Placement wire messages (tags 0x0500-0x05FF, protocol ``place``) and job types.

Job types (nested structs, no tag):

* :class:`JobSpec` -- what a submitter asks for: job id, workload class,
  model and other artifacts, inputs, slots, run time, deadline or latency
  budget, constraints, submitter and project, workflow steps.
* :class:`TaskSpec` -- one independently placed unit of a job (the job
  itself, one shard of a parallel job, one workflow step), as bidders see it.
* :class:`TaskState` and :class:`CustodyRecord` -- the job record custodians
  hold: the spec, who the custodians and the entry peer are, and per task its
  attempt epoch, executor and output.

Messages, by exchange (k candidates; a placement is 2k + 2 messages):

=================  ====================================================
broker -> bidders  CallForBids (k)  ->  Bid (k)
broker -> winner   Award (epoch, lease)  ->  AwardReply (accept/refuse)
entry -> custodian JobSubmit (record)  ->  JobAck
any -> custodians  TaskUpdate (placed / running / done / failed / lost / error)
custodian <-> cust RecordSync (the whole record; merged)
custodian -> exec  TaskCancel (a superseded epoch)
anyone -> cust.    JobQuery -> JobStatus
=================  ====================================================

Relative times only cross the wire (``deadline_s`` is "seconds from when
this message was sent"): peers' clocks are not comparable.
"""

from __future__ import annotations

from arcnet.mesh.wire import (
    BOOL,
    PEER_ID,
    U16,
    U64,
    Enum,
    Float,
    List,
    Message,
    Optional,
    Str,
)

__all__ = [
    "CLASSES",
    "TASK_STATES",
    "ArtifactRef",
    "Award",
    "AwardReply",
    "Bid",
    "CallForBids",
    "Constraints",
    "CustodyRecord",
    "JobAck",
    "JobQuery",
    "JobSpec",
    "JobStatus",
    "JobSubmit",
    "RecordSync",
    "SpecEnvelope",
    "Step",
    "job_spec",
    "StoredRecord",
    "TaskCancel",
    "TaskSpec",
    "TaskState",
    "TaskUpdate",
]

PROTOCOL = "place"
CLASSES = ("online", "batch", "finetune", "coupled", "parallel", "workflow")
#: a task's state. ``failed``: the attempt ended in a failure the executor
#: reported (counted against ``failed_attempts_max``); ``lost``: the attempt
#: was lost through no fault of the job (executor restarted, runtime queue
#: full; not counted); both are re-placed. ``done`` and ``error`` (given up
#: after ``failed_attempts_max`` failed attempts) are terminal.
TASK_STATES = ("pending", "placed", "running", "done", "failed", "lost", "error")
FAILED_KEPT = 16  # failed attempt epochs a task state remembers (the newest)

ID_MAX = 64  # job ids, artifact ids (content ids), project names
TASK_ID_MAX = 100  # job id + "/" + step name or shard number
REGION_MAX = 32
TAG_MAX = 32
ARTIFACTS_MAX = 32  # per task
INPUTS_MAX = 256  # shards of a parallel job
STEPS_MAX = 64  # steps of a workflow
TASKS_MAX = 256  # tasks of one job record
CUSTODIANS_MAX = 16  # R plus replacements after custodian deaths
TIME_MAX_S = 1e8  # ~3 years: a bound on every duration on the wire
SECONDS = Float(0.0, TIME_MAX_S, "seconds")
REASON = Str(64)
ERROR = Str(200)  # a task's failure text (the runtime's exception, cut)


class ArtifactRef(Message):
    """A content-addressed artifact (model, dataset shard, input) and its size."""

    cid = Str(ID_MAX, 1)
    size_bytes = U64


class Constraints(Message):
    regions = List(Str(REGION_MAX, 1), 16)  # allow-list; empty = anywhere
    capabilities = List(Str(TAG_MAX, 1), 16)  # all required
    role = Str(TAG_MAX)  # "" = any role ("site" by default at submission)
    health_min = Float(0.0, 1.0)


class Step(Message):
    """One step of a workflow DAG."""

    name = Str(TAG_MAX, 1)
    deps = List(Str(TAG_MAX, 1), 16)  # names of steps whose outputs this one reads
    artifacts = List(ArtifactRef, ARTIFACTS_MAX)
    slots = U16
    run_s = SECONDS
    loop = Str(TAG_MAX)  # steps sharing a loop name stay on one site when they can


class JobSpec(Message):
    job_id = Str(ID_MAX, 1)
    cls = Enum(*CLASSES)
    project = Str(ID_MAX)
    submitter = Str(ID_MAX)  # client key id or peer id
    submitter_region = Str(REGION_MAX)
    artifacts = List(ArtifactRef, ARTIFACTS_MAX)  # model (first) and other shared artifacts
    inputs = List(ArtifactRef, INPUTS_MAX)  # input data; a parallel job has one shard per input
    slots = U16  # per task; a coupled job's whole gang
    run_s = SECONDS  # expected run time per task on a standard slot
    deadline_s = SECONDS  # from submission; 0 = none
    latency_budget_s = SECONDS  # online: submit-to-start budget; 0 = none
    constraints = Constraints
    steps = List(Step, STEPS_MAX)  # workflow only


class TaskSpec(Message):
    """What bidders price: one placeable unit of a job."""

    task_id = Str(TASK_ID_MAX, 1)
    job_id = Str(ID_MAX, 1)
    cls = Enum(*CLASSES)
    key = Str(ID_MAX, 1)  # rendezvous key: the largest artifact, so work follows data
    artifacts = List(ArtifactRef, ARTIFACTS_MAX + 1)
    slots = U16
    run_s = SECONDS
    deadline_s = SECONDS  # remaining, from when this message was sent; 0 = none
    latency_budget_s = SECONDS
    submitter_region = Str(REGION_MAX)
    constraints = Constraints
    loop = Str(TAG_MAX)


class TaskState(Message):
    task_id = Str(TASK_ID_MAX, 1)
    state = Enum(*TASK_STATES)
    epoch = U64  # attempt epoch: (attempt << 40) | awarder tag; 0 = never awarded
    executor = Optional(PEER_ID)
    output = Str(ID_MAX)  # content id of the output once done
    lease_s = SECONDS
    failed = List(U64, FAILED_KEPT)  # epochs of attempts that failed (ascending, the newest kept)
    error = ERROR  # the failure text of the newest failed attempt


class CustodyRecord(Message):
    spec = JobSpec
    entry = PEER_ID  # the peer that accepted the submission (reports progress)
    custodians = List(PEER_ID, CUSTODIANS_MAX)  # in rank order
    tasks = List(TaskState, TASKS_MAX)
    output = Str(ID_MAX)  # the gathered output once every task is done


# -- bidding -----------------------------------------------------------------


class CallForBids(Message, tag=0x0501, protocol=PROTOCOL):
    auction = U64
    task = TaskSpec


class Bid(Message, tag=0x0502, protocol=PROTOCOL):
    auction = U64
    ok = BOOL  # False: cannot take it (reason says why)
    cost_s = SECONDS  # the estimate the broker compares: completion + energy + health, in seconds
    completion_s = SECONDS  # expected time to finish from now
    start_s = SECONDS  # expected time to start (queue + energy window)
    fetch_bytes = U64  # bytes of the task's artifacts this peer lacks
    surplus_fraction = Float(0.0, 1.0)  # share of the energy expected from solar/battery surplus
    late = BOOL  # misses the task's latency budget or deadline: ranked behind every bid that does not
    reason = REASON


class Award(Message, tag=0x0503, protocol=PROTOCOL):
    auction = U64
    task = TaskSpec
    epoch = U64
    lease_s = SECONDS  # renew (TaskUpdate running) before this lapses, or custodians re-place
    custodians = List(PEER_ID, CUSTODIANS_MAX)
    entry = PEER_ID


class AwardReply(Message, tag=0x0504, protocol=PROTOCOL):
    auction = U64
    epoch = U64
    accepted = BOOL
    reason = REASON


# -- custody -----------------------------------------------------------------


class JobSubmit(Message, tag=0x0510, version=2, protocol=PROTOCOL):
    """Hold this record (entry -> custodians; also sent to a replacement custodian)."""

    record = CustodyRecord


class JobAck(Message, tag=0x0511, protocol=PROTOCOL):
    job_id = Str(ID_MAX, 1)


class TaskUpdate(Message, tag=0x0512, version=2, protocol=PROTOCOL):
    job_id = Str(ID_MAX, 1)
    task_id = Str(TASK_ID_MAX, 1)
    epoch = U64
    state = Enum(*TASK_STATES)
    executor = Optional(PEER_ID)
    output = Str(ID_MAX)
    lease_s = SECONDS
    reason = ERROR  # failed / lost / error: why


class RecordSync(Message, tag=0x0513, version=2, protocol=PROTOCOL):
    record = CustodyRecord


class TaskCancel(Message, tag=0x0514, protocol=PROTOCOL):
    job_id = Str(ID_MAX, 1)
    task_id = Str(TASK_ID_MAX, 1)
    epoch = U64


class JobQuery(Message, tag=0x0515, protocol=PROTOCOL):
    job_id = Str(ID_MAX, 1)
    nonce = U64


class JobStatus(Message, tag=0x0516, version=2, protocol=PROTOCOL):
    nonce = U64
    found = BOOL
    record = Optional(CustodyRecord)


class StoredRecord(Message, tag=0x05F0, version=2, protocol=PROTOCOL):
    """A custody record as persisted (never sent): decoded strictly on restart."""

    record = CustodyRecord


class SpecEnvelope(Message, tag=0x05F2, protocol=PROTOCOL):
    """A job spec as bytes inside a ``placement.submit`` event (never sent)."""

    spec = JobSpec


class StoredExecution(Message, tag=0x05F1, protocol=PROTOCOL):
    """An accepted award as persisted by its executor (never sent)."""

    task = TaskSpec
    epoch = U64
    custodians = List(PEER_ID, CUSTODIANS_MAX)
    entry = PEER_ID


def job_spec(
    job_id: str,
    cls: str = "batch",
    *,
    artifacts: list[ArtifactRef] | None = None,
    inputs: list[ArtifactRef] | None = None,
    slots: int = 1,
    run_s: float = 60.0,
    deadline_s: float = 0.0,
    latency_budget_s: float = 0.0,
    regions: list[str] | None = None,
    capabilities: list[str] | None = None,
    role: str = "site",
    health_min: float = 0.5,
    steps: list[Step] | None = None,
    project: str = "",
    submitter: str = "",
    submitter_region: str = "",
) -> JobSpec:
    """A JobSpec with defaults for everything but the id (CLI, tests, benchmarks)."""
    return JobSpec(
        job_id, cls, project, submitter, submitter_region, list(artifacts or []), list(inputs or []),
        slots, float(run_s), float(deadline_s), float(latency_budget_s),
        Constraints(list(regions or []), list(capabilities or []), role, float(health_min)),
        list(steps or []),
    )
