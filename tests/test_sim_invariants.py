"""Invariant checkers: split brain caught after convergence (not during a partition), lost jobs, membership."""

from arcnet.mesh.core import Emit, Timers
from arcnet.mesh.node import Node
from arcnet.sims.invariants import InvariantViolation, MembershipConverged, NoJobLost, SingleLeaderPerRegion
from arcnet.sims.scenario import Run, parse_scenario


class LeaderCore:
    """Names the lowest peer id of its region as leader; ``rogue`` peers name themselves after ``rogue_at``."""

    def __init__(self, ctx, rogue_at=None):
        self.ctx, self.t, self.rogue_at = ctx, Timers(), rogue_at

    def start(self, now):
        region_peers = [p for p in self.ctx.all_peers if self.ctx.region_of[p] == self.ctx.region]
        out = [Emit("leader.changed", {"region": self.ctx.region, "leader": min(region_peers)})]
        if self.rogue_at is not None:
            out.append(self.t.set("rogue", self.rogue_at))
        return out

    def on_timer(self, now, timer):
        self.t.fire(timer)
        return [Emit("leader.changed", {"region": self.ctx.region, "leader": self.ctx.peer_id})]

    def on_message(self, now, sender, msg):
        return []

    def next_deadline(self):
        return self.t.next_deadline()

    def statistics(self):
        return {}


def scenario(faults="", duration="20m"):
    import tomllib

    return parse_scenario(tomllib.loads(f'duration = "{duration}"\nseed = 3\n[sites]\ncount = 9\n[peer]\nfactory = "toy"\n'
                                        f'[invariants]\nconvergence = "1m"\nliveness_after = "2m"\n' + faults))


def factory(rogue_index=None, rogue_at=None):
    def build(ctx):
        core = LeaderCore(ctx, rogue_at if ctx.index == rogue_index else None)
        return Node(ctx.peer_id, {"leader": core})

    return build


def test_agreeing_leaders_pass():
    res = Run(scenario(), factory=factory()).run()
    assert res.ok, res.violation
    assert res.statistics["invariants"]["single_leader_per_region"]["safety_checks"] >= 1


def test_split_brain_after_convergence_is_caught_with_time_and_region():
    res = Run(scenario(), factory=factory(rogue_index=4, rogue_at=300.0)).run()
    assert not res.ok
    # the disagreement starts at 5 min and is a violation once it has lasted the 1 min of convergence
    assert res.violation.startswith("single_leader_per_region at 00:06:00: region ")
    assert "2 leaders" in res.violation and "for 00:01:00" in res.violation


def test_a_hand_over_in_flight_is_not_split_brain():
    # the rogue names itself for 30 s, then follows the region again: shorter than convergence
    class Flip(LeaderCore):
        def on_timer(self, now, timer):
            self.t.fire(timer)
            if timer == "rogue":
                return [Emit("leader.changed", {"region": self.ctx.region, "leader": self.ctx.peer_id}), self.t.set("back", now + 30)]
            region_peers = [p for p in self.ctx.all_peers if self.ctx.region_of[p] == self.ctx.region]
            return [Emit("leader.changed", {"region": self.ctx.region, "leader": min(region_peers)})]

    def build(ctx):
        return Node(ctx.peer_id, {"leader": Flip(ctx, 300.0 if ctx.index == 4 else None)})

    res = Run(scenario(), factory=build).run()
    assert res.ok, res.violation
    assert res.statistics["invariants"]["single_leader_per_region"]["disagreements"] == 1


def test_disagreement_during_a_partition_is_allowed_until_it_heals():
    # the rogue appears inside a partition of its region: tolerated until convergence after the heal
    faults = '[[faults]]\nat = "4m"\nkind = "partition"\na = { peers = [4] }\nfor = "5m"\n'
    res = Run(scenario(faults), factory=factory(rogue_index=4, rogue_at=300.0)).run()
    assert not res.ok
    assert "at 00:11:00" in res.violation  # heal at 9m, converged at 10m, still two leaders at 11m


def test_job_on_a_dead_site_is_a_lost_job():
    faults = '[[faults]]\nat = "5m"\nkind = "crash"\ncount = 4\nfor = "5m"\n'
    wl = '[[workload]]\nclass = "batch"\nrate_per_h = 600\nduration = "30m"\npower_kw = 50\n'
    ok = Run(scenario(faults + wl)).run()
    assert ok.ok, ok.violation
    assert ok.statistics["workload"]["replaced"] > 0  # the stand-in custody re-placed them
    broken = Run(scenario(faults + wl))
    broken.workload.placer.site_down = lambda site, now: None  # custody that does nothing
    res = broken.run()
    assert not res.ok and "no_job_lost" in res.violation and "which crashed; nobody re-placed it" in res.violation


def test_membership_liveness_uses_the_factorys_view():
    def build(ctx):
        return factory()(ctx)

    build.view_size = lambda node: 9  # everyone sees all nine
    assert Run(scenario(), factory=build).run().ok
    build.view_size = lambda node: 8
    res = Run(scenario(), factory=build).run()
    assert not res.ok and res.violation.startswith("membership_converged at 00:20:00: 9 of 9 alive peers")


def test_checkers_are_pluggable():
    class NoCrashes(SingleLeaderPerRegion):
        name = "no_crashes"

        def safety(self, sim):
            if any(not sim.peers[p].alive for p in sim.order if sim.peers[p].node is not None or sim.peers[p].crashes):
                raise InvariantViolation(self.name, sim.now, "a peer crashed")

    faults = '[[faults]]\nat = "2m"\nkind = "crash"\ncount = 1\n'
    res = Run(scenario(faults), factory=factory(), checkers=[NoCrashes()]).run()
    assert not res.ok and res.violation.startswith("no_crashes at 00:02:00")
    assert isinstance(NoJobLost(), NoJobLost) and isinstance(MembershipConverged(), MembershipConverged)
