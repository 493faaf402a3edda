"""Regional leaders: a deterministic function of converged state (sans-IO).

No votes, no consensus. Every peer of a region computes the leader of its
region from the same inputs -- membership (who is alive) and the region's
signed state (health, energy, claims) -- with :func:`choose_leader`, a pure
function; peers holding the same view name the same leader.

The rule, in order:

1. Candidates are the region's members that are alive (or merely suspect:
   a suspicion under packet loss must not move leadership), have published
   ``stable`` (up for ``stable_s``, and not flapping: a peer that had to
   refute ``flap_refutations_max`` suspicions within ``stable_s`` is out
   for ``stable_s``), are not draining, and are above the floors: health score and,
   for sites with a battery, battery state of charge. If no candidate
   clears every floor, the battery floor is dropped (a region at night
   with every battery drained still has a leader).
2. The *incumbent* is the candidate with the highest claimed epoch (a
   leader writes ``lead = (epoch, term, stable)`` into its own state). It
   keeps its floors relaxed by ``floor_hysteresis``, so a battery hovering
   at the floor does not flip leadership.
3. The *best* candidate has the highest score (a weighted sum of health,
   state of charge and power headroom; quantised readings, so all peers
   compute the same number); the smaller peer id breaks ties.
4. The leader is the incumbent unless the best beats it by ``margin``, or
   there is no incumbent. Noisy readings therefore cannot churn leadership.
5. A new leader's epoch is one more than the highest term any live region
   peer has published (every peer publishes the highest epoch it has
   seen), so epochs only grow. The leader claims it in its state.

In a partition each side sees the other's members dead and picks its own
leader (at a higher epoch); when it heals, both claims are visible, the
higher epoch is the incumbent, and the other steps down: one leader per
region again, as soon as membership and state converge.

Leader changes are ``leader.changed`` events with region, leader, epoch
and previous leader. The leader also publishes its region's ``summary``
(global scope: see ``state.py``), which is how peers of other regions learn
who leads there and what the region has.

Knowingly left out: leases or fencing (a leader's duties must be safe to
run twice, as ARCHITECTURE says), and leadership of regions a peer is not
in (read their summaries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

from arcnet.mesh.core import Emit, Timers

from .state import StateCore, summary_value

__all__ = ["LeaderConfig", "LeaderCore", "choose_leader", "score"]


@dataclass
class LeaderConfig:
    """Knobs of leader choice. None depends on N; all are about one region."""

    interval_s: float = 1.0
    """Seconds between re-evaluations when the region's state changed
    (membership events re-evaluate at once)."""

    stable_s: float = 30.0
    """A peer becomes a candidate after this many seconds up, and stops being
    one for this long when it flaps (see flap_refutations_max)."""

    flap_refutations_max: int = 3
    """Refutations within stable_s that mark a peer as flapping (unstable).
    One refutation is not flapping: after a partition heals every peer
    refutes the death the other side declared."""

    health_floor: float = 0.5
    """Minimum health score (0..1) of a candidate."""

    battery_floor_fraction: float = 0.2
    """Minimum battery state of charge of a candidate that has a battery."""

    floor_hysteresis: float = 0.05
    """The incumbent stays eligible down to each floor minus this."""

    margin: float = 0.15
    """Score a challenger must add over the incumbent to take over (scores
    are in 0..1; quantised readings move them by 0.01-0.05 steps)."""

    weight_health: float = 0.5
    weight_battery: float = 0.3
    weight_headroom: float = 0.2
    headroom_ref_kw: float = 1000.0
    """Power headroom that scores full marks (a 1 MW site)."""


# the published fields a candidate's row is computed from (see choose_leader)
_INPUTS = ("stable", "draining", "health_score", "battery_soc_fraction", "battery_kwh", "power_headroom_kw", "lead_epoch", "lead_term")


def score(c: Mapping[str, Any], cfg: LeaderConfig) -> float:
    """A candidate's score in 0..1 from its (quantised, published) readings."""
    health = float(c.get("health_score", 0.0))
    soc = float(c.get("battery_soc_fraction", 0.0)) if c.get("battery_kwh", 0.0) > 0 else 0.0
    head = max(0.0, min(1.0, float(c.get("power_headroom_kw", 0.0)) / cfg.headroom_ref_kw))
    return round(cfg.weight_health * health + cfg.weight_battery * soc + cfg.weight_headroom * head, 9)


def _floors_ok(c: Mapping[str, Any], cfg: LeaderConfig, slack: float, battery: bool = True) -> bool:
    if not c.get("stable") or c.get("draining"):
        return False
    if "health_score" not in c or c["health_score"] < cfg.health_floor - slack:
        return False
    if battery and c.get("battery_kwh", 0.0) > 0 and c.get("battery_soc_fraction", 0.0) < cfg.battery_floor_fraction - slack:
        return False
    return True


