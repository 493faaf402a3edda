"""Energy model: solar from pvlib's clear-sky model with seeded clouds, batteries, IT load, grid.

For every site the model knows, at one-minute steps of virtual time:

* **solar** -- clear-sky global horizontal irradiance from pvlib's Ineichen
  model (NREL SPA sun positions, Kasten--Young airmass, the Linke turbidity
  climatology and the altitude map shipped with pvlib), times a seeded cloud clearness (an AR(1)
  process per region mixed with one per site, so weather is correlated
  across a region and still differs site to site), times the array size and
  a derate (inverter, wiring, soiling, temperature)::

      solar_kw = pv_kwp * ghi_clear / 1000 W/m2 * clearness * derate

* **load** -- the IT load the workload sets (a background tenant load plus
  the sim's running jobs), times a PUE that grows on hot afternoons;
* **battery** -- surplus charges it (at ``charge_efficiency``, up to its
  power limit and ``soc_max_fraction``), deficit discharges it (at
  ``discharge_efficiency``, down to ``soc_min_fraction``), then the grid
  covers what is left up to the site's connection; what even the grid cannot
  cover is ``unserved_kw`` (the site would shed load);
* **price and carbon** -- a time-of-use grid price and a carbon intensity
  per region that dips when the sun is up.

Cost: clear-sky curves are computed once, vectorised over every site and
every 5-minute point of the run (one numpy pass through pvlib's SPA and
Ineichen code: ~1 s for 1,000 site-days), never per event. The batteries of
all sites advance together, one vectorised step per minute of virtual time,
whenever anyone asks for a time past the next step; a peer's sampler call is
then a cache lookup (the reading of a site is rebuilt only when its step or
its load changed). Because steps happen on a fixed grid, readings are a pure
function of the seed, the load changes and the time -- not of who sampled
when. A load change takes effect from the step in which it happens.

Power dips (a storm over a region, a grid outage) are windows that scale a
set of sites' solar and grid connection; the scenario's faults add them.

Sanity anchor: with clouds off, the model's clear-sky GHI equals pvlib's
``Location.get_clearsky`` to float32 precision (a test checks noon within
1%).

Knowingly left out: panel tilt and tracking (arrays are horizontal), panel
temperature, battery ageing and self-discharge, weather fronts that move
between regions, demand response.
"""

from __future__ import annotations

import calendar
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import numpy as np

from .engine import derive_seed
from .geo import Site

__all__ = ["EnergyConfig", "EnergyModel", "READING_KEYS", "clearsky_ghi", "site_altitude_m"]

READING_KEYS = (
    "solar_kw",
    "battery_soc_fraction",
    "battery_kwh",
    "power_headroom_kw",
    "thermal_headroom_kw",
    "grid_price_per_kwh",
    "carbon_g_per_kwh",
    "grid_import_kw",
    "it_load_kw",
    "unserved_kw",
    "ambient_c",
)

# Grid character per region name (USD/kWh off-peak, gCO2/kWh average); others get the default.
REGION_GRID = {
    "West": (0.12, 230.0),
    "Pacific": (0.14, 210.0),
    "Mountain": (0.09, 480.0),
    "Central": (0.07, 450.0),
    "Southeast": (0.08, 400.0),
    "East": (0.10, 370.0),
    "Northeast": (0.13, 280.0),
}
REGION_GRID_DEFAULT = (0.10, 400.0)

_SITES_PER_CHUNK = 256  # sites per vectorised pvlib pass (memory: ~40 arrays of chunk x points)


