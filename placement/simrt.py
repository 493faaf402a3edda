"""A simulated site and runtime for driving placement in the simulator.

:class:`SimSite` is one site's physical state as the simulator models it:
slots, an LRU artifact cache with a byte budget, a WAN link rate, and an
energy plant (a solar output function of time, a battery with a reserve,
idle draw plus 1 slot = ``slot_kw`` when busy). Its :meth:`SimSite.facts`
are the fresh own facts the executor prices bids with.

:class:`SimRuntime` is a core that stands in for the ONNX runtime: on
``task.run`` it fetches what the site lacks (bytes / link rate), loads what
is cold, runs for the task's ``run_s``, and emits ``task.finished`` with a
content-addressed output id (the same for every run of a task, so duplicate
runs are harmless, as with the real runtime).

Both are sans-IO and deterministic; the benchmark's baselines use
:class:`SimSite` directly so every scheduler sees the same physics.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Hashable

from arcnet.mesh.core import Effect, Emit, Timers
from arcnet.mesh.wire import Message

from .view import PeerFacts

__all__ = ["SimRuntime", "SimSite", "output_id"]

WARM_MAX = 8  # artifacts kept loaded in memory (per site)


def output_id(task_id: str) -> str:
    """The content id a task's output gets: a pure function of the task."""
    return "b2:" + hashlib.blake2b(task_id.encode(), digest_size=16).hexdigest()


class SimSite:
    def __init__(
        self,
        peer_id: str,
        *,
        region: str = "default",
        slots: int = 8,
        slot_kw: float = 100.0,
        idle_kw: float = 100.0,
        link_bps: float = 1.25e9,
        load_bps: float = 4e9,
        cache_bytes: int = 2 * 10**12,
        solar: Callable[[float], float] | None = None,
        battery_kwh: float = 0.0,
        battery_kw: float = 0.0,
        battery_reserve_fraction: float = 0.2,
        capabilities: tuple[str, ...] = ("gpu",),
        roles: tuple[str, ...] = ("site",),
        health: float = 1.0,
        window: Callable[[float], float] | None = None,
    ):
        self.peer_id = peer_id
        self.region = region
        self.slots = slots
        self.slot_kw = slot_kw
        self.idle_kw = idle_kw
        self.link_bps = link_bps
        self.load_bps = load_bps
        self.cache_bytes = cache_bytes
        self.solar = solar or (lambda t: 0.0)
        self.window = window or (lambda t: -1.0)
        self.battery_kwh = battery_kwh
        self.battery_kw = battery_kw
        self.reserve = battery_reserve_fraction
        self.soc = 0.5 if battery_kwh > 0 else 0.0
        self.capabilities = capabilities
        self.roles = roles
        self.health = health
        self.draining = False
        self.cache: dict[str, int] = {}  # cid -> bytes, in LRU order (oldest first)
        self.cache_used = 0
        self.warm: dict[str, None] = {}
        self.busy: dict[tuple[str, int], int] = {}  # running (task, epoch) -> slots
        self.now = 0.0
        self.solar_kw = 0.0

    # -- cache ---------------------------------------------------------------

    def has(self, cid: str) -> bool:
        return cid in self.cache

    def missing_bytes(self, artifacts: list[tuple[str, int]]) -> int:
        return sum(size for cid, size in artifacts if cid not in self.cache)

    def use(self, artifacts: list[tuple[str, int]]) -> tuple[int, int]:
        """Bring ``artifacts`` in (LRU): returns (bytes fetched, bytes loaded cold)."""
        fetched = cold = 0
        for cid, size in artifacts:
            if cid in self.cache:
                self.cache[cid] = self.cache.pop(cid)  # most recently used
                if cid not in self.warm:
                    cold += size
            else:
                fetched += size
                cold += size
                self.cache[cid] = size
                self.cache_used += size
            self.warm.pop(cid, None)
            self.warm[cid] = None
        while len(self.warm) > WARM_MAX:
            del self.warm[next(iter(self.warm))]
        while self.cache_used > self.cache_bytes and len(self.cache) > 1:
            old = next(iter(self.cache))
            self.cache_used -= self.cache.pop(old)
            self.warm.pop(old, None)
        return fetched, cold

    def busy_s(self, artifacts: list[tuple[str, int]], run_s: float) -> float:
        """Fetch + load + run for a task started now (does not change the cache)."""
        fetch = sum(s for c, s in artifacts if c not in self.cache)
        cold = sum(s for c, s in artifacts if c not in self.warm)
        return fetch / self.link_bps + cold / self.load_bps + run_s

    # -- energy --------------------------------------------------------------

    @property
    def slots_busy(self) -> int:
        return sum(self.busy.values())

    @property
    def draw_kw(self) -> float:
        return self.idle_kw + self.slots_busy * self.slot_kw

    def tick(self, now: float, dt_s: float) -> tuple[float, float]:
        """Advance the battery over the last ``dt_s`` seconds at the current draw.

        Returns (surplus kWh, grid kWh) consumed over the interval: surplus is
        solar used directly plus battery discharge.
        """
        self.now = now
        solar = self.solar_kw
        draw = self.draw_kw
        h = dt_s / 3600.0
        direct = min(solar, draw)
        deficit = draw - direct
        battery = 0.0
        if self.battery_kwh > 0:
            if solar > draw:  # charge with the excess
                room = (1.0 - self.soc) * self.battery_kwh
                self.soc += min(room, min(self.battery_kw, solar - draw) * h) / self.battery_kwh
            elif deficit > 0:
                avail = max(0.0, self.soc - self.reserve) * self.battery_kwh
                battery = min(avail, min(self.battery_kw, deficit) * h) / h if h > 0 else 0.0
                self.soc -= battery * h / self.battery_kwh
        grid = max(0.0, deficit - battery)
        self.solar_kw = self.solar(now)  # output for the next interval
        return (direct + battery) * h, grid * h

    # -- facts ---------------------------------------------------------------

    def facts(self, slots_used: int | None = None) -> PeerFacts:
        return PeerFacts(
            self.peer_id,
            region=self.region,
            roles=self.roles,
            capabilities=self.capabilities,
            slots=self.slots,
            slots_used=self.slots_busy if slots_used is None else slots_used,
            health=self.health,
            draining=self.draining,
            solar_kw=self.solar_kw,
            draw_kw=self.draw_kw,
            battery_soc_fraction=self.soc,
            battery_kwh=self.battery_kwh,
            battery_kw=self.battery_kw,
            slot_kw=self.slot_kw,
            link_bps=self.link_bps,
            artifacts=self.cache.keys(),
            warm=self.warm.keys(),
            surplus_window_in_s=self.window(self.now),
        )

    def crash(self) -> None:
        """The site lost power: running work is gone (its disk cache survives)."""
        self.busy.clear()
        self.warm.clear()


