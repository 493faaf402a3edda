"""Authorisation: grants, signed control requests, the replay window, project policies.

All pure: a fixed wall clock, fixed keys; nothing sleeps.
"""

from __future__ import annotations

import logging

import pytest

from arcnet.mesh import wire
from arcnet.mesh.admission import RevocationSet, TrustStore, sign_revocations
from arcnet.mesh.authz import (
    METHODS,
    AuthzError,
    Authorizer,
    Policy,
    PolicyError,
    PolicyStore,
    ReplayWindow,
    capability_for,
    decode_grant,
    decode_policy,
    issue_grant,
    sign_control,
    sign_policy,
    verify_control,
    verify_grant,
)
from arcnet.mesh.control import ControlError, ControlRequest, encode_args
from arcnet.mesh.identity import Identity

NOW = 1_700_000_000.0


def ident(n: int) -> Identity:
    return Identity.from_seed(bytes([0xC0 + n]) * 32)


ROOT, ROGUE, PEER, OTHER_PEER, CLIENT, MALLORY = (ident(i) for i in range(6))
TRUST = TrustStore([ROOT.public_key])


def grant(project="vision", caps=("submit", "read"), client=CLIENT, root=ROOT, nb=NOW - 60, exp=NOW + 86400, serial=None):
    return issue_grant(root, client.peer_id, project=project, caps=caps, not_before_s=int(nb), expires_s=int(exp), serial=serial)


def signed(method="submit", args=None, *, g=None, client=CLIENT, target=PEER, project="", nonce=1, at=NOW):
    g = grant() if g is None else g
    msg = sign_control(client, method, args if args is not None else {"project": "vision"}, target=target.peer_id,
                       grant=g, project=project, nonce=nonce, now_s=at)
    return wire.decode(wire.encode(msg))  # what the peer sees: the bytes on the wire


def verify(msg, *, client=CLIENT, replay=None, now=NOW, revocations=None):
    return verify_control(msg, client=client.peer_id, target=PEER.peer_id, trust=TRUST,
                          replay=replay if replay is not None else ReplayWindow(), now_s=now, revocations=revocations)


def reason_of(fn, *a, **kw) -> str:
    with pytest.raises(AuthzError) as err:
        fn(*a, **kw)
    assert "\n" not in str(err.value)
    return err.value.reason


# --------------------------------------------------------------------------
# grants and signed requests


def test_valid_signed_request_is_accepted():
    client, body = verify(signed())
    assert client == CLIENT.peer_id
    assert body.project == "vision" and body.caps == ["submit", "read"]
    assert decode_grant(wire.encode(grant(serial=5))).body.serial == 5


def test_replayed_nonce_is_refused_within_the_window_and_forgotten_after():
    replay = ReplayWindow(window_s=30)
    msg = signed(nonce=77)
    verify(msg, replay=replay)
    assert reason_of(verify, msg, replay=replay, now=NOW + 5) == "replayed"
    # another client may use the same nonce; this client may use another
    verify(signed(nonce=77, client=MALLORY, g=grant(client=MALLORY)), client=MALLORY, replay=replay)
    verify(signed(nonce=78), replay=replay)
    assert replay.statistics() == {"entries": 3, "clients": 2}
    # once its timestamp is outside the window the replay is refused as stale, and the entry is gone
    assert reason_of(verify, msg, replay=replay, now=NOW + 31) == "stale"
    verify(signed(nonce=79, at=NOW + 31), replay=replay, now=NOW + 31)
    assert replay.statistics()["entries"] == 1


@pytest.mark.parametrize("skew", [-31, 31, -3600, 10**6])
def test_stale_timestamps_are_refused(skew):
    assert reason_of(verify, signed(at=NOW + skew)) == "stale"


def test_replay_store_is_bounded_and_fails_closed():
    replay = ReplayWindow(window_s=30, entries_max=3, client_entries_max=2)
    verify(signed(nonce=1), replay=replay)
    verify(signed(nonce=2), replay=replay)
    assert reason_of(verify, signed(nonce=3), replay=replay) == "replay_full"  # this client's share
    verify(signed(nonce=1, client=MALLORY, g=grant(client=MALLORY)), client=MALLORY, replay=replay)
    assert reason_of(verify, signed(nonce=2, client=MALLORY, g=grant(client=MALLORY)), client=MALLORY,
                     replay=replay) == "replay_full"  # the whole store
    verify(signed(nonce=4, at=NOW + 31), replay=replay, now=NOW + 31)  # old entries expired: room again


