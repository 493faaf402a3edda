"""Invariant checkers: safety after every event, liveness after faults heal.

A checker is a small object with three optional hooks:

* ``on_emit(now, peer_id, emit)`` -- hears every :class:`~arcnet.mesh.core.Emit`
  of every peer (the simulator's ``on_emit``);
* ``safety(sim)`` -- runs after every event. It must be O(1) in the common
  case: checkers keep a dirty flag and do their O(peers) work only when
  something they watch changed;
* ``liveness(sim, now)`` -- runs ``liveness_after_s`` after each fault heals
  (if no other fault is active by then) and at the end of the run: "the
  system got back to a good state".

A broken invariant raises :class:`InvariantViolation`; the runner stops,
prints the seed and the command that reproduces the run, and the trace up to
that event is on disk. Checkers are pluggable: :data:`CHECKERS` maps the
names scenarios use to classes, and a runner takes any extra instances.

Safety claims hold only where they should: "one leader per region" is only
claimed ``convergence_s`` after the last connectivity fault (crash, pause,
partition, clog...) started or healed -- a partitioned region legitimately
has two leaders, and gossip needs a few rounds to agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from arcnet.mesh.core import Emit

from .faults import format_duration

__all__ = [
    "CHECKERS",
    "CheckContext",
    "Checker",
    "InvariantSet",
    "InvariantViolation",
    "MembershipConverged",
    "NoJobLost",
    "SingleLeaderPerRegion",
]


class InvariantViolation(Exception):
    """A broken invariant: which checker, when (virtual seconds), and what."""

    def __init__(self, checker: str, at_s: float, message: str):
        super().__init__(f"{checker} at {format_duration(at_s)}: {message}")
        self.checker = checker
        self.at_s = at_s
        self.detail = message


@dataclass
class CheckContext:
    """What checkers may read. Filled in by the scenario runner (or a test)."""

    sim: Any
    region_of: dict[str, str]  # peer id -> region
    peers_by_region: dict[str, list[str]]  # region -> peer ids in index order
    quiet_for_s: Callable[[float], float] = lambda now: now  # seconds since the last connectivity fault changed
    workload: Any = None
    view_size: Callable[[str], int | None] | None = None  # members a peer sees alive (itself included)
    convergence_s: float = 60.0


class Checker:
    name = "checker"

    def attach(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.safety_checks = 0
        self.liveness_checks = 0
        self.skipped = 0

    def on_emit(self, now: float, peer_id: str, emit: Emit) -> None:  # pragma: no cover - default
        pass

    def safety(self, sim: Any) -> None:  # pragma: no cover - default
        pass

    def liveness(self, sim: Any, now: float) -> None:  # pragma: no cover - default
        pass

    def summary(self) -> dict[str, Any]:
        return {"safety_checks": self.safety_checks, "liveness_checks": self.liveness_checks, "skipped": self.skipped}


class SingleLeaderPerRegion(Checker):
    """After convergence, the alive peers of a connected region name one leader, alive and in the region.

    Reads the emits the leader core makes when its choice changes
    (``kind``, with ``region_key`` and ``leader_key`` in its data; a missing
    or empty leader means "none"). Leadership is a function of gossiped
    state, so a change of leader (a battery falling below its floor) is not
    seen by every peer at the same instant: a disagreement is a violation
    only when it *lasts* ``convergence_s`` with no connectivity fault in
    between -- split brain, not a hand-over in flight.
    """

    name = "single_leader_per_region"

    def __init__(self, kind: str = "leader.changed", region_key: str = "region", leader_key: str = "leader"):
        self.kind = kind
        self.region_key = region_key
        self.leader_key = leader_key
        self.claims: dict[str, tuple[str, str]] = {}
        self.dirty = True
        self.armed = False
        self.emits_seen = 0
        self.disagreements = 0  # disagreements seen (most heal before they count)
        self._since: dict[str, tuple[float, str]] = {}  # region -> (first seen, what)

    def on_emit(self, now: float, peer_id: str, emit: Emit) -> None:
        if emit.kind != self.kind:
            return
        d = emit.data
        region = d.get(self.region_key, self.ctx.region_of.get(peer_id))
        leader = d.get(self.leader_key)
        if not leader:  # None or '': the peer names no leader (no candidate in its view)
            self.claims.pop(peer_id, None)
        else:
            self.claims[peer_id] = (str(region), str(leader))
        self.emits_seen += 1
        self.dirty = True

    def safety(self, sim: Any) -> None:
        if not self.claims:
            return
        if self.ctx.quiet_for_s(sim.now) < self.ctx.convergence_s:
            self.armed = False
            self._since.clear()
            return
        if self.armed and not self.dirty:
            return
        self.armed = True
        self.dirty = False
        self.evaluate(sim)

    def problems(self, sim: Any) -> dict[str, str]:
        """Region -> what is wrong there now (several leaders, a dead or foreign leader)."""
        peers = sim.peers
        out: dict[str, str] = {}
        for region, members in self.ctx.peers_by_region.items():
            named: dict[str, int] = {}
            for pid in members:
                if not peers[pid].alive:
                    continue
                claim = self.claims.get(pid)
                if claim is None or claim[0] != region:
                    continue
                named[claim[1]] = named.get(claim[1], 0) + 1
            if len(named) > 1:
                shown = ", ".join(f"...{lead[-6:]} ({n})" for lead, n in sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))[:4])
                out[region] = f"{len(named)} leaders: {shown}"
                continue
            for lead in named:
                p = peers.get(lead)
                if p is None or not p.alive:
                    out[region] = f"its peers follow leader ...{lead[-6:]}, which is not alive"
                elif self.ctx.region_of.get(lead) != region:
                    out[region] = f"its peers follow leader ...{lead[-6:]} of region {self.ctx.region_of.get(lead)}"
        return out

    def evaluate(self, sim: Any) -> None:
        self.safety_checks += 1
        now = sim.now
        found = self.problems(sim)
        for region in [r for r in self._since if r not in found]:
            del self._since[region]
        for region, what in found.items():
            first = self._since.get(region)
            if first is None:
                self.disagreements += 1
                self._since[region] = (now, what)
                sim.call_at(now + self.ctx.convergence_s, lambda: self._recheck(sim), "check leaders")
            elif now - first[0] >= self.ctx.convergence_s:
                raise InvariantViolation(self.name, now, f"region {region}: {what}, for {format_duration(now - first[0])}")

    def _recheck(self, sim: Any) -> None:
        if self._since and self.ctx.quiet_for_s(sim.now) >= self.ctx.convergence_s:
            self.evaluate(sim)

    def liveness(self, sim: Any, now: float) -> None:
        if not self.claims:
            self.skipped += 1
            return
        self.liveness_checks += 1
        found = self.problems(sim)
        if found:
            region, what = sorted(found.items())[0]
            raise InvariantViolation(self.name, now, f"region {region}: {what}")
        for region, members in self.ctx.peers_by_region.items():
            alive = [p for p in members if sim.peers[p].alive]
            if alive and not any(p in self.claims for p in alive):
                raise InvariantViolation(self.name, now, f"region {region}: no alive peer names a leader")

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        s["emits_seen"] = self.emits_seen
        s["disagreements"] = self.disagreements
        return s


class NoJobLost(Checker):
    """Every accepted job is queued, running on an alive site, or finished; none waits forever."""

    name = "no_job_lost"

    def __init__(self, wait_max_s: float = 4 * 3600.0):
        self.wait_max_s = wait_max_s
        self._seen = -1  # workload version last checked

    def safety(self, sim: Any) -> None:
        w = self.ctx.workload
        if w is None or w.version == self._seen:
            return
        self._seen = w.version
        c = w.counts
        # O(1) bookkeeping identity after every event
        if c["queued"] + c["running"] != len(w.jobs) or c["queued"] < 0 or c["running"] < 0:
            raise InvariantViolation(
                self.name, sim.now, f"job books do not balance: queued {c['queued']} + running {c['running']} != open {len(w.jobs)}"
            )
        self.safety_checks += 1

    def _scan(self, sim: Any, now: float) -> None:
        w = self.ctx.workload
        for job in w.jobs.values():
            if w.executor_lost(job):
                raise InvariantViolation(
                    self.name, now, f"job {job.id} ({job.cls}) was running on site {job.site}, which crashed; nobody re-placed it: lost"
                )
            if job.state == "queued" and now - job.submitted_s > self.wait_max_s:
                raise InvariantViolation(
                    self.name, now, f"job {job.id} ({job.cls}) has waited {format_duration(now - job.submitted_s)} (limit {format_duration(self.wait_max_s)})"
                )

    def liveness(self, sim: Any, now: float) -> None:
        if self.ctx.workload is None:
            self.skipped += 1
            return
        self.liveness_checks += 1
        self._scan(sim, now)


class MembershipConverged(Checker):
    """After faults heal, every alive peer sees exactly the alive peers (needs ``view_size``)."""

    name = "membership_converged"

    def __init__(self, tolerance: int = 0):
        self.tolerance = tolerance

    def liveness(self, sim: Any, now: float) -> None:
        view = self.ctx.view_size
        if view is None:
            self.skipped += 1
            return
        alive = [pid for pid in sim.order if sim.peers[pid].alive]
        want = len(alive)
        wrong = []
        for pid in alive:
            got = view(pid)
            if got is None:
                self.skipped += 1
                return
            if abs(got - want) > self.tolerance:
                wrong.append((pid, got))
        self.liveness_checks += 1
        if wrong:
            shown = ", ".join(f"...{p[-6:]} sees {g}" for p, g in wrong[:4])
            raise InvariantViolation(self.name, now, f"{len(wrong)} of {want} alive peers do not see {want} alive members: {shown}")


CHECKERS: dict[str, type[Checker]] = {
    SingleLeaderPerRegion.name: SingleLeaderPerRegion,
    NoJobLost.name: NoJobLost,
    MembershipConverged.name: MembershipConverged,
}


@dataclass
class InvariantSet:
    """The checkers of one run, hooked into a simulator."""

    checkers: Sequence[Checker]
    ctx: CheckContext
    violations: list[str] = field(default_factory=list)

    def install(self) -> None:
        sim = self.ctx.sim
        for c in self.checkers:
            c.attach(self.ctx)
        listeners = [c for c in self.checkers if type(c).on_emit is not Checker.on_emit]
        safety = [c.safety for c in self.checkers if type(c).safety is not Checker.safety]
        if listeners:
            previous = sim.on_emit

            def on_emit(now: float, peer_id: str, emit: Emit) -> None:
                if previous is not None:
                    previous(now, peer_id, emit)
                for c in listeners:
                    c.on_emit(now, peer_id, emit)

            sim.on_emit = on_emit
        sim.invariants.extend(safety)  # one call per checker per event; no wrapper in between

    def liveness(self, now: float) -> None:
        sim = self.ctx.sim
        for c in self.checkers:
            c.liveness(sim, now)

    def summary(self) -> dict[str, Any]:
        return {c.name: c.summary() for c in self.checkers}
