"""Determinism: a scenario's trace is byte-identical across runs and PYTHONHASHSEED values; seeds differ.

The scenario exercises every source of randomness: WAN jitter, loss,
duplication and reordering, random faults, every scripted fault kind, the
workload's arrivals and the energy model's clouds.
"""

import os
import subprocess
import sys
import textwrap

from arcnet.sims.scenario import Run, parse_scenario

SCENARIO = textwrap.dedent(
    """
    duration = "8m"
    seed = 21
    [sites]
    count = 24
    hpc = 1
    edge = 2
    [network]
    loss = 0.01
    duplicate = 0.01
    reorder = 0.02
    [peer]
    factory = "toy"
    [[faults]]
    at = "1m"
    kind = "partition"
    a = "West"
    symmetric = false
    for = "1m"
    [[faults]]
    at = "90s"
    kind = "crash"
    count = 2
    disk = "lose_unsynced"
    for = "2m"
    [[faults]]
    at = "2m"
    kind = "clock"
    count = 2
    step = "-1s"
    drift_ppm = 300
    for = "3m"
    [[faults]]
    at = "2m"
    kind = "power_dip"
    region = "East"
    for = "2m"
    [[faults]]
    at = "3m"
    kind = "isolate_region"
    region = "Central"
    for = "1m"
    [[faults]]
    at = "4m"
    kind = "clog"
    region = "West"
    to = "East"
    for = "30s"
    [faults_random]
    count = 6
    kinds = ["crash", "pause", "slow", "clog", "clock"]
    window = ["30s", "6m"]
    for_min = "5s"
    for_max = "1m"
    [[workload]]
    class = "inference"
    rate_per_h = 1200
    duration = "1m"
    power_kw = 20
    """
)


def trace_hash(seed=None, trace_path=None):
    import tomllib

    sc = parse_scenario(tomllib.loads(SCENARIO))
    if seed is not None:
        sc = sc.with_seed(seed)
    return Run(sc, trace_path=trace_path).run().trace_hash


def test_byte_identical_trace_across_runs_and_hash_seeds_and_seeds_differ(tmp_path):
    import hashlib

    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path.insert(0, {here!r})\nfrom test_sim_determinism import trace_hash\nprint(trace_hash())"
    procs = []
    for hs in ("0", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=hs)
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    local = trace_hash(trace_path=str(tmp_path / "a.txt"))  # runs while the subprocesses do
    other_seed = trace_hash(22)
    again = trace_hash(trace_path=str(tmp_path / "b.txt"))
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out.strip())
    assert outs == [local, local] and again == local
    assert other_seed != local
    a, b = (tmp_path / "a.txt").read_bytes(), (tmp_path / "b.txt").read_bytes()
    assert a == b and hashlib.sha256(a).hexdigest() == local  # the hash is the hash of the trace file
    assert b" fault-start isolate_region " in a and b" T " in a and b" ToyPing\n" in a
