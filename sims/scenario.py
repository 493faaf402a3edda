"""Scenarios as data: a TOML file says what to simulate; :class:`Run` builds and runs it.

A scenario (see ``sims/scenarios/day-200-sites.toml``)::

    name = "day-200-sites"
    seed = 7
    start = "2025-06-21T07:00:00Z"     # virtual time 0 (ISO 8601 or a TOML datetime)
    duration = "24h"                   # durations: 90, "90s", "15m", "2h", "1d", "1h30m"

    [sites]      count, regions | region_size, region_method, region_names, hpc, edge, states, conus_only
    [network]    any WanConfig field (loss, duplicate, reorder, route_factor, ...)
    [energy]     any EnergyConfig field (cloud_cover_fraction, base_load_fraction, ...)
    [peer]       factory ("gossip", "toy" or "module:function"), start_spread, seeds_per_region
    [peer.options]   passed to the factory as they are
    [report]     sample_interval, trace, plots
    [invariants] checks, convergence, liveness_after, job_wait_max
    [[faults]]   at, kind, for, and the kind's parameters and selectors
    [faults_random]  count, kinds, window, for_min, for_max, peers_max
    [[workload]] class, rate_per_h, duration, power_kw, distribution, region, placement_class

Regions (``[sites]``): ``regions = 3`` (default) splits the sites by time
zone (West, Central, East); 1 to 12 use k-means clusters (``region_method =
"kmeans"``); ``region_method = "tiles"`` cuts longitude strips by latitude
into any number of near-equal regions up to 1,000 (and at most ``count``),
named ``T001``, ``T002``, ... west to east, and ``auto`` (the default method)
picks tiles above 12. ``region_size = 50`` instead of ``regions`` asks for
regions of about that many sites: ``regions = round(count / region_size)``
(at least 1) by tiles -- metro or grid areas, the regime the gossip design is
for (full state inside a region, summaries across). Give one of the two.

Fault selectors pick peers: ``peers = ["dc-0003-...", 17]`` (site names or
indices), ``region = "West"`` / ``regions = [...]``, ``site_kind = "hpc"``,
then ``count = 3`` or ``fraction = 0.1`` to draw that many of them from the
seed. A partition takes ``a`` and ``b`` (each a selector table, or a region
name); ``b`` defaults to everyone not in ``a``. A clog with ``to`` (a
selector or a region) holds only the links from its peers to those.

Every problem in a scenario file is reported as one line that names the file,
the key and what is expected (:class:`ScenarioError`), never a traceback.

The node factory is pluggable: ``factory(ctx: PeerContext) -> Node`` builds
one peer's node (again after every restart, with the peer's surviving disk).
``"gossip"`` builds the real stack (``arcnet.gossip.stack.build_gossip_node``)
with the site's energy sampler; ``"toy"`` the toy core of
``arcnet.sims.toy`` (for engine work; results are labelled "toy core").
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import math
import random
import re
import time
import tomllib
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from arcnet.mesh.identity import Identity
from arcnet.mesh.node import Node

from .energy import EnergyConfig, EnergyModel
from .engine import SimPeer, Simulator, derive_seed
from .faults import FAULT_KINDS, Fault, FaultInjector, draw_random_faults, format_fault
from .geo import REGION_METHODS, REGIONS_MAX_CLUSTERED, REGIONS_MAX_TILES, Site, SiteCatalog, SiteSpec, build_catalog
from .invariants import CHECKERS, CheckContext, Checker, InvariantSet, InvariantViolation, NoJobLost
from .wan import WanConfig, WanNetwork
from .workload import GreedyPlacer, JobClass, Workload

__all__ = [
    "FACTORIES",
    "FaultSpec",
    "PeerContext",
    "Run",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
    "resolve_factory",
]

DEFAULT_START = datetime(2025, 6, 21, 7, 0, tzinfo=timezone.utc)  # midnight US Pacific, summer solstice
DURATION_MAX_S = 30 * 86400.0
PEERS_MAX = 100_000

FACTORIES = {
    "toy": "arcnet.sims.toy:toy_factory",
    "gossip": "arcnet.sims.scenario:gossip_factory",
}


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message is one line naming the file and the key."""


# --------------------------------------------------------------------------
# parsing helpers

_DUR_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)")
_DUR_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, where: str = "duration") -> float:
    """Seconds from 90, 90.5, "90s", "15m", "2h", "1d", "1h30m", "250ms"."""
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: expected a duration like 90, \"90s\", \"15m\" or \"2h\", got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ScenarioError(f"{where}: a duration must be a finite number >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, total = 0, 0.0
        for m in _DUR_RE.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return total
    raise ScenarioError(f"{where}: expected a duration like 90, \"90s\", \"15m\" or \"2h\", got {value!r}")


