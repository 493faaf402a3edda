"""Custody through the simulator: crashes, re-placement, epochs, restarts, determinism."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.mesh.core import Send
from arcnet.mesh.identity import Identity
from arcnet.placement.custody import merge_task
from arcnet.placement.hashing import CandidateIndex
from arcnet.placement.messages import ArtifactRef, Award, Step, TaskState, job_spec
from arcnet.placement.simrt import PlacementSim, SimSite
from arcnet.placement.view import MemoryView
from arcnet.sims.engine import SimpleNetwork, Simulator, derive_seed

GB = 10**9
PEERS = [Identity.from_seed(derive_seed(0, "placement-test", i).to_bytes(8, "big") * 4).peer_id for i in range(60)]


class Mesh:
    """A small simulated mesh with a log of events and of every award sent."""

    def __init__(self, seed: int, n: int, *, loss: float = 0.0):
        self.awards: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.award_msgs: list[Award] = []

        def on_effect(now, peer, e):
            if type(e) is Send and type(e.msg) is Award:
                self.awards[(e.msg.task.task_id, e.msg.epoch)].append(e.to)
                self.award_msgs.append(e.msg)

        net = SimpleNetwork(random.Random(derive_seed(seed, "net")), latency_s=0.02, jitter_s=0.02, loss=loss)
        self.sim = Simulator(seed, net, on_effect=on_effect)
        self.view = MemoryView()
        self.events: list[tuple[float, str, str, dict]] = []
        self.ps = PlacementSim(self.sim, self.view, CandidateIndex(self.view),
                               on_event=lambda now, p, e: self.events.append((now, p, e.kind, e.data)))
        self.ids = PEERS[:n]
        for i, pid in enumerate(self.ids):
            self.ps.add_site(SimSite(pid, region=f"r{i % 3}", solar=(lambda t: 600.0) if i % 2 else None))
        self.ps.start()

    def kinds(self, kind: str) -> list[dict]:
        return [d for _, _, k, d in self.events if k == kind]

    def first(self, kind: str, **match) -> tuple[float, str, dict] | None:
        for now, p, k, d in self.events:
            if k == kind and all(d.get(a) == b for a, b in match.items()):
                return now, p, d
        return None

    def assert_one_executor_per_epoch(self) -> None:
        for (task, epoch), to in self.awards.items():
            assert len(set(to)) == 1, f"{task} epoch {epoch} awarded to {len(set(to))} executors"


def _model(i: int = 0) -> list[ArtifactRef]:
    return [ArtifactRef(f"model-{i}", 10 * GB)]


_TASK_STATES = st.builds(
    TaskState, st.just("t"),
    st.sampled_from(["pending", "placed", "running", "failed", "lost", "error", "done"]),
    st.integers(0, 5), st.sampled_from([None, PEERS[0], PEERS[1]]), st.sampled_from(["", "o1", "o2"]),
    st.sampled_from([0.0, 10.0]),
    # failed epochs as the wire holds them: ascending, distinct, at most FAILED_KEPT
    st.lists(st.integers(1, 40), unique=True, max_size=20).map(lambda xs: sorted(xs)[-16:]),
    st.sampled_from(["", "e1", "e2"]),
)


@settings(max_examples=300)
@given(_TASK_STATES, _TASK_STATES, _TASK_STATES)
def test_task_merge_is_a_join(a, b, c):
    assert merge_task(a, b) == merge_task(b, a)
    assert merge_task(merge_task(a, b), c) == merge_task(a, merge_task(b, c))
    assert merge_task(a, a) == a
    ab = merge_task(a, b)
    if a.state == "done" or b.state == "done":
        assert ab.state == "done"
    elif a.state == "error" or b.state == "error":
        assert ab.state == "error"  # given up stays given up, whatever epoch the other copy is at
    # failures are never forgotten: the union (newest 16), the error of the newest failed epoch
    assert ab.failed == sorted(set(a.failed) | set(b.failed))[-16:]
    last = max((x.failed[-1] if x.failed else 0, x.error) for x in (a, b))
    assert ab.error == last[1]
    assert ab.failed == sorted(set(ab.failed))


def test_killed_executor_is_replaced_and_the_job_finishes():
    m = Mesh(1, 12)
    entry = m.ids[0]
    m.ps.submit(1.0, entry, job_spec("long", "batch", artifacts=_model(), run_s=600.0))
    killed: list[tuple[float, str]] = []

    def kill():
        _, _, d = m.first("job.placed", job="long")
        killed.append((m.sim.now, d["executor"]))
        m.ps.crash(m.sim.now, d["executor"], detect_s=8.0)

    m.sim.call_at(100.0, kill, "kill executor")
    m.sim.run(2000.0)
    t_kill, victim = killed[0]
    at, _, rep = m.first("task.replaced", job="long")
    assert rep["previous"] == victim and rep["executor"] != victim
    assert at - t_kill <= 8.0 + 2.0  # detection + one auction; the lead custodian acts at once
    # the other custodians back off: exactly one re-placement, at a newer epoch
    reps = [d for d in m.kinds("task.replaced") if d["job"] == "long"]
    assert len(reps) == 1
    _, _, first = m.first("job.placed", job="long")
    assert rep["epoch"] > first["epoch"]
    assert m.first("job.done", job="long") is not None
    assert len(m.kinds("custody.done")) == 3
    m.assert_one_executor_per_epoch()


def test_entry_dying_mid_auction_leaves_the_job_to_its_custodians():
    m = Mesh(2, 12)
    entry = m.ids[3]
    m.ps.submit(1.0, entry, job_spec("orphan", "batch", artifacts=_model(), run_s=30.0))
    m.ps.crash(1.005, entry, detect_s=5.0)  # after the record left, before any bid came back
    m.sim.run(300.0)
    placed = m.first("custody.placed", job="orphan")
    assert placed is not None and placed[0] >= 20.0  # after place_timeout_s
    assert m.first("custody.done", job="orphan") is not None
    m.assert_one_executor_per_epoch()


def test_lead_custodian_and_executor_dying_together_the_next_custodian_acts():
    m = Mesh(3, 14)
    m.ps.submit(1.0, m.ids[0], job_spec("both", "batch", artifacts=_model(), run_s=900.0))
    victims = []

    def kill():
        _, _, sub = m.first("job.submitted", job="both")
        _, _, d = m.first("job.placed", job="both")
        lead = sub["custodians"][0]
        victims.extend([lead, d["executor"]])
        for v in dict.fromkeys(victims):
            m.ps.crash(m.sim.now, v, detect_s=6.0)

    m.sim.call_at(50.0, kill, "kill")
    m.sim.run(3000.0)
    at, who, rep = m.first("task.replaced", job="both")
    assert who not in victims and at <= 50.0 + 6.0 + 2.0 + 2.0  # detection + one backoff + auction
    assert len([d for d in m.kinds("task.replaced") if d["job"] == "both"]) == 1
    assert m.first("custody.repaired", job="both") is not None
    assert m.first("custody.done", job="both") is not None
    m.assert_one_executor_per_epoch()


def test_restarted_custodian_and_executor_recover_from_disk():
    m = Mesh(4, 10)
    m.ps.submit(1.0, m.ids[0], job_spec("disk", "batch", artifacts=_model(), run_s=400.0))
    m.sim.run(30.0)
    _, _, sub = m.first("job.submitted", job="disk")
    _, _, placed = m.first("job.placed", job="disk")
    cust, ex = sub["custodians"][1], placed["executor"]
    for v in dict.fromkeys([cust, ex]):
        m.ps.crash(m.sim.now, v, detect_s=30.0, restart_after_s=2.0)  # back before anyone notices
    m.sim.run(40.0)
    assert "disk" in m.ps.cores[cust].custody.records
    rep = m.first("task.replaced", job="disk")
    assert rep is not None and rep[0] < 40.0  # the executor reported its lost task at once
    m.sim.run(2000.0)
    assert m.first("job.done", job="disk") is not None
    m.assert_one_executor_per_epoch()


def _chaos(seed: int, n: int = 30, jobs: int = 70, crashes: int = 9, loss: float = 0.0) -> Mesh:
    m = Mesh(seed, n, loss=loss)
    rng = random.Random(seed)
    for j in range(jobs):
        cls = rng.choice(["online", "batch", "coupled", "parallel", "workflow", "finetune"])
        kw: dict = {}
        if cls == "parallel":
            kw["inputs"] = [ArtifactRef(f"d{j}/{s}", GB) for s in range(3)]
        if cls == "workflow":
            kw["steps"] = [Step("a", [], [], 1, 30.0, "L"), Step("b", ["a"], [], 1, 30.0, "L"),
                           Step("c", ["b"], [], 2, 20.0, "")]
        if cls == "coupled":
            kw["slots"] = rng.choice([4, 8])
        spec = job_spec(f"job{j}", cls, artifacts=_model(rng.randrange(4)), run_s=rng.uniform(20, 300), **kw)
        m.ps.submit(rng.uniform(1, 400), rng.choice(m.ids), spec)
    m.permanent = set()  # type: ignore[attr-defined]
    for _ in range(crashes):
        v = rng.choice(m.ids)
        restart = rng.choice([None, 15.0, 120.0])
        if restart is None:
            m.permanent.add(v)  # type: ignore[attr-defined]
        m.ps.crash(rng.uniform(5, 600), v, detect_s=rng.uniform(3, 12), restart_after_s=restart)
    m.sim.run(3000.0)
    return m


@settings(max_examples=5)
@given(st.integers(0, 2**32), st.sampled_from([0.0, 0.02]))
def test_chaos_no_accepted_job_lost_never_two_executors_per_epoch_gangs_whole(seed, loss):
    m = _chaos(seed, loss=loss)
    m.assert_one_executor_per_epoch()
    custodians: dict[str, set[str]] = defaultdict(set)
    for d in m.kinds("job.submitted"):
        custodians[d["job"]] |= set(d["custodians"])
    for d in m.kinds("custody.repaired"):
        custodians[d["job"]] |= set(d["added"])
    accepted = {d["job"] for d in m.kinds("job.accepted")}
    done = {d["job"] for d in m.kinds("custody.done")}
    # a job may be lost only if every custodian it ever had died for good
    lost = [j for j in sorted(accepted - done) if not custodians[j] <= m.permanent]  # type: ignore[attr-defined]
    assert not lost, f"lost {lost} (seed {seed}, loss {loss})"
    assert len(accepted) >= 60
    for a in m.award_msgs:  # coupled gangs are never split: one task, every slot
        if a.task.cls == "coupled":
            assert a.task.task_id.endswith("/main") and a.task.slots in (4, 8)


def test_runs_are_deterministic_for_a_seed():
    a, b = _chaos(11, jobs=30), _chaos(11, jobs=30)
    assert a.sim.trace_hash == b.sim.trace_hash
    assert _chaos(12, jobs=30).sim.trace_hash != a.sim.trace_hash


def test_runs_are_identical_across_hash_seeds():
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from test_placement_custody import _chaos; print(_chaos(5, jobs=25).sim.trace_hash)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = set()
    for hs in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hs)
        r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.add(r.stdout.strip())
    assert len(outs) == 1


def test_any_peer_can_ask_a_jobs_custodians_for_its_state():
    m = Mesh(6, 10)
    m.ps.submit(1.0, m.ids[0], job_spec("q", "online", artifacts=_model(), run_s=20.0))
    m.sim.run(60.0)
    _, _, sub = m.first("job.submitted", job="q")
    asker = next(p for p in m.ids if p not in sub["custodians"] and p != m.ids[0])
    assert m.ps.cores[asker].status("q") is None  # it knows nothing itself
    from arcnet.mesh.core import Emit

    m.ps.inject(asker, Emit("placement.query", {"job": "q"}))
    m.sim.run(62.0)
    (status,) = [d for _, p, k, d in m.events if k == "job.status" and p == asker][:1]
    assert status["job"] == "q" and status["output"].startswith("b2:")
    assert status["tasks"][0]["state"] == "done" and status["from"] in sub["custodians"]
    assert m.ps.cores[sub["custodians"][0]].status("q")["role"] == "custodian"


def test_draining_peers_get_no_new_work():
    m = Mesh(8, 10)
    for p in m.ids[:7]:
        m.ps.sites[p].draining = True
        m.view.update(p, draining=True)
    for j in range(6):
        m.ps.submit(1.0 + j, m.ids[j], job_spec(f"d{j}", "batch", artifacts=_model(j), run_s=30.0))
    m.sim.run(200.0)
    ran_on = {p for _, p, k, d in m.events if k == "task.run"}
    assert ran_on and ran_on <= set(m.ids[7:])
    assert len(m.kinds("custody.done")) == 6 * 3
