"""Local bidding: a broker asks a few candidates, the best estimate wins.

The broker (any peer that received the submission, or a custodian
re-placing a task) takes the top k candidates by rendezvous hash with
bounded load (:mod:`.hashing`) and sends each a :class:`CallForBids`. Each
candidate prices the task from fresh local facts (:mod:`.cost`) and answers
with a :class:`Bid`. The broker picks at random among the bids within 5% of
the best (so equal sites share work instead of all brokers herding on one),
awards it with an epoch and a lease, and the winner accepts or refuses (it
refuses only if its queue changed a lot since it bid). Bidders that stay
silent past the bid timeout are dropped and, if no usable bid came back,
the next k candidates in hash order are asked. A placement is therefore
2k + 2 messages when nothing goes wrong.

Epochs are never chosen here: the owner of the auction passes ``epoch_fn``,
which hands out a fresh epoch (and the Persist effects that record it)
for every award, so no two awards ever share an epoch
(:mod:`.custody` explains the numbering).

The executor side (:class:`Executor`) answers calls for bids, keeps the
site's FIFO of accepted tasks, starts a task when its slots are free
(emitting ``task.run`` for the runtime), and reports ``done``/``failed``/``lost`` to
the job's custodians and entry peer when the runtime emits ``task.finished``.

Prior art: contract-net protocol (Smith 1980); Sparrow's batch sampling
(Ousterhout et al., SOSP 2013) for "ask a few, take the best".
Knowingly left out: reservations at bid time (a bid is a quote, not a hold:
an executor may refuse an award if the quote went stale), preemption.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Sequence

from arcnet.mesh.core import Effect, Emit, Persist, Send, Timers
from arcnet.mesh.wire import Message

from . import classes
from .cost import DEFAULT_MODEL, CostModel, Estimate, estimate
from .hashing import CandidateIndex, Eligibility
from .messages import (
    TIME_MAX_S,
    Award,
    AwardReply,
    Bid,
    CallForBids,
    StoredExecution,
    TaskCancel,
    TaskSpec,
    TaskUpdate,
)
from .view import PeerFacts

__all__ = [
    "AuctionResult",
    "Broker",
    "BrokerConfig",
    "Executor",
    "ExecutorConfig",
    "priority",
    "startable",
    "wait_estimate",
]

RENEW_AT = 0.75  # an executor renews its lease at this fraction of it (custodians wait the whole lease)


def _clamp_s(x: float) -> float:
    return 0.0 if x != x or x < 0 else (TIME_MAX_S if x > TIME_MAX_S else float(x))


# ---------------------------------------------------------------------------
# broker


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    #: candidates asked per round; a clean placement costs 2k + 2 messages.
    #: 4 gives 1 - 0.5**4 = 94% odds that some candidate has solar surplus
    #: when half the fleet has; it does not need to grow with the mesh.
    k: int = 4
    #: seconds to wait for bids; a WAN round trip is 0.05-0.3 s, so 1 s
    #: drops only stalled or dead peers. Independent of mesh size.
    bid_timeout_s: float = 1.0
    #: seconds to wait for the winner's accept/refuse before trying the next bid
    award_timeout_s: float = 1.0
    #: rounds of k candidates before the auction gives up (the owner retries later)
    rounds_max: int = 3
    #: bids within this fraction of the best are equally good: pick one at random
    near_best_fraction: float = 0.05
    #: a lease lasts lease_factor x the winner's own completion estimate, at least lease_min_s
    lease_factor: float = 2.0
    lease_min_s: float = 120.0
    #: auctions in flight at one broker (a bound on memory)
    auctions_max: int = 10_000
    #: peers with room scanned in hash order, of which the k with the best
    #: estimate from their gossiped facts (cache contents, energy, health)
    #: are asked; k = plain hash order
    scan: int = 12


@dataclass(frozen=True, slots=True)
class AuctionResult:
    auction: int
    task: TaskSpec
    ok: bool
    winner: str | None
    epoch: int
    bid: Bid | None
    lease_s: float
    reason: str
    bids: int  # usable bids received
    asked: int  # candidates asked
    near_best: int  # bids within near_best_fraction of the best
    rounds: int
    started_at: float
    owner: Any = None  # whatever the starter passed: routes the result back


@dataclass
class _Auction:
    aid: int
    task: TaskSpec
    elig: Eligibility
    epoch_fn: Callable[[str], tuple[int, list[Effect]]]
    custodians: list[str]
    entry: str
    exclude: list[str]
    sticky: str | None
    owner: Any
    started_at: float
    asked: dict[str, float] = field(default_factory=dict)  # peer -> when asked
    bids: dict[str, Bid] = field(default_factory=dict)  # peer -> bid (usable or not)
    ranked: list[tuple[float, str]] = field(default_factory=list)  # award order after the first pick
    awarded: dict[str, int] = field(default_factory=dict)  # peer -> epoch (each tried once)
    phase: str = "bidding"  # bidding | awarding
    current: str | None = None  # peer awaiting the award reply
    current_epoch: int = 0
    rounds: int = 1
    near_best: int = 0
    round_peers: list[str] = field(default_factory=list)  # asked in the current round


class Broker:
    """Runs auctions. A sans-IO core (alone, or embedded in a larger core).

    ``on_result(now, result) -> effects`` is called once per auction; by
    default it emits ``placement.auction``.
    """

    def __init__(
        self,
        me: str,
        index: CandidateIndex,
        rng: random.Random,
        *,
        config: BrokerConfig = BrokerConfig(),
        timers: Timers | None = None,
        on_result: Callable[[float, AuctionResult], list[Effect]] | None = None,
        cost_model: CostModel | None = DEFAULT_MODEL,
    ):
        assert config.k >= 1 and config.rounds_max >= 1
        self.me = me
        self.cost_model = cost_model  # None: rank scanned peers by missing bytes only
        self.index = index
        self.rng = rng
        self.config = config
        self.timers = timers if timers is not None else Timers()
        self.on_result = on_result or self._emit_result
        self.auctions: dict[int, _Auction] = {}
        # ids start at a random point so a restarted broker never mistakes an
        # old auction's late bids for a new one's
        self._next_id = (rng.getrandbits(40) << 20) + 1
        self.counters = {
            "auctions": 0,
            "auctions_ok": 0,
            "auctions_failed": 0,
            "calls_sent": 0,
            "bids_received": 0,
            "bids_late": 0,
            "bid_timeouts": 0,
            "extra_rounds": 0,
            "awards_sent": 0,
            "awards_refused": 0,
            "award_timeouts": 0,
        }

    # -- starting ------------------------------------------------------------

    def start(
        self,
        now: float,
        task: TaskSpec,
        *,
        epoch_fn: Callable[[str], tuple[int, list[Effect]]],
        custodians: Sequence[str],
        entry: str,
        exclude: Iterable[str] = (),
        sticky: str | None = None,
        owner: Any = None,
    ) -> tuple[int, list[Effect]]:
        """Open an auction for ``task``; returns its id and the first effects."""
        aid = self._next_id
        self._next_id += 1
        self.counters["auctions"] += 1
        elig = classes.eligibility(task)
        a = _Auction(aid, task, elig, epoch_fn, list(custodians), entry, list(exclude), sticky, owner, now)
        if len(self.auctions) >= self.config.auctions_max:
            return aid, self._finish(now, a, None, "broker overloaded")
        self.auctions[aid] = a
        k = self.config.k
        cands: list[str] = []
        arts = [(x.cid, x.size_bytes) for x in task.artifacts]

        def missing(f: PeerFacts) -> float:
            held = f.artifacts
            return float(sum(size for cid, size in arts if cid not in held))

        model = self.cost_model

        def prescore(f: PeerFacts) -> float:
            # the bid this peer would make if its queue were empty, from its
            # gossiped facts (cache, energy, health): bidders refine it with
            # their fresh queue; here it only picks whom to ask
            e = estimate(task, f, 0.0, model)
            return e.cost_s if e.ok else float("inf")

        kw: dict[str, Any] = {"need_slots": task.slots, "scan": self.config.scan,
                              "prefer": prescore if model is not None else missing}
        if task.submitter_region and classes.POLICIES[task.cls].prefer_submitter_region:
            near = classes.eligibility(task, region=task.submitter_region)
            cands = self.index.candidates(task.key, k, near, exclude=a.exclude, **kw)
            if len(cands) < k:  # too few near the submitter: widen to every allowed region
                more = self.index.candidates(task.key, k, elig, exclude=a.exclude + cands, **kw)
                cands = cands + more[: k - len(cands)]
        else:
            cands = self.index.candidates(task.key, k, elig, exclude=a.exclude, **kw)
        if sticky is not None and sticky not in cands and sticky not in a.exclude:
            # a loop step asks its previous site first; it replaces the last
            # hash candidate so the message count stays 2k + 2
            cands = [sticky] + cands[: k - 1]
        if not cands:
            del self.auctions[aid]
            return aid, self._finish(now, a, None, "no eligible candidates")
        return aid, self._ask(now, a, cands)

    def _ask(self, now: float, a: _Auction, peers: list[str]) -> list[Effect]:
        out: list[Effect] = []
        msg = CallForBids(a.aid, a.task)
        a.round_peers = list(peers)
        for p in peers:
            a.asked[p] = now
            out.append(Send(p, msg))
        self.counters["calls_sent"] += len(peers)
        out.append(self.timers.set(("b", "bid", a.aid), now + self.config.bid_timeout_s))
        return out

    # -- core contract -------------------------------------------------------

    def on_message(self, now: float, sender: str, msg: Message) -> list[Effect]:
        if type(msg) is Bid:
            return self.on_bid(now, sender, msg)
        if type(msg) is AwardReply:
            return self.on_award_reply(now, sender, msg)
        return []

    def on_timer(self, now: float, timer: Hashable) -> list[Effect]:
        if not self.timers.fire(timer):
            return []
        _, what, aid = timer  # type: ignore[misc]
        a = self.auctions.get(aid)
        if a is None:
            return []
        if what == "bid" and a.phase == "bidding":
            silent = sum(1 for p in a.round_peers if p not in a.bids)
            self.counters["bid_timeouts"] += silent
            return self._close_bidding(now, a)
        if what == "award" and a.phase == "awarding":
            self.counters["award_timeouts"] += 1
            return self._next_award(now, a)
        return []

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def statistics(self) -> dict[str, float]:
        s: dict[str, float] = dict(self.counters)
        s["auctions_open"] = len(self.auctions)
        return s

    def cancel(self, aid: int) -> list[Effect]:
        a = self.auctions.pop(aid, None)
        if a is None:
            return []
        out = [e for e in (self.timers.cancel(("b", "bid", aid)), self.timers.cancel(("b", "award", aid))) if e]
        return out

    # -- bids ----------------------------------------------------------------

    def on_bid(self, now: float, sender: str, msg: Bid) -> list[Effect]:
        a = self.auctions.get(msg.auction)
        if a is None or sender not in a.asked or sender in a.bids:
            self.counters["bids_late"] += 1
            return []
        self.counters["bids_received"] += 1
        a.bids[sender] = msg
        if a.phase == "bidding" and len(a.bids) == len(a.asked):
            return self._close_bidding(now, a)
        return []

    def _close_bidding(self, now: float, a: _Auction) -> list[Effect]:
        out: list[Effect] = []
        c = self.timers.cancel(("b", "bid", a.aid))
        if c:
            out.append(c)
        # bids that meet the budget or deadline first; late ones only if none does
        usable = [(b.cost_s, p) for p, b in a.bids.items() if b.ok and p not in a.awarded]
        on_time = [(c, p) for c, p in usable if not a.bids[p].late]
        if on_time:
            usable = on_time
        if not usable:
            if a.rounds < self.config.rounds_max:
                nxt = self.index.candidates(
                    a.task.key, self.config.k, a.elig, exclude=a.exclude + list(a.asked), need_slots=a.task.slots
                )  # a second round asks the next ones in plain hash order
                if nxt:
                    a.rounds += 1
                    self.counters["extra_rounds"] += 1
                    return out + self._ask(now, a, nxt)
            reasons = sorted({b.reason for b in a.bids.values() if b.reason})
            why = "no usable bid" + (f" ({'; '.join(reasons)[:40]})" if reasons else "")
            del self.auctions[a.aid]
            return out + self._finish(now, a, None, why)
        usable.sort()
        best = usable[0][0]
        limit = best + abs(best) * self.config.near_best_fraction + 1e-9
        near = [p for cost, p in usable if cost <= limit]
        a.near_best = len(near)
        pick = None
        if a.sticky is not None and a.sticky in a.bids and a.bids[a.sticky].ok and a.sticky not in a.awarded:
            if a.bids[a.sticky].cost_s <= best * (1.0 + classes.LOOP_TOLERANCE) + 1e-9:
                pick = a.sticky
        if pick is None:
            pick = near[0] if len(near) == 1 else near[self.rng.randrange(len(near))]
        rest = [(a.bids[p].late, cost, p) for p, b in a.bids.items() if b.ok and p not in a.awarded and p != pick
                for cost in (b.cost_s,)]
        a.ranked = [(cost, p) for _, cost, p in sorted(rest)]
        return out + self._award(now, a, pick)

    # -- awards --------------------------------------------------------------

    def _award(self, now: float, a: _Auction, peer: str) -> list[Effect]:
        bid = a.bids[peer]
        epoch, persist = a.epoch_fn(a.task.task_id)
        a.phase = "awarding"
        a.current = peer
        a.current_epoch = epoch
        a.awarded[peer] = epoch
        lease = max(self.config.lease_min_s, self.config.lease_factor * bid.completion_s)
        self.counters["awards_sent"] += 1
        out: list[Effect] = list(persist)  # the epoch is durable before the award leaves
        out.append(Send(peer, Award(a.aid, a.task, epoch, _clamp_s(lease), a.custodians, a.entry)))
        out.append(self.timers.set(("b", "award", a.aid), now + self.config.award_timeout_s))
        return out

    def on_award_reply(self, now: float, sender: str, msg: AwardReply) -> list[Effect]:
        a = self.auctions.get(msg.auction)
        if a is None or a.phase != "awarding" or sender != a.current or msg.epoch != a.current_epoch:
            self.counters["bids_late"] += 1
            return []
        out: list[Effect] = []
        c = self.timers.cancel(("b", "award", a.aid))
        if c:
            out.append(c)
        if msg.accepted:
            del self.auctions[a.aid]
            return out + self._finish(now, a, sender, "")
        self.counters["awards_refused"] += 1
        return out + self._next_award(now, a)

    def _next_award(self, now: float, a: _Auction) -> list[Effect]:
        a.current = None
        while a.ranked:
            _, p = a.ranked.pop(0)
            if p not in a.awarded:
                return self._award(now, a, p)
        # every usable bid refused or timed out: another round if allowed
        a.phase = "bidding"
        return self._close_bidding(now, a)

    # -- results -------------------------------------------------------------

    def _finish(self, now: float, a: _Auction, winner: str | None, reason: str) -> list[Effect]:
        ok = winner is not None
        self.counters["auctions_ok" if ok else "auctions_failed"] += 1
        bid = a.bids.get(winner) if winner else None
        lease = max(self.config.lease_min_s, self.config.lease_factor * bid.completion_s) if bid else 0.0
        usable = sum(1 for b in a.bids.values() if b.ok)
        res = AuctionResult(
            a.aid, a.task, ok, winner, a.awarded.get(winner, 0) if winner else 0, bid, _clamp_s(lease),
            reason, usable, len(a.asked), a.near_best, a.rounds, a.started_at, a.owner,
        )
        return self.on_result(now, res)

    @staticmethod
    def _emit_result(now: float, r: AuctionResult) -> list[Effect]:
        return [Emit("placement.auction", {"task": r.task.task_id, "ok": r.ok, "winner": r.winner or "",
                                           "epoch": r.epoch, "reason": r.reason})]


# ---------------------------------------------------------------------------
# the site queue: priority classes, FIFO within a class, EASY backfilling

#: queue priority by class: latency-bound work first, FIFO within a priority
PRIORITY = {"online": 0}


def priority(cls: str) -> int:
    return PRIORITY.get(cls, 1)


def startable(now: float, slots: int, running: list[tuple[float, int]],
              queue: list[tuple[int, float, float]]) -> list[int]:
    """Which queued items start now: ``queue`` is (slots, busy_s, not_before) in queue order.

    Items start in order while they fit. When the first due item (the head)
    does not fit, later items may *backfill* (EASY backfilling, Lifka 1995):
    an item starts now if it fits in the free slots and either ends before
    the head's reserved start (the "shadow" time, from the running items'
    expected ends) or uses only slots the head will not need then. So small
    work never waits behind a gang, and the gang is never delayed by it.
    Items whose ``not_before`` is later (an energy window) are skipped.
    """
    free = slots - sum(s for _, s in running)
    ends = list(running)
    out: list[int] = []
    n = len(queue)
    i = 0
    while i < n:
        s_i, b_i, nb = queue[i]
        if nb > now:
            i += 1
            continue
        if s_i > free:
            break
        out.append(i)
        free -= s_i
        ends.append((now + b_i, s_i))
        i += 1
    if i >= n:
        return out
    need = queue[i][0]
    avail, shadow = free, now
    for end, s_ in sorted(ends):
        if avail >= need:
            break
        avail += s_
        shadow = max(now, end)
    extra = avail - need  # slots the head leaves free at its start
    for j in range(i + 1, n):
        s_j, b_j, nb = queue[j]
        if nb > now or s_j > free:
            continue
        if now + b_j <= shadow:
            out.append(j)
            free -= s_j
        elif s_j <= extra:
            out.append(j)
            free -= s_j
            extra -= s_j
    return out


def wait_estimate(now: float, slots: int, running: list[tuple[float, int]],
                  queue: list[tuple[int, float, float, int]], need: int, busy_s: float, prio: int) -> float:
    """Expected seconds until a new item (``need`` slots, ``busy_s``, priority
    ``prio``) starts, given the queue's (slots, busy_s, not_before, priority)
    items in queue order: the queue discipline of :func:`startable`."""
    need = min(need, slots)
    pos = len(queue)
    for k, item in enumerate(queue):
        if item[3] > prio:
            pos = k
            break
    ahead = [(a, b, c) for a, b, c, _ in queue[:pos]]
    # starts at once if the discipline would start it now
    trial = ahead + [(need, busy_s, now)] + [(a, b, c) for a, b, c, _ in queue[pos:]]
    if pos in startable(now, slots, list(running), trial):
        return 0.0
    # otherwise: in queue order, items ahead of it starting as slots free up
    free = slots - sum(s for _, s in running)
    heap = sorted((max(now, e), s) for e, s in running)
    t = now
    for s_i, b_i, nb in ahead + [(need, busy_s, now)]:
        s_i = min(s_i, slots)
        if nb > t:
            t = nb
        while free < s_i and heap:
            end, s_ = heapq.heappop(heap)
            free += s_
            t = max(t, end)
        free -= s_i
        heapq.heappush(heap, (t + b_i, s_i))
    return t - now


# ---------------------------------------------------------------------------
# executor (the bidder side)


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    #: tasks queued or running at one site (a bound on memory and on promises)
    queue_max: int = 256
    #: refuse an award whose start would now be this much later than quoted
    #: (seconds, plus 100% of the quote): the queue filled up since the bid
    refuse_slack_s: float = 120.0
    #: quotes remembered for the award check (bounded; oldest dropped)
    quotes_max: int = 4096


@dataclass
class _Work:
    task: TaskSpec
    epoch: int
    custodians: list[str]
    entry: str
    lease_s: float
    accepted_at: float
    busy_s: float  # expected fetch + load + run
    not_before: float  # energy-window deferral
    started_at: float = -1.0


class Executor:
    """Answers calls for bids and runs awarded tasks through the runtime.

    ``facts()`` returns this site's own fresh facts (energy, cache, health);
    the queue is this object's own. Emits ``task.run`` / ``task.cancel`` for
    the runtime and expects ``task.finished`` back (``on_event``), with data
    ``{"task": id, "epoch": n, "ok": bool, "output": cid, "reason": str}``;
    ``"lost": True`` with ``ok`` false marks a failure that is not the job's
    (the runtime could not run it), which custodians do not count.
    """

    def __init__(
        self,
        me: str,
        facts: Callable[[], PeerFacts | None],
        rng: random.Random,
        *,
        config: ExecutorConfig = ExecutorConfig(),
        cost_model: CostModel = DEFAULT_MODEL,
        timers: Timers | None = None,
        local: Callable[[float, Message], list[Effect]] | None = None,
    ):
        self.me = me
        self.facts = facts
        # delivers a message meant for this same peer (it is custodian or
        # entry of a task it runs) without a network hop
        self.local = local or (lambda now, msg: [])
        self.rng = rng
        self.config = config
        self.cost_model = cost_model
        self.timers = timers if timers is not None else Timers()
        self.running: dict[tuple[str, int], _Work] = {}  # (task id, epoch) -> work
        self.queue: list[tuple[str, int]] = []  # FIFO of (task id, epoch) ready to start
        self.deferred: dict[tuple[str, int], _Work] = {}  # waiting for an energy window
        self.work: dict[tuple[str, int], _Work] = {}  # every accepted, unfinished task
        self.quotes: dict[int, float] = {}  # auction -> quoted start_s
        self.counters = {
            "calls": 0,
            "bids_ok": 0,
            "bids_declined": 0,
            "awards_accepted": 0,
            "awards_refused": 0,
            "tasks_started": 0,
            "tasks_done": 0,
            "tasks_failed": 0,
            "tasks_cancelled": 0,
            "tasks_deferred": 0,
            "lease_renewals": 0,
        }

    # -- load ----------------------------------------------------------------

    def slots_used(self) -> int:
        """Slots running plus promised (queued or deferred): what this peer publishes."""
        return sum(w.task.slots for w in self.work.values())

    def _running(self, now: float) -> list[tuple[float, int]]:
        return [(max(now, w.started_at + w.busy_s), w.task.slots) for w in self.running.values()]

    def _queued(self) -> list[tuple[int, float, float, int]]:
        q = [self.work[k] for k in self.queue]
        q += sorted(self.deferred.values(), key=lambda w: (w.not_before, w.task.task_id))
        return [(w.task.slots, w.busy_s, w.not_before, priority(w.task.cls)) for w in q]

    def wait_s(self, now: float, need: int, slots: int, busy_s: float = 0.0, cls: str = "batch") -> float:
        """Expected seconds until ``need`` slots are free for a new task (the queue discipline)."""
        return wait_estimate(now, slots, self._running(now), self._queued(), need, busy_s, priority(cls))

    # -- messages ------------------------------------------------------------

    def on_message(self, now: float, sender: str, msg: Message) -> list[Effect]:
        t = type(msg)
        if t is CallForBids:
            return self.on_call(now, sender, msg)
        if t is Award:
            return self.on_award(now, sender, msg)
        if t is TaskCancel:
            return self.on_cancel(now, sender, msg)
        return []

    def quote(self, now: float, task: TaskSpec) -> Estimate:
        f = self.facts()
        if f is None:
            return estimate(task, PeerFacts(self.me, draining=True), 0.0, self.cost_model)
        if len(self.work) >= self.config.queue_max:
            return estimate(task, PeerFacts(self.me, draining=True), 0.0, self.cost_model)
        return estimate(task, f, self.wait_s(now, task.slots, f.slots, task.run_s, task.cls), self.cost_model)

    def on_call(self, now: float, sender: str, msg: CallForBids) -> list[Effect]:
        self.counters["calls"] += 1
        e = self.quote(now, msg.task)
        if not e.ok:
            self.counters["bids_declined"] += 1
            return [Send(sender, Bid(msg.auction, False, 0.0, 0.0, 0.0, 0, 0.0, False, e.reason[:64]))]
        self.counters["bids_ok"] += 1
        if len(self.quotes) >= self.config.quotes_max:
            del self.quotes[next(iter(self.quotes))]
        self.quotes[msg.auction] = e.start_s
        return [Send(sender, Bid(msg.auction, True, _clamp_s(e.cost_s), _clamp_s(e.completion_s), _clamp_s(e.start_s),
                                 min(e.fetch_bytes, (1 << 64) - 1), min(1.0, max(0.0, e.surplus_fraction)),
                                 e.late, e.reason[:64]))]

    def on_award(self, now: float, sender: str, msg: Award) -> list[Effect]:
        key = (msg.task.task_id, msg.epoch)
        if key in self.work:  # a duplicate delivery of the same award
            return [Send(sender, AwardReply(msg.auction, msg.epoch, True, ""))]
        e = self.quote(now, msg.task)
        quoted = self.quotes.pop(msg.auction, None)
        reason = ""
        if not e.ok:
            reason = e.reason
        elif quoted is not None and e.start_s > 2.0 * quoted + self.config.refuse_slack_s:
            reason = "queue grew since the bid"
        if reason:
            self.counters["awards_refused"] += 1
            return [Send(sender, AwardReply(msg.auction, msg.epoch, False, reason[:64])),
                    Emit("task.refused", {"task": msg.task.task_id, "epoch": msg.epoch, "reason": reason})]
        self.counters["awards_accepted"] += 1
        busy = e.completion_s - e.start_s  # fetch + load + run
        w = _Work(msg.task, msg.epoch, list(msg.custodians), msg.entry, msg.lease_s, now, busy, now + e.defer_s)
        self.work[key] = w
        out: list[Effect] = [
            Persist(_xkey(key), _encode_exec(w)),
            Send(sender, AwardReply(msg.auction, msg.epoch, True, "")),
            Emit("task.accepted", {"task": msg.task.task_id, "epoch": msg.epoch, "defer_s": e.defer_s}),
        ]
        if e.defer_s > 0:
            self.counters["tasks_deferred"] += 1
            self.deferred[key] = w
            out.append(self.timers.set(("x", "window", key), w.not_before))
        else:
            self._enqueue(key)
        out.append(self.timers.set(("x", "renew", key), now + msg.lease_s * RENEW_AT))
        out.extend(self._pump(now))
        return out

    def on_cancel(self, now: float, sender: str, msg: TaskCancel) -> list[Effect]:
        key = (msg.task_id, msg.epoch)
        w = self.work.pop(key, None)
        if w is None:
            return []
        self.counters["tasks_cancelled"] += 1
        out: list[Effect] = [Persist(_xkey(key), None)]
        out.extend(e for e in (self.timers.cancel(("x", "renew", key)), self.timers.cancel(("x", "window", key))) if e)
        self.deferred.pop(key, None)
        if key in self.queue:
            self.queue.remove(key)
        if self.running.pop(key, None) is not None:
            out.append(Emit("task.cancel", {"task": msg.task_id, "epoch": msg.epoch}))
        out.extend(self._pump(now))
        return out

    # -- timers and runtime events -------------------------------------------

    def on_timer(self, now: float, timer: Hashable) -> list[Effect]:
        if not self.timers.fire(timer):
            return []
        _, what, key = timer  # type: ignore[misc]
        w = self.work.get(key)
        if w is None:
            return []
        if what == "window":
            self.deferred.pop(key, None)
            self._enqueue(key)
            return self._pump(now)
        if what == "renew":
            # still ours and not finished: tell custodians we hold it
            self.counters["lease_renewals"] += 1
            msg = TaskUpdate(w.task.job_id, w.task.task_id, w.epoch,
                             "running" if key in self.running else "placed", self.me, "", w.lease_s, "")
            out: list[Effect] = []
            for c in w.custodians:
                out.extend(self.local(now, msg) if c == self.me else [Send(c, msg)])
            out.append(self.timers.set(("x", "renew", key), now + w.lease_s * RENEW_AT))
            return out
        return []

    def on_event(self, now: float, ev: Emit) -> list[Effect]:
        if ev.kind != "task.finished":
            return []
        key = (ev.data.get("task", ""), ev.data.get("epoch", -1))
        w = self.work.pop(key, None)
        if w is None:
            return []
        self.running.pop(key, None)
        ok = bool(ev.data.get("ok", False))
        self.counters["tasks_done" if ok else "tasks_failed"] += 1
        out: list[Effect] = [Persist(_xkey(key), None)]
        c = self.timers.cancel(("x", "renew", key))
        if c:
            out.append(c)
        # "lost": the runtime could not run it through no fault of the job (queue
        # full, shutting down): custodians re-place it without counting a failure
        state = "done" if ok else ("lost" if ev.data.get("lost") else "failed")
        out.extend(self.report(now, w, state, str(ev.data.get("output", ""))[:64] if ok else "",
                               "" if ok else str(ev.data.get("reason", "runtime failure"))[:200]))
        out.extend(self._pump(now))
        return out

    def report(self, now: float, w: _Work, state: str, output: str, reason: str) -> list[Effect]:
        """TaskUpdate to every custodian and the entry (each once), this peer excluded."""
        msg = TaskUpdate(w.task.job_id, w.task.task_id, w.epoch, state, self.me, output, w.lease_s, reason)
        out: list[Effect] = []
        to = list(w.custodians)
        if w.entry not in to:
            to.append(w.entry)
        for p in to:
            out.extend(self.local(now, msg) if p == self.me else [Send(p, msg)])
        return out

    def learn_custodians(self, job_id: str, custodians: Sequence[str]) -> None:
        """A custodian was added to a job this peer runs: report to it too."""
        for w in self.work.values():
            if w.task.job_id == job_id:
                w.custodians = w.custodians + [c for c in custodians if c not in w.custodians]

    def _enqueue(self, key: tuple[str, int]) -> None:
        """FIFO within a priority; a higher priority goes ahead of every lower one."""
        p = priority(self.work[key].task.cls)
        pos = len(self.queue)
        for i, k in enumerate(self.queue):
            if priority(self.work[k].task.cls) > p:
                pos = i
                break
        self.queue.insert(pos, key)

    def _pump(self, now: float) -> list[Effect]:
        """Start what the queue discipline allows (:func:`startable`)."""
        f = self.facts()
        slots = f.slots if f is not None else 0
        self.queue = [k for k in self.queue if k in self.work]
        items = [self.work[k] for k in self.queue]
        picks = startable(now, slots, self._running(now), [(w.task.slots, w.busy_s, 0.0) for w in items])
        if not picks:
            return []
        chosen = [self.queue[i] for i in picks]
        taken = set(picks)
        self.queue = [k for i, k in enumerate(self.queue) if i not in taken]
        out: list[Effect] = []
        for key in chosen:
            w = self.work[key]
            w.started_at = now
            self.running[key] = w
            self.counters["tasks_started"] += 1
            t = w.task
            out.append(Emit("task.run", {
                "job": t.job_id, "task": t.task_id, "epoch": w.epoch, "cls": t.cls, "slots": t.slots,
                "run_s": t.run_s, "artifacts": [[a.cid, a.size_bytes] for a in t.artifacts],
            }))
            started = TaskUpdate(t.job_id, t.task_id, w.epoch, "running", self.me, "", w.lease_s, "")
            out.extend(self.local(now, started) if w.entry == self.me else [Send(w.entry, started)])
        return out

    def restore(self, now: float, records: dict[str, bytes]) -> list[Effect]:
        """After a restart: every task this peer had accepted is reported lost
        (the runtime lost it; not the job's failure), so custodians re-place it at once."""
        out: list[Effect] = []
        for k in sorted(records):
            if not k.startswith("x/"):
                continue
            out.append(Persist(k, None))
            w = _decode_exec(records[k])
            if w is None:
                continue
            self.counters["tasks_failed"] += 1
            out.extend(self.report(now, w, "lost", "", "executor restarted"))
        return out

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def statistics(self) -> dict[str, float]:
        s: dict[str, float] = dict(self.counters)
        s["running"] = len(self.running)
        s["queued"] = len(self.queue)
        s["deferred"] = len(self.deferred)
        s["slots_used"] = self.slots_used()
        return s


def _xkey(key: tuple[str, int]) -> str:
    return f"x/{key[0]}/{key[1]}"


def _encode_exec(w: _Work) -> bytes:
    from arcnet.mesh.wire import encode

    return encode(StoredExecution(w.task, w.epoch, w.custodians, w.entry))


def _decode_exec(data: bytes) -> _Work | None:
    from arcnet.mesh.wire import WireError, decode

    try:
        m = decode(data)
    except WireError:
        return None
    if type(m) is not StoredExecution:
        return None
    return _Work(m.task, m.epoch, list(m.custodians), m.entry, 0.0, 0.0, 0.0, 0.0)