def test_wrong_project_and_wrong_capability_are_forbidden():
    assert reason_of(verify, signed(project="medical", args={"project": "medical"})) == "forbidden_project"
    assert reason_of(verify, signed(args={"project": "medical"})) == "forbidden_project"  # args smuggle a project
    assert reason_of(verify, signed("blob.put")) == "forbidden_capability"  # needs publish
    assert reason_of(verify, signed("no.such.method", {})) == "forbidden_capability"  # unknown: admin
    read_only = grant(caps=["read"])
    assert reason_of(verify, signed("submit", g=read_only)) == "forbidden_capability"
    verify(signed("result", {"project": "vision", "job": "j1"}, g=read_only))
    verify(signed("status", {}, g=read_only))  # mesh-scope read: any project's grant
    # mesh-wide admin needs a grant for every project ("*")
    admin = grant(project="vision", caps=["admin"])
    assert reason_of(verify, signed("admission.revocations", {}, g=admin)) == "forbidden_project"
    operator = grant(project="*", caps=["admin", "submit"])
    verify(signed("admission.revocations", {}, g=operator))
    verify(signed("submit", {"project": "medical"}, g=operator, project="medical"))


def test_forged_or_misdirected_requests_are_refused():
    msg = signed()
    msg.method = "cancel"  # altered after signing
    assert reason_of(verify, msg) == "bad_signature"
    assert reason_of(verify, signed(), client=MALLORY) == "bad_signature"  # someone else's connection
    assert reason_of(verify, signed(client=MALLORY), client=MALLORY) == "grant_wrong_client"  # a stolen grant
    assert reason_of(verify, signed(target=OTHER_PEER)) == "wrong_target"
    no_grant = sign_control(CLIENT, "submit", {}, target=PEER.peer_id, grant=None, project="vision", nonce=1, now_s=NOW)
    assert reason_of(verify, no_grant) == "no_grant"


@pytest.mark.parametrize(
    "g,reason",
    [
        (grant(exp=NOW - 1), "grant_expired"),
        (grant(nb=NOW + 3600, exp=NOW + 7200), "grant_not_yet_valid"),
        (grant(root=ROGUE), "grant_unknown_issuer"),
    ],
)
def test_bad_grants(g, reason):
    assert reason_of(verify, signed(g=g)) == reason


def test_revoked_grants_by_serial_or_client():
    rs = RevocationSet()
    rs.merge(sign_revocations(ROOT, version=1, serials=[123]), TRUST)
    assert reason_of(verify, signed(g=grant(serial=123)), revocations=rs) == "grant_revoked"
    verify(signed(g=grant(serial=124)), revocations=rs)
    rs.merge(sign_revocations(ROOT, version=2, peers=[CLIENT.peer_id]), TRUST)
    assert reason_of(verify_grant, grant(serial=124), TRUST, now_s=NOW, revocations=rs) == "grant_revoked"


def test_forged_grant():
    g = grant(caps=["read"])
    g.body.caps = ["read", "admin"]
    assert reason_of(verify, signed(g=g)) == "grant_bad_signature"


def test_method_table():
    assert capability_for("submit") == ("submit", "project")
    assert capability_for("status") == ("read", "mesh")
    assert capability_for("anything.new") == ("admin", "mesh")
    assert {cap for cap, _ in METHODS.values()} == {"submit", "read", "publish", "admin"}


# --------------------------------------------------------------------------
# projects and policies


JOB = {
    "project": "vision",
    "artifacts": [{"cid": "resnet"}, {"cid": "imagenet"}],
    "inputs": [{"cid": "my-photos"}],
    "constraints": {"regions": ["eu-1"]},
    "steps": [],
}


def test_policy_enforces_models_datasets_and_regions():
    pol = Policy("vision", models=frozenset({"resnet"}), datasets=frozenset({"imagenet"}),
                 regions=frozenset({"eu-1", "eu-2"}))
    assert pol.check_submit(JOB) == ["eu-1"]
    assert pol.check_submit({**JOB, "constraints": {"regions": []}}) == ["eu-1", "eu-2"]  # placement must honour
    with pytest.raises(PolicyError) as err:
        pol.check_submit({**JOB, "constraints": {"regions": ["us-1"]}})
    assert err.value.reason == "region_not_allowed" and err.value.code == "forbidden"
    with pytest.raises(PolicyError) as err:
        pol.check_submit({**JOB, "artifacts": [{"cid": "gpt"}]})
    assert err.value.reason == "model_not_allowed"
    with pytest.raises(PolicyError) as err:
        pol.check_submit({**JOB, "artifacts": [{"cid": "resnet"}, {"cid": "leaked"}]})
    assert err.value.reason == "dataset_not_allowed"
    with pytest.raises(PolicyError) as err:
        pol.check_submit({**JOB, "steps": [{"artifacts": [{"cid": "gpt"}]}]})
    assert err.value.reason == "model_not_allowed"
    with pytest.raises(PolicyError) as err:
        pol.check_submit({**JOB, "project": "medical"})
    assert err.value.reason == "forbidden_project"
    pol.check_region("eu-2")
    with pytest.raises(PolicyError, match="may not use region 'us-1'"):
        pol.check_region("us-1")
    assert Policy("open").check_submit({**JOB, "project": "open"}) == ["eu-1"]  # no policy: no restriction


