"""Workload classes and the cost model: how jobs become tasks, how sites price them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.mesh.wire import decode, encode
from arcnet.placement import classes
from arcnet.placement.classes import SpecError
from arcnet.placement.cost import CostModel, energy_split, estimate
from arcnet.placement.messages import ArtifactRef, CustodyRecord, SpecEnvelope, Step, TaskState, job_spec
from arcnet.placement.view import PeerFacts

GB = 10**9
ME = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"

arts = st.lists(st.builds(ArtifactRef, st.text("abcdef0123", min_size=1, max_size=8), st.integers(0, 10**12)),
                max_size=6)


@settings(max_examples=60)
@given(st.integers(1, 64), arts, arts, st.floats(1, 1e5))
def test_a_coupled_job_is_one_task_holding_the_whole_gang(slots, a, inputs, run_s):
    spec = job_spec("gang", "coupled", artifacts=a, inputs=inputs, slots=slots, run_s=run_s)
    classes.validate(spec)
    tasks = classes.initial_tasks(spec)
    assert len(tasks) == 1
    ts = classes.task_spec(spec, tasks[0].task_id)
    assert ts.slots == slots  # never split: one site must hold every slot
    assert classes.eligibility(ts).slots_min == slots


def test_parallel_job_is_one_task_per_shard_keyed_by_its_data():
    shards = [ArtifactRef(f"data/{i}", 5 * GB) for i in range(5)]
    spec = job_spec("par", "parallel", artifacts=[ArtifactRef("model", GB)], inputs=shards, slots=2)
    tasks = classes.initial_tasks(spec)
    assert [t.task_id for t in tasks] == [f"par/s{i}" for i in range(5)]
    for i, t in enumerate(tasks):
        ts = classes.task_spec(spec, t.task_id)
        assert ts.key == f"data/{i}" and ts.slots == 2
        assert [a.cid for a in ts.artifacts] == ["model", f"data/{i}"]
    with pytest.raises(SpecError):
        classes.validate(job_spec("p2", "parallel"))


def test_workflow_steps_become_ready_as_their_inputs_finish_and_outputs_gather():
    steps = [Step("fetch", [], [], 1, 10.0, ""), Step("think", ["fetch"], [], 1, 10.0, "loop"),
             Step("act", ["think"], [], 1, 10.0, "loop"), Step("report", ["act", "fetch"], [], 1, 5.0, "")]
    spec = job_spec("wf", "workflow", steps=steps)
    classes.validate(spec)
    rec = CustodyRecord(spec, ME, [ME], classes.initial_tasks(spec), "")
    order = []
    while True:
        ready = classes.ready_tasks(rec)
        if not ready:
            break
        order.append(ready)
        rec = CustodyRecord(spec, ME, [ME], [
            TaskState(t.task_id, "done", 1, ME, "out-" + t.task_id, 0.0, [], "") if t.task_id in ready else t
            for t in rec.tasks], "")
    assert order == [["wf/fetch"], ["wf/think"], ["wf/act"], ["wf/report"]]
    out = classes.job_output(rec)
    assert out.startswith("b2:") and out == classes.job_output(rec)
    assert classes.task_spec(spec, "wf/think").loop == "loop"
    with pytest.raises(SpecError):
        classes.validate(job_spec("bad", "workflow", steps=[Step("a", ["b"], [], 1, 1.0, ""),
                                                             Step("b", [], [], 1, 1.0, "")]))


def test_specs_round_trip_the_codec():
    spec = job_spec("j", "online", artifacts=[ArtifactRef("m", GB)], latency_budget_s=2.0, regions=["eu"],
                    capabilities=["gpu"], submitter_region="eu")
    assert decode(encode(SpecEnvelope(spec))).spec == spec


def _facts(**kw) -> PeerFacts:
    base = dict(region="eu", slots=8, slot_kw=100.0, draw_kw=300.0, link_bps=1e9, capabilities=("gpu",))
    base.update(kw)
    return PeerFacts(ME, **base)


def test_cost_counts_queue_fetch_and_run():
    spec = job_spec("j", "batch", artifacts=[ArtifactRef("m", 10 * GB)], run_s=100.0)
    ts = classes.task_spec(spec, "j/main")
    cold = estimate(ts, _facts(), wait_s=30.0)
    cached = estimate(ts, _facts(artifacts=frozenset({"m"}), warm=frozenset({"m"})), wait_s=30.0)
    assert cold.fetch_s == pytest.approx(10.0) and cold.fetch_bytes == 10 * GB
    assert cached.fetch_bytes == 0
    assert cached.completion_s == pytest.approx(130.0)
    assert cold.completion_s > cached.completion_s


def test_energy_surplus_is_cheap_grid_is_dear_for_flexible_work_only():
    batch = classes.task_spec(job_spec("b", "batch", run_s=600.0, slots=2), "b/main")
    online = classes.task_spec(job_spec("o", "online", run_s=600.0, slots=2), "o/main")
    sunny = _facts(solar_kw=900.0)
    dark = _facts(solar_kw=0.0)
    battery = _facts(solar_kw=0.0, draw_kw=0.0, battery_kwh=2000.0, battery_kw=500.0, battery_soc_fraction=0.9)
    assert energy_split(sunny, 200.0, 600.0, 0.2) == (200.0, 0.0, 0.0)
    assert energy_split(dark, 200.0, 600.0, 0.2)[2] == 200.0
    assert energy_split(battery, 200.0, 600.0, 0.2)[1] == 200.0
    s, d, b = (estimate(batch, f, 0.0) for f in (sunny, dark, battery))
    assert s.surplus_fraction == 1.0 and d.surplus_fraction == 0.0 and b.surplus_fraction == 1.0
    assert s.cost_s < b.cost_s < d.cost_s
    # online work is never steered by energy
    assert estimate(online, sunny, 0.0).cost_s == estimate(online, dark, 0.0).cost_s


def test_batch_may_wait_for_a_window_online_never():
    f = _facts(solar_kw=0.0, surplus_window_in_s=300.0)
    batch = classes.task_spec(job_spec("b", "batch", run_s=600.0, slots=4, deadline_s=7200.0), "b/main")
    e = estimate(batch, f, 0.0)
    assert e.defer_s == pytest.approx(300.0) and e.surplus_fraction == 1.0
    tight = classes.task_spec(job_spec("b", "batch", run_s=600.0, slots=4, deadline_s=700.0), "b/main")
    assert estimate(tight, f, 0.0).defer_s == 0.0  # the window would miss the deadline
    online = classes.task_spec(job_spec("o", "online", run_s=600.0, slots=4), "o/main")
    assert estimate(online, f, 0.0).defer_s == 0.0


def test_health_constraints_and_budgets():
    ts = classes.task_spec(job_spec("j", "batch", capabilities=["train"], slots=4), "j/main")
    assert not estimate(ts, _facts(), 0.0).ok  # lacks "train"
    ok = _facts(capabilities=("gpu", "train"))
    assert estimate(ts, ok, 0.0).ok
    assert estimate(ts, _facts(capabilities=("train",), health=0.8), 0.0).health_cost_s == pytest.approx(120.0)
    assert not estimate(ts, _facts(capabilities=("train",), draining=True), 0.0).ok
    assert not estimate(ts, _facts(capabilities=("train",), slots=2), 0.0).ok
    online = classes.task_spec(job_spec("o", "online", latency_budget_s=1.0, submitter_region="us"), "o/main")
    late = estimate(online, _facts(region="us"), 5.0)
    near = estimate(online, _facts(region="us"), 0.0)
    far = estimate(online, _facts(region="eu"), 0.0)
    assert late.reason == "misses latency budget" and late.late and not near.late
    assert far.cost_s > near.cost_s
    assert CostModel().cross_region_s > 0
