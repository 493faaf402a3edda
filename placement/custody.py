"""Job custody: R custodians hold every accepted job until it is done.

The peer that receives a submission (the *entry*) picks the job's
custodians, the top R peers by rendezvous hash of the job id (R = 3), sends
each the job record (:class:`JobSubmit`) and, in parallel, brokers the job's
ready tasks so online work does not wait for replication. The job is
*accepted* once a quorum of custodians (2) has persisted the record and
acked. From then on the custodians, not the entry, are responsible:

* they watch each task's executor through membership (``member.dead``) and
  its lease (the executor renews it while it holds the task);
* if the executor dies, its lease lapses, it reports the task failed or
  lost, or nobody placed a task within ``place_timeout_s``, a custodian
  re-places the task with a new attempt epoch;
* but only ``failed_attempts_max`` attempts may *fail* (see Failures below):
  then the task, and so the job, is given up (state ``error``) with the
  last failure's text;
* which custodian acts is deterministic: the first custodian in the record's
  rank order that is alive in its own view acts at once; the one ranked
  r-th among the alive waits ``r * backoff_s`` and acts only if nobody has
  re-placed the task by then (it hears of that through a TaskUpdate);
* when a custodian dies, the first alive one appends the next peer in hash
  order to the record and sends it the record, so R copies are kept;
* workflow steps are placed by the lead custodian as their inputs finish.

**Epochs.** An epoch is ``(attempt << 40) | tag``, where ``tag`` is a
40-bit hash of the awarding peer's id (the entry's or a custodian's). Each
peer counts its own attempts per task, always above the attempt of the epoch
it supersedes (so a re-placement merges as newer), and persists the count
before sending the award, and no two peers of one record share a tag (a replacement
custodian whose tag collides is skipped), so no two awards ever carry the
same epoch, across crashes, restarts and split views alike: a job is never
awarded to two executors in the same epoch. (Tags do not depend on positions
in the custodian list, so concurrent repairs under split views cannot make
two custodians count in the same epoch space.) Two live
executors in different epochs are possible (a custodian that did not hear
of a re-placement), and harmless: outputs are content-addressed, the first
``done`` wins, and a custodian that learns of a superseded executor sends it
a TaskCancel.

**Restarts.** A custodian that restarts reloads its records from disk, sends
each to the other custodians (who answer with their copy when theirs is
newer: push-pull) and waits ``restart_quiet_s`` before acting on any of
them, so a stale copy never re-places a task that was re-placed or finished
while it was down. An executor that restarts reports every task it had
accepted as lost, so its custodians re-place those at once.

**Failures** (a restart policy, as Nomad's ``attempts`` or Ray's
``max_retries``). An attempt ends in one of two ways that are not success:

* *failed*: the executor ran it and the job raised (bad input, a model
  that raises: a ``JobError`` in the job service). Each task state carries
  the set of epochs that failed (the newest ``FAILED_KEPT`` = 16) and the
  newest failure's text. When a custodian's copy shows a failed attempt and
  ``failed_attempts_max`` failed epochs, it gives the task up: state
  ``error``, terminal; it tells the other custodians and the entry, which
  emits ``job.failed`` with the error. Nobody places a task of that job
  again. A task that fails and then succeeds is simply done.
* *crashed or lost*: the executor died (membership), its lease lapsed, it
  restarted, or its runtime could not take the task (``lost``). That is not
  the job's fault: such re-placements are **not counted and not bounded**,
  so no accepted job is lost to crashes however many there are (the attempt
  counter has 24 bits: ~16 M re-placements per task).

Counting is exact when the failure reports arrive: a failed epoch counts
once however many custodians or copies report it. A custodian that missed
a report (message loss) may place one attempt more before it hears the
others' ``error``.

**Merging.** Records merge as a join: a task that is done stays done; a
task given up (``error``) stays so unless a duplicate run finishes it
(done); otherwise the higher epoch wins, and within an epoch the later
state (pending < placed < running < lost < failed). Independently of which
state wins, the failed-epoch sets merge by union (keeping the newest 16)
and the failure text is that of the newest failed epoch: a product of
joins, so still commutative, associative and idempotent. Giving up is a
local step after a merge (it depends on the config), monotone and sticky,
so copies still converge. Custodian lists merge by appending what one side
lacks, so ranks never change.

Zero accepted jobs are lost while one custodian lives: every accepted record
is on disk at a quorum of custodians before ``job.accepted`` is emitted, and
every path out of "placed" (death, lapse, failure, refusal, timeout) leads
back to a custodian placing it again.

Prior art: Ray's ownership model (lineage held by an owner; we replicate the
owner), Sparrow's late binding, and primary-backup with deterministic
takeover order. Knowingly left out: fencing executors by epoch at the
runtime (duplicates are tolerated instead), moving a record when the
custodians' hash order changes (the list in the record is authoritative).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Hashable

from arcnet.mesh.core import Effect, Emit, Persist, Send, Timers
from arcnet.mesh.wire import Message, WireError, decode, encode

from . import classes
from .bidding import AuctionResult, Broker
from .classes import SpecError
from .hashing import CandidateIndex, Eligibility, key64
from .messages import (
    CUSTODIANS_MAX,
    FAILED_KEPT,
    CustodyRecord,
    JobAck,
    JobQuery,
    JobSpec,
    JobStatus,
    JobSubmit,
    RecordSync,
    StoredRecord,
    TaskCancel,
    TaskState,
    TaskUpdate,
)
from .view import ClusterView

__all__ = ["Custody", "CustodyConfig", "epoch_of", "epoch_tag", "merge_records", "merge_task", "peer_tag",
           "record_summary", "task_from_update"]

_STATE_RANK = {"pending": 0, "placed": 1, "running": 2, "lost": 3, "failed": 4, "error": 5, "done": 6}
_TERMINAL = {"done": 2, "error": 1}  # done above given up above everything else
_REPLACE = ("failed", "lost")  # the attempt ended without output: place it again
_TAG_BITS = 40
_ATTEMPT_MAX = (1 << (64 - _TAG_BITS)) - 1


def peer_tag(peer: str) -> int:
    """The 40-bit tag a peer's awards carry in their epochs."""
    return key64(peer) >> (64 - _TAG_BITS)


