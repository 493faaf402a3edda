"""Faults: a timeline of things going wrong, listed in a scenario or drawn from the seed.

Every fault is a plain record (:class:`Fault`): when, what kind, which peers,
for how long, and its parameters. A run resolves the scenario's faults --
selectors such as "3 random sites of region West" become concrete peers,
random faults are drawn -- before anything runs, prints the list, and then
the :class:`FaultInjector` schedules each one (and its healing) on the
simulator. So the list printed at the start is exactly what happens, and the
same seed prints the same list.

Kinds (``FAULT_KINDS``) and what they do:

=================  ===========================================================
``crash``          stop the peers; ``disk`` = ``keep`` (default),
                   ``lose_unsynced`` (writes of the last second are lost) or
                   ``wipe``; with ``for``, restart them after it
``restart``        restart crashed peers
``pause``          the peers handle nothing for ``for`` (a stopped process)
``slow``           every message/timer reaches them ``delay`` late for ``for``
``clock``          step their clocks by ``step`` and make them drift
                   ``drift_ppm`` (with ``for``: drift stops after it)
``partition``      cut side ``a`` from side ``b`` (default: everyone else);
                   ``symmetric = false`` cuts only a->b
``isolate_region`` cut a region from everyone else, both ways
``clog``           hold every frame from/to the peers until ``for`` ends
                   (with ``to``: only frames from them to those peers);
                   with ``bandwidth_factor`` their links are that much slower
                   instead
``power_dip``      scale the peers' solar by ``solar_factor`` and their grid
                   connection by ``grid_factor`` for ``for``
=================  ===========================================================

Prior art: FoundationDB's simulation (clogging, swizzle-clogs, machine
kills), Jepsen's nemeses (partitions incl. asymmetric ones, clock skew),
TigerBeetle's VOPR (storage faults, a seed that reproduces everything).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .engine import Simulator, derive_seed

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultInjector",
    "draw_random_faults",
    "format_duration",
    "format_fault",
]

FAULT_KINDS = (
    "crash",
    "restart",
    "pause",
    "slow",
    "clock",
    "partition",
    "isolate_region",
    "clog",
    "power_dip",
)

# kinds that change who can talk to whom (the invariant checks wait for them to heal)
CONNECTIVITY_KINDS = frozenset({"crash", "pause", "slow", "partition", "isolate_region", "clog"})
DISK_MODES = ("keep", "lose_unsynced", "wipe")


@dataclass(frozen=True)
class Fault:
    """One fault, resolved: concrete peers (ids) and sites (names), times in virtual seconds."""

    at_s: float
    kind: str
    peers: tuple[str, ...] = ()  # peer ids it hits (side a for a partition)
    sites: tuple[str, ...] = ()  # the same peers' site names (for printing and reports)
    for_s: float | None = None  # how long until it heals (None: never / one-shot)
    params: dict[str, Any] = field(default_factory=dict)
    peers_b: tuple[str, ...] = ()  # side b of a partition
    sites_b: tuple[str, ...] = ()
    region: str | None = None
    source: str = "scenario"  # "scenario" or "random"

    @property
    def end_s(self) -> float | None:
        return None if self.for_s is None else self.at_s + self.for_s

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "at_s": self.at_s,
            "kind": self.kind,
            "for_s": self.for_s,
            "peers": len(self.peers),
            "sites": list(self.sites[:20]),
            "source": self.source,
        }
        if self.peers_b:
            d["peers_b"] = len(self.peers_b)
        if self.region:
            d["region"] = self.region
        if self.params:
            d["params"] = dict(self.params)
        d["text"] = format_fault(self)
        return d


def format_duration(s: float) -> str:
    """Seconds as ``HH:MM:SS`` (with milliseconds when not whole)."""
    neg = s < 0
    s = abs(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    text = f"{int(h):02d}:{int(m):02d}:{sec:06.3f}" if sec != int(sec) else f"{int(h):02d}:{int(m):02d}:{int(sec):02d}"
    return ("-" if neg else "") + text


def _who(names: Sequence[str], limit: int = 3) -> str:
    if not names:
        return "(none)"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} +{len(names) - limit} more"


def format_fault(f: Fault) -> str:
    """One line: ``06:00:00 partition West (67) | everyone else (133) for 45m symmetric``."""
    when = format_duration(f.at_s)
    dur = f" for {format_duration(f.for_s)}" if f.for_s is not None else ""
    target = f.region if (f.region and f.kind in ("isolate_region",)) else _who(f.sites)
    p = f.params
    extra = ""
    if f.kind == "crash":
        extra = f" disk={p.get('disk', 'keep')}" + (" then restart" if f.for_s is not None else "")
    elif f.kind == "slow":
        extra = f" delay={p['delay_s']}s"
    elif f.kind == "clock":
        extra = f" step={p.get('step_s', 0.0)}s drift={p.get('drift_ppm', 0.0)}ppm"
    elif f.kind == "partition":
        target = f"{f.params.get('a_label') or _who(f.sites)} ({len(f.peers)}) | {f.params.get('b_label') or _who(f.sites_b)} ({len(f.peers_b)})"
        extra = " symmetric" if p.get("symmetric", True) else " asymmetric a->b"
    elif f.kind == "clog" and p.get("bandwidth_factor"):
        extra = f" bandwidth/{p['bandwidth_factor']}"
    elif f.kind == "clog" and f.peers_b:
        extra = f" links to {_who(f.sites_b)} ({len(f.peers_b)})"
    elif f.kind == "power_dip":
        extra = f" solar x{p.get('solar_factor', 0.2)} grid x{p.get('grid_factor', 1.0)}"
    elif f.kind == "isolate_region":
        target = f"{f.region} ({len(f.peers)})"
    src = " [random]" if f.source == "random" else ""
    return f"{when} {f.kind:<14} {target}{dur}{extra}{src}"


def draw_random_faults(
    seed: int,
    *,
    count: int,
    kinds: Sequence[str],
    start_s: float,
    end_s: float,
    peer_ids: Sequence[str],
    site_names: Sequence[str],
    regions: dict[str, list[int]],
    for_min_s: float = 10.0,
    for_max_s: float = 600.0,
    peers_max: int = 3,
) -> list[Fault]:
    """``count`` faults of ``kinds`` at uniform times in [start, end), each on 1..peers_max peers.

    Region-wide kinds (``isolate_region``, ``power_dip``, ``partition``) pick
    a region; the rest pick random peers. Everything comes from one
    ``random.Random`` seeded from ``seed``.
    """
    for k in kinds:
        if k not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {k!r}")
    if end_s <= start_s:
        raise ValueError("random faults need end > start")
    rng = random.Random(derive_seed(seed, "random-faults"))
    region_names = list(regions)
    out = []
    n = len(peer_ids)
    for _ in range(count):
        kind = kinds[rng.randrange(len(kinds))]
        at = round(start_s + (end_s - start_s) * rng.random(), 3)
        dur = round(for_min_s + (for_max_s - for_min_s) * rng.random(), 3)
        params: dict[str, Any] = {}
        if kind in ("isolate_region", "power_dip", "partition"):
            region = region_names[rng.randrange(len(region_names))]
            idx = regions[region]
            if kind == "partition":
                params["symmetric"] = rng.random() < 0.5
                params["a_label"] = region
                params["b_label"] = "everyone else"
                inside = set(idx)
                others = [i for i in range(n) if i not in inside]
                out.append(
                    Fault(at, kind, tuple(peer_ids[i] for i in idx), tuple(site_names[i] for i in idx), dur, params,
                          tuple(peer_ids[i] for i in others), tuple(site_names[i] for i in others), region, "random")
                )
                continue
            if kind == "power_dip":
                params = {"solar_factor": round(0.05 + 0.3 * rng.random(), 3), "grid_factor": round(rng.random(), 3)}
            out.append(Fault(at, kind, tuple(peer_ids[i] for i in idx), tuple(site_names[i] for i in idx), dur, params,
                             region=region, source="random"))
            continue
        k = 1 + rng.randrange(max(1, min(peers_max, n)))
        idx = sorted(rng.sample(range(n), k))
        if kind == "crash":
            params["disk"] = DISK_MODES[rng.randrange(len(DISK_MODES))]
        elif kind == "slow":
            params["delay_s"] = round(0.05 + 2.0 * rng.random(), 3)
        elif kind == "clock":
            params["step_s"] = round(rng.uniform(-2.0, 5.0), 3)
            params["drift_ppm"] = round(rng.uniform(-500.0, 500.0), 1)
        elif kind == "clog":
            if rng.random() < 0.5:
                params["bandwidth_factor"] = round(10.0 + 90.0 * rng.random(), 1)
        out.append(Fault(at, kind, tuple(peer_ids[i] for i in idx), tuple(site_names[i] for i in idx),
                         None if kind == "restart" else dur, params, source="random"))
    out.sort(key=lambda f: (f.at_s, FAULT_KINDS.index(f.kind)))
    return out


class FaultInjector:
    """Schedules resolved faults on a simulator; tracks what is active for the invariant checks.

    ``network`` is a :class:`~arcnet.sims.wan.WanNetwork` (partitions, clogs)
    and ``energy`` an :class:`~arcnet.sims.energy.EnergyModel` (power dips);
    either may be None if no fault needs it.
    """

    def __init__(self, sim: Simulator, faults: Sequence[Fault], *, network: Any = None, energy: Any = None,
                 on_fault: Callable[[float, str, Fault], None] | None = None):
        self.sim = sim
        self.network = network
        self.energy = energy
        self.faults = sorted(faults, key=lambda f: (f.at_s, FAULT_KINDS.index(f.kind)))
        self.on_fault = on_fault
        self.active: dict[int, Fault] = {}  # fault number -> fault, while it is in force
        self.last_change_s = 0.0  # last time a connectivity fault started or healed
        self.log: list[tuple[float, str, str]] = []  # (time, "start"|"heal", text)
        self._cuts: dict[int, list[int]] = {}
        self._conn_active = 0  # connectivity faults in force (checked after every event: kept as a count)

    def schedule(self) -> None:
        for n, f in enumerate(self.faults):
            self.sim.call_at(f.at_s, lambda n=n, f=f: self._start(n, f), f"fault {f.kind}")
            if f.for_s is not None:
                self.sim.call_at(f.at_s + f.for_s, lambda n=n, f=f: self._heal(n, f), f"heal {f.kind}")

    def heal_times(self) -> list[float]:
        """Times at which a connectivity fault heals (liveness is checked some time after each)."""
        return sorted({f.end_s for f in self.faults if f.end_s is not None and f.kind in CONNECTIVITY_KINDS})

    def connectivity_faults_active(self) -> int:
        return self._conn_active

    def quiet_for_s(self, now: float) -> float:
        """Seconds since the last connectivity fault started or healed; 0 while one is active (O(1))."""
        if self._conn_active:
            return 0.0
        return now - self.last_change_s

    # -- applying ----------------------------------------------------------

    def _note(self, what: str, f: Fault) -> None:
        now = self.sim.now
        self.log.append((now, what, format_fault(f)))
        self.sim.trace_note(f"fault-{what} {f.kind} n={len(f.peers)}")
        if f.kind in CONNECTIVITY_KINDS:
            self.last_change_s = now
        if self.on_fault is not None:
            self.on_fault(now, what, f)

    def _start(self, n: int, f: Fault) -> None:
        sim, now = self.sim, self.sim.now
        end = f.end_s
        k = f.kind
        p = f.params
        if k == "crash":
            disk = p.get("disk", "keep")
            for pid in f.peers:
                sim.crash(pid, lose_disk=disk == "wipe", lose_unsynced=disk == "lose_unsynced")
        elif k == "restart":
            for pid in f.peers:
                sim.restart(pid)
        elif k == "pause":
            for pid in f.peers:
                sim.pause(pid, end if end is not None else now)
        elif k == "slow":
            for pid in f.peers:
                sim.slow(pid, float(p["delay_s"]), end if end is not None else float("inf"))
        elif k == "clock":
            for pid in f.peers:
                sim.set_clock(pid, step_s=float(p.get("step_s", 0.0)), drift_ppm=float(p.get("drift_ppm", 0.0)))
        elif k == "partition":
            self._need(self.network, "partition")
            self._cuts[n] = self.network.partition(
                list(f.peers), list(f.peers_b), symmetric=bool(p.get("symmetric", True)), label=f"fault {n}"
            )
        elif k == "isolate_region":
            self._need(self.network, "isolate_region")
            self._cuts[n] = self.network.isolate(list(f.peers), label=f"fault {n}")
        elif k == "clog":
            self._need(self.network, "clog")
            until = end if end is not None else now
            if p.get("bandwidth_factor"):
                self.network.throttle(list(f.peers), float(p["bandwidth_factor"]))
            elif f.peers_b:  # only the directed links from the peers to side b
                for src in f.peers:
                    for dst in f.peers_b:
                        if src != dst:
                            self.network.clog_link(src, dst, until)
            else:
                self.network.clog(list(f.peers), until)
        elif k == "power_dip":
            if self.energy is None:
                raise RuntimeError("a power_dip fault needs the energy model")
            if end is None:
                raise RuntimeError("a power_dip fault needs a duration")
            self.energy.power_dip(
                [self.energy.index[s] for s in f.sites],
                now,
                end,
                solar_factor=float(p.get("solar_factor", 0.2)),
                grid_factor=float(p.get("grid_factor", 1.0)),
                label=f"fault {n}",
            )
        else:  # pragma: no cover - kinds are checked when parsed
            raise ValueError(f"unknown fault kind {k!r}")
        if f.for_s is not None:
            self.active[n] = f
            if k in CONNECTIVITY_KINDS:
                self._conn_active += 1
        self._note("start", f)

    def _heal(self, n: int, f: Fault) -> None:
        sim = self.sim
        k = f.kind
        if k == "crash":
            for pid in f.peers:
                sim.restart(pid)
        elif k == "clock":
            for pid in f.peers:  # the offset stays; the drift stops (no slewing back modelled)
                sim.set_clock(pid, step_s=0.0, drift_ppm=0.0)
        elif k in ("partition", "isolate_region"):
            for cut in self._cuts.pop(n, []):
                self.network.heal(cut)
        elif k == "clog" and f.params.get("bandwidth_factor"):
            self.network.throttle(list(f.peers), 1.0)
        elif k == "clog" and f.peers_b:
            self.network.unclog_expired(sim.now)  # link clogs end by themselves; forget them
        # pause, slow, clog (hold) and power_dip end by themselves at end_s
        if self.active.pop(n, None) is not None and k in CONNECTIVITY_KINDS:
            self._conn_active -= 1
        self._note("heal", f)

    @staticmethod
    def _need(network: Any, kind: str) -> None:
        if network is None or not hasattr(network, "partition"):
            raise RuntimeError(f"a {kind} fault needs the WAN network (arcnet.sims.wan.WanNetwork)")
