"""Placement benchmark: 1,000 simulated sites, the real placement cores, and four baselines.

What runs:

* **mesh** -- every site runs the real :class:`~arcnet.placement.core.PlacementCore`
  (broker, bidder/executor, custodian) inside the discrete-event simulator
  (``arcnet.sims.engine``), over the geographic WAN (``arcnet.sims.wan``),
  with sites, regions and energy from ``arcnet.sims.geo`` and
  ``arcnet.sims.energy`` (pvlib clear sky, seeded clouds, batteries). Brokers
  read a gossip-like view refreshed every ``publish_s`` (slots in use of
  every site); membership is modelled: a crashed site is declared dead to
  every peer after a detection delay drawn from ``detect_s`` (what SWIM with
  Lifeguard suspicion gives at 1,000 peers: ~1-2 s of probing plus a
  suspicion timeout of 4 x log10(N) probe intervals = 12 s).
* **baselines**, on the same job trace, crash schedule, sites, caches and
  energy, in the same process: an *ideal* central scheduler (global, fresh,
  zero-latency knowledge; places each task on the site that minimises the
  very cost the bidders quote, with exact queue waits), *random*,
  *power-of-two choices* (the less loaded of two random sites) and a
  *bounded-load ring* (consistent hashing with bounded loads, 40 virtual
  nodes per site, eps = 0.25). Baselines are energy-blind except the ideal.

The trace: Poisson arrivals per class at a target load (offered slot-seconds
/ slot capacity), Zipf popularity of models and datasets, a mix of online,
batch, parallel, fine-tune, coupled and workflow jobs (see ``MIX``). Each
window simulates ``warmup_s`` of warm-up, ``measure_s`` of measured
submissions, then drains. Windows start at different times of day (the
fleet is in the contiguous US, so time of day decides the solar share);
figures aggregate over windows. 5% of sites crash per hour (restart after
5-30 minutes, disk kept).

Figures (``--json`` prints one object):

* ``wait_mean_ratio_vs_ideal`` -- mean task wait (submission, or readiness of
  a workflow step, to the start of computing: queue + energy-window
  deferral + auction + fetch and load of missing artifacts), mesh / ideal;
* ``load_max_over_mean`` -- time-averaged (running + queued slots) / slots,
  max site over mean site;
* ``cache_local_fraction`` -- tasks that started where every artifact they
  name was already cached;
* ``surplus_energy_fraction`` / ``random_surplus_energy_fraction`` -- share
  of flexible (non-online) tasks' energy that came from solar or battery;
* ``latency_class_wait_increase_pct`` -- online tasks' mean wait with energy
  steering vs the same mesh with energy steering off (energy weights 0);
* ``lost_jobs`` -- accepted jobs not finished after the drain;
* ``replace_p99_s`` -- executor crash to the new award accepted;
* ``decision_p99_ms`` -- broker compute per placement (candidates + choice);
* ``messages_per_placement`` -- CallForBids + Bid + Award + AwardReply per
  successful auction (the 2k + 2 budget); custody traffic is reported apart.

Run: ``python -m arcnet.bench.placement`` (full: 1,000 sites, 4 windows,
loads 0.5 and 0.8; several minutes) or ``--quick`` (200 sites, 1 window).
Every run prints its seed and the command that reproduces it.

Knowingly left out: real gossip (the view is refreshed centrally with a
delay), runtime failures other than crashes, transfer contention between
sites (a fetch runs at the site's own link rate), and the grid connection
limit (a job never waits for grid power).
"""

from __future__ import annotations

import argparse
import bisect
import copy
import gc
import heapq
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import numpy as np

from arcnet.mesh.core import Send
from arcnet.mesh.identity import Identity
from arcnet.placement import classes
from arcnet.placement.bidding import Broker, priority, startable, wait_estimate
from arcnet.placement.classes import POLICIES
from arcnet.placement.core import PlacementConfig
from arcnet.placement.cost import DEFAULT_MODEL, CostModel, estimate
from arcnet.placement.hashing import CandidateIndex, key64, mix64
from arcnet.placement.messages import ArtifactRef, Award, AwardReply, Bid, CallForBids, JobSpec, Step, job_spec
from arcnet.placement.simrt import PlacementSim, SimSite
from arcnet.placement.view import MemoryView, PeerFacts
from arcnet.sims.engine import Simulator, derive_seed

GB = 10**9
SLOTS = 8
SLOT_KW = 100.0
IDLE_KW = 100.0
LINK_BPS = 1.25e9  # 10 Gbit/s uplink (the catalog's dc class)
CACHE_BYTES = 3 * 10**12
TRAIN_FRACTION = 0.5  # sites with the "train" capability (fine-tune needs it)
SPINUP_S = 86400.0  # the energy model runs the day before each window first

# share of offered slot-seconds per class, and the shape of each class
MIX = {
    "online": 0.20,
    "batch": 0.35,
    "parallel": 0.15,
    "finetune": 0.08,
    "coupled": 0.10,
    "workflow": 0.12,
}


# --------------------------------------------------------------------------
# trace


@dataclass
class Arrival:
    t: float
    spec: JobSpec
    entry: int  # site index the submission reaches
    measured: bool


@dataclass
class Crash:
    t: float
    site: int
    down_s: float
    detect_s: float


class Catalogs:
    """Zipf-popular models and datasets with seeded sizes."""

    def __init__(self, rng: random.Random, models: int = 400, datasets: int = 1500):
        self.models = [ArtifactRef(f"model-{i:04d}", int(GB * min(80.0, max(1.0, rng.lognormvariate(2.3, 0.8)))))
                       for i in range(models)]
        self.datasets = [ArtifactRef(f"data-{i:05d}", int(GB * min(400.0, max(5.0, rng.lognormvariate(3.6, 0.8)))))
                         for i in range(datasets)]
        self._mw = _zipf_cdf(models, 1.1)
        self._dw = _zipf_cdf(datasets, 0.9)

    def model(self, rng: random.Random) -> ArtifactRef:
        return self.models[bisect.bisect_left(self._mw, rng.random())]

    def dataset(self, rng: random.Random) -> ArtifactRef:
        return self.datasets[bisect.bisect_left(self._dw, rng.random())]


def _zipf_cdf(n: int, s: float) -> list[float]:
    w = [1.0 / (i + 1) ** s for i in range(n)]
    tot = sum(w)
    acc, out = 0.0, []
    for x in w:
        acc += x / tot
        out.append(acc)
    out[-1] = 1.0
    return out


