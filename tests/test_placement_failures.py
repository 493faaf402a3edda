"""Custody's restart policy: failed attempts are bounded, crashes are not counted."""

from __future__ import annotations

import random
from collections import defaultdict

from arcnet.mesh.core import Send
from arcnet.mesh.wire import decode, encode
from arcnet.placement import classes
from arcnet.placement.core import PlacementConfig, PlacementCore
from arcnet.placement.custody import CustodyConfig, epoch_of, merge_records, peer_tag
from arcnet.placement.hashing import CandidateIndex
from arcnet.placement.messages import ArtifactRef, Award, CustodyRecord, StoredRecord, TaskUpdate, job_spec
from arcnet.placement.simrt import PlacementSim, SimSite
from arcnet.placement.view import MemoryView, PeerFacts
from arcnet.sims.engine import SimpleNetwork, Simulator, derive_seed

from .test_placement_custody import PEERS

GB = 10**9


class Mesh:
    """A small simulated mesh whose runtimes fail tasks as ``fail(task, epoch)`` says."""

    def __init__(self, seed: int, n: int, fail, *, failed_attempts_max: int = 3):
        self.awards: dict[str, set[int]] = defaultdict(set)  # task -> epochs awarded

        def on_effect(now, peer, e):
            if type(e) is Send and type(e.msg) is Award:
                self.awards[e.msg.task.task_id].add(e.msg.epoch)

        net = SimpleNetwork(random.Random(derive_seed(seed, "net")), latency_s=0.02, jitter_s=0.02)
        self.sim = Simulator(seed, net, on_effect=on_effect)
        self.view = MemoryView()
        self.events: list[tuple[float, str, str, dict]] = []
        config = PlacementConfig(custody=CustodyConfig(failed_attempts_max=failed_attempts_max))
        self.ps = PlacementSim(self.sim, self.view, CandidateIndex(self.view), config=config,
                               on_event=lambda now, p, e: self.events.append((now, p, e.kind, e.data)))
        self.ids = PEERS[:n]
        for i, pid in enumerate(self.ids):
            self.ps.add_site(SimSite(pid, region=f"r{i % 3}"), fail=fail)
        self.ps.start()

    def kinds(self, kind: str, **match) -> list[dict]:
        return [d for _, _, k, d in self.events if k == kind and all(d.get(a) == b for a, b in match.items())]

    def last(self, kind: str, **match) -> dict:
        return self.kinds(kind, **match)[-1]

    def custodians(self, job: str) -> list[str]:
        return self.kinds("job.submitted", job=job)[0]["custodians"]


def _model() -> list[ArtifactRef]:
    return [ArtifactRef("model-0", 10 * GB)]


def _first_run_fails(prefix: str):
    """Fails the first attempt of each task under ``prefix`` that runs to its end."""
    failed: set[str] = set()

    def fail(task: str, epoch: int) -> bool:
        if task.startswith(prefix) and task not in failed:
            failed.add(task)
            return True
        return False

    return fail


def test_a_task_that_always_fails_is_attempted_failed_attempts_max_times_then_fails_with_its_error():
    m = Mesh(11, 12, lambda task, epoch: task.startswith("bad/"))
    entry = m.ids[0]
    m.ps.submit(1.0, entry, job_spec("bad", "batch", artifacts=_model(), run_s=30.0))
    m.ps.submit(1.0, entry, job_spec("good", "batch", artifacts=_model(), run_s=30.0))
    m.sim.run(3000.0)
    assert len(m.awards["bad/main"]) == 3  # exactly failed_attempts_max attempts, then no more
    assert len(m.kinds("job.task_failed", job="bad")) == 3
    (failed,) = m.kinds("job.failed", job="bad")  # the entry says so once, with the error
    assert failed["error"] == "sim failure" and failed["attempts"] == 3
    assert not m.kinds("job.done", job="bad") and not m.kinds("task.replaced", job="bad")[2:]
    custodians = m.custodians("bad")
    assert sorted(p for _, p, k, d in m.events if k == "custody.failed" and d["job"] == "bad") == sorted(custodians)
    for c in custodians:  # every custodian's copy: given up, with the error and the count
        st = m.ps.cores[c].status("bad")
        assert st["state"] == "failed" and st["error"] == "sim failure"
        (t,) = st["tasks"]
        assert t["state"] == "error" and t["failures"] == 3 and t["error"] == "sim failure"
    assert m.ps.cores[entry].status("bad")["state"] == "failed"
    # the other job is untouched
    assert m.kinds("job.done", job="good") and len(m.awards["good/main"]) == 1


def test_a_task_that_fails_once_then_succeeds_completes():
    m = Mesh(12, 12, _first_run_fails("flaky/"))
    m.ps.submit(1.0, m.ids[2], job_spec("flaky", "batch", artifacts=_model(), run_s=30.0))
    m.sim.run(2000.0)
    assert len(m.awards["flaky/main"]) == 2
    assert len(m.kinds("job.task_failed", job="flaky")) == 1 and not m.kinds("job.failed", job="flaky")
    assert m.kinds("job.done", job="flaky")
    for c in m.custodians("flaky"):
        st = m.ps.cores[c].status("flaky")
        assert st["state"] == "done" and st["error"] == ""
        assert st["tasks"][0]["failures"] == 1  # the history stays: one failed attempt