def epoch_of(attempt: int, tag: int) -> int:
    assert 1 <= attempt <= _ATTEMPT_MAX and 0 <= tag < (1 << _TAG_BITS)
    return (attempt << _TAG_BITS) | tag


def epoch_tag(epoch: int) -> int:
    return epoch & ((1 << _TAG_BITS) - 1)


def _order(t: TaskState) -> tuple:
    # done above everything, then given up, then the newer epoch, then the
    # later state; the remaining fields only make the order total (so max
    # is a join). ``failed`` and ``error`` merge on their own (merge_task).
    return (_TERMINAL.get(t.state, 0), t.epoch, _STATE_RANK[t.state], t.lease_s, t.executor or "", t.output)


def _last_failure(t: TaskState) -> tuple[int, str]:
    return (t.failed[-1] if t.failed else 0, t.error)


def merge_task(a: TaskState, b: TaskState) -> TaskState:
    """The join of two views of one task (commutative, associative, idempotent).

    The winner by :func:`_order` gives state, epoch, executor, output and
    lease; the failed epochs are the union (the newest FAILED_KEPT), the
    error text that of the newest failed epoch.
    """
    w = a if _order(a) >= _order(b) else b
    failed = sorted(set(a.failed) | set(b.failed))[-FAILED_KEPT:]
    error = max(_last_failure(a), _last_failure(b))[1]
    if w.failed == failed and w.error == error:
        return w
    return replace(w, failed=failed, error=error)


def task_from_update(msg: TaskUpdate) -> TaskState:
    """The task state a TaskUpdate reports (a failed attempt adds its epoch to ``failed``)."""
    failed = msg.state in ("failed", "error") and msg.epoch > 0
    return TaskState(msg.task_id, msg.state, msg.epoch, msg.executor, msg.output, msg.lease_s,
                     [msg.epoch] if failed else [], msg.reason if failed else "")


def merge_records(a: CustodyRecord, b: CustodyRecord) -> CustodyRecord:
    custodians = list(a.custodians) + [c for c in b.custodians if c not in a.custodians]
    bt = {t.task_id: t for t in b.tasks}
    tasks = [merge_task(t, bt[t.task_id]) if t.task_id in bt else t for t in a.tasks]
    return CustodyRecord(a.spec, a.entry, custodians[:CUSTODIANS_MAX], tasks, a.output or b.output)


@dataclass(frozen=True, slots=True)
class CustodyConfig:
    #: custodians per job (R). 3 survives two overlapping crashes; with 5% of
    #: sites failing per hour and repair within ~20 s, losing all three is
    #: vanishingly rare at any mesh size.
    replicas: int = 3
    #: custodians that must persist the record before the job is accepted
    accept_quorum: int = 2
    #: seconds the entry waits for custodian acks before resending
    ack_timeout_s: float = 2.0
    ack_tries_max: int = 4
    #: seconds after which custodians place a task nobody reported placed
    #: (the entry died mid-auction); longer than the entry's own retries
    place_timeout_s: float = 20.0
    #: the custodian ranked r-th among the alive acts r x backoff_s after the
    #: first, if nobody acted; a few WAN round trips
    backoff_s: float = 2.0
    #: first wait after an auction found nobody, doubling up to retry_max_s
    retry_s: float = 2.0
    retry_max_s: float = 60.0
    #: auctions the entry retries itself before leaving a task to custodians
    entry_retries: int = 2
    #: seconds a finished record is kept (job status queries), then deleted
    retain_s: float = 3600.0
    #: after a restart, seconds a custodian waits for its peers' newer copies
    #: of the records it reloaded before it acts on them (a few round trips)
    restart_quiet_s: float = 3.0
    #: attempts of one task that may end in a reported failure (the job
    #: raised: bad input, a model that fails) before the task and its job are
    #: given up (state ``error``, with the last failure's text). Attempts lost
    #: to crashes, lapsed leases or restarts do not count and are not
    #: bounded. 1..16 (FAILED_KEPT); 0 = re-place failures forever.
    failed_attempts_max: int = 3


@dataclass
class _Entry:
    record: CustodyRecord
    since: float
    acks: list[str] = field(default_factory=list)
    tries: int = 1
    accepted: bool = False
    done: bool = False
    failed: bool = False  # job.failed emitted (a task was given up)
    failures: dict[str, int] = field(default_factory=dict)
    reported: dict[str, int] = field(default_factory=dict)  # task -> epoch reported placed


