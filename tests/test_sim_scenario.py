"""Scenarios as data: clear one-line errors, the shipped example, and the `arcnet sim run` command."""

import gzip
import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from arcnet.cli.sim import sim as sim_group
from arcnet.mesh.core import Emit
from arcnet.mesh.node import Node
from arcnet.sims.scenario import Run, ScenarioError, load_scenario, parse_duration, parse_scenario
from arcnet.sims.toy import toy_factory

SHIPPED = Path(__file__).resolve().parent.parent / "sims" / "scenarios" / "day-200-sites.toml"

SMALL = """
name = "small"
seed = 5
duration = "10m"
[sites]
count = 12
[peer]
factory = "toy"
start_spread = "5s"
[report]
sample_interval = "1m"
[invariants]
convergence = "30s"
liveness_after = "1m"
[[faults]]
at = "2m"
kind = "partition"
a = "West"
for = "1m"
[[faults]]
at = "3m"
kind = "crash"
count = 1
disk = "lose_unsynced"
for = "1m"
[[workload]]
class = "inference"
rate_per_h = 600
duration = "1m"
power_kw = 20
"""


def write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize(
    "text, expected",
    [
        ('seed = 1\n', "duration: missing"),
        ('duraton = "1h"\n', "duraton: unknown key (did you mean 'duration'?)"),
        ('duration = "1 fortnight"\n', "duration: expected a duration like"),
        ('duration = "1h"\n[sites]\ncount = "many"\n', "sites.count: expected an integer"),
        ('duration = "1h"\n[sites]\ncount = 0\n', "sites.count: 0 is outside 1..100000"),
        ('duration = "1h"\n[network]\nloss = 2.0\n', "network: loss must be in [0, 1)"),
        ('duration = "1h"\n[network]\nlost = 0.1\n', "network.lost: unknown key (did you mean 'loss'?)"),
        ('duration = "1h"\n[[faults]]\nat = "5m"\nkind = "crsh"\n', "faults[0].kind: unknown fault kind 'crsh'"),
        ('duration = "1h"\n[[faults]]\nkind = "crash"\ncount = 1\n', "faults[0].at: missing"),
        ('duration = "1h"\n[[faults]]\nat = "2h"\nkind = "crash"\ncount = 1\n', "faults[0].at: 7200.0 s is not before the end"),
        ('duration = "1h"\n[[faults]]\nat = "5m"\nkind = "partition"\na = "West"\n', "faults[0].for: missing"),
        ('duration = "1h"\n[[faults]]\nat = "5m"\nkind = "slow"\nfor = "1m"\ncount = 1\n', "faults[0].delay: missing"),
        ('duration = "1h"\n[[faults]]\nat = "5m"\nkind = "crash"\ncount = 1\ndisk = "melt"\n', "faults[0].disk: 'melt' is not one of"),
        ('duration = "1h"\n[[faults]]\nat = "5m"\nkind = "crash"\n', "faults[0]: say which peers"),
        ('duration = "1h"\n[[workload]]\nclass = "x"\nduration = "1m"\npower_kw = 5\n', "workload[0].rate_per_h: missing"),
        ('duration = "1h"\n[invariants]\nchecks = ["no_split_brain"]\n', "invariants.checks[0]: unknown checker"),
        ('duration = "1h"\n[peer]\nfactory = "quantum"\n', "peer.factory: 'quantum' is not one of"),
        ('duration = "1h"\n[faults_random]\nkinds = ["meteor"]\n', "faults_random.kinds[0]: unknown fault kind 'meteor'"),
        ('duration = [1h]\n', "not valid TOML"),
    ],
)
def test_scenario_errors_are_one_line_naming_the_key(tmp_path, text, expected):
    p = write(tmp_path, text)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(str(p) + ": ")
    assert expected in msg


def test_selector_errors_name_the_key_when_the_run_is_built(tmp_path):
    p = write(tmp_path, SMALL.replace('a = "West"', 'a = "Westt"'))
    with pytest.raises(ScenarioError, match=r"faults\[0\].a.region: no region 'Westt' \(regions: West, Central, East\)"):
        Run(load_scenario(p), factory=toy_factory)
    p = write(tmp_path, SMALL.replace("count = 1\n", "count = 99\n"))
    with pytest.raises(ScenarioError, match=r"faults\[1\].count: 99 asked, only \d+ peers match"):
        Run(load_scenario(p), factory=toy_factory)


