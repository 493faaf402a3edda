"""Workload: Poisson job arrivals per class, and the placer that turns jobs into IT load.

A scenario lists job classes (``[[workload]]``): an arrival rate for the
whole mesh, a mean run time, the IT power a running job draws, and
optionally the region its submitters are in. Arrivals of each class are a
Poisson process drawn from the class's own seeded ``random.Random``; each
job enters at a random alive peer (of its region, if it has one).

A :class:`Placer` decides where jobs run; it sets the energy model's IT load
through :meth:`Workload.start_job` / :meth:`Workload.finish_job`, and the
report's placement-wait CDF is read from :attr:`Workload.waits_s`.

:class:`GreedyPlacer` is the stand-in until the real placement cores run in
the simulator: an oracle that sees every site's power headroom at once, puts
a job on its entry site if it fits, else on the site of the entry region
(then of any region) with the most headroom, else queues it FIFO and retries
when a job finishes or every ``retry_s``. When a site crashes, its jobs go
back to the queue (what custody will do). A job starts after a decision
time plus a request/answer round trip on the WAN between its entry site and
the chosen one. It is *not* the protocol -- no messages, no bids, instant
global knowledge -- so its waits are a lower bound for what the real
placement can do with the same sites and energy.

The hook for the real placement: a placer that submits each job to its
entry peer's node (``node.on_event(now, Emit("job.submit", ...))``), hears
``job.started`` / ``job.finished`` emits through the simulator's
``on_emit``, and calls :meth:`Workload.start_job` / ``finish_job`` /
``record_wait`` from them. Nothing else in the runner changes.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from .engine import Simulator, derive_seed

__all__ = ["GreedyPlacer", "Job", "JobClass", "Placer", "Workload"]

QUEUE_MAX = 100_000  # jobs waiting for capacity; beyond it arrivals are rejected (and counted)
HISTORY_MAX = 1_000_000  # finished jobs whose waits are kept for the CDF


@dataclass(frozen=True)
class JobClass:
    """One class of jobs. Units in the names."""

    name: str
    rate_per_h: float  # arrivals per hour across the mesh
    duration_s: float  # mean run time
    power_kw: float  # IT power while running
    distribution: str = "exp"  # run time: "exp" (exponential) or "fixed"
    region: str | None = None  # submitters in this region only (None: anywhere)
    placement_class: str = "batch"  # the placement policy this maps to (online, batch, finetune, ...)

    def __post_init__(self) -> None:
        if self.rate_per_h < 0 or self.duration_s <= 0 or self.power_kw <= 0:
            raise ValueError("rate_per_h >= 0, duration_s > 0 and power_kw > 0 are required")
        if self.distribution not in ("exp", "fixed"):
            raise ValueError(f"distribution must be 'exp' or 'fixed', got {self.distribution!r}")


@dataclass(slots=True)
class Job:
    id: int
    cls: str
    submitted_s: float
    entry: int  # site index where it was submitted
    power_kw: float
    duration_s: float
    state: str = "queued"  # queued -> running -> finished; "rejected" if the queue is full
    site: int | None = None
    started_s: float | None = None
    finished_s: float | None = None
    attempt: int = 0  # bumped when re-placed after a crash (stale finish events are ignored)
    replaced: int = 0
    site_generation: int = -1  # the executor's simulator generation when it started (a crash changes it)


class Placer(Protocol):
    def submit(self, job: Job, now: float) -> None: ...

    def site_down(self, site: int, now: float) -> None: ...

    def site_up(self, site: int, now: float) -> None: ...

    def statistics(self) -> dict[str, float]: ...


class Workload:
    """Generates arrivals on a simulator and keeps the books of every job."""

    def __init__(self, sim: Simulator, classes: Sequence[JobClass], *, energy: Any, site_peers: Sequence[str],
                 site_regions: Sequence[str], seed: int, end_s: float):
        self.sim = sim
        self.classes = list(classes)
        self.energy = energy
        self.site_peers = list(site_peers)  # site index -> peer id
        self.site_regions = list(site_regions)
        self.end_s = end_s
        self.seed = seed
        self.placer: Placer | None = None
        self.jobs: dict[int, Job] = {}  # jobs not finished (queued or running)
        self.waits_s: list[float] = []  # start - submit, for jobs that started (first start)
        self.counts = {"submitted": 0, "started": 0, "finished": 0, "rejected": 0, "replaced": 0, "queued": 0, "running": 0}
        self.by_class = {c.name: {"submitted": 0, "finished": 0} for c in self.classes}
        self.jobs_run_by_site = [0] * len(self.site_peers)
        self.running_by_site = [0] * len(self.site_peers)
        self.version = 0  # bumped on every change of a job's state (checkers skip unchanged books)
        self._next_id = 0
        self._rngs = [random.Random(derive_seed(seed, "workload", c.name)) for c in self.classes]
        self._by_region: dict[str, list[int]] = {}
        for i, r in enumerate(self.site_regions):
            self._by_region.setdefault(r, []).append(i)

    def alive(self, site: int) -> bool:
        return self.sim.peers[self.site_peers[site]].alive

    def _pick_alive(self, pool: Sequence[int], rng: random.Random) -> int | None:
        """A uniformly random alive site of ``pool``: a few random draws, then a scan (O(1) while most are up)."""
        if not pool:
            return None
        for _ in range(16):
            i = pool[rng.randrange(len(pool))]
            if self.alive(i):
                return i
        alive = [i for i in pool if self.alive(i)]
        return alive[rng.randrange(len(alive))] if alive else None

    def schedule(self) -> None:
        for k, c in enumerate(self.classes):
            if c.rate_per_h > 0:
                self._schedule_next(k, 0.0)

    def _schedule_next(self, k: int, now: float) -> None:
        c = self.classes[k]
        gap = self._rngs[k].expovariate(c.rate_per_h / 3600.0)
        at = now + gap
        if at < self.end_s:
            self.sim.call_at(at, lambda: self._arrive(k), f"job {c.name}")

    def _arrive(self, k: int) -> None:
        now = self.sim.now
        self.version += 1
        c = self.classes[k]
        rng = self._rngs[k]
        self._schedule_next(k, now)
        pool = self._by_region.get(c.region, []) if c.region else range(len(self.site_peers))
        entry = self._pick_alive(pool, rng)
        if entry is None:
            self.counts["rejected"] += 1
            return
        dur = c.duration_s if c.distribution == "fixed" else rng.expovariate(1.0 / c.duration_s)
        job = Job(self._next_id, c.name, now, entry, c.power_kw, round(dur, 3))
        self._next_id += 1
        self.counts["submitted"] += 1
        self.by_class[c.name]["submitted"] += 1
        if self.counts["queued"] >= QUEUE_MAX:
            job.state = "rejected"
            self.counts["rejected"] += 1
            return
        self.jobs[job.id] = job
        self.counts["queued"] += 1
        assert self.placer is not None, "a workload needs a placer"
        self.placer.submit(job, now)

    # -- what placers call -------------------------------------------------

    def start_job(self, job: Job, site: int, now: float, delay_s: float = 0.0) -> None:
        """``job`` runs on ``site`` from ``now + delay_s`` (its power is reserved from now)."""
        self.version += 1
        assert job.state == "queued", f"job {job.id} started twice"
        assert self.alive(site), f"job {job.id} placed on a dead site"
        assert delay_s >= 0.0
        job.state = "running"
        job.site = site
        start = now + delay_s
        if job.started_s is None:
            self.record_wait(start - job.submitted_s)
            self.counts["started"] += 1
        job.started_s = start
        self.counts["queued"] -= 1
        self.counts["running"] += 1
        self.jobs_run_by_site[site] += 1
        job.site_generation = self.sim.peers[self.site_peers[site]].generation
        self.running_by_site[site] += 1
        self.energy.add_it_load(site, job.power_kw, now)
        attempt = job.attempt
        self.sim.call_at(start + job.duration_s, lambda: self._done(job, attempt), "job done")

    def record_wait(self, wait_s: float) -> None:
        if len(self.waits_s) < HISTORY_MAX:
            self.waits_s.append(round(wait_s, 6))

    def executor_lost(self, job: Job) -> bool:
        """True if the site running ``job`` crashed since it started (the run died with it)."""
        if job.state != "running" or job.site is None:
            return False
        p = self.sim.peers[self.site_peers[job.site]]
        return not p.alive or p.generation != job.site_generation

    def _done(self, job: Job, attempt: int) -> None:
        if job.attempt != attempt or job.state != "running":
            return  # re-placed after a crash: this finish belongs to the lost run
        if self.executor_lost(job):
            return  # the site crashed under it and nobody re-placed it: it never finishes
        self.finish_job(job, self.sim.now)

    def finish_job(self, job: Job, now: float) -> None:
        self.version += 1
        job.state = "finished"
        job.finished_s = now
        self.counts["running"] -= 1
        self.counts["finished"] += 1
        self.by_class[job.cls]["finished"] += 1
        if job.site is not None:
            self.energy.add_it_load(job.site, -job.power_kw, now)
            self.running_by_site[job.site] -= 1
        del self.jobs[job.id]
        if self.placer is not None and hasattr(self.placer, "capacity_freed"):
            self.placer.capacity_freed(now)  # type: ignore[attr-defined]

    def requeue(self, job: Job, now: float) -> None:
        """A running job's site died: the job goes back to queued (custody re-places it)."""
        self.version += 1
        assert job.state == "running"
        if job.site is not None:
            self.energy.add_it_load(job.site, -job.power_kw, now)
            self.running_by_site[job.site] -= 1
        job.state = "queued"
        job.site = None
        job.attempt += 1
        job.replaced += 1
        self.counts["running"] -= 1
        self.counts["queued"] += 1
        self.counts["replaced"] += 1

    def statistics(self) -> dict[str, float]:
        s: dict[str, float] = dict(self.counts)
        if self.placer is not None:
            s.update({f"placer.{k}": v for k, v in self.placer.statistics().items()})
        return s