class Custody:
    """Custodian and entry roles of one peer (embedded in the placement core)."""

    def __init__(
        self,
        me: str,
        view: ClusterView,
        index: CandidateIndex,
        broker: Broker,
        rng: random.Random,
        *,
        config: CustodyConfig = CustodyConfig(),
        timers: Timers | None = None,
        local: Callable[[float, Message], list[Effect]] | None = None,
    ):
        assert 1 <= config.accept_quorum <= config.replicas <= CUSTODIANS_MAX
        assert 0 <= config.failed_attempts_max <= FAILED_KEPT
        self.me = me
        self.view = view
        self.index = index
        self.broker = broker
        self.rng = rng
        self.config = config
        self.timers = timers if timers is not None else Timers()
        self.local = local or (lambda now, msg: [])
        self.records: dict[str, CustodyRecord] = {}  # jobs this peer is custodian of
        self.since: dict[str, float] = {}  # job -> when this peer first held it (local clock)
        self.entries: dict[str, _Entry] = {}  # jobs submitted through this peer
        self.attempts: dict[str, int] = {}  # task -> this peer's last attempt
        self.tag = peer_tag(me)
        self.quiet_until = -1.0  # after a restart: do not act before this
        self.placing: dict[tuple[str, str], int] = {}  # (role, task) -> auction id
        self.retries: dict[str, int] = {}  # task -> failed custodian auctions in a row
        self.act_epoch: dict[tuple[str, str], int] = {}  # (job, task) -> epoch seen when act was scheduled
        self.by_executor: dict[str, dict[tuple[str, str], None]] = {}
        self.by_custodian: dict[str, dict[str, None]] = {}
        self._nonce = rng.getrandbits(48)
        self.queries: dict[int, str] = {}
        self.counters = {
            "submitted": 0,
            "rejected": 0,
            "accepted": 0,
            "held": 0,
            "replaced": 0,
            "repairs": 0,
            "jobs_done": 0,
            "jobs_failed": 0,
            "cancels_sent": 0,
            "entry_placed": 0,
            "custodian_placed": 0,
        }

    # -- helpers -------------------------------------------------------------

    def _alive(self, peer: str) -> bool:
        return peer == self.me or self.view.facts(peer) is not None

    def _rank(self, rec: CustodyRecord) -> int:
        try:
            return rec.custodians.index(self.me)
        except ValueError:
            return -1

    def _alive_before_me(self, rec: CustodyRecord) -> int:
        n = 0
        for c in rec.custodians:
            if c == self.me:
                return n
            if self._alive(c):
                n += 1
        return n

    def _next_epoch(self, task_id: str, floor: int = 0) -> tuple[int, list[Effect]]:
        # One counter per task for both roles (entry and custodian) of this
        # peer. The attempt also exceeds the attempt of the epoch it
        # supersedes (``floor``), so a re-placement always merges as newer.
        n = max(self.attempts.get(task_id, 0), floor >> _TAG_BITS) + 1
        self.attempts[task_id] = n
        return epoch_of(n, self.tag), [Persist(f"a/{task_id}", str(n).encode())]

    def _settle(self, t: TaskState) -> TaskState:
        """Give a task up once a failed attempt brings its failures to the limit."""
        n = self.config.failed_attempts_max
        if t.state == "failed" and n > 0 and len(t.failed) >= n:
            return replace(t, state="error")
        return t

    def _to(self, peers: list[str], msg: Message, now: float) -> list[Effect]:
        out: list[Effect] = []
        for p in peers:
            out.extend(self.local(now, msg) if p == self.me else [Send(p, msg)])
        return out

    def _persist(self, rec: CustodyRecord) -> Persist:
        return Persist(f"c/{rec.spec.job_id}", encode(StoredRecord(rec)))

    def _pick_custodians(self, job_id: str, n: int, exclude: list[str], entry: str | None = None) -> list[str]:
        out: list[str] = []
        tags = {peer_tag(p) for p in exclude}
        if entry is not None:
            tags.add(peer_tag(entry))
        for p in self.index.top(job_id, n + len(exclude) + 8, exclude=exclude,
                                elig=Eligibility(role="", health_min=0.0, slots_min=0)):
            f = self.view.facts(p)
            if f is None or f.draining or f.health < 0.3:
                continue
            t = peer_tag(p)
            if t in tags and p != entry:
                continue  # its epochs could collide with an awarder's of this job
            tags.add(t)
            out.append(p)
            if len(out) == n:
                break
        return out

    # -- submission (entry role) ---------------------------------------------

    def submit(self, now: float, spec: JobSpec) -> list[Effect]:
        """Accept a submission at this peer: pick custodians, replicate, broker."""
        job = spec.job_id
        try:
            classes.validate(spec)
            spec.validate()
        except (SpecError, WireError) as exc:
            self.counters["rejected"] += 1
            return [Emit("job.rejected", {"job": job, "reason": str(exc)[:200]})]
        if job in self.entries:
            return [Emit("job.duplicate", {"job": job})]
        custodians = self._pick_custodians(job, self.config.replicas, [], entry=self.me)
        if not custodians:
            self.counters["rejected"] += 1
            return [Emit("job.rejected", {"job": job, "reason": "no alive peers to hold the job"})]
        self.counters["submitted"] += 1
        rec = CustodyRecord(spec, self.me, custodians, classes.initial_tasks(spec), "")
        ent = self.entries[job] = _Entry(rec, now)
        out: list[Effect] = [Emit("job.submitted", {"job": job, "custodians": list(custodians)})]
        out.extend(self._to(custodians, JobSubmit(rec), now))
        out.append(self.timers.set(("c", "ack", job), now + self.config.ack_timeout_s))
        for tid in classes.ready_tasks(rec):
            out.extend(self._place(now, "entry", job, tid))
        if not ent.accepted and len(ent.acks) >= min(self.config.accept_quorum, len(custodians)):
            out.extend(self._accepted(now, ent))
        return out

    def _accepted(self, now: float, ent: _Entry) -> list[Effect]:
        ent.accepted = True
        self.counters["accepted"] += 1
        c = self.timers.cancel(("c", "ack", ent.record.spec.job_id))
        out: list[Effect] = [c] if c else []
        out.append(Emit("job.accepted", {"job": ent.record.spec.job_id, "custodians": list(ent.acks)}))
        return out

    def on_ack(self, now: float, sender: str, msg: JobAck) -> list[Effect]:
        ent = self.entries.get(msg.job_id)
        if ent is None or sender in ent.acks:
            return []
        ent.acks.append(sender)
        if not ent.accepted and len(ent.acks) >= min(self.config.accept_quorum, len(ent.record.custodians)):
            return self._accepted(now, ent)
        return []

    def _ack_timeout(self, now: float, job: str) -> list[Effect]:
        ent = self.entries.get(job)
        if ent is None or ent.accepted:
            return []
        rec = ent.record
        if ent.tries >= self.config.ack_tries_max:
            return [Emit("job.failed", {"job": job, "reason": "custodians did not acknowledge the job"})]
        ent.tries += 1
        out: list[Effect] = []
        missing = [c for c in rec.custodians if c not in ent.acks]
        dead = [c for c in missing if not self._alive(c)]
        if dead and len(rec.custodians) < CUSTODIANS_MAX:
            extra = self._pick_custodians(job, len(dead), list(rec.custodians), entry=rec.entry)
            extra = extra[: CUSTODIANS_MAX - len(rec.custodians)]
            if extra:
                rec = ent.record = replace(rec, custodians=list(rec.custodians) + extra)
                out.extend(self._to([c for c in rec.custodians if c in ent.acks], RecordSync(rec), now))
        targets = [c for c in rec.custodians if c not in ent.acks and self._alive(c)]
        out.extend(self._to(targets, JobSubmit(rec), now))
        out.append(self.timers.set(("c", "ack", job), now + self.config.ack_timeout_s * ent.tries))
        return out

    # -- placing (both roles) ------------------------------------------------

    def _place(self, now: float, role: str, job: str, task_id: str, exclude: list[str] | None = None) -> list[Effect]:
        if (role, task_id) in self.placing:
            return []
        if role == "entry":
            rec = self.entries[job].record
            since = self.entries[job].since
        else:
            rec = self.records[job]
            since = self.since.get(job, now)
            if self._rank(rec) < 0:
                return []
            if now < self.quiet_until:  # just restarted: hear the others first
                return [self.timers.set(("c", "act", job, task_id), self.quiet_until)]
        ts = classes.task_spec(rec.spec, task_id, elapsed_s=now - since)
        cur = self._task(rec, task_id)
        floor = cur.epoch if cur is not None else 0
        sticky = None
        if ts.loop:
            for t in reversed(rec.tasks):  # the last finished step of the same loop
                if t.state == "done" and t.executor and t.task_id != task_id:
                    other = classes.task_spec(rec.spec, t.task_id)
                    if other.loop == ts.loop and self._alive(t.executor):
                        sticky = t.executor
                        break
        aid, out = self.broker.start(
            now, ts,
            epoch_fn=lambda tid, f=floor: self._next_epoch(tid, f),
            custodians=rec.custodians, entry=rec.entry,
            exclude=exclude or [], sticky=sticky, owner=(role, job, task_id),
        )
        if aid in self.broker.auctions:
            self.placing[(role, task_id)] = aid
        return out

    def on_auction(self, now: float, r: AuctionResult) -> list[Effect]:
        """The broker finished an auction this object started."""
        role, job, task_id = r.owner
        self.placing.pop((role, task_id), None)
        if role == "entry":
            return self._entry_result(now, job, task_id, r)
        return self._custodian_result(now, job, task_id, r)

    def _why(self, r: AuctionResult) -> dict[str, Any]:
        b = r.bid
        return {
            "cost_s": round(b.cost_s, 3) if b else 0.0,
            "completion_s": round(b.completion_s, 3) if b else 0.0,
            "surplus_fraction": round(b.surplus_fraction, 3) if b else 0.0,
            "fetch_bytes": b.fetch_bytes if b else 0,
            "bids": r.bids, "asked": r.asked, "near_best": r.near_best, "rounds": r.rounds,
        }

    def _entry_result(self, now: float, job: str, task_id: str, r: AuctionResult) -> list[Effect]:
        ent = self.entries.get(job)
        if ent is None:
            return []
        if r.ok:
            self.counters["entry_placed"] += 1
            upd = TaskUpdate(job, task_id, r.epoch, "placed", r.winner, "", r.lease_s, "")
            out = [Emit("job.bid_won", {"job": job, "task": task_id, "executor": r.winner, "epoch": r.epoch,
                                        **self._why(r)})]
            out.extend(self._entry_update(now, upd))
            out.extend(self._to(list(ent.record.custodians), upd, now))
            return out
        n = ent.failures.get(task_id, 0) + 1
        ent.failures[task_id] = n
        out: list[Effect] = [Emit("job.waiting", {"job": job, "task": task_id, "reason": r.reason})]
        if n <= self.config.entry_retries:
            out.append(self.timers.set(("c", "eretry", job, task_id), now + self.config.retry_s * (2 ** (n - 1))))
        return out

    def _custodian_result(self, now: float, job: str, task_id: str, r: AuctionResult) -> list[Effect]:
        rec = self.records.get(job)
        if rec is None:
            return []
        if not r.ok:
            n = self.retries.get(task_id, 0) + 1
            self.retries[task_id] = n
            delay = min(self.config.retry_max_s, self.config.retry_s * (2 ** (n - 1)))
            cur = self._task(rec, task_id)
            self.act_epoch[(job, task_id)] = cur.epoch if cur else 0
            return [Emit("job.waiting", {"job": job, "task": task_id, "reason": r.reason}),
                    self.timers.set(("c", "act", job, task_id), now + delay)]
        self.retries.pop(task_id, None)
        self.counters["custodian_placed"] += 1
        old = self._task(rec, task_id)
        upd = TaskUpdate(job, task_id, r.epoch, "placed", r.winner, "", r.lease_s, "")
        out = self.on_task_update(now, self.me, upd, _from_self=True)
        others = [c for c in rec.custodians if c != self.me and self._alive(c)]
        if rec.entry not in others and rec.entry != self.me:
            others.append(rec.entry)
        out.extend(Send(p, upd) for p in others)
        if rec.entry == self.me:
            out.extend(self._entry_update(now, upd))
        previous = (old.executor or "") if old else ""
        kind = "task.replaced" if previous else "custody.placed"
        out.append(Emit(kind, {"job": job, "task": task_id, "executor": r.winner, "epoch": r.epoch,
                               "previous": previous, **self._why(r)}))
        if previous:
            self.counters["replaced"] += 1
        return out

    # -- custodian role ------------------------------------------------------

    def on_submit(self, now: float, sender: str, rec: CustodyRecord, *, ack: bool) -> list[Effect]:
        """Hold (or merge) a record: JobSubmit from the entry, RecordSync from a custodian."""
        job = rec.spec.job_id
        cur = self.records.get(job)
        out: list[Effect] = []
        if cur is None:
            if self.me not in rec.custodians:
                if len(rec.custodians) >= CUSTODIANS_MAX:
                    return out
                rec = replace(rec, custodians=list(rec.custodians) + [self.me])
            merged = rec
            self.since[job] = now
            self.counters["held"] += 1
            fresh = True
        else:
            merged = merge_records(cur, rec)
            fresh = False
        settled = [self._settle(t) for t in merged.tasks]
        gave_up = [u for t, u in zip(merged.tasks, settled) if u is not t]
        if gave_up:
            merged = replace(merged, tasks=settled)
        changed = fresh or merged != cur
        self.records[job] = merged
        if changed:
            out.append(self._persist(merged))
        if ack:
            out.extend(self._to([sender], JobAck(job), now))
        elif sender != self.me and merged != rec and sender in merged.custodians:
            # push-pull: the sender's copy lacks something ours has (it was
            # down, or missed an update): send it the merged record back
            out.extend(self._to([sender], RecordSync(merged), now))
        for c in merged.custodians:
            if c != self.me:
                self.by_custodian.setdefault(c, {})[job] = None
        for t in merged.tasks:
            old = self._task(cur, t.task_id) if cur is not None else None
            if fresh or old != t:
                out.extend(self._arm(now, merged, old, t, initial=fresh))
        for t in gave_up:
            out.extend(self._give_up(now, merged, t, sender))
        if changed:
            out.extend(self._maybe_done(now, merged, cur))
        return out

    def _give_up(self, now: float, rec: CustodyRecord, t: TaskState, sender: str) -> list[Effect]:
        """This peer gave a task up: tell the other custodians and the entry (once)."""
        job = rec.spec.job_id
        upd = TaskUpdate(job, t.task_id, t.epoch, "error", t.executor, "", t.lease_s, t.error)
        others = [c for c in rec.custodians if c not in (self.me, sender) and self._alive(c)]
        out: list[Effect] = [Send(p, upd) for p in others]
        if rec.entry == self.me:
            out.extend(self._entry_update(now, upd))
        elif rec.entry not in others and rec.entry != sender:
            out.append(Send(rec.entry, upd))
        return out

    @staticmethod
    def _task(rec: CustodyRecord | None, task_id: str) -> TaskState | None:
        if rec is None:
            return None
        for t in rec.tasks:
            if t.task_id == task_id:
                return t
        return None

    def on_task_update(self, now: float, sender: str, msg: TaskUpdate, *, _from_self: bool = False) -> list[Effect]:
        out: list[Effect] = []
        if not _from_self and msg.job_id in self.entries:
            out.extend(self._entry_update(now, msg))
        rec = self.records.get(msg.job_id)
        if rec is None:
            return out
        old = self._task(rec, msg.task_id)
        if old is None:
            return out
        new = self._settle(merge_task(old, task_from_update(msg)))
        if new == old:
            if msg.state in ("placed", "running") and msg.epoch == old.epoch \
                    and old.state not in ("done", "error"):
                # a lease renewal: push the lease timer forward
                out.append(self.timers.set(("c", "lease", msg.job_id, msg.task_id), now + max(1.0, msg.lease_s)))
            elif old.state == "done" and msg.state != "done":
                # the sender has not heard that the task is done: tell it, and
                # stop an executor that still runs a superseded attempt
                if sender != self.me and sender != msg.executor:
                    out.extend(self._to([sender], TaskUpdate(msg.job_id, msg.task_id, old.epoch, "done",
                                                             old.executor, old.output, old.lease_s, ""), now))
                if msg.executor and msg.epoch != old.epoch:
                    out.extend(self._cancel(msg.job_id, msg.task_id, msg.epoch, msg.executor))
            elif old.state == "error" and msg.state in ("placed", "running"):
                # placed by a custodian that had not heard the task was given up
                if sender != self.me and sender != msg.executor:
                    out.extend(self._to([sender], TaskUpdate(msg.job_id, msg.task_id, old.epoch, "error",
                                                             old.executor, "", old.lease_s, old.error), now))
                if msg.executor and msg.epoch != old.epoch:
                    out.extend(self._cancel(msg.job_id, msg.task_id, msg.epoch, msg.executor))
            return out
        tasks = [new if t.task_id == msg.task_id else t for t in rec.tasks]
        merged = replace(rec, tasks=tasks)
        self.records[msg.job_id] = merged
        out.append(self._persist(merged))
        out.extend(self._arm(now, merged, old, new, initial=False))
        # an executor that lost the race to a newer epoch is told to stop
        if old.executor and old.executor != new.executor and old.state in ("placed", "running") \
                and new.state in ("placed", "running") and self._alive_before_me(merged) == 0:
            out.extend(self._cancel(msg.job_id, msg.task_id, old.epoch, old.executor))
        if new.state == "error" and old.state != "error":
            # so is one still running an attempt of a task given up
            if old.executor and old.epoch != new.epoch and old.state in ("placed", "running") \
                    and self._alive_before_me(merged) == 0:
                out.extend(self._cancel(msg.job_id, msg.task_id, old.epoch, old.executor))
            if msg.state != "error":  # this peer gave it up (not told so): tell the others
                out.extend(self._give_up(now, merged, new, sender))
        out.extend(self._maybe_done(now, merged, rec))
        return out

    def _cancel(self, job: str, task_id: str, epoch: int, executor: str) -> list[Effect]:
        if not self._alive(executor):
            return []
        self.counters["cancels_sent"] += 1
        return self._to([executor], TaskCancel(job, task_id, epoch), 0.0)

    def _arm(self, now: float, rec: CustodyRecord, old: TaskState | None, t: TaskState, *, initial: bool) -> list[Effect]:
        """Timers and indexes for one task after its state changed."""
        job = rec.spec.job_id
        out: list[Effect] = []
        if old is not None and old.executor and old.executor != t.executor:
            self.by_executor.get(old.executor, {}).pop((job, t.task_id), None)
        if t.state in ("done", "error"):
            if t.executor:
                self.by_executor.get(t.executor, {}).pop((job, t.task_id), None)
            for name in (("c", "place", job, t.task_id), ("c", "lease", job, t.task_id), ("c", "act", job, t.task_id)):
                c = self.timers.cancel(name)
                if c:
                    out.append(c)
            return out
        before = self._alive_before_me(rec)
        if t.state == "pending":
            if t.task_id not in classes.ready_tasks(rec):
                return out
            if initial:
                at = now + self.config.place_timeout_s + before * self.config.backoff_s
                out.append(self.timers.set(("c", "place", job, t.task_id), at))
            else:
                out.extend(self._schedule_act(now, rec, t, "inputs ready"))
            return out
        c = self.timers.cancel(("c", "place", job, t.task_id))
        if c:
            out.append(c)
        if t.executor:
            self.by_executor.setdefault(t.executor, {})[(job, t.task_id)] = None
        if t.state in _REPLACE:
            out.extend(self._schedule_act(now, rec, t, f"executor reported the attempt {t.state}"))
        elif t.executor and not self._alive(t.executor):
            out.extend(self._schedule_act(now, rec, t, "executor not alive"))
        else:
            out.append(self.timers.set(("c", "lease", job, t.task_id), now + max(1.0, t.lease_s)))
        return out

    def _schedule_act(self, now: float, rec: CustodyRecord, t: TaskState, reason: str) -> list[Effect]:
        job = rec.spec.job_id
        name = ("c", "act", job, t.task_id)
        self.act_epoch[(job, t.task_id)] = t.epoch
        at = max(now + self._alive_before_me(rec) * self.config.backoff_s, self.quiet_until)
        due = self.timers.due(name)
        if due is not None and due <= at:
            return []
        return [self.timers.set(name, at)]

    def _act(self, now: float, job: str, task_id: str) -> list[Effect]:
        rec = self.records.get(job)
        if rec is None:
            return []
        t = self._task(rec, task_id)
        if t is None or t.state in ("done", "error") or classes.job_error(rec) is not None:
            return []  # finished, or the job was given up: nothing to place
        seen = self.act_epoch.pop((job, task_id), t.epoch)
        if t.epoch != seen and t.state in ("placed", "running") and t.executor and self._alive(t.executor):
            return []  # someone re-placed it since this was scheduled
        if t.state == "pending" and task_id not in classes.ready_tasks(rec):
            return []
        exclude = [t.executor] if t.executor else []
        return self._place(now, "custodian", job, task_id, exclude)

    def _maybe_done(self, now: float, rec: CustodyRecord, before: CustodyRecord | None) -> list[Effect]:
        job = rec.spec.job_id
        out: list[Effect] = []
        if rec.output:
            return out
        err = classes.job_error(rec)
        if err is not None:
            if before is None or classes.job_error(before) is None:
                self.counters["jobs_failed"] += 1
                out.append(Emit("custody.failed", {"job": job, "task": err.task_id, "error": err.error,
                                                   "attempts": len(err.failed)}))
                out.append(self.timers.set(("c", "retain", job), now + self.config.retain_s))
            return out
        out_id = classes.job_output(rec)
        if out_id:
            rec = replace(rec, output=out_id)
            self.records[job] = rec
            self.counters["jobs_done"] += 1
            out.append(self._persist(rec))
            out.append(Emit("custody.done", {"job": job, "output": out_id}))
            out.append(self.timers.set(("c", "retain", job), now + self.config.retain_s))
            return out
        # a workflow step finished: its dependants may now be ready
        if before is not None:
            was_ready = set(classes.ready_tasks(before))
            for tid in classes.ready_tasks(rec):
                if tid not in was_ready:
                    t = self._task(rec, tid)
                    assert t is not None
                    if self._alive_before_me(rec) == 0:
                        out.extend(self._place(now, "custodian", job, tid))
                    else:
                        out.append(self.timers.set(("c", "place", job, tid),
                                                   now + self.config.place_timeout_s
                                                   + self._alive_before_me(rec) * self.config.backoff_s))
        return out

    # -- membership ----------------------------------------------------------

    def on_member_dead(self, now: float, peer: str) -> list[Effect]:
        out: list[Effect] = []
        for job, task_id in list(self.by_executor.get(peer, {})):
            rec = self.records.get(job)
            t = self._task(rec, task_id)
            if rec is None or t is None or t.state in ("done", "error") or t.executor != peer:
                continue
            out.extend(self._schedule_act(now, rec, t, "executor died"))
        for job in list(self.by_custodian.get(peer, {})):
            rec = self.records.get(job)
            if rec is None or rec.output or classes.job_error(rec) is not None:
                continue
            if self._alive_before_me(rec) == 0:
                out.extend(self._repair(now, rec))
        # the entry's own auctions waiting on a dead bidder time out by themselves
        return out

    def _repair(self, now: float, rec: CustodyRecord) -> list[Effect]:
        job = rec.spec.job_id
        alive = [c for c in rec.custodians if self._alive(c)]
        need = self.config.replicas - len(alive)
        room = CUSTODIANS_MAX - len(rec.custodians)
        if need <= 0 or room <= 0:
            return []
        extra = self._pick_custodians(job, min(need, room), list(rec.custodians), entry=rec.entry)
        if not extra:
            return []
        rec = replace(rec, custodians=list(rec.custodians) + extra)
        self.records[job] = rec
        self.counters["repairs"] += 1
        for c in extra:
            self.by_custodian.setdefault(c, {})[job] = None
        out: list[Effect] = [self._persist(rec)]
        out.extend(self._to(extra, JobSubmit(rec), now))
        out.extend(self._to([c for c in alive if c != self.me], RecordSync(rec), now))
        # executors of unfinished tasks learn the new list, so their done
        # report reaches the new custodian too
        execs: list[str] = []
        for t in rec.tasks:
            if t.state in ("placed", "running") and t.executor and t.executor not in execs \
                    and t.executor not in rec.custodians and self._alive(t.executor):
                execs.append(t.executor)
        out.extend(self._to(execs, RecordSync(rec), now))
        out.append(Emit("custody.repaired", {"job": job, "added": extra}))
        return out

    # -- entry progress ------------------------------------------------------

    def _entry_update(self, now: float, msg: TaskUpdate) -> list[Effect]:
        ent = self.entries.get(msg.job_id)
        if ent is None:
            return []
        rec = ent.record
        old = self._task(rec, msg.task_id)
        if old is None:
            return []
        new = self._settle(merge_task(old, task_from_update(msg)))
        if new == old:
            return []
        ent.record = rec = replace(rec, tasks=[new if t.task_id == msg.task_id else t for t in rec.tasks])
        data = {"job": msg.job_id, "task": msg.task_id, "epoch": new.epoch, "executor": new.executor or ""}
        out: list[Effect] = []
        if new.state in ("placed", "running") and new.epoch != old.epoch:
            out.append(Emit("job.placed", data))
        if new.state == "running":
            out.append(Emit("job.started", data))
        elif new.state in _REPLACE and new.epoch == msg.epoch and msg.state == new.state:
            kind = "job.task_failed" if new.state == "failed" else "job.task_lost"
            out.append(Emit(kind, {**data, "reason": msg.reason, "failures": len(new.failed),
                                   "failures_max": self.config.failed_attempts_max}))
        elif new.state == "error" and old.state != "error":
            if msg.state == "failed":  # the last allowed attempt failed: say so, then give up
                out.append(Emit("job.task_failed", {**data, "reason": msg.reason, "failures": len(new.failed),
                                                    "failures_max": self.config.failed_attempts_max}))
            if not ent.failed:
                ent.failed = True
                out.append(Emit("job.failed", {**data, "reason": new.error, "error": new.error,
                                               "attempts": len(new.failed)}))
                out.append(self.timers.set(("c", "eforget", msg.job_id), now + self.config.retain_s))
        elif new.state == "done":
            out.append(Emit("job.task_done", {**data, "output": new.output}))
            output = classes.job_output(rec)
            if output and not ent.done:
                ent.done = True
                out.append(Emit("job.done", {"job": msg.job_id, "output": output}))
                out.append(self.timers.set(("c", "eforget", msg.job_id), now + self.config.retain_s))
        return out

    # -- queries -------------------------------------------------------------

    def status(self, job: str) -> dict[str, Any] | None:
        """What this peer knows of a job (as custodian, else as entry), as plain values."""
        rec = self.records.get(job)
        role = "custodian"
        if rec is None and job in self.entries:
            rec, role = self.entries[job].record, "entry"
        if rec is None:
            return None
        return record_summary(rec, role)

    def query(self, now: float, job: str) -> list[Effect]:
        """Ask the job's custodians (by hash, in this peer's view) for its record."""
        self._nonce += 1
        self.queries[self._nonce] = job
        if len(self.queries) > 1024:
            del self.queries[next(iter(self.queries))]
        targets = self._pick_custodians(job, self.config.replicas + 2, [])
        return self._to(targets, JobQuery(job, self._nonce), now)

    def on_query(self, now: float, sender: str, msg: JobQuery) -> list[Effect]:
        rec = self.records.get(msg.job_id)
        return self._to([sender], JobStatus(msg.nonce, rec is not None, rec), now)

    def on_status(self, now: float, sender: str, msg: JobStatus) -> list[Effect]:
        job = self.queries.get(msg.nonce)
        if job is None or not msg.found or msg.record is None:
            return []
        self.queries.pop(msg.nonce, None)
        return [Emit("job.status", record_summary(msg.record, "custodian") | {"from": sender})]

    # -- timers --------------------------------------------------------------

    def on_timer(self, now: float, timer: Hashable) -> list[Effect]:
        if not self.timers.fire(timer):
            return []
        what = timer[1]  # type: ignore[index]
        if what == "ack":
            return self._ack_timeout(now, timer[2])  # type: ignore[index]
        if what in ("place", "act"):
            return self._act(now, timer[2], timer[3])  # type: ignore[index]
        if what == "lease":
            job, task_id = timer[2], timer[3]  # type: ignore[index]
            rec = self.records.get(job)
            t = self._task(rec, task_id)
            if rec is None or t is None or t.state in ("done", "error"):
                return []
            return self._schedule_act(now, rec, t, "lease lapsed")
        if what == "eretry":
            job, task_id = timer[2], timer[3]  # type: ignore[index]
            ent = self.entries.get(job)
            t = self._task(ent.record, task_id) if ent else None
            if ent is None or t is None or t.state != "pending":
                return []
            return self._place(now, "entry", job, task_id)
        if what == "retain":
            return self._forget(timer[2])  # type: ignore[index]
        if what == "eforget":
            self.entries.pop(timer[2], None)  # type: ignore[index]
        return []

    def _forget(self, job: str) -> list[Effect]:
        rec = self.records.pop(job, None)
        self.since.pop(job, None)
        if rec is None:
            return []
        out: list[Effect] = [Persist(f"c/{job}", None)]
        for t in rec.tasks:
            if t.executor:
                self.by_executor.get(t.executor, {}).pop((job, t.task_id), None)
            if self.attempts.pop(t.task_id, None) is not None:
                out.append(Persist(f"a/{t.task_id}", None))
        for c in rec.custodians:
            self.by_custodian.get(c, {}).pop(job, None)
        return out

    # -- restart -------------------------------------------------------------

    def restore(self, now: float, records: dict[str, bytes]) -> list[Effect]:
        """Reload custody records and epoch counters persisted before a restart."""
        out: list[Effect] = []
        if any(k.startswith("c/") for k in records):
            self.quiet_until = now + self.config.restart_quiet_s
        for k in sorted(records):
            if k.startswith("a/"):
                try:
                    self.attempts[k[2:]] = int(records[k])
                except ValueError:
                    out.append(Emit("custody.bad_record", {"key": k}))
        for k in sorted(records):
            if not k.startswith("c/"):
                continue
            try:
                m = decode(records[k])
            except WireError as exc:
                out.append(Emit("custody.bad_record", {"key": k, "error": str(exc)[:200]}))
                continue
            if type(m) is not StoredRecord:
                continue
            rec = m.record
            if rec.output or classes.job_error(rec) is not None:  # finished: kept for queries only
                self.records[rec.spec.job_id] = rec
                out.append(self.timers.set(("c", "retain", rec.spec.job_id), now + self.config.retain_s))
                continue
            # leases restart from now: a record never waits less than one lease
            out.extend(self.on_submit(now, self.me, rec, ack=False))
            # ask the other custodians for what happened while this peer was down
            others = [c for c in rec.custodians if c != self.me and self._alive(c)]
            out.extend(self._to(others, RecordSync(rec), now))
            for t in rec.tasks:
                if t.state in ("placed", "running"):
                    out.append(self.timers.set(("c", "lease", rec.spec.job_id, t.task_id), now + max(1.0, t.lease_s)))
        return out

    def statistics(self) -> dict[str, float]:
        s: dict[str, float] = dict(self.counters)
        s["records"] = len(self.records)
        s["entries"] = len(self.entries)
        return s


def record_state(rec: CustodyRecord) -> str:
    """One word for a job record: done, failed (given up), running, placed, re-placing or pending."""
    if rec.output:
        return "done"
    if classes.job_error(rec) is not None:
        return "failed"
    states = {t.state for t in rec.tasks}
    for s in ("running", "placed"):
        if s in states:
            return s
    return "re-placing" if states & set(_REPLACE) else "pending"


def record_summary(rec: CustodyRecord, role: str) -> dict[str, Any]:
    err = classes.job_error(rec)
    return {
        "job": rec.spec.job_id,
        "class": rec.spec.cls,
        "role": role,
        "state": record_state(rec),
        "error": err.error if err is not None else "",
        "entry": rec.entry,
        "custodians": list(rec.custodians),
        "output": rec.output,
        "tasks": [
            {"task": t.task_id, "state": t.state, "epoch": t.epoch, "executor": t.executor or "", "output": t.output,
             "failures": len(t.failed), "error": t.error}
            for t in rec.tasks
        ],
    }
