"""Telemetry samplers (mesh/samplers.py): files and commands, cached; bad input kept out."""

from __future__ import annotations

import json
import sys

import pytest

from arcnet.mesh.samplers import CommandSampler, FileSampler, SamplerError, StaticSampler, parse_readings


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_parse_json_toml_and_key_value():
    assert parse_readings('{"solar_kw": 12.5, "draining": false, "artifacts": ["a", "b"]}') == {"solar_kw": 12.5, "draining": False, "artifacts": ["a", "b"]}
    assert parse_readings("[energy]\nsolar_kw = 3.0\nbattery_soc_fraction = 0.5\n[health]\nqueue_length = 4\n") == {
        "solar_kw": 3.0,
        "battery_soc_fraction": 0.5,
        "queue_length": 4,
    }
    assert parse_readings("# from a script\nsolar_kw=7\nroles=site,hpc\ndraining=no\n") == {"solar_kw": 7, "roles": ["site", "hpc"], "draining": False}
    for bad in ("{", "[x\n", "just words", '{"a": {"b": {"c": 1}}}', '{"x": NaN}', "[1, 2]"):
        with pytest.raises(SamplerError):
            parse_readings(bad)


def test_file_sampler_caches_keeps_last_good_and_goes_stale(tmp_path):
    clock = Clock()
    logs: list[str] = []
    path = tmp_path / "readings.json"
    path.write_text(json.dumps({"solar_kw": 50.0, "battery_soc_fraction": 0.7}))
    s = FileSampler(path, clock=clock, log=logs.append, stale_after_s=60.0, defaults={"health_score": 1.0})
    assert s.due() and s(0.0) == {"health_score": 1.0}
    assert s.refresh() and not s.due()
    assert s(1.0) == {"health_score": 1.0, "solar_kw": 50.0, "battery_soc_fraction": 0.7}
    path.write_text("{broken")
    clock.t += 10
    assert not s.refresh() and s.statistics()["errors"] == 1
    assert s(2.0)["solar_kw"] == 50.0, "a malformed file keeps the last good readings"
    path.unlink()
    assert not s.refresh() and len(logs) == 2
    clock.t += 100
    assert "solar_kw" not in s(3.0), "stale readings are dropped"
    toml = tmp_path / "r.toml"
    toml.write_text('gpu_model = "H100"\ngpu_count = 8\n')
    assert FileSampler(toml, clock=clock).refresh()


def test_command_sampler_runs_prints_and_times_out():
    clock = Clock()
    ok = CommandSampler([sys.executable, "-c", "print('solar_kw=12.5'); print('queue_length=3')"], clock=clock)
    assert ok.refresh() and ok(0.0) == {"solar_kw": 12.5, "queue_length": 3}
    fail = CommandSampler([sys.executable, "-c", "import sys; sys.exit(3)"], clock=clock)
    assert not fail.refresh() and "exited 3" in fail.last_error
    slow = CommandSampler([sys.executable, "-c", "import time; time.sleep(5)"], timeout_s=0.3, clock=clock)
    assert not slow.refresh() and "took over" in slow.last_error
    missing = CommandSampler(["/nonexistent/sampler-binary"], clock=clock)
    assert not missing.refresh() and missing.statistics()["errors"] == 1


def test_static_sampler():
    s = StaticSampler({"gpu_count": 4})
    assert s(0.0) == {"gpu_count": 4} and s(0.0) is not s(0.0)