class GreedyPlacer:
    """Stand-in placement with global knowledge (see the module docstring). Not the protocol."""

    def __init__(self, workload: Workload, *, retry_s: float = 30.0, decision_s: float = 0.05,
                 latency_s: Callable[[int, int], float] | None = None):
        self.w = workload
        self.retry_s = retry_s
        # what a placement round costs before the job starts: a decision, plus a request/answer
        # round trip between the entry site and the chosen one (``latency_s(a, b)``: one way, seconds)
        self.decision_s = decision_s
        self.latency_s = latency_s
        self.queue: deque[Job] = deque()
        self.retry_pending = False
        self.placed_local = 0
        self.placed_region = 0
        self.placed_remote = 0
        workload.placer = self

    def _headroom(self, site: int, now: float) -> float:
        return self.w.energy.reading(site, now)["power_headroom_kw"]

    def _best(self, sites: Sequence[int], power_kw: float, now: float) -> int | None:
        best, best_h = None, -math.inf
        for i in sites:
            if not self.w.alive(i):
                continue
            h = self._headroom(i, now)
            if h >= power_kw and h > best_h:
                best, best_h = i, h
        return best

    def _delay(self, entry: int, site: int) -> float:
        rtt = 0.0 if (self.latency_s is None or entry == site) else 2.0 * self.latency_s(entry, site)
        return self.decision_s + rtt

    def _try(self, job: Job, now: float) -> bool:
        w = self.w
        e = job.entry
        if w.alive(e) and self._headroom(e, now) >= job.power_kw:
            self.placed_local += 1
            w.start_job(job, e, now, self._delay(e, e))
            return True
        region = w.site_regions[e]
        site = self._best(w._by_region[region], job.power_kw, now)
        if site is not None:
            self.placed_region += 1
            w.start_job(job, site, now, self._delay(e, site))
            return True
        site = self._best(range(len(w.site_peers)), job.power_kw, now)
        if site is not None:
            self.placed_remote += 1
            w.start_job(job, site, now, self._delay(e, site))
            return True
        return False

    def submit(self, job: Job, now: float) -> None:
        if self.queue or not self._try(job, now):
            self.queue.append(job)
            self._arm(now)

    def capacity_freed(self, now: float) -> None:
        self._drain(now)

    def _drain(self, now: float) -> None:
        while self.queue:
            job = self.queue[0]
            if job.state != "queued":
                self.queue.popleft()
                continue
            if not self._try(job, now):
                break
            self.queue.popleft()
        if self.queue:
            self._arm(now)

    def _arm(self, now: float) -> None:
        if not self.retry_pending:
            self.retry_pending = True
            self.w.sim.call_at(now + self.retry_s, self._retry, "placer retry")

    def _retry(self) -> None:
        self.retry_pending = False
        self._drain(self.w.sim.now)

    def site_down(self, site: int, now: float) -> None:
        lost = [j for j in self.w.jobs.values() if j.state == "running" and j.site == site]
        lost.sort(key=lambda j: j.id)
        for j in lost:
            self.w.requeue(j, now)
        # re-placed jobs go to the front, oldest first
        for j in reversed(lost):
            self.queue.appendleft(j)
        if lost:
            self._drain(now)

    def site_up(self, site: int, now: float) -> None:
        self._drain(now)

    def statistics(self) -> dict[str, float]:
        return {
            "queue": len(self.queue),
            "placed_local": self.placed_local,
            "placed_region": self.placed_region,
            "placed_remote": self.placed_remote,
        }

