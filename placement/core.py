"""The placement core of one peer: broker, executor and custodian in one sans-IO object.

Register it in a :class:`~arcnet.mesh.node.Node` under protocol ``place``::

    core = PlacementCore(peer_id, view, rng, facts=own_facts, records=disk_records)
    node = Node(peer_id, {"swim": membership, "place": core})

What it hears (``on_event``):

* ``placement.submit`` ``{"spec": bytes}`` (:func:`submit_event`) -- a job
  submitted at this peer (the daemon's control method injects it);
* ``placement.query`` ``{"job": id}`` -- ask the job's custodians for its state;
* ``member.dead`` / ``member.left`` ``{"peer": id}`` -- from membership:
  re-place its tasks, repair custody records it held (other ``member.*``
  events only tell a gossip-backed view that membership changed);
* ``task.finished`` ``{"task", "epoch", "ok", "output", "reason"}`` -- from the
  runtime; ``"lost": True`` (with ``ok`` false) when the failure is not the
  job's (the runtime could not take it): not counted against
  ``CustodyConfig.failed_attempts_max``.

What it says (``Emit``), all plain values:

* to the submitter's side: ``job.submitted``, ``job.accepted`` (a quorum of
  custodians persisted it), ``job.rejected``, ``job.bid_won`` (the winning
  bid and why: cost, completion, surplus share, bids, near-best count),
  ``job.placed``, ``job.started``, ``job.task_done``, ``job.done`` (with the
  output id), ``job.waiting`` (no usable bid yet; retried),
  ``job.task_failed`` / ``job.task_lost`` (an attempt failed / was lost; re-placed),
  ``job.failed`` (not accepted, or given up after ``failed_attempts_max``
  failed attempts: ``error`` is the last failure's text),
  ``job.status`` (a query's answer);
* custody: ``task.replaced``, ``custody.done``, ``custody.failed``, ``custody.repaired``;
* to the runtime: ``task.run``, ``task.cancel``; and ``task.accepted``,
  ``task.refused``.

``status(job_id)`` answers a control request from local knowledge.

The three roles share one timer table; their timer names start with "b"
(broker), "x" (executor) and "c" (custody).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping

from arcnet.mesh.core import Effect, Emit, Timers
from arcnet.mesh.wire import Message, WireError, decode, encode

from .bidding import AuctionResult, Broker, BrokerConfig, Executor, ExecutorConfig
from .cost import DEFAULT_MODEL, CostModel
from .custody import Custody, CustodyConfig
from .hashing import EPS_DEFAULT, CandidateIndex
from .messages import (
    PROTOCOL,
    Award,
    AwardReply,
    Bid,
    CallForBids,
    JobAck,
    JobQuery,
    JobSpec,
    JobStatus,
    JobSubmit,
    RecordSync,
    SpecEnvelope,
    TaskCancel,
    TaskUpdate,
)
from .view import ClusterView, PeerFacts

__all__ = ["PlacementConfig", "PlacementCore", "submit_event"]


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    custody: CustodyConfig = field(default_factory=CustodyConfig)
    cost: CostModel = DEFAULT_MODEL
    #: bounded-load slack for candidate choice (0.25: no peer above 1.25 x mean)
    eps: float = EPS_DEFAULT


def submit_event(spec: JobSpec) -> Emit:
    """The event a driver injects to submit ``spec`` at a peer."""
    return Emit("placement.submit", {"spec": encode(SpecEnvelope(spec))})


class PlacementCore:
    PROTOCOL = PROTOCOL

    def __init__(
        self,
        me: str,
        view: ClusterView,
        rng: random.Random,
        *,
        index: CandidateIndex | None = None,
        facts: Callable[[], PeerFacts | None] | None = None,
        records: Mapping[str, bytes] | None = None,
        config: PlacementConfig = PlacementConfig(),
    ):
        self.me = me
        self.view = view
        self.rng = rng
        self.config = config
        self.index = index if index is not None else CandidateIndex(view, eps=config.eps)
        self.timers = Timers()
        self._records = dict(records or {})
        self.broker = Broker(me, self.index, rng, config=config.broker, timers=self.timers, on_result=self._on_auction,
                             cost_model=config.cost)
        self.executor = Executor(
            me, facts or (lambda: view.facts(me)), rng,
            config=config.executor, cost_model=config.cost, timers=self.timers, local=self._local,
        )
        self.custody = Custody(me, view, self.index, self.broker, rng, config=config.custody, timers=self.timers,
                               local=self._local)
        self.bad_events = 0
        self._handlers: dict[type, Callable[[float, str, Any], list[Effect]]] = {
            CallForBids: self.executor.on_call,
            Award: self.executor.on_award,
            TaskCancel: self.executor.on_cancel,
            Bid: self.broker.on_bid,
            AwardReply: self.broker.on_award_reply,
            JobSubmit: lambda now, s, m: self._on_record(now, s, m.record, ack=True),
            RecordSync: lambda now, s, m: self._on_record(now, s, m.record, ack=False),
            JobAck: self.custody.on_ack,
            TaskUpdate: self.custody.on_task_update,
            JobQuery: self.custody.on_query,
            JobStatus: self.custody.on_status,
        }

    # -- core contract -------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        recs = self._records
        self._records = {}
        out = self.custody.restore(now, recs)
        out.extend(self.executor.restore(now, recs))
        return out

    def on_message(self, now: float, sender: str, msg: Message) -> list[Effect]:
        h = self._handlers.get(type(msg))
        return h(now, sender, msg) if h is not None else []

    def on_timer(self, now: float, timer: Hashable) -> list[Effect]:
        kind = timer[0]  # type: ignore[index]
        if kind == "b":
            return self.broker.on_timer(now, timer)
        if kind == "x":
            return self.executor.on_timer(now, timer)
        if kind == "c":
            return self.custody.on_timer(now, timer)
        return []

    def on_event(self, now: float, ev: Emit) -> list[Effect]:
        k = ev.kind
        if k.startswith("member."):
            note = getattr(self.view, "note_event", None)
            if note is not None:  # a view over real gossip learns that membership changed
                note(k)
        if k in ("member.dead", "member.left"):
            peer = ev.data.get("peer") or ev.data.get("member") or ""
            return self.custody.on_member_dead(now, peer) if peer and peer != self.me else []
        if k == "task.finished":
            return self.executor.on_event(now, ev)
        if k == "placement.submit":
            spec = ev.data.get("spec")
            if isinstance(spec, JobSpec):
                return self.submit(now, spec)
            try:
                env = decode(spec) if isinstance(spec, (bytes, bytearray)) else None
            except WireError as exc:
                self.bad_events += 1
                return [Emit("job.rejected", {"job": "", "reason": f"bad job spec: {exc}"[:200]})]
            if type(env) is not SpecEnvelope:
                self.bad_events += 1
                return [Emit("job.rejected", {"job": "", "reason": "bad job spec: expected an encoded SpecEnvelope"})]
            return self.submit(now, env.spec)
        if k == "placement.query":
            return self.custody.query(now, str(ev.data.get("job", "")))
        return []

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def statistics(self) -> dict[str, float]:
        s: dict[str, float] = {}
        for prefix, part in (("broker", self.broker), ("exec", self.executor), ("custody", self.custody)):
            for k, v in part.statistics().items():
                s[f"{prefix}.{k}"] = v
        s["timers"] = len(self.timers)
        s["bad_events"] = self.bad_events
        return s

    # -- API for the daemon --------------------------------------------------

    def submit(self, now: float, spec: JobSpec) -> list[Effect]:
        return self.custody.submit(now, spec)

    def status(self, job_id: str) -> dict[str, Any] | None:
        return self.custody.status(job_id)

    # -- internals -----------------------------------------------------------

    def _local(self, now: float, msg: Message) -> list[Effect]:
        """A message from this peer to itself (it is custodian, entry and executor at once)."""
        return self.on_message(now, self.me, msg)

    def _on_record(self, now: float, sender: str, rec: Any, *, ack: bool) -> list[Effect]:
        self.executor.learn_custodians(rec.spec.job_id, rec.custodians)
        if ack or self.me in rec.custodians or rec.spec.job_id in self.custody.records:
            return self.custody.on_submit(now, sender, rec, ack=ack)
        return []  # an executor told of a new custodian list: nothing to hold

    def _on_auction(self, now: float, r: AuctionResult) -> list[Effect]:
        return self.custody.on_auction(now, r)