def facts(c: Mapping[str, Any], cfg: LeaderConfig) -> tuple[float, bool, bool, int, int, bool]:
    """(score, eligible, eligible as incumbent, claimed epoch, term, eligible but for the
    battery floor) of one candidate's state."""
    return (
        score(c, cfg),
        _floors_ok(c, cfg, 0.0),
        _floors_ok(c, cfg, cfg.floor_hysteresis),
        int(c.get("lead_epoch", 0)),
        int(c.get("lead_term", 0)),
        _floors_ok(c, cfg, 0.0, battery=False),
    )


def _choose(rows: Sequence[tuple], margin: float) -> tuple[str | None, int]:
    """rows: (peer, alive, score, eligible, eligible_incumbent, epoch, term, eligible but for the battery).

    When no candidate is above every floor (a region at night with every battery
    drained), the battery floor is dropped rather than leave the region without
    a leader: the best of the healthy, stable candidates leads until a charged
    one can take over.
    """
    leader, epoch = _pick(rows, margin, 3, 4)
    if leader is None:
        fallback = _pick(rows, margin, 7, 7)
        if fallback[0] is not None:
            return fallback
    return leader, epoch


def _pick(rows: Sequence[tuple], margin: float, ok_at: int, inc_at: int) -> tuple[str | None, int]:
    max_term = 0
    best = inc = None
    for r in rows:
        peer, alive, sc = r[0], r[1], r[2]
        epoch, term = r[5], r[6]
        if not alive:
            continue
        if term > max_term:
            max_term = term
        if epoch > max_term:
            max_term = epoch
        if r[ok_at] and (best is None or sc > best[2] or (sc == best[2] and peer < best[0])):
            best = r
        if epoch > 0 and r[inc_at] and (inc is None or epoch > inc[5] or (epoch == inc[5] and peer < inc[0])):
            inc = r
    if inc is None:
        return (None, max_term) if best is None else (best[0], max_term + 1)
    if best is not None and best[0] != inc[0] and best[2] > inc[2] + margin:
        return best[0], max_term + 1
    return inc[0], inc[5]


def choose_leader(candidates: Sequence[Mapping[str, Any]], cfg: LeaderConfig) -> tuple[str | None, int]:
    """(leader peer id or None, epoch) for one region: a pure function of its inputs.

    Each candidate is a mapping with ``peer``, ``alive``, ``stable``,
    ``draining``, ``health_score``, ``battery_soc_fraction``,
    ``battery_kwh``, ``power_headroom_kw``, ``lead_epoch`` (its claim, 0 for
    none) and ``lead_term`` (the highest epoch it has seen). The order of
    ``candidates`` does not matter.
    """
    rows = [(c["peer"], bool(c.get("alive"))) + facts(c, cfg) for c in candidates]
    return _choose(rows, cfg.margin)


