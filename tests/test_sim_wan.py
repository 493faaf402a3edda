"""WAN model: latency from geography, bandwidth, loss/duplication/reordering, cuts, clogs; the site catalog."""

import random

import pytest

from arcnet.sims.geo import Site, build_catalog, great_circle_km
from arcnet.sims.wan import WanConfig, WanNetwork


def city(i, name, lat, lon, gbps=10.0):
    return Site(i, name, name, "XX", lat, lon, "UTC", 1, "R", "dc", 1000.0, 0.0, 0.0, 0.0, 0.0, gbps)


LA = city(0, "la", 34.0522, -118.2437)
NYC = city(1, "nyc", 40.7128, -74.0060)
CHI = city(2, "chi", 41.8781, -87.6298)
EDGE = city(3, "edge", 34.10, -118.30, gbps=1.0)


def net(seed=1, **cfg):
    return WanNetwork(random.Random(seed), {"la": LA, "nyc": NYC, "chi": CHI, "edge": EDGE}, WanConfig(**cfg))


def test_la_to_nyc_one_way_is_20_to_35_ms_and_grows_with_distance():
    n = net()
    assert great_circle_km(LA.latitude, LA.longitude, NYC.latitude, NYC.longitude) == pytest.approx(3936, rel=0.01)
    la_nyc = n.one_way_s("la", "nyc")
    assert 0.020 <= la_nyc <= 0.035
    assert n.one_way_s("chi", "nyc") < la_nyc
    assert n.one_way_s("la", "edge") < 0.002  # same metro area: access links and a few hops
    samples = [n.transmit(0.0, "la", "nyc", 100)[0] for _ in range(2000)]
    assert 0.020 <= min(samples) and max(samples) <= 0.035
    assert max(samples) - min(samples) > 0.0005  # jitter


def test_large_frames_take_serialisation_time_and_queue_on_the_access_link():
    n = net(jitter_fraction=0.0, jitter_s=0.0)
    four_mib = 4 << 20
    base = n.one_way_s("edge", "la")
    t1 = n.transmit(0.0, "edge", "la", four_mib)[0]
    assert t1 - base == pytest.approx(four_mib * 8 / 1e9, rel=1e-6)  # 34 ms at 1 Gbit/s
    t2 = n.transmit(0.0, "edge", "la", four_mib)[0]
    assert t2 - t1 == pytest.approx(four_mib * 8 / 1e9, rel=1e-6)  # waits for the first
    fast = n.transmit(0.0, "la", "nyc", four_mib)[0] - n.one_way_s("la", "nyc")
    assert fast == pytest.approx(four_mib * 8 / 10e9, rel=1e-6)  # 3.4 ms at 10 Gbit/s


def test_loss_duplication_and_reordering_rates():
    n = net(seed=3, loss=0.1, duplicate=0.05, reorder=0.2, reorder_delay_s=0.05)
    outs = [n.transmit(i * 0.001, "la", "chi", 200) for i in range(20000)]
    lost = sum(1 for o in outs if len(o) == 0)
    dup = sum(1 for o in outs if len(o) == 2)
    assert 0.08 < lost / 20000 < 0.12
    assert 0.035 < dup / 20000 < 0.065
    arrivals = [o[0] for o in outs if o]
    overtaken = sum(1 for a, b in zip(arrivals, arrivals[1:]) if b < a)
    assert overtaken > 1000  # held-back frames arrive after later ones
    st = n.statistics()
    assert st["dropped_loss"] == lost and st["duplicated"] == dup and st["reordered"] > 3000


def test_same_seed_same_deliveries():
    a, b, c = net(seed=9, loss=0.01), net(seed=9, loss=0.01), net(seed=10, loss=0.01)
    run = lambda n: [tuple(n.transmit(i * 0.01, "la", "nyc", 500)) for i in range(500)]
    ra, rb, rc = run(a), run(b), run(c)
    assert ra == rb and ra != rc


def test_cuts_partitions_isolation_and_healing():
    n = net()
    ids = n.partition(["la"], ["nyc", "chi"], symmetric=False)
    assert n.transmit(0, "la", "nyc", 10) == () and n.transmit(0, "nyc", "la", 10) != ()
    assert not n.reachable("la", "chi") and n.reachable("chi", "la")
    for i in ids:
        n.heal(i)
    n.heal(ids[0])  # twice is harmless
    assert n.reachable("la", "nyc")
    ids = n.isolate(["chi"])
    assert not n.reachable("chi", "la") and not n.reachable("nyc", "chi") and n.reachable("la", "nyc")
    for i in ids:
        n.heal(i)
    assert n.active_cuts() == [] and n.reachable("chi", "la")


def test_clog_holds_and_throttle_slows():
    n = net(jitter_fraction=0.0, jitter_s=0.0)
    n.clog(["chi"], until=5.0)
    t = n.transmit(1.0, "la", "chi", 100)[0]
    assert t == pytest.approx(5.0 + n.one_way_s("la", "chi"), abs=1e-4)
    assert n.transmit(6.0, "la", "chi", 100)[0] < 6.1
    n.clog_link("la", "nyc", until=9.0)
    assert n.transmit(7.0, "la", "nyc", 100)[0] > 9.0 and n.transmit(7.0, "nyc", "la", 100)[0] < 7.1
    n.throttle(["nyc"], 100.0)
    slow = n.transmit(20.0, "chi", "nyc", 1 << 20)[0] - 20.0
    assert slow > (1 << 20) * 8 / 1e8


def test_catalog_is_a_function_of_the_seed_with_regions_and_site_classes():
    a = build_catalog(3, count=300, hpc=3, edge=30)
    b = build_catalog(3, count=300, hpc=3, edge=30)
    c = build_catalog(4, count=300, hpc=3, edge=30)
    assert a.sites == b.sites and a.sites != c.sites
    assert a.regions == ["West", "Central", "East"]
    assert all(len(a.by_region[r]) > 30 for r in a.regions)
    kinds = [s.kind for s in a.sites]
    assert kinds.count("hpc") == 3 and kinds.count("edge") == 30
    for s in a.sites:
        assert 24 < s.latitude < 50 and -125 < s.longitude < -66  # contiguous US
        if s.kind == "dc":
            assert s.it_power_kw == 1000.0 and 1500 <= s.pv_kwp <= 3000
        elif s.kind == "hpc":
            assert s.it_power_kw >= 5000
        else:
            assert s.it_power_kw <= 100
    hpc_pop = min(s.population for s in a.sites if s.kind == "hpc")
    assert hpc_pop >= sorted((s.population for s in a.sites), reverse=True)[2]
    assert len({s.name for s in a.sites}) == 300
    west = [s.longitude for s in a.by_region["West"]]
    east = [s.longitude for s in a.by_region["East"]]
    assert max(west) < min(east)


def test_catalog_larger_than_the_city_table_and_kmeans_regions():
    big = build_catalog(1, count=5000, regions=5)
    assert len({s.name for s in big.sites}) == 5000
    assert any(s.name.endswith("-2") for s in big.sites)  # a second site in some cities
    assert len(big.regions) == 5 and all(big.by_region[r] for r in big.regions)
    means = [sum(s.longitude for s in big.by_region[r]) / len(big.by_region[r]) for r in big.regions]
    assert means == sorted(means)  # named west to east
