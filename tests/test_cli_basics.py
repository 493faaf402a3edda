"""CLI behaviour that needs no running mesh: init, config errors, unreachable peers."""

import json
import os
import stat
import subprocess
import sys

import pytest

from arcnet.mesh.config import ConfigError, load_config


def run_cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "arcnet.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


def test_init_writes_key_and_loadable_config(tmp_path):
    r = run_cli("init", "--data-dir", str(tmp_path / "d"), "--region", "west", "--lat", "37.7", "--lon", "-122.4",
                "--roles", "site,hpc", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["peer_id"].startswith("12D3KooW")
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "peer.key").st_mode) == 0o600
    cfg = load_config(tmp_path / "d" / "config.toml")
    assert (cfg.region, cfg.latitude, cfg.roles) == ("west", 37.7, ["site", "hpc"])
    again = run_cli("init", "--data-dir", str(tmp_path / "d"))
    assert again.returncode == 2 and "--force" in again.stderr


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[peer]\nregion = 5\n", "peer.region: expected a string, got integer"),
        ("[peer]\nbootstrapp = []\n", "peer.bootstrapp: unknown key"),
        ("[peer]\nlisten = ['0.0.0.0:4001']\n", "peer.listen[0]"),
        ("[peer]\nbootstrap = ['/ip4/1.2.3.4/tcp/1']\n", "must end with /p2p/"),
        ("[peer]\nroles = ['gpu']\n", "unknown role 'gpu'"),
        ("[peer]\nlatitude = 123.0\n", "outside [-90, 90]"),
        ("[peer\n", "not valid TOML"),
        ("[nope]\n", "nope: unknown section"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, text, needle):
    p = tmp_path / "config.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert needle in str(exc.value)
    assert str(p) in str(exc.value)


def test_peer_with_bad_config_exits_2_with_one_line(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("[peer]\nregion = 5\n")
    r = subprocess.run([sys.executable, "-m", "arcnet.cli.peer", "--config", str(p)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "peer.region" in lines[0]
    assert "Traceback" not in r.stderr


def test_unreachable_peer_is_one_line_exit_3(tmp_path):
    from arcnet.mesh.identity import Identity

    pid = Identity.from_seed(b"\x05" * 32).peer_id
    # a port nobody listens on
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run_cli("status", "--peer", f"/ip4/127.0.0.1/tcp/{port}/p2p/{pid}",
                env={"ARCNET_CLIENT_KEY": str(tmp_path / "client.key")})
    assert r.returncode == 3, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach peer"), r.stderr


def test_no_peer_known_is_usage_error(tmp_path):
    r = run_cli("peers", "--data-dir", str(tmp_path / "empty"), env={"ARCNET_PEER": ""})
    assert r.returncode == 2
    assert "no peer to talk to" in r.stderr