class LeaderCore:
    """Computes its region's leader, claims leadership when it is the one, publishes the summary."""

    PROTOCOL = "leader"

    def __init__(self, peer_id: str, *, state: StateCore, membership: Any, config: LeaderConfig | None = None, region: str = ""):
        self.me = peer_id
        self.cfg = config or LeaderConfig()
        self.state = state
        self.membership = membership
        self.region = region
        self.timers = Timers()
        self.leader: str | None = None
        self.epoch = 0
        self.stable = False
        self._built = False
        self._refuted: list[float] = []  # times of our recent refutations
        self._cache: dict[str, tuple] = {}  # peer -> candidate row
        self._summary_at = -1e18
        self.stats = {"evaluations": 0, "changes": 0, "claims": 0, "summaries": 0}

    # -- read API ---------------------------------------------------------

    def leader_of(self, region: str | None = None) -> str | None:
        """The leader of my region (computed), or of another (from its summary)."""
        if region is None or region == self.region:
            return self.leader
        s = self.state.view.summary(region)
        return None if s is None else s["leader"]

    def statistics(self) -> dict[str, float]:
        s: dict[str, float] = dict(self.stats)
        s["epoch"] = self.epoch
        s["is_leader"] = 1.0 if self.leader == self.me else 0.0
        return s

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    # -- driver entry points ----------------------------------------------

    def start(self, now: float) -> list:
        self.state.set_local("lead", (0, 0, False))
        return [
            self.timers.set("eval", now + self.cfg.interval_s),
            self.timers.set("stable", now + self.cfg.stable_s),
        ]

    def on_message(self, now: float, sender: str, msg: Any) -> list:
        return []  # leaders need no messages of their own: they read converged state

    def on_timer(self, now: float, timer: Hashable) -> list:
        if not self.timers.fire(timer):
            return []
        if timer == "stable":
            self.stable = True
            self._write_lead()
            self.state.region_dirty[self.me] = True
            return self._evaluate(now, force=False)
        if timer == "eval":
            out = [self.timers.set("eval", now + self.cfg.interval_s)]
            out.extend(self._evaluate(now, force=False))
            return out
        return []

    def on_event(self, now: float, event: Emit) -> list:
        kind = event.kind
        if not kind.startswith("member."):
            return []
        data = event.data
        out: list = []
        if data.get("peer") == self.me and kind == "member.alive":
            # we had to refute a suspicion; refuting often means we are the slow one
            cut = now - self.cfg.stable_s
            self._refuted = [t for t in self._refuted if t > cut] + [now]
            if len(self._refuted) >= self.cfg.flap_refutations_max:
                self.stable = False
                self._write_lead()
                self.state.region_dirty[self.me] = True
                out.append(self.timers.set("stable", now + self.cfg.stable_s))
        if data.get("region") == self.region and kind != "member.suspect":  # a suspect is still alive
            peer = data.get("peer")
            if peer and self._built:
                self.state.region_dirty[peer] = True  # only this member's row (its aliveness) changed
            out.extend(self._evaluate(now, force=True))
        return out

    # -- internals ----------------------------------------------------------

    def _row(self, p: str) -> tuple | None:
        c = self.state.view.fields(p, _INPUTS)
        if c is None or not c.get("version"):
            return None
        if p == self.me:
            c["stable"] = self.stable  # my own flag is current; my published one may lag
        return (p, self.membership.is_alive(p)) + facts(c, self.cfg)

    def _rows(self, full: bool) -> list[tuple]:
        """Candidate rows for :func:`_choose`. Facts are recomputed only for the owners
        the state core marked changed (or all, on a membership change)."""
        rows = self._cache
        dirty = self.state.region_dirty
        if full:
            rows.clear()
            dirty.clear()
            for p in self.membership.members_in_region(self.region):
                r = self._row(p)
                if r is not None:
                    rows[p] = r
        elif dirty:
            region_of = self.membership.region_of
            for p in list(dirty):
                r = self._row(p) if region_of(p) == self.region else None
                if r is None:
                    rows.pop(p, None)
                else:
                    rows[p] = r
            dirty.clear()
        return list(rows.values())  # aliveness is in each row: a member event marks its row dirty

    def _evaluate(self, now: float, force: bool) -> list:
        due = now - self._summary_at >= self.state.cfg.summary_interval_s and self.leader == self.me
        if not force and not self.state.region_dirty and not due and self._built:
            return []
        self.stats["evaluations"] += 1
        rows = self._rows(full=not self._built)
        self._built = True
        leader, epoch = _choose(rows, self.cfg.margin)
        out: list = []
        # the highest epoch actually claimed (never a prediction: predictions fed back would inflate)
        term = max([0] + [max(r[5], r[6]) for r in rows if r[1]])
        previous = self.leader
        if leader != self.leader or epoch != self.epoch:
            self.leader, self.epoch = leader, epoch
            if leader != previous:
                self.stats["changes"] += 1
            out.append(Emit("leader.changed", {"region": self.region, "leader": leader or "", "epoch": epoch, "previous": previous or ""}))
        self._write_lead(claim=epoch if leader == self.me else 0, term=term)
        if leader == self.me and (leader != previous or now - self._summary_at >= self.state.cfg.summary_interval_s):
            self._summary_at = now
            self._publish_summary(epoch)
        return out

    def _write_lead(self, claim: int | None = None, term: int | None = None) -> None:
        cur = self.state.local("lead") or (0, 0, False)
        claim = cur[0] if claim is None else claim
        term = max(cur[1], claim, term or 0)
        new = (claim, term, self.stable)
        if tuple(cur) != new:
            if claim and claim != cur[0]:
                self.stats["claims"] += 1
            self.state.set_local("lead", new)

    def _publish_summary(self, epoch: int) -> None:
        view = self.state.view
        live = [c for c in (view.get(p) for p in self.membership.members_in_region(self.region)) if c is not None]
        stats = {
            "peers": float(len(live)),
            "cpu_slots_free": float(sum(c.get("cpu_slots_free", 0) for c in live)),
            "gpu_slots_free": float(sum(c.get("gpu_slots_free", 0) for c in live)),
            "solar_kw": round(sum(c.get("solar_kw", 0.0) for c in live), 1),
            "power_headroom_kw": round(sum(c.get("power_headroom_kw", 0.0) for c in live), 1),
            "battery_soc_fraction": round(sum(c.get("battery_soc_fraction", 0.0) for c in live) / max(1, len(live)), 3),
            "queue_length": float(sum(c.get("queue_length", 0) for c in live)),
        }
        counts: dict[str, int] = {}
        for c in live:
            for a in c.get("artifacts") or ():
                counts[a] = counts.get(a, 0) + 1
        top = sorted(counts, key=lambda a: (-counts[a], a))[:8]
        value = summary_value(self.region, epoch, stats, top)
        if self.state.local("summary") != value:
            self.stats["summaries"] += 1
            self.state.set_local("summary", value)