def test_executor_crashes_and_restarts_do_not_count_as_failed_attempts():
    # one failed attempt allowed... after two crashes, the first run fails, the next succeeds
    m = Mesh(13, 14, _first_run_fails("c/"), failed_attempts_max=2)
    m.ps.submit(1.0, m.ids[1], job_spec("c", "batch", artifacts=_model(), run_s=200.0))
    victims: list[str] = []

    def crash(restart: bool):
        ex = m.last("job.placed", job="c")["executor"]
        victims.append(ex)
        if restart:  # back before anyone notices: its restart reports the attempt lost
            m.ps.crash(m.sim.now, ex, detect_s=10.0, restart_after_s=2.0)
        else:  # membership declares it dead
            m.ps.crash(m.sim.now, ex, detect_s=8.0)

    m.sim.call_at(60.0, lambda: crash(False), "crash executor")
    m.sim.call_at(160.0, lambda: crash(True), "restart executor")
    m.sim.run(3000.0)
    assert len(set(victims)) == 2
    # the restarted executor reported its attempt lost: re-placed before membership could notice
    replaced = [t for t, _, k, d in m.events if k == "task.replaced" and d["job"] == "c"]
    assert any(160.0 < t < 160.0 + 10.0 for t in replaced)
    assert m.kinds("custody.done", job="c") and not m.kinds("custody.failed", job="c")
    assert len(m.awards["c/main"]) == 4  # two crashed, one failed, one done
    for c in m.custodians("c"):
        st = m.ps.cores[c].status("c")
        if st is not None:  # (a crashed victim may have been a custodian too)
            assert st["state"] == "done" and st["tasks"][0]["failures"] == 1


def test_failed_attempts_max_zero_keeps_re_placing():
    m = Mesh(14, 10, lambda task, epoch: True, failed_attempts_max=0)
    m.ps.submit(1.0, m.ids[0], job_spec("forever", "batch", artifacts=_model(), run_s=20.0))
    m.sim.run(600.0)
    assert len(m.awards["forever/main"]) > 5 and not m.kinds("job.failed", job="forever")


def _core(i: int, view: MemoryView, n: int = 3) -> PlacementCore:
    return PlacementCore(PEERS[i], view, random.Random(i),
                         config=PlacementConfig(custody=CustodyConfig(failed_attempts_max=n)))


def test_custodians_merge_failures_from_each_other_and_give_up_together():
    view = MemoryView()
    for p in PEERS[:5]:
        view.set(PeerFacts(p, slots=4))
    spec = job_spec("j", "batch", artifacts=_model())
    custodians = PEERS[1:4]
    base = CustodyRecord(spec, PEERS[0], custodians, classes.initial_tasks(spec), "")
    ep = [epoch_of(a, peer_tag(PEERS[1])) for a in (1, 2, 3)]
    a, b = _core(1, view), _core(2, view)
    a.custody.on_submit(0.0, PEERS[0], base, ack=True)
    b.custody.on_submit(0.0, PEERS[0], base, ack=True)
    # custodian a heard the first two failures, custodian b only the third
    for e in ep[:2]:
        a.on_message(1.0, PEERS[4], TaskUpdate("j", "j/main", e, "failed", PEERS[4], "", 10.0, "boom"))
    eff = b.on_message(2.0, PEERS[4], TaskUpdate("j", "j/main", ep[2], "failed", PEERS[4], "", 10.0, "last boom"))
    assert b.status("j")["state"] != "failed"  # one failure known: not yet
    assert a.status("j")["tasks"][0]["failures"] == 2
    # a record sync carries a's failures to b: three failed epochs, the newest one's text
    eff = b.custody.on_submit(3.0, PEERS[1], a.custody.records["j"], ack=False)
    st = b.status("j")
    assert st["state"] == "failed" and st["error"] == "last boom" and st["tasks"][0]["failures"] == 3
    told = [e for e in eff if type(e) is Send and type(e.msg) is TaskUpdate and e.msg.state == "error"]
    assert {e.to for e in told} >= {PEERS[3], PEERS[0]}  # the third custodian and the entry
    assert any(type(e) is Send and e.to == PEERS[1] for e in eff)  # push-pull back to a
    # the error state survives the wire, merges back, and nobody places the task again
    rec = decode(encode(StoredRecord(b.custody.records["j"]))).record
    assert merge_records(a.custody.records["j"], rec).tasks[0].state == "error"
    a.custody.on_submit(4.0, PEERS[2], rec, ack=False)
    assert a.status("j")["state"] == "failed"
    assert a.custody._act(5.0, "j", "j/main") == [] and b.custody._act(5.0, "j", "j/main") == []


def test_the_entry_reports_lost_attempts_apart_and_fails_the_job_with_the_error():
    view = MemoryView()
    for p in PEERS[:5]:
        view.set(PeerFacts(p, slots=4))
    e = _core(0, view, n=1)
    spec = job_spec("k", "batch", artifacts=_model())
    e.submit(0.0, spec)
    ep = [epoch_of(a, peer_tag(PEERS[0])) for a in (1, 2)]

    def kinds(eff):
        return {x.kind: x.data for x in eff if hasattr(x, "kind")}

    got = kinds(e.on_message(1.0, PEERS[4], TaskUpdate("k", "k/main", ep[0], "lost", PEERS[4], "", 10.0,
                                                       "executor restarted")))
    assert got["job.task_lost"]["failures"] == 0 and "job.failed" not in got
    got = kinds(e.on_message(2.0, PEERS[4], TaskUpdate("k", "k/main", ep[1], "failed", PEERS[4], "", 10.0,
                                                       "JobError: bad input")))
    assert got["job.task_failed"]["failures"] == 1
    assert got["job.failed"]["error"] == "JobError: bad input" and got["job.failed"]["attempts"] == 1
    assert e.status("k")["state"] == "failed"