def _job(cls: str, jid: str, rng: random.Random, cat: Catalogs, region: str) -> tuple[JobSpec, float]:
    """A job of class ``cls`` and its offered slot-seconds."""
    m = cat.model(rng)
    if cls == "online":
        run = min(1200.0, max(30.0, rng.expovariate(1 / 300.0)))
        return job_spec(jid, "online", artifacts=[m], slots=1, run_s=run, latency_budget_s=30.0,
                        submitter_region=region), run
    if cls == "batch":
        slots = rng.choice([1, 2, 2, 4])
        run = min(1800.0, max(60.0, rng.lognormvariate(6.6, 0.6)))
        return job_spec(jid, "batch", artifacts=[m, cat.dataset(rng)], slots=slots, run_s=run,
                        deadline_s=6 * 3600.0, submitter_region=region), slots * run
    if cls == "parallel":
        d = cat.dataset(rng)
        shards = shards_of(d)
        n = len(shards)
        run = min(1500.0, max(60.0, rng.lognormvariate(6.2, 0.5)))
        return job_spec(jid, "parallel", artifacts=[m], inputs=shards, slots=1, run_s=run,
                        deadline_s=6 * 3600.0, submitter_region=region), n * run
    if cls == "finetune":
        run = rng.uniform(1200.0, 1800.0)
        return job_spec(jid, "finetune", artifacts=[m, cat.dataset(rng)], slots=8, run_s=run,
                        capabilities=["train"], deadline_s=12 * 3600.0, submitter_region=region), 8 * run
    if cls == "coupled":
        slots = rng.choice([4, 6, 8])
        run = rng.uniform(600.0, 1500.0)
        return job_spec(jid, "coupled", artifacts=[m], slots=slots, run_s=run, deadline_s=6 * 3600.0,
                        submitter_region=region), slots * run
    # workflow: an agent-style loop between a fetch and a report step
    n = rng.randint(3, 6)
    steps = [Step("s0", [], [cat.dataset(rng)], 1, rng.uniform(60, 300), "")]
    ss = steps[0].run_s
    for i in range(1, n):
        slots = rng.choice([1, 2])
        run = rng.uniform(60, 400)
        steps.append(Step(f"s{i}", [f"s{i - 1}"], [], slots, run, "loop" if i < n - 1 else ""))
        ss += slots * run
    return job_spec(jid, "workflow", artifacts=[m], steps=steps, submitter_region=region), ss