def _signed_duration(value: Any, where: str) -> float:
    """A duration that may be negative: -2.5, "-500ms", "3s"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ScenarioError(f"{where}: expected a finite number of seconds, got {value!r}")
        return float(value)
    if isinstance(value, str) and value.strip().startswith("-"):
        return -parse_duration(value.strip()[1:], where)
    return parse_duration(value, where)


class _Table:
    """A TOML table being read: typed getters that fail with the key's full name."""

    def __init__(self, data: Any, where: str, allowed: Sequence[str]):
        if not isinstance(data, dict):
            raise ScenarioError(f"{where}: expected a table, got {type(data).__name__}")
        for key in data:
            if key not in allowed:
                near = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else f" (expected one of: {', '.join(allowed)})"
                raise ScenarioError(f"{self._name(where, key)}: unknown key{hint}")
        self.data = data
        self.where = where

    @staticmethod
    def _name(where: str, key: str) -> str:
        return f"{where}.{key}" if where else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def name(self, key: str) -> str:
        return self._name(self.where, key)

    def int(self, key: str, default: Any = None, lo: int | None = None, hi: int | None = None) -> Any:
        if key not in self.data:
            return default
        v = self.data[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ScenarioError(f"{self.name(key)}: expected an integer, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ScenarioError(f"{self.name(key)}: {v} is outside {lo}..{hi}")
        return v

    def float(self, key: str, default: Any = None, lo: float | None = None, hi: float | None = None) -> Any:
        if key not in self.data:
            return default
        v = self.data[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ScenarioError(f"{self.name(key)}: expected a number, got {v!r}")
        v = float(v)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ScenarioError(f"{self.name(key)}: {v} is outside [{lo}, {hi}]")
        return v

    def bool(self, key: str, default: Any = None) -> Any:
        if key not in self.data:
            return default
        v = self.data[key]
        if not isinstance(v, bool):
            raise ScenarioError(f"{self.name(key)}: expected true or false, got {v!r}")
        return v

    def str(self, key: str, default: Any = None, choices: Sequence[str] | None = None) -> Any:
        if key not in self.data:
            return default
        v = self.data[key]
        if not isinstance(v, str):
            raise ScenarioError(f"{self.name(key)}: expected a string, got {v!r}")
        if choices is not None and v not in choices:
            near = difflib.get_close_matches(v, choices, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise ScenarioError(f"{self.name(key)}: '{v}' is not one of {', '.join(choices)}{hint}")
        return v

    def strs(self, key: str, default: Any = None) -> Any:
        if key not in self.data:
            return default
        v = self.data[key]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ScenarioError(f"{self.name(key)}: expected a list of strings, got {v!r}")
        return list(v)

    def duration(self, key: str, default: Any = None) -> Any:
        if key not in self.data:
            return default
        return parse_duration(self.data[key], self.name(key))


def _dataclass_from(cls: type, table: Any, where: str) -> Any:
    """Build a frozen config dataclass from a TOML table, checking names and types."""
    names = [f.name for f in fields(cls)]
    t = _Table(table, where, names)
    kw = {}
    for f in fields(cls):
        if f.name not in t.data:
            continue
        v = t.data[f.name]
        default = getattr(cls(), f.name)
        if isinstance(default, bool):
            kw[f.name] = t.bool(f.name)
        elif isinstance(default, int) and not isinstance(default, bool):
            kw[f.name] = t.int(f.name)
        elif isinstance(default, float):
            if f.name.endswith("_s") and isinstance(v, str):
                kw[f.name] = parse_duration(v, t.name(f.name))
            else:
                kw[f.name] = t.float(f.name)
        elif isinstance(default, tuple):
            if not isinstance(v, list):
                raise ScenarioError(f"{t.name(f.name)}: expected a list, got {v!r}")
            kw[f.name] = tuple(v)
        else:
            kw[f.name] = v
    try:
        return cls(**kw)
    except (ValueError, TypeError) as exc:
        raise ScenarioError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------
# the scenario record


@dataclass(frozen=True)
class FaultSpec:
    """A fault as written (selectors unresolved)."""

    index: int
    at_s: float
    kind: str
    for_s: float | None
    params: dict[str, Any]
    select: dict[str, Any]  # selector keys for the fault's peers
    select_b: dict[str, Any] | None  # partitions: side b
    where: str


@dataclass(frozen=True)
class RandomFaults:
    count: int
    kinds: tuple[str, ...]
    start_s: float
    end_s: float
    for_min_s: float
    for_max_s: float
    peers_max: int


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    start: datetime
    duration_s: float
    sites: SiteSpec
    network: WanConfig
    energy: EnergyConfig
    factory: str = "gossip"
    peer_options: dict[str, Any] = field(default_factory=dict)
    start_spread_s: float = 10.0
    seeds_per_region: int = 3
    faults: tuple[FaultSpec, ...] = ()
    random_faults: RandomFaults | None = None
    workload: tuple[JobClass, ...] = ()
    sample_interval_s: float = 60.0
    trace: bool = True
    plots: bool = True
    checks: tuple[str, ...] = ("single_leader_per_region", "no_job_lost", "membership_converged")
    convergence_s: float = 120.0
    liveness_after_s: float = 300.0
    job_wait_max_s: float = 4 * 3600.0
    description: str = ""
    source: str = "<scenario>"

    def with_seed(self, seed: int) -> "Scenario":
        from dataclasses import replace

        return replace(self, seed=seed)


_TOP_KEYS = ("name", "description", "seed", "start", "duration", "sites", "network", "energy", "peer", "report",
             "invariants", "faults", "faults_random", "workload")
_SELECT_KEYS = ("peers", "region", "regions", "site_kind", "count", "fraction")
_FAULT_PARAMS = {
    "crash": ("disk",),
    "restart": (),
    "pause": (),
    "slow": ("delay",),
    "clock": ("step", "drift_ppm"),
    "partition": ("a", "b", "symmetric"),
    "isolate_region": (),
    "clog": ("bandwidth_factor", "to"),
    "power_dip": ("solar_factor", "grid_factor"),
}
_NEEDS_FOR = {"pause", "slow", "clog", "power_dip", "partition", "isolate_region"}


def _parse_start(v: Any, where: str) -> datetime:
    if isinstance(v, datetime):
        return v if v.tzinfo is not None else v.replace(tzinfo=timezone.utc)
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=timezone.utc)
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ScenarioError(f"{where}: expected an ISO 8601 date-time like \"2025-06-21T07:00:00Z\", got {v!r}") from None
        return d if d.tzinfo is not None else d.replace(tzinfo=timezone.utc)
    raise ScenarioError(f"{where}: expected an ISO 8601 date-time like \"2025-06-21T07:00:00Z\", got {v!r}")


def _parse_select(t: _Table, keys: Sequence[str]) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    if t.has("peers"):
        v = t.raw("peers")
        if not isinstance(v, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
            raise ScenarioError(f"{t.name('peers')}: expected a list of site names or indices, got {v!r}")
        sel["peers"] = list(v)
    if t.has("region"):
        sel["regions"] = [t.str("region")]
    if t.has("regions"):
        sel["regions"] = t.strs("regions")
    if t.has("site_kind"):
        sel["site_kind"] = t.str("site_kind", choices=("dc", "hpc", "edge"))
    if t.has("count"):
        sel["count"] = t.int("count", lo=1)
    if t.has("fraction"):
        sel["fraction"] = t.float("fraction", lo=0.0, hi=1.0)
    if "count" in sel and "fraction" in sel:
        raise ScenarioError(f"{t.name('count')}: give count or fraction, not both")
    return sel


def _parse_side(v: Any, where: str) -> dict[str, Any]:
    if isinstance(v, str):
        return {"regions": [v]}
    if isinstance(v, list):
        return _parse_select(_Table({"peers": v}, where, _SELECT_KEYS), _SELECT_KEYS)
    return _parse_select(_Table(v, where, _SELECT_KEYS), _SELECT_KEYS)


def _parse_fault(i: int, data: Any) -> FaultSpec:
    where = f"faults[{i}]"
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected a table ([[faults]])")
    kind = data.get("kind")
    if kind is None:
        raise ScenarioError(f"{where}.kind: missing (one of {', '.join(FAULT_KINDS)})")
    if kind not in FAULT_KINDS:
        near = difflib.get_close_matches(str(kind), FAULT_KINDS, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ScenarioError(f"{where}.kind: unknown fault kind {kind!r} (expected one of {', '.join(FAULT_KINDS)}){hint}")
    allowed = ("at", "kind", "for") + _SELECT_KEYS + _FAULT_PARAMS[kind]
    t = _Table(data, where, allowed)
    if not t.has("at"):
        raise ScenarioError(f"{where}.at: missing (when the fault starts, e.g. \"6h\")")
    at = t.duration("at")
    for_s = t.duration("for")
    if kind in _NEEDS_FOR and for_s is None:
        raise ScenarioError(f"{where}.for: missing (a {kind} fault needs a duration, e.g. \"30m\")")
    if for_s is not None and for_s <= 0:
        raise ScenarioError(f"{where}.for: must be > 0")
    params: dict[str, Any] = {}
    if kind == "crash":
        params["disk"] = t.str("disk", "keep", choices=("keep", "lose_unsynced", "wipe"))
    elif kind == "slow":
        if not t.has("delay"):
            raise ScenarioError(f"{where}.delay: missing (how late messages and timers reach the peer, e.g. \"500ms\")")
        params["delay_s"] = t.duration("delay")
    elif kind == "clock":
        params["step_s"] = _signed_duration(t.raw("step", 0.0), t.name("step"))
        params["drift_ppm"] = t.float("drift_ppm", 0.0, lo=-100_000.0, hi=100_000.0)
        if params["step_s"] == 0.0 and params["drift_ppm"] == 0.0:
            raise ScenarioError(f"{where}: a clock fault needs step or drift_ppm")
    elif kind == "clog":
        if t.has("bandwidth_factor"):
            params["bandwidth_factor"] = t.float("bandwidth_factor", lo=1.0, hi=1e6)
            if t.has("to"):
                raise ScenarioError(f"{where}.to: a bandwidth clog slows the peers' links; it takes no 'to'")
    elif kind == "power_dip":
        params["solar_factor"] = t.float("solar_factor", 0.2, lo=0.0, hi=1.0)
        params["grid_factor"] = t.float("grid_factor", 1.0, lo=0.0, hi=1.0)
    select_b = None
    if kind == "partition":
        if not t.has("a"):
            raise ScenarioError(f"{where}.a: missing (side a of the partition: a region name or a selector table)")
        select = _parse_side(t.raw("a"), f"{where}.a")
        select_b = _parse_side(t.raw("b"), f"{where}.b") if t.has("b") else None
        params["symmetric"] = t.bool("symmetric", True)
        for k in _SELECT_KEYS:
            if t.has(k):
                raise ScenarioError(f"{t.name(k)}: a partition selects its sides with a and b")
    else:
        select = _parse_select(t, _SELECT_KEYS)
        if kind == "clog" and t.has("to"):
            select_b = _parse_side(t.raw("to"), f"{where}.to")  # clog only the links from the peers to these
        if kind == "isolate_region":
            if list(select) != ["regions"] or len(select["regions"]) != 1:
                raise ScenarioError(f"{where}.region: isolate_region needs exactly one region (region = \"West\")")
        elif not select:
            raise ScenarioError(f"{where}: say which peers ({', '.join(_SELECT_KEYS)})")
    return FaultSpec(i, at, kind, for_s, params, select, select_b, where)


def parse_scenario(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """A :class:`Scenario` from parsed TOML; raises :class:`ScenarioError` (prefixed with ``source``)."""
    try:
        return _parse(data, source)
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def _parse(data: dict[str, Any], source: str) -> Scenario:
    top = _Table(data, "", _TOP_KEYS)
    name = top.str("name", Path(source).stem if source != "<scenario>" else "scenario")
    seed = top.int("seed", 1, lo=0, hi=(1 << 63) - 1)
    start = _parse_start(top.raw("start"), "start") if top.has("start") else DEFAULT_START
    if not top.has("duration"):
        raise ScenarioError("duration: missing (how much virtual time to run, e.g. \"24h\")")
    duration_s = top.duration("duration")
    if not 0 < duration_s <= DURATION_MAX_S:
        raise ScenarioError(f"duration: must be > 0 and at most 30 days, got {duration_s} s")

    st = _Table(top.raw("sites", {}), "sites", [f.name for f in fields(SiteSpec)] + ["region_size"])
    count = st.int("count", 200, lo=1, hi=PEERS_MAX)
    method = st.str("region_method", "auto", choices=REGION_METHODS)
    if st.has("region_size"):
        if st.has("regions"):
            raise ScenarioError("sites.region_size: give either regions or region_size, not both")
        region_size = st.int("region_size", lo=1, hi=PEERS_MAX)
        if method not in ("auto", "tiles"):
            raise ScenarioError(f"sites.region_size: needs region_method 'tiles' (or none), got '{method}'")
        regions = max(1, round(count / region_size))
        if regions > REGIONS_MAX_TILES:
            raise ScenarioError(f"sites.region_size: {region_size} makes {regions} regions of {count} sites; "
                                f"at most {REGIONS_MAX_TILES} (use region_size >= {math.ceil(count / REGIONS_MAX_TILES)})")
        method = "tiles"
    else:
        regions = st.int("regions", 3, lo=1, hi=REGIONS_MAX_TILES if method in ("auto", "tiles") else REGIONS_MAX_CLUSTERED)
    if regions > count and (method == "tiles" or regions > REGIONS_MAX_CLUSTERED):
        raise ScenarioError(f"sites.regions: {regions} is more than count ({count}); tiles make at most one region per site")
    if st.has("states"):
        states = tuple(st.strs("states"))
    else:
        states = ()
    names = st.strs("region_names")
    try:
        spec = SiteSpec(
            count=count,
            regions=regions,
            region_method=method,
            region_names=tuple(names) if names is not None else None,
            hpc=st.int("hpc", 0, lo=0),
            edge=st.int("edge", 0, lo=0),
            min_population=st.int("min_population", 15000, lo=0),
            conus_only=st.bool("conus_only", True),
            states=states,
        )
    except ValueError as exc:
        raise ScenarioError(f"sites: {exc}") from None

    network = _dataclass_from(WanConfig, top.raw("network", {}), "network")
    energy = _dataclass_from(EnergyConfig, top.raw("energy", {}), "energy")

    pt = _Table(top.raw("peer", {}), "peer", ("factory", "options", "start_spread", "seeds_per_region"))
    factory = pt.str("factory", "gossip")
    if factory not in FACTORIES and ":" not in factory:
        raise ScenarioError(f"peer.factory: '{factory}' is not one of {', '.join(FACTORIES)} nor a \"module:function\"")
    options = pt.raw("options", {})
    if not isinstance(options, dict):
        raise ScenarioError("peer.options: expected a table")
    start_spread_s = pt.duration("start_spread", 10.0)
    seeds_per_region = pt.int("seeds_per_region", 3, lo=1, hi=100)

    rt = _Table(top.raw("report", {}), "report", ("sample_interval", "trace", "plots"))
    sample_interval_s = rt.duration("sample_interval", 60.0)
    if sample_interval_s <= 0:
        raise ScenarioError("report.sample_interval: must be > 0")

    it = _Table(top.raw("invariants", {}), "invariants", ("checks", "convergence", "liveness_after", "job_wait_max"))
    checks = it.strs("checks", list(Scenario.checks))
    for i, c in enumerate(checks):
        if c not in CHECKERS:
            raise ScenarioError(f"invariants.checks[{i}]: unknown checker {c!r} (expected one of {', '.join(CHECKERS)})")

    faults_raw = top.raw("faults", [])
    if not isinstance(faults_raw, list):
        raise ScenarioError("faults: expected an array of tables ([[faults]])")
    faults = tuple(_parse_fault(i, f) for i, f in enumerate(faults_raw))
    for f in faults:
        if f.at_s >= duration_s:
            raise ScenarioError(f"{f.where}.at: {f.at_s} s is not before the end of the run ({duration_s} s)")

    random_faults = None
    if top.has("faults_random"):
        ft = _Table(top.raw("faults_random"), "faults_random", ("count", "kinds", "window", "for_min", "for_max", "peers_max"))
        kinds = ft.strs("kinds", ["crash", "pause", "slow", "clock", "clog", "partition"])
        for i, k in enumerate(kinds):
            if k not in FAULT_KINDS:
                raise ScenarioError(f"faults_random.kinds[{i}]: unknown fault kind {k!r} (expected one of {', '.join(FAULT_KINDS)})")
        window = ft.raw("window", [0, duration_s])
        if not isinstance(window, list) or len(window) != 2:
            raise ScenarioError("faults_random.window: expected [start, end], e.g. [\"1h\", \"20h\"]")
        w0 = parse_duration(window[0], "faults_random.window[0]")
        w1 = parse_duration(window[1], "faults_random.window[1]")
        if not w0 < w1 <= duration_s:
            raise ScenarioError("faults_random.window: need start < end <= duration")
        random_faults = RandomFaults(
            count=ft.int("count", 5, lo=0, hi=10_000),
            kinds=tuple(kinds),
            start_s=w0,
            end_s=w1,
            for_min_s=ft.duration("for_min", 10.0),
            for_max_s=ft.duration("for_max", 600.0),
            peers_max=ft.int("peers_max", 3, lo=1),
        )
        if random_faults.for_max_s < random_faults.for_min_s:
            raise ScenarioError("faults_random.for_max: must be >= for_min")

    wl_raw = top.raw("workload", [])
    if not isinstance(wl_raw, list):
        raise ScenarioError("workload: expected an array of tables ([[workload]])")
    classes = []
    seen = set()
    for i, w in enumerate(wl_raw):
        wt = _Table(w, f"workload[{i}]", ("class", "rate_per_h", "duration", "power_kw", "distribution", "region", "placement_class"))
        cname = wt.str("class")
        if not cname:
            raise ScenarioError(f"workload[{i}].class: missing (a name for this job class)")
        if cname in seen:
            raise ScenarioError(f"workload[{i}].class: duplicate class {cname!r}")
        seen.add(cname)
        if not wt.has("rate_per_h") or not wt.has("duration") or not wt.has("power_kw"):
            missing = [k for k in ("rate_per_h", "duration", "power_kw") if not wt.has(k)][0]
            raise ScenarioError(f"workload[{i}].{missing}: missing")
        try:
            classes.append(
                JobClass(
                    name=cname,
                    rate_per_h=wt.float("rate_per_h", lo=0.0),
                    duration_s=wt.duration("duration"),
                    power_kw=wt.float("power_kw", lo=0.001),
                    distribution=wt.str("distribution", "exp", choices=("exp", "fixed")),
                    region=wt.str("region"),
                    placement_class=wt.str("placement_class", "batch"),
                )
            )
        except ValueError as exc:
            raise ScenarioError(f"workload[{i}]: {exc}") from None

    return Scenario(
        name=name,
        seed=seed,
        start=start,
        duration_s=duration_s,
        sites=spec,
        network=network,
        energy=energy,
        factory=factory,
        peer_options=dict(options),
        start_spread_s=start_spread_s,
        seeds_per_region=seeds_per_region,
        faults=faults,
        random_faults=random_faults,
        workload=tuple(classes),
        sample_interval_s=sample_interval_s,
        trace=rt.bool("trace", True),
        plots=rt.bool("plots", True),
        checks=tuple(checks),
        convergence_s=it.duration("convergence", 120.0),
        liveness_after_s=it.duration("liveness_after", 300.0),
        job_wait_max_s=it.duration("job_wait_max", 4 * 3600.0),
        description=top.str("description", ""),
        source=source,
    )


def load_scenario(path: str | Path, *, seed: int | None = None) -> Scenario:
    """Read and check a scenario file; ``seed`` overrides the file's."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such scenario file") from None
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: not valid TOML: {exc}") from None
    sc = parse_scenario(data, str(p))
    return sc.with_seed(seed) if seed is not None else sc


def resolve_faults(sc: Scenario, catalog: SiteCatalog, peer_ids: Sequence[str]) -> list[Fault]:
    """Turn the scenario's fault specs (and random faults) into concrete faults, deterministically."""
    names = [s.name for s in catalog.sites]
    index_of = {n: i for i, n in enumerate(names)}
    region_idx = {r: [s.index for s in catalog.by_region[r]] for r in catalog.regions}

    def select(sel: dict[str, Any], where: str, rng: random.Random, exclude: set[int] | None = None) -> list[int]:
        pool = list(range(len(names)))
        if "peers" in sel:
            chosen = []
            for x in sel["peers"]:
                if isinstance(x, int):
                    if not 0 <= x < len(names):
                        raise ScenarioError(f"{sc.source}: {where}.peers: index {x} outside 0..{len(names) - 1}")
                    chosen.append(x)
                else:
                    if x not in index_of:
                        near = difflib.get_close_matches(x, names, n=1)
                        hint = f"; did you mean '{near[0]}'?" if near else ""
                        raise ScenarioError(f"{sc.source}: {where}.peers: no site named {x!r}{hint}")
                    chosen.append(index_of[x])
            pool = sorted(set(chosen))
        if "regions" in sel:
            for r in sel["regions"]:
                if r not in region_idx:
                    raise ScenarioError(f"{sc.source}: {where}.region: no region {r!r} (regions: {', '.join(catalog.regions)})")
            allowed = {i for r in sel["regions"] for i in region_idx[r]}
            pool = [i for i in pool if i in allowed]
        if "site_kind" in sel:
            pool = [i for i in pool if catalog.sites[i].kind == sel["site_kind"]]
        if exclude:
            pool = [i for i in pool if i not in exclude]
        if "count" in sel:
            if sel["count"] > len(pool):
                raise ScenarioError(f"{sc.source}: {where}.count: {sel['count']} asked, only {len(pool)} peers match")
            pool = sorted(rng.sample(pool, sel["count"]))
        elif "fraction" in sel:
            k = int(round(sel["fraction"] * len(pool)))
            pool = sorted(rng.sample(pool, k))
        if not pool:
            raise ScenarioError(f"{sc.source}: {where}: the selector matches no peer")
        return pool

    out: list[Fault] = []
    for fs in sc.faults:
        rng = random.Random(derive_seed(sc.seed, "fault", fs.index))
        idx = select(fs.select, fs.where + (".a" if fs.kind == "partition" else ""), rng)
        peers = tuple(peer_ids[i] for i in idx)
        sites = tuple(names[i] for i in idx)
        params = dict(fs.params)
        region = fs.select.get("regions", [None])[0] if len(fs.select.get("regions", [])) == 1 else None
        if fs.kind == "partition":
            if fs.select_b is not None:
                idx_b = select(fs.select_b, fs.where + ".b", rng)
            else:
                inside = set(idx)
                idx_b = [i for i in range(len(names)) if i not in inside]
                if not idx_b:
                    raise ScenarioError(f"{sc.source}: {fs.where}.a: side a holds every peer; nothing to cut it from")
            params["a_label"] = ",".join(fs.select["regions"]) if list(fs.select) == ["regions"] else None
            params["b_label"] = (",".join(fs.select_b["regions"]) if fs.select_b and list(fs.select_b) == ["regions"]
                                 else ("everyone else" if fs.select_b is None else None))
            params = {k: v for k, v in params.items() if v is not None}
            out.append(Fault(fs.at_s, fs.kind, peers, sites, fs.for_s, params, tuple(peer_ids[i] for i in idx_b),
                             tuple(names[i] for i in idx_b), region))
        elif fs.select_b is not None:  # a clog of the links from the peers to side b
            idx_b = select(fs.select_b, fs.where + ".to", rng)
            out.append(Fault(fs.at_s, fs.kind, peers, sites, fs.for_s, params, tuple(peer_ids[i] for i in idx_b),
                             tuple(names[i] for i in idx_b), region))
        else:
            out.append(Fault(fs.at_s, fs.kind, peers, sites, fs.for_s, params, region=region))
    if sc.random_faults is not None and sc.random_faults.count:
        rf = sc.random_faults
        out.extend(
            draw_random_faults(
                sc.seed,
                count=rf.count,
                kinds=rf.kinds,
                start_s=rf.start_s,
                end_s=rf.end_s,
                peer_ids=peer_ids,
                site_names=names,
                regions=region_idx,
                for_min_s=rf.for_min_s,
                for_max_s=rf.for_max_s,
                peers_max=rf.peers_max,
            )
        )
    out.sort(key=lambda f: (f.at_s, FAULT_KINDS.index(f.kind)))
    return out


# --------------------------------------------------------------------------
# building and running


@dataclass
class PeerContext:
    """What a node factory gets to build one peer's node (again after each restart)."""

    peer_id: str
    index: int
    identity: Identity
    site: Site
    region: str
    rng: random.Random  # the peer's seeded generator (survives restarts: a restart continues the stream)
    disk: dict[str, bytes]  # what the peer persisted; survives restarts unless a crash lost it
    sampler: Callable[[float], dict[str, float]]  # the site's energy readings
    seeds: list[str]  # bootstrap peers: the first seeds_per_region peers of every region
    all_peers: list[str]  # every peer id, index order (shared; do not mutate)
    region_of: dict[str, str]  # peer id -> region (shared; do not mutate)
    options: dict[str, Any]  # the scenario's [peer.options]
    sim_peer: SimPeer
    run: "Run"


def resolve_factory(name: str) -> Callable[[PeerContext], Node]:
    """``"toy"``, ``"gossip"`` or ``"package.module:function"`` -> the factory."""
    target = FACTORIES.get(name, name)
    if ":" not in target:
        raise ScenarioError(f"peer.factory: '{name}' is not one of {', '.join(FACTORIES)} nor a \"module:function\"")
    mod_name, fn_name = target.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise ScenarioError(f"peer.factory: cannot import {mod_name} ({exc})") from None
    fn = getattr(mod, fn_name, None)
    if fn is None:
        raise ScenarioError(f"peer.factory: {mod_name} has no {fn_name}")
    if fn is gossip_factory:
        _check_gossip_available()
    return fn


def _check_gossip_available() -> None:
    try:
        importlib.import_module("arcnet.gossip.stack")
    except ModuleNotFoundError as exc:
        if exc.name not in ("arcnet.gossip.stack",):
            raise
        raise ScenarioError(
            "peer.factory: 'gossip' needs arcnet.gossip.stack, which is not there yet; "
            "set [peer] factory = \"toy\" to exercise the simulator alone"
        ) from None


GOSSIP_OPTIONS = ("preconverged", "membership", "state", "leader")


def _gossip_config(options: dict[str, Any]) -> tuple[Any, bool]:
    """(GossipConfig, preconverged) from ``[peer.options]``; unknown names are one-line errors."""
    from arcnet.gossip.leader import LeaderConfig
    from arcnet.gossip.membership import MembershipConfig
    from arcnet.gossip.stack import GossipConfig
    from arcnet.gossip.state import StateConfig

    t = _Table(options, "peer.options", GOSSIP_OPTIONS)
    pre = t.bool("preconverged", True)
    cfg = GossipConfig(
        membership=_dataclass_from(MembershipConfig, t.raw("membership", {}), "peer.options.membership"),
        state=_dataclass_from(StateConfig, t.raw("state", {}), "peer.options.state"),
        leader=_dataclass_from(LeaderConfig, t.raw("leader", {}), "peer.options.leader"),
    )
    return cfg, pre


def gossip_factory(ctx: PeerContext) -> Node:
    """Build the real gossip stack for one peer (``arcnet.gossip.stack.build_gossip_node``).

    ``[peer.options]``: ``preconverged`` (default true: every peer starts
    knowing every member alive, as in a mesh that has been up for a while;
    false: peers join through the seeds) and the ``membership``, ``state``
    and ``leader`` tables of :class:`~arcnet.gossip.stack.GossipConfig`.
    Signatures are checked with the run's memoising ``verify`` (a pure
    function: the same bytes and signature always give the same answer). A
    restarted peer gets no bootstrap: it rejoins through the seeds.
    """
    from arcnet.gossip.membership import ALIVE, Member
    from arcnet.gossip.stack import build_gossip_node

    run = ctx.run
    shared = run.factory_state
    if "gossip_config" not in shared:
        shared["gossip_config"] = _gossip_config(ctx.options)
    if "gossip_bootstrap" not in shared:  # immutable records shared by every peer (the core copies the dict)
        shared["gossip_bootstrap"] = {pid: Member(pid, 0, ALIVE, "", run.region_of[pid]) for pid in run.peer_ids}
    cfg, pre = shared["gossip_config"]
    first_boot = ctx.sim_peer.crashes == 0 and ctx.sim_peer.restarts == 0
    return build_gossip_node(
        ctx.identity,
        rng=ctx.rng,
        region=ctx.region,
        config=cfg,
        lat=ctx.site.latitude,
        lon=ctx.site.longitude,
        seeds=ctx.seeds,
        sampler=ctx.sampler,
        verify=run.verify,
        disk=ctx.disk,
        bootstrap=shared["gossip_bootstrap"] if (pre and first_boot) else (),
    )


def _gossip_view_size(node: Node) -> int | None:
    from arcnet.gossip.stack import gossip_of

    return gossip_of(node).members.n()  # alive + suspect members, itself included: O(1)


gossip_factory.view_size = _gossip_view_size  # type: ignore[attr-defined]


class MemoVerify:
    """``verify(peer_id, message, signature)`` with a bounded memo: each signature is checked once.

    Keyed by the signature, holding a 16-byte digest of the message and the
    peer id, so a memo entry costs ~200 bytes whatever the message size and a
    changed message under a reused signature is still checked. The memo is
    cleared when full (``entries_max``); results are pure, so eviction never
    changes an answer.
    """

    def __init__(self, entries_max: int = 100_000):
        from arcnet.mesh.identity import verify_peer

        self._verify = verify_peer
        self.entries_max = entries_max
        self._memo: dict[bytes, tuple[str, bytes, bool]] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, peer_id: str, message: bytes, signature: bytes) -> bool:
        digest = hashlib.blake2b(message, digest_size=16).digest()
        hit = self._memo.get(signature)
        if hit is not None and hit[0] == peer_id and hit[1] == digest:
            self.hits += 1
            return hit[2]
        self.misses += 1
        ok = self._verify(peer_id, message, signature)
        if len(self._memo) >= self.entries_max:
            self._memo.clear()
        self._memo[signature] = (peer_id, digest, ok)
        return ok

    def statistics(self) -> dict[str, float]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._memo)}


@dataclass
class RunResult:
    scenario: str
    seed: int
    ok: bool
    violation: str | None
    trace_hash: str
    virtual_s: float
    wall_s: float
    events: int
    statistics: dict[str, Any]
    report: dict[str, Any]
    faults: list[str]
    reproduce: str


class Run:
    """One scenario, built: sites, peers, WAN, energy, faults, workload, checkers and recorder."""

    def __init__(
        self,
        sc: Scenario,
        *,
        factory: Callable[[PeerContext], Node] | None = None,
        trace_path: str | None = None,
        checkers: Sequence[Checker] = (),
        reproduce: str | None = None,
        factory_name: str | None = None,
    ):
        from .report import Recorder  # noqa: PLC0415 - report imports matplotlib lazily; keep it out of the hot path

        self.scenario = sc
        self.seed = sc.seed
        t0 = time.perf_counter()
        self.catalog = build_catalog(sc.seed, sc.sites)
        self.factory_name = factory_name or (sc.factory if factory is None else getattr(factory, "__name__", "custom"))
        self.factory = factory if factory is not None else resolve_factory(sc.factory)
        n = len(self.catalog)
        self.identities = [Identity.from_seed(hashlib.blake2b(repr((sc.seed, "identity", i)).encode(), digest_size=32).digest())
                           for i in range(n)]
        self.peer_ids = [ident.peer_id for ident in self.identities]
        self.site_of: dict[str, Site] = {pid: s for pid, s in zip(self.peer_ids, self.catalog.sites)}
        self.index_of = {pid: i for i, pid in enumerate(self.peer_ids)}
        self.region_of = {pid: s.region for pid, s in self.site_of.items()}
        self.peers_by_region = {r: [self.peer_ids[s.index] for s in self.catalog.by_region[r]] for r in self.catalog.regions}
        self.seeds = [pid for r in self.catalog.regions for pid in self.peers_by_region[r][: sc.seeds_per_region]]
        self.network = WanNetwork(random.Random(derive_seed(sc.seed, "wan")), dict(self.site_of), sc.network)
        self.energy = EnergyModel(self.catalog.sites, sc.start, sc.duration_s, sc.seed, sc.energy)
        self.sim = Simulator(sc.seed, self.network, trace_path=trace_path)
        self.energy.clock = lambda: self.sim.now
        self.workload: Workload | None = None
        if sc.workload:
            self.workload = Workload(self.sim, sc.workload, energy=self.energy, site_peers=self.peer_ids,
                                     site_regions=[s.region for s in self.catalog.sites], seed=sc.seed, end_s=sc.duration_s)
            ids = self.peer_ids
            GreedyPlacer(self.workload, latency_s=lambda a, b: self.network.one_way_s(ids[a], ids[b]))
        self.factory_state: dict[str, Any] = {}  # a factory's per-run shared state (configs, bootstrap records)
        self.verify = MemoVerify()
        if self.factory is gossip_factory:  # check [peer.options] before anything runs
            self.factory_state["gossip_config"] = _gossip_config(sc.peer_options)
        self.samplers = [self._site_sampler(i) for i in range(n)]
        self.faults = resolve_faults(sc, self.catalog, self.peer_ids)
        self.injector = FaultInjector(self.sim, self.faults, network=self.network, energy=self.energy, on_fault=self._on_fault)
        self.view_size = getattr(self.factory, "view_size", None)
        # checkers
        chosen: list[Checker] = []
        for name in sc.checks:
            c = CHECKERS[name]()
            if isinstance(c, NoJobLost):
                c.wait_max_s = sc.job_wait_max_s
            chosen.append(c)
        chosen.extend(checkers)
        self.ctx = CheckContext(
            sim=self.sim,
            region_of=self.region_of,
            peers_by_region=self.peers_by_region,
            quiet_for_s=self.injector.quiet_for_s,
            workload=self.workload,
            view_size=(lambda pid: self._view(pid)) if self.view_size is not None else None,
            convergence_s=sc.convergence_s,
        )
        self.invariants = InvariantSet(chosen, self.ctx)
        self.invariants.install()
        self.liveness_runs: list[dict[str, Any]] = []
        self.recorder = Recorder(self)
        # peers
        rng = random.Random(derive_seed(sc.seed, "boot"))
        for i, pid in enumerate(self.peer_ids):
            at = round(sc.start_spread_s * rng.random(), 6) if sc.start_spread_s > 0 else 0.0
            sp = self.sim.add_peer(pid, self._build, start_at=at)
            sp.meta = {"site": self.catalog.sites[i].name, "region": self.catalog.sites[i].region}
        self.injector.schedule()
        if self.workload is not None:
            self.workload.schedule()
        self.recorder.schedule()
        for h in self.injector.heal_times():
            at = h + sc.liveness_after_s
            if at < sc.duration_s:
                self.sim.call_at(at, self._liveness, "liveness")
        self.reproduce = reproduce or f"arcnet sim run {sc.source} --seed {sc.seed}"
        self.build_s = time.perf_counter() - t0

    def _site_sampler(self, i: int) -> Callable[[float], dict[str, Any]]:
        """The site's energy readings plus its static facts and the stand-in workload's job count."""
        energy_sample = self.energy.sampler(i)
        site = self.catalog.sites[i]
        gpus = max(1, int(site.it_power_kw / 1.5))  # ~1.5 kW of IT per GPU with its share of host and network
        static = {
            "gpu_model": "H100",
            "gpu_count": gpus,
            "memory_gb": float(gpus * 80),
            "roles": ["hpc"] if site.kind == "hpc" else (["edge"] if site.kind == "edge" else ["site"]),
        }
        running = self.workload.running_by_site if self.workload is not None else None

        def sample(now: float) -> dict[str, Any]:
            r: dict[str, Any] = energy_sample(now)
            r.update(static)
            # a site short of power is not healthy: it is shedding load
            r["health_score"] = 1.0 if r["unserved_kw"] <= 0.0 else 0.4
            # a schedulable slot is ~100 kW of IT (placement's PeerFacts.slot_kw): free slots follow the headroom
            r["gpu_slots_free"] = int(r["power_headroom_kw"] // 100.0)
            r["cpu_slots_free"] = 64
            if running is not None:
                r["jobs_running"] = running[i]
            return r

        return sample

    def _view(self, pid: str) -> int | None:
        p = self.sim.peers[pid]
        if p.node is None:
            return None
        return self.view_size(p.node)  # type: ignore[misc]

    def _build(self, sp: SimPeer) -> Node:
        i = sp.index
        site = self.catalog.sites[i]
        ctx = PeerContext(
            peer_id=sp.peer_id,
            index=i,
            identity=self.identities[i],
            site=site,
            region=site.region,
            rng=sp.rng,  # type: ignore[arg-type]
            disk=sp.disk,
            sampler=self.samplers[i],
            seeds=self.seeds,
            all_peers=self.peer_ids,
            region_of=self.region_of,
            options=self.scenario.peer_options,
            sim_peer=sp,
            run=self,
        )
        return self.factory(ctx)

    def _on_fault(self, now: float, what: str, f: Fault) -> None:
        w = self.workload
        if w is None or w.placer is None:
            return
        if f.kind == "crash" and what == "start":
            for pid in f.peers:
                w.placer.site_down(self.index_of[pid], now)
        elif (f.kind == "crash" and what == "heal") or f.kind == "restart":
            for pid in f.peers:
                w.placer.site_up(self.index_of[pid], now)

    def _liveness(self) -> None:
        now = self.sim.now
        quiet = self.injector.quiet_for_s(now)
        entry = {"at_s": now, "quiet_for_s": quiet, "ran": False}
        if quiet >= self.scenario.liveness_after_s:
            entry["ran"] = True
            self.invariants.liveness(now)
        self.liveness_runs.append(entry)

    def run(self, until: float | None = None, *, progress: Callable[[float], None] | None = None) -> RunResult:
        """Run to ``until`` (default: the scenario's duration). Never raises on a broken invariant."""
        sc = self.scenario
        end = sc.duration_s if until is None else min(until, sc.duration_s)
        t0 = time.perf_counter()
        violation = None
        try:
            self.sim.run(end, progress=progress, progress_interval_s=max(1.0, end / 500.0))
            if end >= sc.duration_s:
                self._liveness()  # the end of the run counts as a heal point when all is quiet
        except InvariantViolation as exc:
            violation = str(exc)
            self.sim.trace_note(f"invariant-violation {exc.checker}")
        wall = time.perf_counter() - t0
        stats = self.statistics()
        report = self.recorder.report(wall_s=wall, violation=violation)
        self.sim.close()
        return RunResult(
            scenario=sc.name,
            seed=sc.seed,
            ok=violation is None,
            violation=violation,
            trace_hash=self.sim.trace_hash,
            virtual_s=self.sim.now,
            wall_s=wall,
            events=int(self.sim.counters["events"]),
            statistics=stats,
            report=report,
            faults=[format_fault(f) for f in self.faults],
            reproduce=self.reproduce,
        )

    def statistics(self) -> dict[str, Any]:
        return {
            "sim": self.sim.statistics(),
            "energy": self.energy.statistics(),
            "workload": self.workload.statistics() if self.workload is not None else {},
            "invariants": self.invariants.summary(),
            "verify": self.verify.statistics(),
        }
