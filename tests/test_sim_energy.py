"""Energy model: pvlib's clear sky at noon, battery limits, grid import, cheap deterministic samplers."""

import warnings
from datetime import datetime, timedelta, timezone

import pytest

from arcnet.sims.energy import READING_KEYS, EnergyConfig, EnergyModel, clearsky_ghi
from arcnet.sims.geo import Site

CLEAR = EnergyConfig(cloud_cover_fraction=0.0, cloud_variability=0.0)


def site(i=0, lat=39.742, lon=-105.179, pv_kwp=2000.0, battery_kwh=4000.0, grid_kw=1000.0, region="West"):
    # Golden, Colorado (NREL's campus) unless told otherwise
    return Site(i, f"dc-{i:04d}-test", "Golden", "CO", lat, lon, "America/Denver", 20000, region, "dc",
                1000.0, pv_kwp, battery_kwh, min(1000.0, battery_kwh), grid_kw, 10.0)


def pvlib_ghi(lat, lon, when):
    import pandas as pd
    import pvlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loc = pvlib.location.Location(lat, lon, tz="UTC")
        return float(loc.get_clearsky(pd.DatetimeIndex([pd.Timestamp(when)]))["ghi"].iloc[0])


@pytest.mark.parametrize("day", [datetime(2025, 6, 21, tzinfo=timezone.utc), datetime(2025, 12, 21, tzinfo=timezone.utc),
                                 datetime(2024, 3, 20, tzinfo=timezone.utc)])
def test_clear_sky_at_noon_matches_pvlib_within_one_percent(day):
    s = site()
    m = EnergyModel([s], day, 86400, seed=1, config=CLEAR)
    noon = day + timedelta(hours=12 - s.longitude / 15.0)  # local solar noon, near enough
    t = (noon - day).total_seconds()
    ref = pvlib_ghi(s.latitude, s.longitude, noon)
    assert ref > 400
    assert m.clearsky_ghi_at(0, t) == pytest.approx(ref, rel=0.01)
    # and the AC output is that irradiance through the array and its derate
    assert m.solar_kw_at(0, t) == pytest.approx(s.pv_kwp * ref / 1000.0 * CLEAR.derate, rel=0.01)


def test_vectorised_clear_sky_matches_pvlib_over_a_day_for_several_sites():
    import numpy as np

    lats, lons = [34.05, 47.61, 25.76, 44.98], [-118.24, -122.33, -80.19, -93.27]
    start = datetime(2025, 6, 21, tzinfo=timezone.utc)
    unix = start.timestamp() + np.arange(0, 86400, 1800)
    ghi = clearsky_ghi(lats, lons, unix)
    for k, (la, lo) in enumerate(zip(lats, lons)):
        for j in (10, 20, 30, 40):
            ref = pvlib_ghi(la, lo, start + timedelta(seconds=1800 * j))
            assert ghi[k, j] == pytest.approx(ref, abs=0.5)  # the same computation as pvlib, split in two


def test_night_has_no_sun_and_the_battery_carries_the_load_then_the_grid():
    start = datetime(2025, 6, 21, 6, 0, tzinfo=timezone.utc)  # midnight in Colorado
    m = EnergyModel([site(battery_kwh=1000.0, grid_kw=300.0)], start, 86400, seed=2, config=CLEAR)
    m.set_it_load(0, 800.0, 0.0)
    r = m.reading(0, 600.0)
    assert r["solar_kw"] == 0.0 and r["grid_import_kw"] == 0.0  # the battery covers it at first
    soc0 = r["battery_soc_fraction"]
    r = m.reading(0, 3 * 3600.0)
    assert r["battery_soc_fraction"] <= CLEAR.soc_min_fraction + 1e-6 < soc0  # drained to its reserve
    assert r["grid_import_kw"] == pytest.approx(300.0)  # then the grid, up to its connection
    assert r["unserved_kw"] > 0  # and what is left is shed
    assert r["power_headroom_kw"] == 0.0