def shards_of(d: ArtifactRef) -> list[ArtifactRef]:
    """A dataset's fixed shards (4-16 of them): every parallel job over it reads the same ones."""
    n = 4 + key64(d.cid) % 13
    size = max(GB, d.size_bytes // n)
    return [ArtifactRef(f"{d.cid}/{i}of{n}", size) for i in range(n)]


_MEAN_SS: dict[str, float] = {}


def mean_slot_seconds(cls: str) -> float:
    if cls not in _MEAN_SS:
        rng = random.Random(12345)
        cat = Catalogs(random.Random(1))
        _MEAN_SS[cls] = statistics.fmean(_job(cls, "x", rng, cat, "r")[1] for _ in range(4000))
    return _MEAN_SS[cls]


def make_trace(seed: int, regions: list[str], site_regions: list[str], load: float, slots_total: int,
               t0: float, warmup_s: float, measure_s: float) -> list[Arrival]:
    rng = random.Random(derive_seed(seed, "trace", load))
    cat = Catalogs(random.Random(derive_seed(seed, "catalog")))
    by_region: dict[str, list[int]] = {r: [] for r in regions}
    for i, r in enumerate(site_regions):
        by_region[r].append(i)
    out: list[Arrival] = []
    end = t0 + warmup_s + measure_s
    n = 0
    for cls, share in MIX.items():
        lam = share * load * slots_total / mean_slot_seconds(cls)
        crng = random.Random(derive_seed(seed, "arrivals", cls, load))
        t = t0
        while True:
            t += crng.expovariate(lam)
            if t >= end:
                break
            region = crng.choice(regions)
            entry = crng.choice(by_region[region])
            n += 1
            spec, _ = _job(cls, f"{cls[:2]}{n:07d}", crng, cat, region)
            out.append(Arrival(t, spec, entry, t >= t0 + warmup_s))
    out.sort(key=lambda a: (a.t, a.spec.job_id))
    return out


def make_crashes(seed: int, n_sites: int, t0: float, t_end: float, rate_per_h: float = 0.05) -> list[Crash]:
    rng = random.Random(derive_seed(seed, "crashes"))
    out = []
    t = t0
    lam = rate_per_h * n_sites / 3600.0
    while True:
        t += rng.expovariate(lam)
        if t >= t_end:
            break
        out.append(Crash(t, rng.randrange(n_sites), rng.uniform(300.0, 1800.0), rng.uniform(12.0, 16.0)))
    return out


# --------------------------------------------------------------------------
# the physical world: sites, caches, energy


class _Busy(dict):
    """Running (task, epoch) -> slots; tells the site when it changes (energy load)."""

    def __init__(self, site: "BenchSite"):
        super().__init__()
        self.site = site

    def __setitem__(self, k, v):
        super().__setitem__(k, v)
        self.site.load_changed()

    def pop(self, k, *d):
        r = super().pop(k, *d)
        self.site.load_changed()
        return r

    def clear(self):
        super().clear()
        self.site.load_changed()


class BenchSite(SimSite):
    def __init__(self, world: "World", i: int, peer_id: str, region: str, caps: tuple[str, ...]):
        super().__init__(peer_id, region=region, slots=SLOTS, slot_kw=SLOT_KW, idle_kw=IDLE_KW, link_bps=LINK_BPS,
                         cache_bytes=CACHE_BYTES, capabilities=caps)
        self.world = world
        self.i = i
        self.busy = _Busy(self)
        self.alive = True

    def load_changed(self) -> None:
        w = self.world
        w.energy.set_it_load(self.i, IDLE_KW + sum(self.busy.values()) * SLOT_KW, w.clock())

    def use(self, artifacts):
        # what was missing just before this start: the cache-locality figures
        self.last_missing = [cid for cid, _ in artifacts if cid not in self.cache]
        before = set(self.cache) if self.world.track_cache else None
        r = super().use(artifacts)
        if before is not None:
            after = self.cache.keys()
            for cid in after - before:
                self.world.cache_add(cid, self.i)
            for cid in before - after:
                self.world.cache_del(cid, self.i)
        return r

    def facts(self, slots_used: int | None = None) -> PeerFacts:
        w = self.world
        e = w.energy
        now = w.clock()
        e.advance(now)
        i = self.i
        cap = float(e.capacity_kwh[i])
        draw = float(e.it_load_kw[i] * e.pue[i])
        return PeerFacts(
            self.peer_id, region=self.region, roles=self.roles, capabilities=self.capabilities, slots=self.slots,
            slots_used=self.slots_busy if slots_used is None else slots_used, health=1.0, draining=False,
            solar_kw=float(e.solar_kw[i]), draw_kw=draw,
            battery_soc_fraction=float(e.kwh[i]) / cap if cap > 0 else 0.0,
            battery_kwh=cap, battery_kw=float(e.battery_power_kw[i]), slot_kw=SLOT_KW, link_bps=LINK_BPS,
            artifacts=self.cache.keys(), warm=self.warm.keys(),
            surplus_window_in_s=w.window_in_s(i, now, draw),
        )


class World:
    """Sites of one scheduler run, over a private copy of the window's energy model.

    The energy model runs ``base.offset_s`` ahead of the simulator's clock:
    it was spun up through the previous day at the window's mean load, so
    batteries start the window in the state that day left them in.
    """

    def __init__(self, base: "Window", load: float, clock: Callable[[], float], *, track_cache: bool = False):
        self.base = base
        self.energy = copy.deepcopy(base.energy[load])
        offset = base.offset_s
        self.clock = lambda: clock() + offset
        self.track_cache = track_cache
        self.holders: dict[str, np.ndarray] = {}
        n = len(base.peer_ids)
        self.sites = [BenchSite(self, i, base.peer_ids[i], base.regions[i], base.caps[i]) for i in range(n)]
        for s, arts in zip(self.sites, base.prewarm):
            s.cache = dict(arts)
            s.cache_used = sum(arts.values())
            if track_cache:
                for cid in arts:
                    self.cache_add(cid, s.i)
        self._win_cache: dict[tuple[int, int], float] = {}
        self._win_all: tuple[int, np.ndarray] | None = None
        for s in self.sites:
            self.energy.set_it_load(s.i, IDLE_KW, self.clock())
        # energy accounting: (task, epoch) -> class of the running task
        self.kwh: dict[str, float] = {"flex": 0.0, "flex_surplus": 0.0, "online": 0.0, "online_surplus": 0.0}
        self.last_step_t = self.clock()

    def cache_add(self, cid: str, i: int) -> None:
        h = self.holders.get(cid)
        if h is None:
            h = self.holders[cid] = np.zeros(len(self.sites), dtype=bool)
        h[i] = True

    def cache_del(self, cid: str, i: int) -> None:
        h = self.holders.get(cid)
        if h is not None:
            h[i] = False

    def window_in_s(self, i: int, now: float, draw_kw: float) -> float:
        """Seconds until this site's clear-sky forecast covers its draw plus two slots (-1: not within 12 h).

        ``now`` is energy-model time (the simulator's plus the offset).
        """
        bucket = int(now // 300)
        key = (i, bucket)
        v = self._win_cache.get(key)
        if v is not None:
            return v
        curve = self.base.forecast_kw[i]
        j0 = int(now // self.base.curve_step_s)
        need = draw_kw + 2 * SLOT_KW
        seg = curve[j0: j0 + int(12 * 3600 / self.base.curve_step_s)]
        hit = np.flatnonzero(seg >= need)
        v = -1.0 if hit.size == 0 else max(0.0, (j0 + int(hit[0])) * self.base.curve_step_s - now)
        if len(self._win_cache) > 200_000:
            self._win_cache.clear()
        self._win_cache[key] = v
        return v

    def windows_all(self, now: float) -> np.ndarray:
        """:meth:`window_in_s` for every site at once (cached per 5-minute bucket; model time)."""
        bucket = int(now // 300)
        if self._win_all is not None and self._win_all[0] == bucket:
            return self._win_all[1]
        e = self.energy
        draw = e.it_load_kw * e.pue
        step = self.base.curve_step_s
        j0 = int(now // step)
        seg = self.base.forecast_kw[:, j0: j0 + int(12 * 3600 / step)]
        hit = seg >= (draw + 2 * SLOT_KW)[:, None]
        first = np.argmax(hit, axis=1)
        v = np.where(hit.any(axis=1), np.maximum(0.0, (j0 + first) * step - now), -1.0)
        self._win_all = (bucket, v)
        return v

    def energy_step(self, now: float, cls_of: Callable[[str], str | None]) -> None:
        """Attribute the last interval's energy of every running task to surplus or grid (model time)."""
        e = self.energy
        e.advance(now)
        dt_h = (now - self.last_step_t) / 3600.0
        self.last_step_t = now
        if dt_h <= 0:
            return
        facility = e.it_load_kw * e.pue
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(facility > 0, 1.0 - np.minimum(1.0, e.grid_import_kw / facility), 1.0)
        k = self.kwh
        for s in self.sites:
            if not s.busy:
                continue
            f = float(frac[s.i])
            pue = float(e.pue[s.i])
            for (task, _), slots in s.busy.items():
                c = cls_of(task)
                if c is None:
                    continue
                kwh = slots * SLOT_KW * pue * dt_h
                if c == "online":
                    k["online"] += kwh
                    k["online_surplus"] += kwh * f
                else:
                    k["flex"] += kwh
                    k["flex_surplus"] += kwh * f


@dataclass
class Window:
    """Everything fixed for one time-of-day window: sites, energy, trace, crashes."""

    index: int
    start: datetime
    peer_ids: list[str]
    regions: list[str]
    region_names: list[str]
    caps: list[tuple[str, ...]]
    energy: dict[float, Any]  # load -> energy model spun up to the window start
    offset_s: float  # energy-model time at the window's t = 0
    forecast_kw: np.ndarray
    curve_step_s: float
    prewarm: list[dict[str, int]]
    traces: dict[float, list[Arrival]]
    crashes: list[Crash]
    sites: list[Any]


def build_window(seed: int, index: int, start: datetime, n_sites: int, loads: list[float], warmup_s: float,
                 measure_s: float, drain_s: float, catalog) -> Window:
    from arcnet.sims.energy import EnergyConfig, EnergyModel

    sites = catalog.sites
    span = warmup_s + measure_s + drain_s
    cfg = EnergyConfig(base_load_fraction=IDLE_KW / 1000.0)
    offset = SPINUP_S
    energy = EnergyModel(sites, start - timedelta(seconds=offset), offset + span + 13 * 3600.0,
                         derive_seed(seed, "energy", index), cfg)
    spun: dict[float, Any] = {}
    for load in loads:  # the previous day at this load leaves the batteries where they are
        m = copy.deepcopy(energy)
        for i in range(len(sites)):
            m.set_it_load(i, IDLE_KW + load * SLOTS * SLOT_KW, 0.0)
        m.advance(offset)
        spun[load] = m
    # the sites' own forecast: clear sky times the mean cloud clearness (no oracle of the actual clouds)
    forecast = (energy.pv_kwp[:, None] * energy.ghi_clear.astype(np.float64) / 1000.0
                * cfg.derate * (1.0 - cfg.cloud_cover_fraction))
    peer_ids = [Identity.from_seed(derive_seed(seed, "peer", i).to_bytes(8, "big") * 4).peer_id for i in range(n_sites)]
    regions = [s.region for s in sites]
    crng = random.Random(derive_seed(seed, "caps"))
    caps = [("gpu", "train") if crng.random() < TRAIN_FRACTION else ("gpu",) for _ in sites]
    # pre-warmed caches, as the replication policy keeps them: the 20 most popular
    # models everywhere, and every model and dataset on the 4 sites first in its
    # hash order (where placement sends it; baselines get the same caches)
    # (hot models everywhere, warm models N = 4 per region, data on 4 sites):
    # each on the sites first in its hash order, where placement sends it.
    # Baselines start from the same caches.
    cat = Catalogs(random.Random(derive_seed(seed, "catalog")))
    prewarm: list[dict[str, int]] = [dict() for _ in sites]
    room = [CACHE_BYTES * 0.8] * len(sites)
    for a in cat.models[:20]:
        for i, d in enumerate(prewarm):
            d[a.cid] = a.size_bytes
            room[i] -= a.size_bytes
    from arcnet.placement.hashing import _mix64_np

    table = np.array([key64(p) for p in peer_ids], dtype=np.uint64)
    region_rows = {r: np.array([i for i, x in enumerate(regions) if x == r]) for r in catalog.regions}

    def put(a: ArtifactRef, rows: np.ndarray, copies: int) -> None:
        sc = _mix64_np(table[rows] ^ np.uint64(key64(a.cid)))
        for j in np.argsort(~sc, kind="stable")[:copies]:
            i = int(rows[j])
            if room[i] >= a.size_bytes:
                prewarm[i][a.cid] = a.size_bytes
                room[i] -= a.size_bytes

    everyone = np.arange(len(sites))
    for a in cat.models[20:]:
        for rows in region_rows.values():
            put(a, rows, 4)
    for d in cat.datasets:
        put(d, everyone, 4)
        for sh in shards_of(d):
            put(sh, everyone, 4)
    t0 = 0.0
    traces = {load: make_trace(seed + index, catalog.regions, regions, load, SLOTS * n_sites, t0, warmup_s, measure_s)
              for load in loads}
    crashes = make_crashes(seed + index, n_sites, t0, warmup_s + measure_s + drain_s)
    return Window(index, start, peer_ids, regions, list(catalog.regions), caps, spun, offset, forecast,
                  energy.config.curve_step_s, prewarm, traces, crashes, sites)


# --------------------------------------------------------------------------
# results


@dataclass
class TaskRec:
    cls: str
    job: str
    measured: bool
    ready_t: float | None = None
    start_t: float | None = None
    wait_s: float | None = None
    fetch_s: float = 0.0  # of which fetching and loading artifacts
    local: bool | None = None  # the task's key artifact (its data) was cached where it started
    all_local: bool | None = None  # every artifact it names was
    site: int = -1


@dataclass
class Result:
    name: str
    tasks: dict[str, TaskRec] = field(default_factory=dict)
    deps: dict[str, list[str]] = field(default_factory=dict)
    dependants: dict[str, list[str]] = field(default_factory=dict)
    finished: set = field(default_factory=set)
    occupancy: np.ndarray | None = None  # slot-seconds (running + queued) per site over the window
    kwh: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    lost: int = 0
    replace_s: list[float] = field(default_factory=list)
    decision_s: list[float] = field(default_factory=list)
    decision_wall_s: list[float] = field(default_factory=list)
    in_progress: int = 0
    counters: dict[str, float] = field(default_factory=dict)  # summed core statistics (mesh)
    messages: dict[str, int] = field(default_factory=dict)
    auctions_ok: int = 0
    wall_s: float = 0.0
    sim_s: float = 0.0

    def register(self, spec: JobSpec, t: float, measured: bool) -> None:
        for ts in classes.initial_tasks(spec):
            deps = classes.task_deps(spec, ts.task_id)
            self.tasks[ts.task_id] = TaskRec(spec.cls, spec.job_id, measured, t if not deps else None)
            if deps:
                self.deps[ts.task_id] = deps
                for d in deps:
                    self.dependants.setdefault(d, []).append(ts.task_id)

    def started(self, task: str, t: float, extra_s: float, missing: list[str], key: str, site: int) -> None:
        r = self.tasks.get(task)
        if r is None or r.start_t is not None:
            return
        r.start_t = t
        r.site = site
        r.fetch_s = extra_s
        if r.ready_t is not None:
            r.wait_s = t - r.ready_t + extra_s
        r.local = key not in missing
        r.all_local = not missing

    def finish(self, task: str, t: float) -> None:
        if task in self.finished:
            return
        self.finished.add(task)
        for d in self.dependants.get(task, ()):
            if all(x in self.finished for x in self.deps[d]):
                r = self.tasks[d]
                if r.ready_t is None:
                    r.ready_t = t

    def figures(self) -> dict[str, float]:
        measured = [r for r in self.tasks.values() if r.measured and r.wait_s is not None]
        waits = [r.wait_s for r in measured]
        online = [r.wait_s for r in measured if r.cls == "online"]
        local = [r.local for r in measured if r.local is not None]
        occ = self.occupancy
        out = {
            "tasks_measured": len(measured),
            "wait_mean_s": statistics.fmean(waits) if waits else float("nan"),
            "wait_p99_s": _pct(waits, 99),
            "online_wait_mean_s": statistics.fmean(online) if online else float("nan"),
            "cache_local_fraction": sum(local) / len(local) if local else float("nan"),
            "load_max_over_mean": float(occ.max() / occ.mean()) if occ is not None and occ.mean() > 0 else float("nan"),
            "surplus_energy_fraction": self.kwh.get("flex_surplus", 0.0) / max(1e-9, self.kwh.get("flex", 0.0)),
            "flex_kwh": self.kwh.get("flex", 0.0),
            "unfinished_tasks": sum(1 for r in self.tasks.values() if r.measured and r.start_t is None),
        }
        return out


def _key_of(artifacts: list) -> str:
    # the task's rendezvous key: its largest artifact, first on ties (classes._key)
    best = None
    for cid, size in artifacts:
        if best is None or size > best[1]:
            best = (cid, size)
    return best[0] if best else ""


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(math.ceil(p / 100.0 * len(s))) - 1))]


# --------------------------------------------------------------------------
# the mesh


def run_mesh(w: Window, load: float, seed: int, *, steering: bool = True, publish_s: float = 2.0,
             measure_from: float, measure_to: float, drain_s: float, progress: bool = False) -> Result:
    from arcnet.sims.wan import WanNetwork

    res = Result("mesh" if steering else "mesh-no-steering")
    trace = w.traces[load]
    counts: dict[str, int] = {}
    msg_names = {CallForBids: "call", Bid: "bid", Award: "award", AwardReply: "reply"}

    def on_effect(now, peer, e):
        if type(e) is Send:
            name = msg_names.get(type(e.msg), type(e.msg).__name__)
            counts[name] = counts.get(name, 0) + 1
            if name == "reply" and e.msg.accepted:
                counts["placements"] = counts.get("placements", 0) + 1

    net = WanNetwork(random.Random(derive_seed(seed, "wan")), {pid: s for pid, s in zip(w.peer_ids, w.sites)})
    sim = Simulator(derive_seed(seed, "sim", w.index, load, steering), net, on_effect=on_effect)
    world = World(w, load, lambda: sim.now)
    view = MemoryView()
    index = CandidateIndex(view)
    cfg = PlacementConfig()
    if not steering:
        cfg = PlacementConfig(cost=CostModel(grid_price=0.0, battery_price=0.0))
        # and no deferral: with every price 0 no window is ever cheaper than now
    site_of = {pid: i for i, pid in enumerate(w.peer_ids)}
    cls_of_task: dict[str, str] = {}
    crash_t: dict[str, float] = {}

    def on_event(now, peer, e):
        k = e.kind
        if k == "task.run":
            d = e.data
            i = site_of[peer]
            rt = ps.runtimes[peer]
            job = rt.jobs.get((d["task"], d["epoch"]))
            extra = (job["busy_s"] - d["run_s"]) if job else 0.0
            res.started(d["task"], now, extra, world.sites[i].last_missing, _key_of(d["artifacts"]), i)
        elif k == "task.finished":
            if e.data.get("ok"):
                res.finish(e.data["task"], now)
        elif k == "job.accepted":
            res.accepted += 1
            accepted.add(e.data["job"])
        elif k == "custody.done":
            done.add(e.data["job"])
        elif k == "task.replaced":
            prev = e.data.get("previous", "")
            if prev in crash_t:
                res.replace_s.append(now - crash_t[prev])

    ps = PlacementSim(sim, view, index, publish_s=publish_s, energy_tick_s=None, config=cfg, on_event=on_event)
    accepted: set[str] = set()
    done: set[str] = set()
    for s in world.sites:
        ps.add_site(s)
    ps.start()
    # time the broker's compute per placement: candidate choice + bid choice
    # Thread CPU time, so that time the OS gives to other processes on a
    # shared machine is not counted as compute (wall time is kept as well).
    # The garbage collector is held off inside the timed calls: its sweeps
    # walk the whole simulation's heap (1,000 peers in one process), which a
    # real peer's heap is a thousandth of; it runs right after instead.
    dec: dict[int, float] = {}
    dec_wall: dict[int, float] = {}
    orig_start, orig_close = Broker.start, Broker._close_bidding
    cpu, wall = time.thread_time, time.perf_counter

    def timed_start(self, now, task, **kw):
        gc.disable()
        t, tw = cpu(), wall()
        aid, eff = orig_start(self, now, task, **kw)
        dec[aid] = dec.get(aid, 0.0) + cpu() - t
        dec_wall[aid] = dec_wall.get(aid, 0.0) + wall() - tw
        gc.enable()
        return aid, eff

    def timed_close(self, now, a):
        gc.disable()
        t, tw = cpu(), wall()
        eff = orig_close(self, now, a)
        dec[a.aid] = dec.get(a.aid, 0.0) + cpu() - t
        dec_wall[a.aid] = dec_wall.get(a.aid, 0.0) + wall() - tw
        gc.enable()
        return eff

    Broker.start, Broker._close_bidding = timed_start, timed_close  # type: ignore[method-assign]
    for a in trace:
        res.register(a.spec, a.t, a.measured)
        for ts in classes.initial_tasks(a.spec):
            cls_of_task[ts.task_id] = a.spec.cls
        ps.submit(a.t, w.peer_ids[a.entry], a.spec)
    for c in w.crashes:
        pid = w.peer_ids[c.site]

        def mark(pid=pid):
            if sim.peers[pid].alive:
                crash_t[pid] = sim.now

        sim.call_at(c.t, mark, "mark crash")
        ps.crash(c.t, pid, detect_s=c.detect_s, restart_after_s=c.down_s)
    occupancy = np.zeros(len(world.sites))

    def energy_tick():
        world.energy_step(world.clock(), cls_of_task.get)
        if measure_from <= sim.now < measure_to:
            for pid, core in ps.cores.items():
                if sim.peers[pid].alive:
                    occupancy[site_of[pid]] += core.executor.slots_used() * 60.0  # type: ignore[attr-defined]
        sim.call_at(sim.now + 60.0, energy_tick, "energy")

    sim.call_at(60.0, energy_tick, "energy")
    t = time.perf_counter()
    measured_jobs = {a.spec.job_id for a in trace if a.measured}
    try:
        end = measure_to + drain_s
        step = 600.0
        now = 0.0
        while now < end:
            now = min(end, now + step)
            sim.run(now)
            if now >= measure_to and not ((accepted & measured_jobs) - done):
                break  # every measured job is done: no need to drain further
            if progress:
                print(f"    mesh load {load} t={now:.0f}s wall={time.perf_counter() - t:.0f}s "
                      f"events={sim.counters['events']}", file=sys.stderr)
    finally:
        Broker.start, Broker._close_bidding = orig_start, orig_close  # type: ignore[method-assign]
    res.wall_s = time.perf_counter() - t
    res.sim_s = sim.now
    res.occupancy = occupancy / SLOTS
    res.kwh = dict(world.kwh)
    # lost: accepted, not done, and no alive custodian holds it any more;
    # in progress: still held (running or queued) when the drain ended
    open_jobs = (accepted & measured_jobs) - done
    held = set()
    for pid, core in ps.cores.items():
        if sim.peers[pid].alive:
            held.update(j for j in core.custody.records if j in open_jobs)  # type: ignore[attr-defined]
    res.lost = len(open_jobs - held)
    res.in_progress = len(held)
    res.decision_s = list(dec.values())
    res.decision_wall_s = list(dec_wall.values())
    res.messages = counts
    res.auctions_ok = counts.get("placements", 0)  # accepted awards, across restarts
    for c in ps.cores.values():  # cores of restarted peers count from their restart only
        for k, v in c.statistics().items():  # type: ignore[attr-defined]
            if "." in k and not k.endswith(("_open", "records", "entries", "running", "queued", "deferred", "slots_used")):
                res.counters[k] = res.counters.get(k, 0) + v
    return res


# --------------------------------------------------------------------------
# central baselines


class CentralQueue:
    """One site's queue as the central schedulers run it: the executor's own
    discipline (priority classes, FIFO within one, EASY backfilling)."""

    __slots__ = ("running", "queue", "used")

    def __init__(self):
        self.running: dict[str, tuple[float, int]] = {}  # task -> (expected end, slots)
        self.queue: list[tuple[str, Any, float]] = []  # (task, TaskSpec, not_before), queue order
        self.used = 0  # slots running + queued

    def add(self, tid: str, ts: Any, not_before: float) -> None:
        p = priority(ts.cls)
        pos = len(self.queue)
        for k, (_, other, _) in enumerate(self.queue):
            if priority(other.cls) > p:
                pos = k
                break
        self.queue.insert(pos, (tid, ts, not_before))
        self.used += ts.slots

    def wait_s(self, now: float, ts: Any) -> float:
        q = [(o.slots, o.run_s, nb, priority(o.cls)) for _, o, nb in self.queue]
        return wait_estimate(now, SLOTS, list(self.running.values()), q, ts.slots, ts.run_s, priority(ts.cls))

    def pop_startable(self, now: float) -> list[tuple[str, Any]]:
        picks = startable(now, SLOTS, list(self.running.values()),
                          [(o.slots, o.run_s, nb) for _, o, nb in self.queue])
        taken = set(picks)
        out = [(self.queue[i][0], self.queue[i][1]) for i in picks]
        self.queue = [x for i, x in enumerate(self.queue) if i not in taken]
        return out


def run_central(w: Window, load: float, seed: int, policy: str, *, measure_from: float, measure_to: float,
                drain_s: float) -> Result:
    res = Result(policy)
    rng = random.Random(derive_seed(seed, "central", policy, w.index, load))
    now_box = [0.0]
    world = World(w, load, lambda: now_box[0], track_cache=(policy == "ideal"))
    sites = world.sites
    n = len(sites)
    queues = [CentralQueue() for _ in range(n)]
    alive = np.ones(n, dtype=bool)
    train = np.array(["train" in c for c in w.caps])
    cls_of_task: dict[str, str] = {}
    specs: dict[str, JobSpec] = {}
    heap: list = []
    seq = [0]

    def push(t, kind, data):
        seq[0] += 1
        heapq.heappush(heap, (t, seq[0], kind, data))

    # bounded-load ring: 40 virtual nodes per site
    ring_pts = sorted((mix64(key64(f"{w.peer_ids[i]}#{v}")), i) for i in range(n) for v in range(40))
    ring_keys = [p for p, _ in ring_pts]
    model = DEFAULT_MODEL

    def eligible(ts) -> np.ndarray:
        m = alive.copy()
        if "train" in ts.constraints.capabilities:
            m &= train
        return m

    def used_arr() -> np.ndarray:
        return np.fromiter((q.used for q in queues), dtype=np.float64, count=n)

    def choose(ts, now) -> tuple[int, float]:
        m = eligible(ts)
        idx = np.flatnonzero(m)
        if idx.size == 0:
            return -1, 0.0
        if policy == "random":
            return int(idx[rng.randrange(idx.size)]), 0.0
        if policy == "p2c":
            a, b = int(idx[rng.randrange(idx.size)]), int(idx[rng.randrange(idx.size)])
            return (a if queues[a].used <= queues[b].used else b), 0.0
        if policy == "ring":
            used = used_arr()
            mean = (used[m].sum() + ts.slots) / (SLOTS * idx.size)
            cap = max(math.ceil(1.25 * mean * SLOTS - 1e-9), ts.slots)
            h = mix64(key64(ts.key))
            j = bisect.bisect_left(ring_keys, h)
            seen = set()
            first = -1
            for step in range(len(ring_pts)):
                _, i = ring_pts[(j + step) % len(ring_pts)]
                if i in seen or not m[i]:
                    continue
                seen.add(i)
                if first < 0:
                    first = i
                if queues[i].used + ts.slots <= cap:
                    return i, 0.0
            return first, 0.0  # everyone is over the bound: the key's own first site
        # ideal: minimise the bidders' own cost over every site, exactly
        pol = POLICIES[ts.cls]
        e = world.energy
        e.advance(world.clock())
        missing = np.zeros(n)
        for a in ts.artifacts:
            h = world.holders.get(a.cid)
            missing += a.size_bytes * (~h if h is not None else 1)
        busy = missing / LINK_BPS + ts.run_s
        p = ts.slots * SLOT_KW
        draw = e.it_load_kw * e.pue
        solar_spare = np.maximum(0.0, e.solar_kw - draw)
        deficit = np.maximum(0.0, draw - e.solar_kw)
        usable = np.maximum(0.0, e.kwh / np.where(e.capacity_kwh > 0, e.capacity_kwh, 1) - model.battery_reserve_fraction) * e.capacity_kwh
        run_h = np.maximum(busy, 1.0) / 3600.0
        bspare = np.maximum(0.0, np.minimum(e.battery_power_kw, usable / run_h) - deficit)
        solar = np.minimum(p, solar_spare)
        batt = np.minimum(p - solar, bspare)
        grid = p - solar - batt
        kwh = p * busy / 3600.0
        energy = pol.energy_weight_s_per_kwh * kwh * (batt * model.battery_price + grid * model.grid_price) / p
        if pol.may_defer:
            if pol.energy_weight_s_per_kwh:
                win = world.windows_all(world.clock())
                ok = (win >= 0) & ((ts.deadline_s <= 0) | (win + busy <= ts.deadline_s))
                energy = np.where(ok, np.minimum(energy, win), energy)
        lb = busy + energy
        if ts.cls == "online" and ts.submitter_region:
            lb = lb + np.where(np.array(w.regions) != ts.submitter_region, model.cross_region_s, 0.0)
        lb = np.where(m, lb, np.inf)
        order = np.argsort(lb, kind="stable")
        best, best_i, best_defer = math.inf, -1, 0.0
        for i in order:
            i = int(i)
            if lb[i] >= best or not math.isfinite(lb[i]):
                break
            f = sites[i].facts()
            wait = queues[i].wait_s(now, ts)
            est = estimate(ts, f, wait, model)
            if est.ok and est.cost_s < best:
                best, best_i, best_defer = est.cost_s, i, est.defer_s
        return best_i, best_defer

    def place(tid: str, now: float) -> None:
        spec = specs[res.tasks[tid].job]
        ts = classes.task_spec(spec, tid)
        t = time.thread_time()
        i, defer = choose(ts, now)
        res.decision_s.append(time.thread_time() - t)
        if i < 0:
            push(now + 30.0, "retry", tid)
            return
        q = queues[i]
        q.add(tid, ts, now + defer)
        if defer > 0:
            push(now + defer, "pump", i)
        pump(i, now)

    def pump(i: int, now: float) -> None:
        q = queues[i]
        s = sites[i]
        for tid, ts in q.pop_startable(now):
            arts = [(a.cid, a.size_bytes) for a in ts.artifacts]
            fetched, cold = s.use(arts)
            busy = fetched / s.link_bps + cold / s.load_bps + ts.run_s
            q.running[tid] = (now + busy, ts.slots)
            s.busy[(tid, 0)] = ts.slots
            res.started(tid, now, busy - ts.run_s, s.last_missing, ts.key, i)
            push(now + busy, "finish", (i, tid))

    for a in w.traces[load]:
        push(a.t, "arrive", a)
    for c in w.crashes:
        push(c.t, "crash", c)
    end = measure_to + drain_s
    push(60.0, "energy", None)
    occupancy = np.zeros(n)
    t_wall = time.perf_counter()
    while heap:
        t, _, kind, data = heapq.heappop(heap)
        if t > end:
            break
        now_box[0] = t
        if kind == "arrive":
            spec = data.spec
            specs[spec.job_id] = spec
            res.register(spec, t, data.measured)
            res.accepted += 1
            rec = None
            for ts in classes.initial_tasks(spec):
                cls_of_task[ts.task_id] = spec.cls
            from arcnet.placement.messages import CustodyRecord

            rec = CustodyRecord(spec, w.peer_ids[0], [], classes.initial_tasks(spec), "")
            for tid in classes.ready_tasks(rec):
                place(tid, t)
        elif kind == "finish":
            i, tid = data
            q = queues[i]
            if tid not in q.running:
                continue  # the site crashed meanwhile
            _, sl = q.running.pop(tid)
            q.used -= sl
            sites[i].busy.pop((tid, 0), None)
            res.finish(tid, t)
            for d in res.dependants.get(tid, ()):
                if all(x in res.finished for x in res.deps[d]):
                    place(d, t)
            pump(i, t)
        elif kind == "pump":
            pump(data, t)
        elif kind == "retry":
            place(data, t)
        elif kind == "crash":
            i = data.site
            if not alive[i]:
                continue
            alive[i] = False
            q = queues[i]
            lost = list(q.running) + [tid for tid, _, _ in q.queue]
            q.running.clear()
            q.queue.clear()
            q.used = 0
            sites[i].crash()
            for tid in lost:  # fresh, zero-latency knowledge: re-placed at once
                res.replace_s.append(0.0)
                place(tid, t)
            push(t + data.down_s, "restart", i)
        elif kind == "restart":
            alive[data] = True
        elif kind == "energy":
            world.energy_step(world.clock(), cls_of_task.get)
            if measure_from <= t < measure_to:
                occupancy += np.fromiter((q.used for q in queues), dtype=np.float64, count=n) * 60.0 * alive
            push(t + 60.0, "energy", None)
    res.wall_s = time.perf_counter() - t_wall
    res.occupancy = occupancy / SLOTS
    res.kwh = dict(world.kwh)
    return res


# --------------------------------------------------------------------------
# driver


def combine(results: list[Result]) -> dict[str, float]:
    """Figures over all windows: task-weighted means, pooled percentiles."""
    waits, online, local, all_local = [], [], [], []
    kwh = {"flex": 0.0, "flex_surplus": 0.0}
    lmm = []
    for r in results:
        for t in r.tasks.values():
            if t.measured and t.wait_s is not None:
                waits.append(t.wait_s)
                if t.cls == "online":
                    online.append(t.wait_s)
                if t.local is not None:
                    local.append(t.local)
                    all_local.append(t.all_local)
        kwh["flex"] += r.kwh.get("flex", 0.0)
        kwh["flex_surplus"] += r.kwh.get("flex_surplus", 0.0)
        if r.occupancy is not None and r.occupancy.mean() > 0:
            lmm.append(float(r.occupancy.max() / r.occupancy.mean()))
    out = {
        "tasks": len(waits),
        "wait_mean_s": statistics.fmean(waits) if waits else float("nan"),
        "wait_p50_s": _pct(waits, 50),
        "wait_p99_s": _pct(waits, 99),
        "online_wait_mean_s": statistics.fmean(online) if online else float("nan"),
        "cache_local_fraction": sum(local) / len(local) if local else float("nan"),
        "cache_local_all_fraction": sum(all_local) / len(all_local) if all_local else float("nan"),
        "surplus_energy_fraction": kwh["flex_surplus"] / kwh["flex"] if kwh["flex"] else float("nan"),
        "load_max_over_mean": max(lmm) if lmm else float("nan"),
        "lost_jobs": sum(r.lost for r in results),
        "replace_p99_s": _pct([x for r in results for x in r.replace_s], 99),
        "replacements": sum(len(r.replace_s) for r in results),
        "decision_p99_ms": 1000.0 * _pct([x for r in results for x in r.decision_s], 99),
        "decision_p50_ms": 1000.0 * _pct([x for r in results for x in r.decision_s], 50),
        "decision_wall_p99_ms": 1000.0 * _pct([x for r in results for x in r.decision_wall_s], 99),
        "in_progress_jobs": sum(r.in_progress for r in results),
        "wall_s": sum(r.wall_s for r in results),
    }
    by_cls: dict[str, list] = {}
    for r in results:
        for t in r.tasks.values():
            if t.measured and t.wait_s is not None:
                by_cls.setdefault(t.cls, []).append(t)
    out["by_class"] = {
        c: {"tasks": len(ts), "wait_mean_s": statistics.fmean(t.wait_s for t in ts),
            "fetch_mean_s": statistics.fmean(t.fetch_s for t in ts),
            "local": sum(1 for t in ts if t.local) / len(ts)}
        for c, ts in sorted(by_cls.items())
    }
    counters: dict[str, float] = {}
    for r in results:
        for k, v in r.counters.items():
            counters[k] = counters.get(k, 0) + v
    if counters:
        out["counters"] = counters
    bidding = sum(r.messages.get(k, 0) for r in results for k in ("call", "bid", "award", "reply"))
    auctions = sum(r.auctions_ok for r in results)
    if auctions:
        out["messages_per_placement"] = bidding / auctions
        total = sum(v for r in results for k, v in r.messages.items() if k != "placements")
        out["messages_per_placement_all"] = total / auctions
    return out


def _run_cell(job: tuple) -> list[tuple[str, Result]]:
    """Every scheduler on one (window, load): its own process when --procs > 1."""
    args, catalog, starts, wi, load = job
    t = time.perf_counter()
    w = build_window(args.seed, wi, starts[wi], args.sites, [load], args.warmup_s, args.measure_s, args.drain_s, catalog)
    print(f"window {wi} ({starts[wi].isoformat()}) load {load}: built in {time.perf_counter() - t:.1f}s, "
          f"{len(w.traces[load])} jobs, {len(w.crashes)} crashes", file=sys.stderr, flush=True)
    mf, mt = args.warmup_s, args.warmup_s + args.measure_s
    off_loads = {float(x) for x in args.steering_off_loads.split(",") if x.strip()}
    names = ["mesh"] + (["mesh-no-steering"] if not args.no_steering_run and load in off_loads else [])
    names += ["ideal", "random", "p2c", "ring"]
    out = []
    for name in names:
        if name.startswith("mesh"):
            r = run_mesh(w, load, args.seed, steering=(name == "mesh"), measure_from=mf, measure_to=mt,
                         drain_s=args.drain_s, progress=args.progress)
        else:
            r = run_central(w, load, args.seed, name, measure_from=mf, measure_to=mt, drain_s=args.drain_s)
        f = r.figures()
        print(f"  window {wi} load {load} {name:17s} wall {r.wall_s:6.1f}s tasks {f['tasks_measured']:6d} "
              f"wait {f['wait_mean_s']:8.2f}s surplus {f['surplus_energy_fraction']:.3f} "
              f"local {f['cache_local_fraction']:.3f} max/mean {f['load_max_over_mean']:.2f} lost {r.lost}",
              file=sys.stderr, flush=True)
        out.append((name, r))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--loads", default="0.5,0.8")
    ap.add_argument("--windows", type=int, default=4, help="times of day sampled (evenly over 24 h)")
    ap.add_argument("--warmup-s", type=float, default=1800.0)
    ap.add_argument("--measure-s", type=float, default=1800.0)
    ap.add_argument("--drain-s", type=float, default=7200.0, help="longest drain after the measured window")
    ap.add_argument("--date", default="2025-04-15", help="the day simulated (UTC date)")
    ap.add_argument("--only-windows", default="", help="comma-separated window indexes to run (default: all)")
    ap.add_argument("--no-steering-run", action="store_true", help="skip the energy-steering-off mesh run")
    ap.add_argument("--steering-off-loads", default="0.8", help="loads at which the steering-off mesh also runs")
    ap.add_argument("--quick", action="store_true", help="200 sites, 1 window, short: a smoke run")
    ap.add_argument("--json", action="store_true", help="print one JSON object of named figures instead of the table")
    ap.add_argument("--out", default="", help="also write the JSON object to this file")
    ap.add_argument("--procs", type=int, default=1, help="worker processes (one (window, load) each)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.sites, args.windows = 200, 1
        args.warmup_s, args.measure_s = 900.0, 900.0
    loads = [float(x) for x in args.loads.split(",")]
    cmd = " ".join(["python -m arcnet.bench.placement"] + (argv if argv is not None else sys.argv[1:]))
    print(f"seed {args.seed}; reproduce with: {cmd}", file=sys.stderr)
    from arcnet.sims.geo import build_catalog

    catalog = build_catalog(args.seed, count=args.sites)
    day = datetime.fromisoformat(args.date).replace(tzinfo=timezone.utc)
    # windows start at local (Central) hours 00, 06, 12, 18 for 4 windows; CDT is UTC-5
    starts = [day + timedelta(hours=5 + 24.0 * k / args.windows) for k in range(args.windows)]
    per: dict[str, dict[float, list[Result]]] = {}
    t_all = time.perf_counter()
    only = {int(x) for x in args.only_windows.split(",") if x.strip()}
    jobs = [(wi, load) for wi in range(len(starts)) if not only or wi in only for load in loads]
    if args.procs > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(args.procs) as pool:
            done = pool.map(_run_cell, [(args, catalog, starts, wi, load) for wi, load in jobs], chunksize=1)
    else:
        done = [_run_cell((args, catalog, starts, wi, load)) for wi, load in jobs]
    for (wi, load), results in zip(jobs, done):  # in window order, whatever finished first
        for name, r in results:
            per.setdefault(name, {}).setdefault(load, []).append(r)
    figs: dict[str, Any] = {"seed": args.seed, "sites": args.sites, "windows": args.windows, "loads": loads,
                            "command": cmd, "energy_model": "arcnet.sims.energy (pvlib clear sky, seeded clouds)",
                            "wall_s": round(time.perf_counter() - t_all, 1)}
    table = []
    for load in loads:
        c = {name: combine(per[name][load]) for name in per if load in per[name]}
        mesh, ideal = c["mesh"], c["ideal"]
        key = f"load_{load}"
        f = {
            "wait_mean_ratio_vs_ideal": mesh["wait_mean_s"] / ideal["wait_mean_s"] if ideal["wait_mean_s"] > 0 else float("inf"),
            "wait_mean_s": mesh["wait_mean_s"],
            "ideal_wait_mean_s": ideal["wait_mean_s"],
            "load_max_over_mean": mesh["load_max_over_mean"],
            "cache_local_fraction": mesh["cache_local_fraction"],
            "cache_local_all_fraction": mesh["cache_local_all_fraction"],
            "ideal_cache_local_fraction": ideal["cache_local_fraction"],
            "surplus_energy_fraction": mesh["surplus_energy_fraction"],
            "random_surplus_energy_fraction": c["random"]["surplus_energy_fraction"],
            "ideal_surplus_energy_fraction": ideal["surplus_energy_fraction"],
            "lost_jobs": mesh["lost_jobs"],
            "replace_p99_s": mesh["replace_p99_s"],
            "replacements": mesh["replacements"],
            "decision_p99_ms": mesh["decision_p99_ms"],
            "decision_wall_p99_ms": mesh["decision_wall_p99_ms"],
            "in_progress_jobs": mesh["in_progress_jobs"],
            "messages_per_placement": mesh.get("messages_per_placement", float("nan")),
            "messages_per_placement_all": mesh.get("messages_per_placement_all", float("nan")),
        }
        if "mesh-no-steering" in c:
            base = c["mesh-no-steering"]["online_wait_mean_s"]
            f["latency_class_wait_increase_pct"] = 100.0 * (mesh["online_wait_mean_s"] - base) / base if base > 0 else float("nan")
            f["no_steering_surplus_energy_fraction"] = c["mesh-no-steering"]["surplus_energy_fraction"]
        figs[key] = {k: _round(v) for k, v in f.items()}
        figs[key]["schedulers"] = {name: {k: _round_all(v) for k, v in c[name].items()} for name in c}
        table.append((load, c))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(figs, fh, indent=1)
    if args.json:
        print(json.dumps(figs, indent=1, sort_keys=False))
    else:
        _print_table(figs, table, loads)
    return 0


def _round_all(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _round_all(x) for k, x in v.items()}
    return _round(v)


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4) if math.isfinite(v) else str(v)
    return v


def _print_table(figs: dict[str, Any], table, loads) -> None:
    print(f"placement benchmark: {figs['sites']} sites, {figs['windows']} time-of-day windows, seed {figs['seed']}")
    targets = {
        "wait_mean_ratio_vs_ideal": "<= 1.10",
        "load_max_over_mean": "<= 1.25",
        "cache_local_fraction": ">= 0.95",
        "surplus_energy_fraction": ">= 0.75",
        "random_surplus_energy_fraction": "~0.50",
        "latency_class_wait_increase_pct": "<= 5",
        "lost_jobs": "0",
        "replace_p99_s": "<= 30",
        "decision_p99_ms": "<= 1",
        "messages_per_placement": "<= 10 (2k+2)",
    }
    print(f"{'figure':34s}" + "".join(f"{'load ' + str(l):>14s}" for l in loads) + "   target (load 0.8)")
    for k, tgt in targets.items():
        row = "".join(f"{str(figs[f'load_{l}'].get(k, '-')):>14s}" for l in loads)
        print(f"{k:34s}{row}   {tgt}")
    print()
    for load, c in table:
        print(f"load {load}: scheduler      wait_mean_s  wait_p99_s  online_wait_s  local  surplus  max/mean")
        for name, f in c.items():
            print(f"  {name:22s}{f['wait_mean_s']:10.2f}{f['wait_p99_s']:12.2f}{f['online_wait_mean_s']:14.2f}"
                  f"{f['cache_local_fraction']:7.3f}{f['surplus_energy_fraction']:9.3f}{f['load_max_over_mean']:9.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