class SimRuntime:
    """Runs ``task.run`` requests on a :class:`SimSite` in virtual time (a core, protocol "rt")."""

    PROTOCOL = "rt"

    def __init__(self, site: SimSite, *, fail: Callable[[str, int], bool] | None = None):
        self.site = site
        self.fail = fail or (lambda task, epoch: False)
        self.timers = Timers()
        self.jobs: dict[tuple[str, int], dict] = {}
        self.started = 0
        self.finished = 0
        self.bytes_fetched = 0

    def on_message(self, now: float, sender: str, msg: Message) -> list[Effect]:
        return []

    def on_event(self, now: float, ev: Emit) -> list[Effect]:
        if ev.kind == "task.run":
            d = ev.data
            key = (d["task"], d["epoch"])
            arts = [(c, s) for c, s in d["artifacts"]]
            fetched, cold = self.site.use(arts)
            self.bytes_fetched += fetched
            busy = fetched / self.site.link_bps + cold / self.site.load_bps + d["run_s"]
            self.site.busy[key] = d["slots"]
            self.jobs[key] = {"start": now, "busy_s": busy, "fetched": fetched, **d}
            self.started += 1
            return [self.timers.set(("done", key), now + busy)]
        if ev.kind == "task.cancel":
            key = (ev.data["task"], ev.data["epoch"])
            self.site.busy.pop(key, None)
            self.jobs.pop(key, None)
            c = self.timers.cancel(("done", key))
            return [c] if c else []
        return []

    def on_timer(self, now: float, timer: Hashable) -> list[Effect]:
        if not self.timers.fire(timer):
            return []
        key = timer[1]  # type: ignore[index]
        self.site.busy.pop(key, None)
        self.jobs.pop(key, None)
        self.finished += 1
        ok = not self.fail(key[0], key[1])
        return [Emit("task.finished", {"task": key[0], "epoch": key[1], "ok": ok,
                                       "output": output_id(key[0]) if ok else "", "reason": "" if ok else "sim failure"})]

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def statistics(self) -> dict[str, float]:
        return {"started": self.started, "finished": self.finished, "bytes_fetched": self.bytes_fetched,
                "running": len(self.jobs)}