def test_durations():
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration(90) == 90.0
    assert parse_duration("2d") == 172800.0
    for bad in ("", "h", "5 parsecs", -1, True, "1h and some"):
        with pytest.raises(ScenarioError):
            parse_duration(bad)


def test_shipped_example_is_a_day_of_200_sites_in_3_regions_with_a_partition_and_a_power_dip():
    sc = load_scenario(SHIPPED)
    assert sc.duration_s == 86400.0 and sc.sites.count == 200 and sc.sites.regions == 3
    kinds = {f.kind for f in sc.faults}
    assert {"partition", "power_dip"} <= kinds
    assert sc.workload and sc.factory == "gossip"
    assert load_scenario(SHIPPED, seed=99).seed == 99


def test_cli_run_writes_trace_report_and_plots_and_prints_hash_and_reproduce_line(tmp_path):
    p = write(tmp_path, SMALL)
    out = tmp_path / "out"
    r = CliRunner().invoke(sim_group, ["run", str(p), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "partition" in r.output and "crash" in r.output  # the fault list comes first
    h = [line for line in r.output.splitlines() if line.startswith("trace hash ")][0].split()[-1]
    assert f"reproduce: arcnet sim run {p} --seed 5 -o {out}" in r.output
    for name in ("report.json", "membership.png", "battery_soc.png", "load.png", "placement_wait_cdf.png", "trace.txt.gz"):
        assert (out / name).stat().st_size > 0, name
    rep = json.loads((out / "report.json").read_text())
    assert rep["trace_hash"] == h and rep["ok"] and rep["peers"] == 12
    assert rep["series"]["soc_by_region"] and rep["placement"]["waits"] > 0
    assert [e["what"] for e in rep["fault_log"]] == ["start", "heal", "start", "heal"]
    lines = gzip.open(out / "trace.txt.gz", "rt").read().splitlines()
    assert len(lines) > 1000 and all(line.split(" ", 2)[1] in ("M", "T", "E", "C") for line in lines)
    assert any("fault-start partition" in line for line in lines)
    # same command, same trace
    r2 = CliRunner().invoke(sim_group, ["run", str(p), "-o", str(tmp_path / "again"), "--no-plots", "--quiet"])
    assert r2.exit_code == 0 and f"trace hash {h}" in r2.output
    r3 = CliRunner().invoke(sim_group, ["run", str(p), "-o", str(tmp_path / "other"), "--seed", "6", "--no-plots", "--quiet"])
    assert r3.exit_code == 0 and f"trace hash {h}" not in r3.output


def test_cli_bad_scenario_is_one_line_and_exit_2(tmp_path):
    p = write(tmp_path, 'duration = "1h"\n[sites]\ncuont = 3\n')
    r = CliRunner().invoke(sim_group, ["run", str(p)])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "sites.cuont: unknown key (did you mean 'count'?)" in r.output


class _SplitBrain:
    """Every peer names itself leader of its region: broken on purpose."""

    def __init__(self, me, region):
        self.me, self.region = me, region

    def start(self, now):
        return [Emit("leader.changed", {"region": self.region, "leader": self.me})]

    def on_timer(self, now, timer):
        return []

    def on_message(self, now, sender, msg):
        return []

    def next_deadline(self):
        return None

    def statistics(self):
        return {}


def split_brain_factory(ctx):
    return Node(ctx.peer_id, {"leader": _SplitBrain(ctx.peer_id, ctx.region)})


def test_cli_failing_invariant_prints_the_seed_and_the_exact_command(tmp_path):
    p = write(tmp_path, SMALL)
    spec = f"{__name__}:split_brain_factory"  # importable however pytest named this module
    r = CliRunner().invoke(sim_group, ["run", str(p), "-o", str(tmp_path / "o"), "--factory", spec, "--no-plots", "--quiet"])
    assert r.exit_code == 1, r.output
    assert "INVARIANT VIOLATED single_leader_per_region at 00:01:00" in r.output  # converged at 30 s, split for 30 s more
    assert f"seed 5; reproduce: arcnet sim run {p} --seed 5 --factory {spec} -o {tmp_path / 'o'}" in r.output
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert not rep["ok"] and "leaders" in rep["violation"]


def test_parse_scenario_from_a_dict_needs_no_file():
    sc = parse_scenario({"duration": 60, "sites": {"count": 3}, "peer": {"factory": "toy"}})
    res = Run(sc).run()
    assert res.ok and res.virtual_s == 60.0 and res.events > 100