def test_policy_accepts_job_spec_objects():
    from arcnet.placement.messages import ArtifactRef, Constraints, JobSpec

    spec = JobSpec("j1", "batch", "vision", CLIENT.peer_id[:64], "eu-1", [ArtifactRef("resnet", 10)],
                   [ArtifactRef("in", 1)], 1, 1.0, 0.0, 0.0, Constraints(["us-1"], [], "", 0.0), [])
    pol = Policy("vision", models=frozenset({"resnet"}), regions=frozenset({"eu-1"}))
    with pytest.raises(PolicyError) as err:
        pol.check_submit(spec)
    assert err.value.reason == "region_not_allowed"


def test_signed_policies_merge_newest_first(tmp_path):
    store = PolicyStore(TRUST)
    v1 = sign_policy(ROOT, "vision", version=1, regions=["eu-1"])
    v2 = sign_policy(ROOT, "vision", version=2, regions=["eu-1", "eu-2"], private=True)
    assert store.merge(v2) and not store.merge(v1)
    assert store.get("vision").regions == {"eu-1", "eu-2"} and store.get("vision").private
    with pytest.raises(AuthzError):
        store.merge(sign_policy(ROGUE, "vision", version=9))
    (tmp_path / "projects").mkdir()
    store.save(tmp_path / "projects", "vision")
    again = PolicyStore.load_dir(tmp_path / "projects", TRUST)
    assert again.get("vision") == store.get("vision")
    assert decode_policy(wire.encode(v1)).body.version == 1


# --------------------------------------------------------------------------
# the daemon's object


def test_authorizer_counts_logs_and_maps_to_control_errors(caplog, tmp_path):
    caplog.set_level(logging.WARNING, logger="arcnet.authz")
    store = PolicyStore(TRUST)
    store.merge(sign_policy(ROOT, "vision", version=1, regions=["eu-1"]))
    authz = Authorizer(TRUST, RevocationSet(), store, wall_clock=lambda: NOW, log_interval_s=0)
    method, args, nonce, project, g = authz.authorize(signed(nonce=5), client=CLIENT.peer_id, target=PEER.peer_id)
    assert (method, nonce, project, g.client) == ("submit", 5, "vision", CLIENT.peer_id)
    with pytest.raises(ControlError) as err:  # the daemon's existing handler catches ControlError
        authz.authorize(signed(nonce=5), client=CLIENT.peer_id, target=PEER.peer_id)
    assert err.value.code == "refused" and err.value.reason == "replayed"
    with pytest.raises(ControlError) as err:
        authz.authorize(ControlRequest("ping", encode_args({}), 1), client=CLIENT.peer_id, target=PEER.peer_id)
    assert err.value.reason == "unsigned" and err.value.code == "forbidden"
    with pytest.raises(PolicyError):
        authz.check_region("vision", "us-1")
    with pytest.raises(PolicyError):
        authz.check_submit("vision", {**JOB, "constraints": {"regions": ["us-1"]}})
    st = authz.statistics()
    assert st["accepted"] == 1 and st["refused_replayed"] == 1 and st["refused_unsigned"] == 1
    assert st["refused_region_not_allowed"] == 2 and st["projects"] == 1 and st["open_mode"] == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any("(replayed)" in m for m in lines) and any("(region_not_allowed)" in m for m in lines)

    # open mode (no trust roots): plain requests pass, signed ones must still be signed by the connection
    dev = Authorizer.from_data_dir(tmp_path)
    assert dev.open
    assert dev.authorize(ControlRequest("ping", b"", 9), client=CLIENT.peer_id, target=PEER.peer_id)[0] == "ping"
    with pytest.raises(AuthzError):
        dev.authorize(signed(), client=MALLORY.peer_id, target=PEER.peer_id)
