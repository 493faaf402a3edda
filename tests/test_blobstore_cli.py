"""``arcnet blob --local-dir``: put, ls, stat, get on a data directory's store, no peer.

The same commands against a running peer are tested in ``test_blob_service.py``.
"""

from __future__ import annotations

import json
import random

from click.testing import CliRunner

from arcnet.cli.main import cli
from arcnet.mesh.identity import Identity


def test_put_ls_stat_get_round_trip(tmp_path):
    data_dir = tmp_path / "peer"
    Identity.from_seed(b"\x05" * 32).save(data_dir / "peer.key")
    src = tmp_path / "weights.onnx"
    payload = random.Random(1).randbytes(9 << 20)  # large enough for the progress bar path
    src.write_bytes(payload)
    runner = CliRunner()
    dd = ["--local-dir", str(data_dir)]

    res = runner.invoke(cli, ["blob", "put", str(src), "--project", "vision", "--policy", "hot", "--json", *dd])
    assert res.exit_code == 0, res.output
    put = json.loads(res.output)
    assert put["chunks"] == 9 and put["policy"] == "hot" and put["pins"] == ["publish"]
    assert put["chunking"] == "fixed:1048576"

    res = runner.invoke(cli, ["blob", "ls", "--json", *dd])
    assert [a["id"] for a in json.loads(res.output)] == [put["id"]]
    res = runner.invoke(cli, ["blob", "ls", *dd])
    assert res.exit_code == 0 and "9/9" in res.output and "publish" in res.output

    res = runner.invoke(cli, ["blob", "stat", put["id"][:12], "--json", *dd])
    st = json.loads(res.output)
    assert st["complete"] and st["holders"][0]["peer"] == Identity.from_seed(b"\x05" * 32).peer_id

    out = tmp_path / "out.onnx"
    res = runner.invoke(cli, ["blob", "get", put["id"][:12], "-o", str(out), *dd])
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == payload


def test_clear_errors(tmp_path):
    data_dir = tmp_path / "peer"
    runner = CliRunner()
    src = tmp_path / "d.csv"
    src.write_text("a,b\n1,2\n")
    res = runner.invoke(cli, ["blob", "put", str(src), "--local-dir", str(data_dir)])
    assert res.exit_code == 2 and "arcnet init" in res.output  # no key yet
    Identity.from_seed(b"\x06" * 32).save(data_dir / "peer.key")
    res = runner.invoke(cli, ["blob", "get", "deadbeefdeadbeef", "--local-dir", str(data_dir)])
    assert res.exit_code == 1 and "no artifact id starts with" in res.output
    res = runner.invoke(cli, ["blob", "stat", "xyz", "--local-dir", str(data_dir)])
    assert res.exit_code == 2 and "not an artifact id" in res.output