class PlacementSim:
    """Wires placement cores, runtimes, sites and a shared view into a simulator.

    ``sim`` is an ``arcnet.sims.engine.Simulator`` (passed in, so this module
    does not depend on the simulator package). Membership is modelled, not
    simulated: a crashed peer is marked dead in the shared view and every
    alive peer gets ``member.dead`` after ``detect_s`` (what SWIM with
    Lifeguard suspicion gives at this mesh size); the published slots-in-use
    of every peer refresh every ``publish_s`` (gossip freshness).
    """

    def __init__(self, sim, view, index, *, publish_s: float = 2.0, energy_tick_s: float | None = 60.0,
                 facts_s: float = 30.0, config=None, on_event: Callable[[float, str, Emit], None] | None = None):
        from .core import PlacementConfig

        self.sim = sim
        self.view = view
        self.index = index
        self.publish_s = publish_s
        self.facts_s = facts_s  # energy and health facts refresh this often (slots in use: publish_s)
        self._facts_due = 0.0
        self.energy_tick_s = energy_tick_s
        self.config = config or PlacementConfig()
        self.sites: dict[str, SimSite] = {}
        self.cores: dict[str, object] = {}
        self.runtimes: dict[str, SimRuntime] = {}
        self.on_event = on_event
        self.energy_hooks: list[Callable[[float, str, SimSite, float, float], None]] = []
        self.dead_at: dict[str, float] = {}
        if on_event is not None:
            if hasattr(sim, "on_emit"):
                prev_emit = sim.on_emit

                def hook_emit(now, peer, e, _prev=prev_emit):
                    on_event(now, peer, e)
                    if _prev is not None:
                        _prev(now, peer, e)

                sim.on_emit = hook_emit
            else:
                prev = sim.on_effect

                def hook(now, peer, e, _prev=prev):
                    if type(e) is Emit:
                        on_event(now, peer, e)
                    if _prev is not None:
                        _prev(now, peer, e)

                sim.on_effect = hook

    def add_site(self, site: SimSite, *, fail: Callable[[str, int], bool] | None = None) -> None:
        from arcnet.mesh.node import Node

        from .core import PlacementCore

        pid = site.peer_id
        self.sites[pid] = site
        self.view.set(site.facts(0))

        def factory(p, site=site, pid=pid):
            core = PlacementCore(pid, self.view, p.rng, index=self.index, facts=site.facts,
                                 records=dict(p.disk), config=self.config)
            rt = SimRuntime(site, fail=fail)
            self.cores[pid] = core
            self.runtimes[pid] = rt
            return Node(pid, {"place": core, "rt": rt})

        self.sim.add_peer(pid, factory)

    def start(self) -> None:
        self.sim.call_at(self.sim.now + self.publish_s, self._publish, "publish")
        if self.energy_tick_s:  # None: the caller models energy itself
            self.sim.call_at(self.sim.now, self._energy, "energy")

    def _publish(self) -> None:
        full = self.sim.now >= self._facts_due
        if full:
            self._facts_due = self.sim.now + self.facts_s
        for pid in self.view.alive_peers():
            core = self.cores.get(pid)
            p = self.sim.peers[pid]
            if core is not None and p.alive:
                used = core.executor.slots_used()  # type: ignore[attr-defined]
                if full:
                    self.view.set(self.sites[pid].facts(used))
                else:
                    self.view.set_used(pid, used)
        self.sim.call_at(self.sim.now + self.publish_s, self._publish, "publish")

    def _energy(self) -> None:
        now = self.sim.now
        dt = self.energy_tick_s
        for pid in self.sim.order:
            site = self.sites.get(pid)
            if site is None:
                continue
            surplus_kwh, grid_kwh = site.tick(now, dt)
            for hook in self.energy_hooks:
                hook(now, pid, site, surplus_kwh, grid_kwh)
        self.sim.call_at(now + dt, self._energy, "energy")

    def inject(self, pid: str, ev: Emit) -> None:
        """Hand an outside event to a peer's node now (a control request, a membership event)."""
        self.sim.deliver_event(pid, ev)

    def submit(self, at: float, entry: str, spec) -> None:
        from .core import submit_event

        ev = submit_event(spec)
        self.sim.call_at(at, lambda: self.inject(entry, ev), f"submit {spec.job_id}")

    def crash(self, at: float, pid: str, *, detect_s: float = 10.0, restart_after_s: float | None = None) -> None:
        def down():
            if not self.sim.peers[pid].alive:
                return
            self.sim.crash(pid)
            self.sites[pid].crash()
            self.dead_at[pid] = self.sim.now
            self.sim.call_at(self.sim.now + detect_s, detected, f"detect {pid[-6:]}")
            if restart_after_s is not None:
                self.sim.call_at(self.sim.now + restart_after_s, up, f"restart {pid[-6:]}")

        def detected():
            if self.sim.peers[pid].alive:
                return  # it came back before anyone noticed
            self.view.kill(pid)
            ev = Emit("member.dead", {"peer": pid})
            for other in list(self.view.alive_peers()):
                self.inject(other, ev)

        def up():
            self.sim.restart(pid)
            self.view.revive(pid)
            self.view.set_used(pid, 0)

        self.sim.call_at(at, down, f"crash {pid[-6:]}")
