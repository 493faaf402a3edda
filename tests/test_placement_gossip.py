"""Placement over the real gossip stack: SWIM detects a killed executor, custody re-places its job."""

from __future__ import annotations

import textwrap
import tomllib

import pytest

pytest.importorskip("arcnet.gossip.stack")

from arcnet.gossip.stack import gossip_of  # noqa: E402
from arcnet.mesh.node import Node  # noqa: E402
from arcnet.placement.core import PlacementCore, submit_event  # noqa: E402
from arcnet.placement.gossip_view import GossipClusterView  # noqa: E402
from arcnet.placement.messages import ArtifactRef, job_spec  # noqa: E402
from arcnet.placement.simrt import SimRuntime, SimSite  # noqa: E402
from arcnet.sims.scenario import Run, gossip_factory, parse_scenario  # noqa: E402

SCENARIO = textwrap.dedent(
    """
    duration = "250s"
    seed = 7
    [sites]
    count = 12
    [peer]
    factory = "gossip"
    """
)


def _factory(events: list):
    def build(ctx):
        holder: dict = {}
        view = GossipClusterView(ctx.peer_id, lambda: holder["h"])
        core = PlacementCore(ctx.peer_id, view, ctx.rng, records=dict(ctx.disk))
        rt = SimRuntime(SimSite(ctx.peer_id, region=ctx.region))
        gossip = gossip_factory(ctx)  # the real membership + state + leader cores
        node = Node(ctx.peer_id, {**gossip.cores, "place": core, "rt": rt})
        holder["h"] = node.gossip = gossip_of(gossip)
        return node

    return build


def test_killed_executor_is_detected_by_swim_and_its_job_replaced():
    events: list = []
    run = Run(parse_scenario(tomllib.loads(SCENARIO)), factory=_factory(events))
    sim = run.sim
    sim.on_emit = lambda now, peer, e: events.append((now, peer, e.kind, dict(e.data)))

    def inject(pid, ev):
        p = sim.peers[pid]
        if p.alive and p.node is not None:
            sim._apply(p, p.node.on_event(sim.now, ev))  # the engine has no public inject yet

    entry = run.peer_ids[0]
    spec = job_spec("swim-job", "batch", artifacts=[ArtifactRef("model-x", 2 * 10**9)], run_s=120.0)
    sim.call_at(30.0, lambda: inject(entry, submit_event(spec)), "submit")
    killed = []

    def kill():
        placed = [d for _, _, k, d in events if k == "job.placed" and d["job"] == "swim-job"]
        victim = placed[0]["executor"]
        killed.append((sim.now, victim))
        sim.crash(victim)

    sim.call_at(60.0, kill, "kill executor")
    run.run()
    t_kill, victim = killed[0]
    dead = [(t, p) for t, p, k, d in events if k == "member.dead" and d["peer"] == victim]
    assert dead, "SWIM never declared the executor dead"
    reps = [(t, d) for t, _, k, d in events if k == "task.replaced" and d["job"] == "swim-job"]
    assert len(reps) == 1 and reps[0][1]["previous"] == victim
    assert reps[0][0] - t_kill < 30.0  # detection by SWIM + one auction
    assert any(k == "job.done" and d["job"] == "swim-job" for _, _, k, d in events)
    done_by = [p for _, p, k, d in events if k == "task.run" and d["task"] == "swim-job/main"]
    assert done_by[-1] != victim
    # the adapter: full facts for the own region, summaries (or defaults) elsewhere
    view = run.sim.peers[entry].node.cores["place"].view
    alive = view.alive_peers()
    assert victim not in alive and entry in alive and list(alive) == sorted(alive)
    same = [p for p in alive if p != entry and run.region_of[p] == run.region_of[entry]]
    other = [p for p in alive if run.region_of[p] != run.region_of[entry]]
    f = view.facts(same[0])
    assert f.region == run.region_of[entry] and f.slots > 0 and "gpu" in f.capabilities
    g = view.facts(other[0])
    assert g is not None and g.region == run.region_of[other[0]]
    used, total = view.load_totals()
    assert 0 <= used <= total and total >= 8 * len(alive) // 2
