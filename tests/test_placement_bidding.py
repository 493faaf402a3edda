"""Broker and executor cores, driven by hand: no network, no clock, no simulator."""

from __future__ import annotations

import random

from arcnet.mesh.core import Emit, Persist, Send
from arcnet.mesh.identity import Identity
from arcnet.placement import classes
from arcnet.placement.bidding import Broker, BrokerConfig, Executor
from arcnet.placement.hashing import CandidateIndex
from arcnet.placement.messages import (
    ArtifactRef,
    Award,
    AwardReply,
    Bid,
    CallForBids,
    TaskCancel,
    TaskUpdate,
    job_spec,
)
from arcnet.placement.view import MemoryView, PeerFacts

IDS = [Identity.from_seed(bytes([i + 1]) * 32).peer_id for i in range(16)]
ME = IDS[0]


def _broker(seed=1, k=4, **cfg):
    view = MemoryView([PeerFacts(p) for p in IDS])
    results = []
    b = Broker(ME, CandidateIndex(view), random.Random(seed), config=BrokerConfig(k=k, **cfg),
               on_result=lambda now, r: results.append(r) or [])
    return b, view, results


class Epochs:
    def __init__(self):
        self.n = 0
        self.given = []

    def __call__(self, task_id):
        self.n += 1
        self.given.append(self.n)
        return self.n, [Persist(f"a/{task_id}", str(self.n).encode())]


def _task(job="j1", cls="batch"):
    return classes.task_spec(job_spec(job, cls, artifacts=[ArtifactRef("m", 10**9)]), f"{job}/main")


def _start(b, task=None, epochs=None, **kw):
    epochs = epochs or Epochs()
    aid, eff = b.start(0.0, task or _task(), epoch_fn=epochs, custodians=IDS[1:4], entry=ME, **kw)
    calls = [e for e in eff if type(e) is Send and type(e.msg) is CallForBids]
    return aid, calls, epochs


def _bid(aid, cost, ok=True, late=False):
    return Bid(aid, ok, cost, cost, 0.0, 0, 0.5, late, "" if ok else "busy")


def test_clean_auction_is_2k_plus_2_messages_and_persists_before_award():
    b, _, results = _broker()
    aid, calls, epochs = _start(b)
    assert len(calls) == 4
    sent = len(calls)
    award_effects = []
    for i, c in enumerate(calls):
        eff = b.on_message(0.1, c.to, _bid(aid, 100.0 + 50 * i))
        award_effects += eff
    awards = [e for e in award_effects if type(e) is Send]
    assert len(awards) == 1 and type(awards[0].msg) is Award
    # the epoch is persisted before the award leaves
    kinds = [type(e) for e in award_effects if type(e) in (Persist, Send)]
    assert kinds.index(Persist) < kinds.index(Send)
    assert awards[0].to == calls[0].to  # the only bid within 5% of the best
    sent += 4 + 1  # bids in, award out
    b.on_message(0.2, awards[0].to, AwardReply(aid, awards[0].msg.epoch, True, ""))
    sent += 1
    assert sent == 2 * 4 + 2
    (r,) = results
    assert r.ok and r.winner == calls[0].to and r.epoch == epochs.given[-1] and r.bids == 4
    assert b.statistics()["auctions_open"] == 0 and b.next_deadline() is None


def test_choice_is_random_among_bids_within_five_percent():
    winners = set()
    for seed in range(40):
        b, _, _ = _broker(seed)
        aid, calls, _ = _start(b)
        costs = [100.0, 104.0, 106.0, 300.0]
        eff = []
        for c, cost in zip(calls, costs):
            eff += b.on_message(0.1, c.to, _bid(aid, cost))
        (award,) = [e for e in eff if type(e) is Send]
        winners.add(calls.index(next(c for c in calls if c.to == award.to)))
    assert winners == {0, 1}


def test_late_bids_rank_behind_every_on_time_bid():
    b, _, _ = _broker()
    aid, calls, _ = _start(b)
    eff = []
    for i, c in enumerate(calls):  # the cheapest two miss their budget
        eff += b.on_message(0.1, c.to, _bid(aid, 10.0 + i, late=i < 2))
    (award,) = [e for e in eff if type(e) is Send]
    assert award.to == calls[2].to