def test_midday_surplus_charges_up_to_the_limits_with_losses():
    start = datetime(2025, 6, 21, 6, 0, tzinfo=timezone.utc)  # midnight in Colorado
    big = EnergyModel([site(pv_kwp=6000.0, battery_kwh=20000.0)], start, 86400, seed=3, config=CLEAR)
    big.set_it_load(0, 100.0, 0.0)
    kwh_10 = big.reading(0, 10 * 3600.0)["battery_kwh"]
    gained = big.reading(0, 11 * 3600.0)["battery_kwh"] - kwh_10
    # the surplus is ~3 MW, the battery takes at most its 1 MW power limit, minus charging losses
    assert 1000.0 * CLEAR.charge_efficiency * 0.99 <= gained <= 1000.0 * CLEAR.charge_efficiency + 1e-6
    small = EnergyModel([site(pv_kwp=6000.0, battery_kwh=2000.0)], start, 86400, seed=3, config=CLEAR)
    small.set_it_load(0, 100.0, 0.0)
    r = small.reading(0, 14 * 3600.0)
    assert r["battery_soc_fraction"] == pytest.approx(CLEAR.soc_max_fraction, abs=1e-3)  # full, and no fuller
    assert small.statistics()["curtailed_kwh"] > 0


def test_readings_do_not_depend_on_who_sampled_when():
    start = datetime(2025, 6, 21, 12, 0, tzinfo=timezone.utc)
    sites = [site(i, 30 + i, -120 + 8 * i, region=r) for i, r in enumerate(["West", "West", "Central", "East"])]
    a = EnergyModel(sites, start, 6 * 3600, seed=4)
    b = EnergyModel(sites, start, 6 * 3600, seed=4)
    for t in range(0, 6 * 3600, 1):
        a.reading(t % 4, float(t))
        if t == 7200:
            a.set_it_load(2, 900.0, float(t))
            b.set_it_load(2, 900.0, float(t))
    b.reading(0, 6 * 3600.0 - 1)
    for i in range(4):
        assert a.reading(i, 6 * 3600.0 - 1) == b.reading(i, 6 * 3600.0 - 1)
    c = EnergyModel(sites, start, 6 * 3600, seed=5)
    assert c.reading(0, 3 * 3600.0) != a.reading(0, 3 * 3600.0) or c.clearness.tolist() != a.clearness.tolist()


def test_clouds_are_seeded_and_correlated_within_a_region():
    import numpy as np

    start = datetime(2025, 6, 21, tzinfo=timezone.utc)
    sites = [site(i, 35 + 0.01 * i, -100, region="A" if i < 10 else "B") for i in range(20)]
    m = EnergyModel(sites, start, 86400, seed=6, config=EnergyConfig(cloud_cover_fraction=0.3, cloud_variability=0.2))
    k = m.clearness.astype(float)
    assert 0.05 <= k.min() and k.max() <= 1.0 and abs(k.mean() - 0.7) < 0.15
    same = np.corrcoef(k[0], k[1])[0, 1]
    other = np.corrcoef(k[0], k[15])[0, 1]
    assert same > other
    m2 = EnergyModel(sites, start, 86400, seed=6, config=EnergyConfig(cloud_cover_fraction=0.3, cloud_variability=0.2))
    assert (m2.clearness == m.clearness).all()


def test_sampler_returns_every_reading_as_plain_floats_and_uses_the_true_clock():
    start = datetime(2025, 6, 21, 15, 0, tzinfo=timezone.utc)
    m = EnergyModel([site()], start, 3600, seed=7)
    sample = m.sampler(0)
    r = sample(120.0)
    assert set(READING_KEYS) <= set(r) and all(type(v) is float for v in r.values())
    r["solar_kw"] = -1.0  # a copy: callers may keep or change it
    assert sample(120.0)["solar_kw"] >= 0.0
    true_now = [600.0]
    m.clock = lambda: true_now[0]
    assert sample(99999.0) == m.reading(0, 600.0)  # a skewed peer clock does not move the sun
