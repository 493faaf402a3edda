"""``arcnet ca``: the files it writes are the ones the gate and the authoriser accept."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from arcnet.cli.ca import parse_duration
from arcnet.cli.client import CliError
from arcnet.cli.main import cli
from arcnet.mesh.admission import AdmissionGate, RevocationSet, TrustStore, decode_certificate, verify_certificate
from arcnet.mesh.authz import PolicyStore, decode_grant, decode_policy, verify_grant
from arcnet.mesh.identity import Identity

PEER = Identity.from_seed(b"\x71" * 32)
CLIENT = Identity.from_seed(b"\x72" * 32)


def run(*args: str, ok: bool = True):
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def test_ca_end_to_end(tmp_path):
    key = tmp_path / "ca" / "root.key"
    out = json.loads(run("ca", "init", "--key", str(key), "--json").output)
    assert (key.stat().st_mode & 0o777) == 0o600
    pub = tmp_path / "ca" / "root.pub"
    assert out["public_key"] in pub.read_text() and len(out["key_id"]) == 16
    assert run("ca", "init", "--key", str(key), ok=False).exit_code == 2  # never overwritten silently

    # a peer's data dir: trust root, certificate (issued from its public key in hex)
    dd = tmp_path / "peer"
    (dd / "trust").mkdir(parents=True)
    (dd / "trust" / "root.pub").write_text(pub.read_text())
    run("ca", "issue", PEER.public_key.hex(), "--region", "eu-1", "--roles", "site,hpc", "--expires", "90d",
        "-o", str(dd / "peer.cert"), "--key", str(key))
    trust = TrustStore.load_dir(dd / "trust")
    cert = decode_certificate((dd / "peer.cert").read_bytes())
    body = verify_certificate(cert, trust, now_s=time.time(), peer_id=PEER.peer_id)
    assert body.roles == ["site", "hpc"] and 89 * 86400 < body.expires_s - time.time() <= 90 * 86400
    gate = AdmissionGate.from_data_dir(dd, PEER)
    assert not gate.open

    # revocations accumulate, version by version
    rev = dd / "revocations.bin"
    run("ca", "revoke", CLIENT.peer_id, "--list", str(rev), "--key", str(key))
    out = json.loads(run("ca", "revoke", "--serial", "99", "--list", str(rev), "--key", str(key), "--json").output)
    assert out["version"] == 2 and out["peers"] == [CLIENT.peer_id] and out["serials"] == [99]
    rs = RevocationSet.load(rev, trust)
    assert rs.is_revoked(peer_id=CLIENT.peer_id) and rs.is_revoked(serial=99)

    # a grant and a policy
    run("ca", "grant", CLIENT.peer_id, "--project", "vision", "--caps", "submit,read,publish", "--expires", "30d",
        "-o", str(tmp_path / "c.grant"), "--key", str(key))
    g = verify_grant(decode_grant((tmp_path / "c.grant").read_bytes()), trust, now_s=time.time(), client=CLIENT.peer_id)
    assert g.project == "vision" and g.caps == ["submit", "read", "publish"]
    (dd / "projects").mkdir()
    run("ca", "policy", "vision", "--regions", "eu-1,eu-2", "--models", "resnet", "--private",
        "-o", str(dd / "projects" / "vision.policy"), "--key", str(key))
    pol = PolicyStore.load_dir(dd / "projects", trust).get("vision")
    assert pol.regions == {"eu-1", "eu-2"} and pol.models == {"resnet"} and pol.private
    assert decode_policy((dd / "projects" / "vision.policy").read_bytes()).body.project == "vision"

    shown = json.loads(run("ca", "show", str(tmp_path / "c.grant")).output)
    assert shown["type"] == "Grant" and shown["body"]["client"] == CLIENT.peer_id


def test_ca_errors_are_one_line_with_usage_exit_code(tmp_path):
    key = tmp_path / "root.key"
    run("ca", "init", "--key", str(key))
    for args in (
        ["ca", "issue", "not-a-key", "--region", "r", "-o", str(tmp_path / "x"), "--key", str(key)],
        ["ca", "issue", PEER.peer_id, "--region", "r", "--roles", "king", "-o", str(tmp_path / "x"), "--key", str(key)],
        ["ca", "grant", PEER.peer_id, "--project", "p", "--caps", "root", "-o", str(tmp_path / "x"), "--key", str(key)],
        ["ca", "grant", PEER.peer_id, "--project", "p", "--expires", "soon", "-o", str(tmp_path / "x"), "--key", str(key)],
        ["ca", "issue", PEER.peer_id, "--region", "r", "-o", str(tmp_path / "x"), "--key", str(tmp_path / "missing.key")],
        ["ca", "revoke", "--key", str(key)],
    ):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.output.startswith("error: ") and res.output.count("\n") == 1, res.output


def test_parse_duration():
    assert parse_duration("90d") == 90 * 86400
    assert parse_duration("12h") == 43200 and parse_duration("45") == 45 and parse_duration("2w") == 14 * 86400
    for bad in ("", "0d", "-1d", "3x", "d"):
        with pytest.raises(CliError):
            parse_duration(bad)


def test_a_private_key_file_is_never_taken_for_a_public_key(tmp_path):
    key = tmp_path / "root.key"
    run("ca", "init", "--key", str(key))
    peer_key = tmp_path / "peer.key"
    PEER.save(peer_key)
    res = CliRunner().invoke(cli, ["ca", "issue", str(peer_key), "--region", "r", "-o", str(tmp_path / "x"), "--key", str(key)])
    assert res.exit_code == 2 and "private key file" in res.output
    assert not (tmp_path / "x").exists()
    # the .pub file written by `ca init` is fine (here: issuing for the root's own key, as a file)
    run("ca", "issue", str(tmp_path / "root.pub"), "--region", "r", "-o", str(tmp_path / "y"), "--key", str(key))
