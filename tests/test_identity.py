import os
import stat

import pytest

from arcnet.mesh.identity import (
    Identity,
    IdentityError,
    peer_id_from_public_key,
    public_key_of,
    verify,
    verify_peer,
)


def test_peer_id_matches_libp2p():
    import nacl.signing
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.peer.id import ID

    for i in range(5):
        seed = bytes([i]) * 32
        ours = Identity.from_seed(seed).peer_id
        theirs = ID.from_pubkey(Ed25519PrivateKey(nacl.signing.SigningKey(seed)).get_public_key()).to_base58()
        assert ours == theirs
        assert ours.startswith("12D3KooW") and len(ours) == 52


def test_public_key_round_trip_and_signatures():
    ident = Identity.from_seed(b"\x07" * 32)
    assert public_key_of(ident.peer_id) == ident.public_key
    assert peer_id_from_public_key(ident.public_key) == ident.peer_id
    sig = ident.sign(b"hello")
    assert verify(ident.public_key, b"hello", sig)
    assert verify_peer(ident.peer_id, b"hello", sig)
    assert not verify_peer(ident.peer_id, b"hellp", sig)
    other = Identity.from_seed(b"\x08" * 32)
    assert not verify_peer(other.peer_id, b"hello", sig)
    assert not verify_peer("not-a-peer-id", b"hello", sig)
    assert not verify(ident.public_key, b"hello", sig[:10])


def test_bad_peer_ids():
    for bad in ["", "12D3KooW", "x" * 52, "Qm" + "1" * 50]:
        with pytest.raises(IdentityError):
            public_key_of(bad)


def test_key_file_mode_and_refusal(tmp_path):
    path = tmp_path / "keys" / "peer.key"
    ident = Identity.generate()
    ident.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Identity.load(path).peer_id == ident.peer_id
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        Identity.load(path)
    os.chmod(path, 0o600)
    path.write_text("not hex")
    with pytest.raises(IdentityError, match="not a key file"):
        Identity.load(path)
    with pytest.raises(IdentityError, match="arcnet init"):
        Identity.load(tmp_path / "missing.key")


def test_load_or_create_is_stable(tmp_path):
    a = Identity.load_or_create(tmp_path / "k")
    b = Identity.load_or_create(tmp_path / "k")
    assert a.peer_id == b.peer_id