def test_silent_bidders_time_out_and_next_candidates_are_asked():
    b, _, results = _broker()
    aid, calls, _ = _start(b)
    assert b.next_deadline() == 1.0
    eff = b.on_timer(1.0, ("b", "bid", aid))  # nobody answered
    calls2 = [e for e in eff if type(e) is Send and type(e.msg) is CallForBids]
    assert len(calls2) == 4 and not {c.to for c in calls} & {c.to for c in calls2}
    eff = b.on_message(1.1, calls2[2].to, _bid(aid, 50.0))
    assert not [e for e in eff if type(e) is Send]  # still waiting for the others
    eff = b.on_timer(2.0, ("b", "bid", aid))
    (award,) = [e for e in eff if type(e) is Send]
    assert award.to == calls2[2].to
    assert b.statistics()["bid_timeouts"] == 4 + 3


def test_refusal_and_award_timeout_move_on_with_fresh_epochs():
    b, _, results = _broker()
    aid, calls, epochs = _start(b)
    eff = []
    for i, c in enumerate(calls):
        eff += b.on_message(0.1, c.to, _bid(aid, 100.0 * (i + 1)))
    a1 = next(e for e in eff if type(e) is Send)
    eff = b.on_message(0.2, a1.to, AwardReply(aid, a1.msg.epoch, False, "queue grew"))
    a2 = next(e for e in eff if type(e) is Send)
    assert a2.to == calls[1].to and a2.msg.epoch != a1.msg.epoch
    eff = b.on_timer(1.2, ("b", "award", aid))  # the second winner never answers
    a3 = next(e for e in eff if type(e) is Send)
    assert a3.to == calls[2].to and len({a1.msg.epoch, a2.msg.epoch, a3.msg.epoch}) == 3
    b.on_message(1.3, a3.to, AwardReply(aid, a3.msg.epoch, True, ""))
    assert results[0].ok and results[0].winner == calls[2].to
    # a late accept from an earlier winner is ignored
    b.on_message(1.4, a2.to, AwardReply(aid, a2.msg.epoch, True, ""))
    assert len(results) == 1


def test_no_eligible_peer_fails_fast_and_declines_count_as_no_bid():
    b, view, results = _broker(rounds_max=1)
    t = classes.task_spec(job_spec("j", "batch", capabilities=["tpu"]), "j/main")
    _start(b, t)
    assert not results[0].ok and "no eligible" in results[0].reason
    aid, calls, _ = _start(b)
    for c in calls:
        b.on_message(0.1, c.to, _bid(aid, 0.0, ok=False))
    assert not results[1].ok and "busy" in results[1].reason


def test_loop_steps_prefer_their_previous_site():
    b, _, _ = _broker()
    sticky = IDS[9]
    aid, calls, _ = _start(b, sticky=sticky)
    assert calls[0].to == sticky and len(calls) == 4
    eff = []
    for c in calls:
        eff += b.on_message(0.1, c.to, _bid(aid, 140.0 if c.to == sticky else 100.0))
    (award,) = [e for e in eff if type(e) is Send]
    assert award.to == sticky  # within the loop tolerance


# -- executor ------------------------------------------------------------------


def _executor(slots=2, **facts):
    f = PeerFacts(ME, slots=slots, **facts)
    local = []
    ex = Executor(ME, lambda: f, random.Random(3), local=lambda now, msg: local.append(msg) or [])
    return ex, local


def _award(task, epoch=1, aid=7, lease=100.0):
    return Award(aid, task, epoch, lease, IDS[1:4], IDS[5])


def test_executor_bids_from_its_queue_and_runs_fifo():
    ex, _ = _executor(slots=2)
    t1 = classes.task_spec(job_spec("a", "batch", run_s=100.0, slots=2), "a/main")
    t2 = classes.task_spec(job_spec("b", "batch", run_s=50.0, slots=1), "b/main")
    (bid,) = ex.on_message(0.0, IDS[1], CallForBids(7, t1))
    assert bid.msg.ok and bid.msg.start_s == 0.0
    eff = ex.on_message(0.0, IDS[1], _award(t1))
    assert any(type(e) is Emit and e.kind == "task.run" for e in eff)
    assert any(type(e) is Persist and e.value for e in eff)
    (bid2,) = ex.on_message(1.0, IDS[1], CallForBids(8, t2))
    assert bid2.msg.start_s == 99.0  # waits for the running gang
    eff = ex.on_message(1.0, IDS[1], _award(t2, aid=8))
    assert not any(type(e) is Emit and e.kind == "task.run" for e in eff)
    assert ex.slots_used() == 3
    eff = ex.on_event(100.0, Emit("task.finished", {"task": "a/main", "epoch": 1, "ok": True, "output": "b2:x"}))
    runs = [e for e in eff if type(e) is Emit and e.kind == "task.run"]
    assert [r.data["task"] for r in runs] == ["b/main"]
    dones = [e.msg for e in eff if type(e) is Send and type(e.msg) is TaskUpdate and e.msg.state == "done"]
    assert sorted(m.job_id for m in dones) == ["a"] * 4  # three custodians and the entry
    assert any(type(e) is Persist and e.value is None for e in eff)


