"""Tiled regions: any number of near-equal geographic regions, and `region_size` in scenarios."""

import random

import pytest

from arcnet.sims.geo import SiteSpec, build_catalog, tile_labels
from arcnet.sims.scenario import ScenarioError, parse_scenario


def _sizes(cat):
    return [len(cat.by_region[r]) for r in cat.regions]


@pytest.mark.parametrize("count,regions,ratio", [(1000, 20, 1.25), (3000, 60, 1.25), (500, 13, 1.6), (400, 100, 2.0)])
def test_tiles_give_the_requested_regions_of_near_equal_size(count, regions, ratio):
    cat = build_catalog(3, count=count, regions=regions, region_method="tiles")
    assert len(cat.regions) == regions
    assert cat.regions[0] == "T001" and cat.regions[-1] == f"T{regions:03d}"
    assert all(s.region in cat.by_region for s in cat.sites)
    sizes = _sizes(cat)
    assert sum(sizes) == count and min(sizes) >= 1
    assert max(sizes) / min(sizes) <= ratio


def test_auto_picks_tiles_above_twelve_and_keeps_the_old_methods_below():
    assert build_catalog(1, count=300, regions=3).regions == ["West", "Central", "East"]
    assert build_catalog(1, count=300, regions=5).regions == ["Pacific", "Mountain", "Central", "Southeast", "Northeast"]
    assert build_catalog(1, count=300, regions=12).regions[0] == "R1"
    cat = build_catalog(1, count=300, regions=13)
    assert cat.regions == [f"T{i:03d}" for i in range(1, 14)] and min(_sizes(cat)) >= 1


def test_tiles_run_west_to_east_and_are_deterministic():
    a = build_catalog(7, count=800, regions=16, region_method="tiles")
    b = build_catalog(7, count=800, regions=16, region_method="tiles")
    assert [s.region for s in a.sites] == [s.region for s in b.sites]
    c = build_catalog(8, count=800, regions=16, region_method="tiles")
    assert [s.region for s in a.sites] != [s.region for s in c.sites]
    # 4 strips of 4: mean longitude rises strip by strip
    means = [sum(s.longitude for s in a.by_region[r]) / len(a.by_region[r]) for r in a.regions]
    strips = [sum(means[i : i + 4]) / 4 for i in range(0, 16, 4)]
    assert strips == sorted(strips)


def test_a_thousand_regions_and_wide_names():
    cat = build_catalog(2, count=5000, regions=1000)
    assert len(cat.regions) == 1000 and cat.regions[0] == "T0001" and cat.regions[-1] == "T1000"
    assert min(_sizes(cat)) >= 3 and max(_sizes(cat)) <= 7


def test_tile_labels_edge_cases():
    rng = random.Random(1)
    pts = [(rng.uniform(25, 49), rng.uniform(-124, -67)) for _ in range(37)]
    for k in range(1, 38):
        labels = tile_labels(pts, k)
        assert sorted(set(labels)) == list(range(k))
    assert tile_labels(pts, 100) == tile_labels(pts, 37)  # at most one region per point
    assert tile_labels([], 5) == []


def test_spec_limits():
    SiteSpec(count=2000, regions=1000, region_method="tiles")
    with pytest.raises(ValueError, match="regions must be in 1..1000"):
        SiteSpec(count=2000, regions=1001)
    with pytest.raises(ValueError, match="regions must be in 1..12 with region_method 'kmeans'"):
        SiteSpec(count=2000, regions=13, region_method="kmeans")
    with pytest.raises(ValueError, match=r"regions \(20\) must be at most count \(10\)"):
        SiteSpec(count=10, regions=20)


def _scenario(sites):
    return parse_scenario({"duration": 60, "sites": sites, "peer": {"factory": "toy"}})


def test_region_size_in_a_scenario():
    sc = _scenario({"count": 1000, "region_size": 50})
    assert sc.sites.regions == 20 and sc.sites.region_method == "tiles"
    assert _scenario({"count": 10000, "region_size": 50}).sites.regions == 200
    assert _scenario({"count": 30, "region_size": 50}).sites.regions == 1
    assert _scenario({"count": 200, "regions": 40, "region_method": "tiles"}).sites.regions == 40
    sc = _scenario({"count": 200, "regions": 150})
    assert sc.sites.regions == 150 and sc.sites.region_method == "auto"


@pytest.mark.parametrize(
    "sites,message",
    [
        ({"count": 100, "region_size": 0}, "sites.region_size: 0 is outside 1..100000"),
        ({"count": 100, "region_size": "big"}, "sites.region_size: expected an integer"),
        ({"count": 5000, "regions": 1001}, "sites.regions: 1001 is outside 1..1000"),
        ({"count": 100, "regions": 13, "region_method": "kmeans"}, "sites.regions: 13 is outside 1..12"),
        ({"count": 10, "regions": 20}, "sites.regions: 20 is more than count (10)"),
        ({"count": 100, "regions": 4, "region_size": 25}, "sites.region_size: give either regions or region_size"),
        ({"count": 100, "region_size": 25, "region_method": "kmeans"}, "sites.region_size: needs region_method 'tiles'"),
        ({"count": 100000, "region_size": 50}, "sites.region_size: 50 makes 2000 regions"),
        ({"count": 100, "region_method": "tile"}, "sites.region_method: 'tile' is not one of"),
    ],
)
def test_bad_region_values_give_one_line_naming_the_key(sites, message):
    with pytest.raises(ScenarioError) as err:
        _scenario(sites)
    text = str(err.value)
    assert message in text and "\n" not in text