@dataclass(frozen=True)
class EnergyConfig:
    """Energy model knobs; units in the names."""

    step_s: float = 60.0  # battery integration step
    curve_step_s: float = 300.0  # clear-sky curve resolution (linear in between)
    derate: float = 0.85  # PV DC kWp -> AC kW at 1000 W/m2
    cloud_cover_fraction: float = 0.2  # mean share of clear-sky irradiance clouds take
    cloud_variability: float = 0.15  # standard deviation of that share
    cloud_corr_s: float = 5400.0  # correlation time of the cloud process
    cloud_regional_weight: float = 0.7  # share of cloud variance common to a region
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95  # round trip ~0.90
    soc_min_fraction: float = 0.10  # reserve the battery never goes below
    soc_max_fraction: float = 0.95
    soc_initial_fraction: tuple[float, float] = (0.4, 0.8)  # seeded uniform per site
    base_load_fraction: float = 0.5  # tenant IT load outside the sim's workload, x envelope
    pue_base: float = 1.15  # facility power / IT power at 25 C and below
    pue_per_c: float = 0.01  # ... plus this per degree C above 25 C
    cooling_capacity_factor: float = 1.25  # cooling sized for this x IT envelope at 25 C
    cooling_derate_per_c: float = 0.015  # cooling capacity lost per degree C above 25 C
    temp_amplitude_c: float = 6.0  # half the day/night swing of ambient temperature
    price_peak_factor: float = 1.8  # grid price multiplier 16:00-21:00 local solar time
    price_midday_factor: float = 0.7  # ... and 10:00-15:00 (solar glut)

    def __post_init__(self) -> None:
        if not 1.0 <= self.step_s <= 3600.0:
            raise ValueError(f"step_s must be in [1, 3600], got {self.step_s}")
        if not self.step_s <= self.curve_step_s <= 3600.0:
            raise ValueError("curve_step_s must be in [step_s, 3600]")
        if not 0.0 <= self.cloud_cover_fraction < 1.0:
            raise ValueError("cloud_cover_fraction must be in [0, 1)")
        if self.cloud_variability < 0 or self.cloud_corr_s <= 0:
            raise ValueError("cloud_variability must be >= 0 and cloud_corr_s > 0")
        if not 0.0 <= self.soc_min_fraction < self.soc_max_fraction <= 1.0:
            raise ValueError("need 0 <= soc_min_fraction < soc_max_fraction <= 1")
        for name in ("charge_efficiency", "discharge_efficiency", "derate"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")
        if not 0.0 <= self.base_load_fraction <= 1.0:
            raise ValueError("base_load_fraction must be in [0, 1]")


# --------------------------------------------------------------------------
# clear sky, vectorised over sites and times


def _degrees_to_index(deg: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    # the table's grid as pvlib.clearsky.lookup_linke_turbidity indexes it (5' cells, centres)
    scale = n / (hi - lo)
    centre = lo + 1.0 / scale / 2.0
    idx = np.around((deg - centre) * scale)
    return np.clip(idx, 0, n - 1).astype(np.int64)


def _pvlib_data(name: str) -> str:
    import pvlib

    return os.path.join(os.path.dirname(os.path.abspath(pvlib.__file__)), "data", name)


def site_altitude_m(lat: Sequence[float], lon: Sequence[float]) -> np.ndarray:
    """Altitude (m) from pvlib's coarse map, as ``pvlib.location.lookup_altitude`` reads it."""
    import h5py

    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    rows = _degrees_to_index(lat, 90.0, -90.0, 2160)
    cols = _degrees_to_index(lon, -180.0, 180.0, 4320)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    with h5py.File(_pvlib_data("Altitude.h5"), "r") as f:
        box = f["Altitude"][r0:r1, c0:c1]
    raw = box[rows - r0, cols - c0].astype(np.float64)
    # 28 m steps from -450 m; 255 means no data (pvlib then uses 0 m)
    return np.where(raw == 255, 0.0, raw * 28.0 - 450.0)


def _linke_monthly(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(sites, 12) monthly Linke turbidity from pvlib's climatology (one bounding-box read)."""
    import h5py

    rows = _degrees_to_index(lat, 90.0, -90.0, 2160)
    cols = _degrees_to_index(lon, -180.0, 180.0, 4320)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    with h5py.File(_pvlib_data("LinkeTurbidities.h5"), "r") as f:
        box = f["LinkeTurbidity"][r0:r1, c0:c1, :]
    return box[rows - r0, cols - c0, :].astype(np.float64) / 20.0


def _month_middles(year: int) -> np.ndarray:
    mdays = np.array(calendar.mdays[1:], dtype=float)
    ydays = 365.0
    if calendar.isleap(year):
        mdays[1] += 1
        ydays = 366.0
    return np.concatenate([[-calendar.mdays[-1] / 2.0], np.cumsum(mdays) - mdays / 2.0, [ydays + calendar.mdays[1] / 2.0]])


def clearsky_ghi(
    lat: Sequence[float], lon: Sequence[float], unixtime: Sequence[float], altitude_m: Sequence[float] | None = None
) -> np.ndarray:
    """Clear-sky GHI (W/m2), shape (sites, times), as pvlib's ``Location(lat, lon).get_clearsky``.

    The defaults of ``pvlib.location.Location``: altitude from pvlib's map
    (unless given), pressure from altitude, 12 C, NREL SPA positions,
    Kasten-Young airmass, Ineichen with interpolated Linke turbidity.
    """
    import pandas as pd
    from pvlib import atmosphere, clearsky, irradiance, spa

    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    alt = site_altitude_m(lat, lon) if altitude_m is None else np.asarray(altitude_m, dtype=float)
    pressure_pa = np.asarray(atmosphere.alt2pres(alt), dtype=float)
    unix = np.asarray(unixtime, dtype=float)
    times = pd.to_datetime(unix, unit="s", utc=True)
    delta_t = np.asarray(spa.calculate_deltat(times.year, times.month), dtype=float)
    doy = np.asarray(times.day_of_year, dtype=float)
    # pvlib's default (Spencer) for a day-of-year array is what it computes from a DatetimeIndex
    dni_extra = np.asarray(irradiance.get_extra_radiation(doy), dtype=float)
    lts = _linke_monthly(lat, lon)  # (sites, 12)
    # daily Linke turbidity, as pvlib interpolates it: month values at mid-month
    leap = np.asarray(times.is_leap_year)
    lts_concat = np.concatenate([lts[:, -1:], lts, lts[:, :1]], axis=1)  # (sites, 14)
    mid_leap, mid_noleap = _month_middles(2016), _month_middles(2015)
    # SPA in two halves, each with pvlib's own functions: what depends on time only (sidereal
    # time, the sun's geocentric right ascension and declination, the Earth-Sun distance) once
    # per time point; the observer's part (hour angle, parallax, refraction) per site and time
    # by broadcasting. Same operations as pvlib.spa.solar_position_numpy, ~30x less work.
    v, alpha, delta = (np.asarray(x, dtype=float)[None, :] for x in spa.solar_position(
        unix, 0.0, 0.0, 0.0, 1013.25, 12.0, delta_t, 0.5667, 1, sst=True))
    (R,) = spa.solar_position(unix, 0.0, 0.0, 0.0, 1013.25, 12.0, delta_t, 0.5667, 1, esd=True)
    xi = spa.equatorial_horizontal_parallax(np.asarray(R, dtype=float))[None, :]
    out = np.empty((len(lat), len(unix)))
    for s0 in range(0, len(lat), _SITES_PER_CHUNK):
        s1 = min(len(lat), s0 + _SITES_PER_CHUNK)
        n = s1 - s0
        shape = (n, len(unix))
        la, lo, el = lat[s0:s1, None], lon[s0:s1, None], alt[s0:s1, None]
        H = spa.local_hour_angle(v, lo, alpha)
        u = spa.uterm(la)
        x = spa.xterm(u, la, el)
        y = spa.yterm(u, la, el)
        delta_alpha = spa.parallax_sun_right_ascension(x, xi, H, delta)
        delta_prime = spa.topocentric_sun_declination(delta, x, y, xi, delta_alpha, H)
        H_prime = spa.topocentric_local_hour_angle(H, delta_alpha)
        e0 = spa.topocentric_elevation_angle_without_atmosphere(la, delta_prime, H_prime)
        delta_e = spa.atmospheric_refraction_correction(pressure_pa[s0:s1, None] / 100.0, 12.0, e0, 0.5667)  # hPa
        app_zen = np.broadcast_to(spa.topocentric_zenith_angle(spa.topocentric_elevation_angle(e0, delta_e)), shape)
        am_rel = atmosphere.get_relative_airmass(app_zen, "kastenyoung1989")
        am_abs = atmosphere.get_absolute_airmass(am_rel, pressure_pa[s0:s1, None])
        lt = np.empty(shape)
        for k in range(n):
            row = lts_concat[s0 + k]
            lt[k] = np.where(leap, np.interp(doy, mid_leap, row), np.interp(doy, mid_noleap, row))
        with np.errstate(divide="ignore", invalid="ignore"):
            cs = clearsky.ineichen(app_zen, am_abs, lt, altitude=alt[s0:s1, None], dni_extra=dni_extra[None, :])
        ghi = np.nan_to_num(np.asarray(cs["ghi"], dtype=float), nan=0.0)
        out[s0:s1] = np.maximum(ghi, 0.0)
    return out


# --------------------------------------------------------------------------
# the model


class EnergyModel:
    """Solar, battery, load and grid for a list of sites, on virtual time from ``start``.

    ``start`` is the wall-clock instant of virtual time 0 (timezone-aware;
    naive means UTC). ``duration_s`` bounds the precomputed curves; later
    times repeat the last day's curve.
    """

    def __init__(
        self,
        sites: Sequence[Site],
        start: datetime,
        duration_s: float,
        seed: int,
        config: EnergyConfig | None = None,
    ):
        cfg = self.config = config or EnergyConfig()
        if not sites:
            raise ValueError("the energy model needs at least one site")
        if start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        self.start = start
        self.start_unix = start.timestamp()
        self.seed = seed
        self.sites = list(sites)
        self.index = {s.name: i for i, s in enumerate(self.sites)}
        self.clock: Callable[[], float] | None = None  # set by the runner: samplers read true time
        n = len(self.sites)
        self.n = n
        lat = np.array([s.latitude for s in self.sites])
        lon = np.array([s.longitude for s in self.sites])
        self._lon = lon
        # curves: clear-sky GHI and cloud clearness on a curve_step_s grid
        self.points_per_day = int(round(86400.0 / cfg.curve_step_s))
        npts = int(math.ceil(max(duration_s, cfg.step_s) / cfg.curve_step_s)) + 2
        npts = max(npts, self.points_per_day + 2)
        self.npts = npts
        unix = self.start_unix + np.arange(npts) * cfg.curve_step_s
        self.altitude_m = site_altitude_m(lat, lon)
        self.ghi_clear = clearsky_ghi(lat, lon, unix, self.altitude_m).astype(np.float32)  # (n, npts) W/m2
        self.clearness = self._clouds(npts).astype(np.float32)  # (n, npts) in (0, 1]
        self.pv_kwp = np.array([s.pv_kwp for s in self.sites])
        self.it_power_kw = np.array([s.it_power_kw for s in self.sites])
        self.capacity_kwh = np.array([s.battery_kwh for s in self.sites])
        self.battery_power_kw = np.array([s.battery_power_kw for s in self.sites])
        self.grid_import_max_kw = np.array([s.grid_import_kw for s in self.sites])
        rng = np.random.Generator(np.random.PCG64(derive_seed(seed, "soc0") % (1 << 63)))
        lo, hi = cfg.soc_initial_fraction
        self.kwh = self.capacity_kwh * rng.uniform(lo, hi, n)
        self.it_load_kw = self.it_power_kw * cfg.base_load_fraction
        # mean ambient temperature: warmer south; season from the start date
        doy = start.timetuple().tm_yday
        season = math.cos(2 * math.pi * (doy - 200) / 365.0)  # 1 in mid July, -1 in mid January
        self._temp_mean_c = 28.0 - 0.55 * (lat - 25.0) + 10.0 * season - 8.0
        # region grid character
        self.regions = list(dict.fromkeys(s.region for s in self.sites))  # first-seen order
        self._region_of = np.array([self.regions.index(s.region) for s in self.sites])
        self._price_base = np.array([REGION_GRID.get(s.region, REGION_GRID_DEFAULT)[0] for s in self.sites])
        self._carbon_base = np.array([REGION_GRID.get(s.region, REGION_GRID_DEFAULT)[1] for s in self.sites])
        # step state
        self.step = 0  # steps integrated: state is at time step * step_s
        self.solar_kw = np.zeros(n)
        self.grid_import_kw = np.zeros(n)
        self.unserved_kw = np.zeros(n)
        self.ambient_c = self._temp_mean_c.copy()
        self.pue = np.full(n, cfg.pue_base)
        self.solar_factor = np.ones(n)
        self.grid_factor = np.ones(n)
        self.totals = {k: np.zeros(n) for k in ("solar_kwh", "grid_kwh", "unserved_kwh", "curtailed_kwh", "it_kwh")}
        self._dips: list[tuple[float, float, np.ndarray, float, float, str]] = []
        self._load_version = [0] * n  # a plain list: numpy scalar reads cost ~100 ns each
        self._next_step_s = cfg.step_s  # when the next step boundary is reached
        self._cache: list[Any] = [None] * n

    # -- curves ------------------------------------------------------------

    def _clouds(self, npts: int) -> np.ndarray:
        cfg = self.config
        n = self.n
        if cfg.cloud_cover_fraction == 0.0 and cfg.cloud_variability == 0.0:
            return np.ones((n, npts))
        g = np.random.Generator(np.random.PCG64(derive_seed(self.seed, "clouds") % (1 << 63)))
        regions = list(dict.fromkeys(s.region for s in self.sites))
        ridx = np.array([regions.index(s.region) for s in self.sites])
        phi = math.exp(-cfg.curve_step_s / cfg.cloud_corr_s)
        innov = math.sqrt(1.0 - phi * phi)
        zr = np.empty((len(regions), npts))
        zs = np.empty((n, npts))
        zr[:, 0] = g.standard_normal(len(regions))
        zs[:, 0] = g.standard_normal(n)
        for t in range(1, npts):
            zr[:, t] = phi * zr[:, t - 1] + innov * g.standard_normal(len(regions))
            zs[:, t] = phi * zs[:, t - 1] + innov * g.standard_normal(n)
        w = cfg.cloud_regional_weight
        z = math.sqrt(w) * zr[ridx] + math.sqrt(1.0 - w) * zs
        cover = cfg.cloud_cover_fraction + cfg.cloud_variability * z
        return np.clip(1.0 - cover, 0.05, 1.0)

    def _curve_at(self, arr: np.ndarray, t: float, rows: Any = slice(None)) -> np.ndarray:
        f = t / self.config.curve_step_s
        if f < 0:
            f = 0.0
        i0 = int(f)
        if i0 >= self.npts - 1:  # past the precomputed range: repeat the last whole day
            days = (i0 - (self.npts - 1)) // self.points_per_day + 1
            f -= days * self.points_per_day
            i0 = int(f)
        frac = f - i0
        a = arr[rows, i0].astype(np.float64)
        if frac:
            a = a + (arr[rows, i0 + 1].astype(np.float64) - a) * frac
        return a

    def clearsky_ghi_at(self, site: int | str, t: float) -> float:
        """Clear-sky GHI (W/m2) at a site at virtual time ``t`` (no clouds, no dips)."""
        i = self._site_index(site)
        return float(self._curve_at(self.ghi_clear, t, i))

    def solar_kw_at(self, site: int | str, t: float, *, clouds: bool = True) -> float:
        """AC output (kW) at virtual time ``t``, with or without clouds (dips not applied)."""
        i = self._site_index(site)
        ghi = self._curve_at(self.ghi_clear, t, i)
        k = self._curve_at(self.clearness, t, i) if clouds else 1.0
        return float(self.pv_kwp[i] * ghi / 1000.0 * k * self.config.derate)

    def datetime_at(self, t: float) -> datetime:
        return datetime.fromtimestamp(self.start_unix + t, tz=timezone.utc)

    # -- inputs --------------------------------------------------------------

    def _site_index(self, site: int | str) -> int:
        i = self.index[site] if isinstance(site, str) else int(site)
        if not 0 <= i < self.n:
            raise IndexError(f"no site {site!r}")
        return i

    def set_it_load(self, site: int | str, kw: float, now: float) -> None:
        """The site's IT load is ``kw`` from now on (clamped to [0, envelope])."""
        i = self._site_index(site)
        self.advance(now)
        kw = min(max(kw, 0.0), float(self.it_power_kw[i]))
        self.it_load_kw[i] = kw
        self._load_version[i] += 1

    def add_it_load(self, site: int | str, delta_kw: float, now: float) -> None:
        i = self._site_index(site)
        self.set_it_load(i, float(self.it_load_kw[i]) + delta_kw, now)

    def base_load_kw(self, site: int | str) -> float:
        i = self._site_index(site)
        return float(self.it_power_kw[i] * self.config.base_load_fraction)

    def power_dip(
        self,
        sites: Sequence[int | str],
        start: float,
        end: float,
        *,
        solar_factor: float = 0.2,
        grid_factor: float = 1.0,
        label: str = "power dip",
    ) -> None:
        """Between ``start`` and ``end``, scale the sites' solar and grid connection."""
        if end <= start:
            raise ValueError("power dip needs end > start")
        if not (0.0 <= solar_factor <= 1.0 and 0.0 <= grid_factor <= 1.0):
            raise ValueError("solar_factor and grid_factor must be in [0, 1]")
        mask = np.zeros(self.n, dtype=bool)
        for s in sites:
            mask[self._site_index(s)] = True
        self._dips.append((start, end, mask, solar_factor, grid_factor, label))

    # -- stepping ------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Integrate every site up to the last step boundary at or before ``now``."""
        target = int(now // self.config.step_s)
        while self.step < target:
            self._step()

    def _step(self) -> None:
        cfg = self.config
        dt_s = cfg.step_s
        t0 = self.step * dt_s
        mid = t0 + dt_s / 2.0
        h = dt_s / 3600.0
        # factors from power dips active at the middle of the step
        sf = np.ones(self.n)
        gf = np.ones(self.n)
        for start, end, mask, s_fac, g_fac, _ in self._dips:
            if start <= mid < end:
                sf[mask] *= s_fac
                gf[mask] *= g_fac
        self.solar_factor, self.grid_factor = sf, gf
        ghi = self._curve_at(self.ghi_clear, mid)
        k = self._curve_at(self.clearness, mid)
        solar = self.pv_kwp * ghi / 1000.0 * k * cfg.derate * sf
        # ambient temperature and PUE
        solar_hour = ((self.start_unix + mid) / 3600.0 + self._lon / 15.0) % 24.0
        ambient = self._temp_mean_c + cfg.temp_amplitude_c * np.cos(2 * np.pi * (solar_hour - 15.0) / 24.0)
        pue = cfg.pue_base + cfg.pue_per_c * np.maximum(0.0, ambient - 25.0)
        it = self.it_load_kw
        facility = it * pue
        net = solar - facility
        cap = self.capacity_kwh
        kwh = self.kwh
        surplus = np.maximum(net, 0.0)
        deficit = np.maximum(-net, 0.0)
        room_kw = np.maximum(cap * cfg.soc_max_fraction - kwh, 0.0) / (h * cfg.charge_efficiency)
        charge = np.minimum(np.minimum(surplus, self.battery_power_kw), room_kw)
        avail_kw = np.maximum(kwh - cap * cfg.soc_min_fraction, 0.0) * cfg.discharge_efficiency / h
        discharge = np.minimum(np.minimum(deficit, self.battery_power_kw), avail_kw)
        grid = np.minimum(deficit - discharge, self.grid_import_max_kw * gf)
        unserved = deficit - discharge - grid
        self.kwh = np.clip(kwh + charge * h * cfg.charge_efficiency - discharge * h / cfg.discharge_efficiency, 0.0, cap)
        tot = self.totals
        tot["solar_kwh"] += solar * h
        tot["grid_kwh"] += grid * h
        tot["unserved_kwh"] += unserved * h
        tot["curtailed_kwh"] += (surplus - charge) * h
        tot["it_kwh"] += it * h
        self.solar_kw = solar
        self.grid_import_kw = grid
        self.unserved_kw = unserved
        self.ambient_c = ambient
        self.pue = pue
        self.step += 1
        self._next_step_s = (self.step + 1) * dt_s

    # -- readings ------------------------------------------------------------

    def reading(self, site: int | str, now: float) -> dict[str, float]:
        """The site's readings at ``now`` (true virtual time): a fresh dict of plain floats.

        Time must not go backwards: readings reflect the last step integrated.
        """
        i = site if type(site) is int else self._site_index(site)
        if now >= self._next_step_s:
            self.advance(now)
        cached = self._cache[i]
        if cached is not None and cached[0] == self.step and cached[1] == self._load_version[i]:
            return cached[2].copy()
        r = self._build_reading(i, now)
        self._cache[i] = (self.step, self._load_version[i], r)
        return r.copy()

    def _build_reading(self, i: int, now: float) -> dict[str, float]:
        cfg = self.config
        cap = float(self.capacity_kwh[i])
        kwh = float(self.kwh[i])
        load = float(self.it_load_kw[i])
        envelope = float(self.it_power_kw[i])
        solar = float(self.solar_kw[i])
        pue = float(self.pue[i])
        ambient = float(self.ambient_c[i])
        batt_ok = kwh > cap * cfg.soc_min_fraction + 1e-9
        supply = solar + (float(self.battery_power_kw[i]) if batt_ok else 0.0)
        supply += float(self.grid_import_max_kw[i] * self.grid_factor[i])
        power_headroom = max(0.0, min(envelope - load, supply / pue - load))
        cooling = envelope * cfg.cooling_capacity_factor * max(0.0, 1.0 - cfg.cooling_derate_per_c * max(0.0, ambient - 25.0))
        thermal_headroom = max(0.0, cooling - load)
        t_mid = self.step * cfg.step_s
        solar_hour = ((self.start_unix + t_mid) / 3600.0 + float(self._lon[i]) / 15.0) % 24.0
        tou = cfg.price_peak_factor if 16.0 <= solar_hour < 21.0 else (cfg.price_midday_factor if 10.0 <= solar_hour < 15.0 else 1.0)
        price = float(self._price_base[i]) * tou
        # carbon: the regional grid gets cleaner as the sun comes up (up to -35% at 1000 W/m2)
        ghi = float(self.ghi_clear[i, min(int(t_mid / cfg.curve_step_s), self.npts - 1)])
        carbon = float(self._carbon_base[i]) * (1.0 - 0.35 * min(ghi, 1000.0) / 1000.0)
        return {
            "solar_kw": round(solar, 3),
            "battery_soc_fraction": round(kwh / cap, 5) if cap > 0 else 0.0,
            "battery_kwh": round(kwh, 3),
            "power_headroom_kw": round(power_headroom, 3),
            "thermal_headroom_kw": round(thermal_headroom, 3),
            "grid_price_per_kwh": round(price, 5),
            "carbon_g_per_kwh": round(carbon, 2),
            "grid_import_kw": round(float(self.grid_import_kw[i]), 3),
            "it_load_kw": round(load, 3),
            "unserved_kw": round(float(self.unserved_kw[i]), 3),
            "ambient_c": round(ambient, 2),
        }

    def sampler(self, site: int | str) -> Callable[[float], dict[str, float]]:
        """A per-site ``sampler(now) -> readings`` for a peer's state core.

        When :attr:`clock` is set (the scenario runner sets it to the
        simulator's true clock), the argument is ignored: a skewed peer clock
        changes what the peer believes the time is, not when the sun shines.
        """
        i = self._site_index(site)

        def sample(now: float) -> dict[str, float]:
            clock = self.clock
            return self.reading(i, clock() if clock is not None else now)

        return sample

    # -- summaries -----------------------------------------------------------

    def region_soc(self, now: float) -> dict[str, float]:
        """Mean battery state of charge per region (capacity-weighted)."""
        self.advance(now)
        out = {}
        for r_i, r in enumerate(self.regions):
            m = self._region_of == r_i
            cap = float(self.capacity_kwh[m].sum())
            out[r] = round(float(self.kwh[m].sum()) / cap, 5) if cap > 0 else 0.0
        return out

    def region_power(self, now: float) -> dict[str, dict[str, float]]:
        """Per region: solar, IT load, grid import and unserved power (kW) in the current step."""
        self.advance(now)
        out = {}
        for r_i, r in enumerate(self.regions):
            m = self._region_of == r_i
            out[r] = {
                "solar_kw": round(float(self.solar_kw[m].sum()), 1),
                "it_load_kw": round(float(self.it_load_kw[m].sum()), 1),
                "grid_import_kw": round(float(self.grid_import_kw[m].sum()), 1),
                "unserved_kw": round(float(self.unserved_kw[m].sum()), 1),
            }
        return out

    def dips(self) -> list[dict[str, Any]]:
        return [
            {"start_s": s, "end_s": e, "sites": int(m.sum()), "solar_factor": sf, "grid_factor": gf, "label": lab}
            for s, e, m, sf, gf, lab in self._dips
        ]

    def statistics(self) -> dict[str, float]:
        out = {k: round(float(v.sum()), 3) for k, v in self.totals.items()}
        out["steps"] = self.step
        out["battery_kwh"] = round(float(self.kwh.sum()), 3)
        return out
