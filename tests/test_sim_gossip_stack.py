"""The scenario runner drives the real gossip stack: energy readings in signed state, leaders, membership."""

import textwrap
import tomllib

import pytest

pytest.importorskip("arcnet.gossip.stack")

from arcnet.gossip.stack import gossip_of  # noqa: E402
from arcnet.sims.scenario import Run, ScenarioError, parse_scenario  # noqa: E402

SCENARIO = textwrap.dedent(
    """
    duration = "6m"
    seed = 4
    [sites]
    count = 15
    [peer]
    factory = "gossip"
    [peer.options.leader]
    stable_s = 20.0
    [invariants]
    convergence = "1m"
    liveness_after = "1m"
    [report]
    sample_interval = "30s"
    [[faults]]
    at = "2m"
    kind = "partition"
    a = "West"
    for = "1m"
    """
)


def test_gossip_stack_runs_a_partition_and_heals_with_one_leader_per_region():
    run = Run(parse_scenario(tomllib.loads(SCENARIO)))
    res = run.run()
    assert res.ok, res.violation
    inv = res.statistics["invariants"]
    assert inv["single_leader_per_region"]["emits_seen"] > 0 and inv["single_leader_per_region"]["liveness_checks"] == 2
    assert inv["membership_converged"]["liveness_checks"] == 2
    series = res.report["series"]
    conv = dict(zip(series["t_s"], series["membership_converged_fraction"]))
    assert conv[150.0] == 0.0  # during the partition nobody sees everyone
    assert conv[360.0] == 1.0  # after it heals everyone does
    # the energy model's readings reach other peers through signed gossip state
    p0 = run.peer_ids[0]
    other = [p for p in run.peers_by_region[run.region_of[p0]] if p != p0][0]
    seen = gossip_of(run.sim.peers[p0].node).view.get(other)
    truth = run.energy.reading(run.index_of[other], run.sim.now)
    assert seen["battery_soc_fraction"] == pytest.approx(truth["battery_soc_fraction"], abs=0.05)
    assert seen["gpu_count"] > 0 and seen["roles"] == ["site"]
    assert run.verify.statistics()["hits"] > 0  # signatures checked once each


def test_unknown_gossip_option_is_one_line_naming_the_key():
    bad = SCENARIO.replace("stable_s = 20.0", "stable = 20.0")
    with pytest.raises(ScenarioError, match=r"peer.options.leader.stable: unknown key \(did you mean 'stable_s'\?\)"):
        Run(parse_scenario(tomllib.loads(bad)))


LONG_PARTITION = textwrap.dedent(
    """
    duration = "36m"
    seed = 5
    [sites]
    count = 15
    [peer]
    factory = "gossip"
    [peer.options]
    preconverged = true
    [peer.options.membership]
    probe_interval_s = 5.0
    probe_timeout_s = 2.0
    indirect_timeout_s = 2.5
    [peer.options.leader]
    stable_s = 20.0
    [invariants]
    convergence = "2m"
    liveness_after = "5m"
    [report]
    sample_interval = "1m"
    [[faults]]
    at = "5m"
    kind = "partition"
    a = "West"
    for = "25m"
    """
)


def test_a_partition_longer_than_a_probe_cycle_of_the_dead_heals_by_itself():
    # the sides declare each other dead and keep probing the dead now and then;
    # a 25-minute split must not leave the mesh split for good once it heals
    res = Run(parse_scenario(tomllib.loads(LONG_PARTITION))).run()
    assert res.ok, res.violation
    conv = dict(zip(res.report["series"]["t_s"], res.report["series"]["membership_converged_fraction"]))
    assert conv[1500.0] == 0.0 and conv[2160.0] == 1.0