def test_executor_refuses_when_its_queue_grew_and_cancels_on_request():
    ex, _ = _executor(slots=1)
    t = [classes.task_spec(job_spec(f"j{i}", "batch", run_s=600.0), f"j{i}/main") for i in range(3)]
    ex.on_message(0.0, IDS[1], CallForBids(1, t[0]))
    ex.on_message(0.0, IDS[1], CallForBids(2, t[1]))
    ex.on_message(0.0, IDS[1], _award(t[0], aid=1))
    # two brokers got quotes of "start now"; the second award now waits 600 s
    eff = ex.on_message(0.0, IDS[1], _award(t[1], aid=2))
    (reply,) = [e.msg for e in eff if type(e) is Send]
    assert not reply.accepted and "queue" in reply.reason
    eff = ex.on_message(1.0, IDS[1], TaskCancel("j0", "j0/main", 1))
    assert any(type(e) is Emit and e.kind == "task.cancel" for e in eff)
    assert ex.slots_used() == 0


def test_executor_restart_reports_every_accepted_task_lost():
    ex, _ = _executor()
    t = classes.task_spec(job_spec("a", "batch"), "a/main")
    eff = ex.on_message(0.0, IDS[1], _award(t, epoch=65537))
    disk = {e.key: e.value for e in eff if type(e) is Persist}
    ex2, _ = _executor()
    eff = ex2.restore(5.0, disk)
    fails = [e.msg for e in eff if type(e) is Send]
    # lost, not failed: a restart is not the job's failure (custodians do not count it)
    assert {m.state for m in fails} == {"lost"} and {m.epoch for m in fails} == {65537}
    assert any(type(e) is Persist and e.value is None for e in eff)


def test_queue_discipline_backfills_small_work_without_delaying_the_gang():
    from arcnet.placement.bidding import startable, wait_estimate

    running = [(100.0, 4), (300.0, 2)]  # 6 of 8 slots busy
    # head: a gang of 8 (starts at 300 at the earliest); behind it two small tasks
    queue = [(8, 600.0, 0.0), (1, 50.0, 0.0), (2, 500.0, 0.0)]
    picks = startable(0.0, 8, running, queue)
    assert picks == [1]  # ends at 50 < 300; the 500 s one would delay the gang
    # the gang's start estimate is not pushed back by the backfilled task
    assert wait_estimate(0.0, 8, running + [(50.0, 1)], [(8, 600.0, 0.0, 1)], 1, 50.0, 1) == 0.0
    # priority: an online task goes ahead of queued batch work
    q4 = [(8, 600.0, 0.0, 1), (2, 500.0, 0.0, 1)]
    assert wait_estimate(0.0, 8, running, q4, 2, 30.0, 0) == 0.0
    assert wait_estimate(0.0, 8, running, q4, 2, 1000.0, 1) == 300.0 + 600.0
    # an item waiting for its energy window does not block the others
    assert startable(0.0, 8, [], [(4, 100.0, 50.0), (4, 100.0, 0.0)]) == [1]


def test_executor_runs_online_work_ahead_of_queued_batch():
    ex, _ = _executor(slots=2)
    gang = classes.task_spec(job_spec("g", "batch", run_s=100.0, slots=2), "g/main")
    batch = classes.task_spec(job_spec("b", "batch", run_s=100.0, slots=2), "b/main")
    online = classes.task_spec(job_spec("o", "online", run_s=10.0, slots=1), "o/main")
    ex.on_message(0.0, IDS[1], _award(gang, aid=1))
    ex.on_message(0.0, IDS[1], _award(batch, aid=2))
    ex.on_message(0.0, IDS[1], _award(online, aid=3))
    assert [k[0] for k in ex.queue] == ["o/main", "b/main"]
    eff = ex.on_event(100.0, Emit("task.finished", {"task": "g/main", "epoch": 1, "ok": True, "output": "x"}))
    assert [e.data["task"] for e in eff if type(e) is Emit and e.kind == "task.run"] == ["o/main"]
