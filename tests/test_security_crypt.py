"""Encryption at rest: round trips, content addressing of ciphertext, tampering, key wrapping."""

from __future__ import annotations

import io
import os
import random

import pytest

from arcnet.blobstore.crypt import (
    HEADER_BYTES,
    CryptError,
    Decryptor,
    ProjectKey,
    WrappedKey,
    ciphertext_size,
    decrypt,
    encrypt,
    encrypting_reader,
    parse_header,
    unwrap_key,
    wrap_key,
)
from arcnet.mesh import wire
from arcnet.mesh.identity import Identity

KEY = ProjectKey(b"\x11" * 32)
OTHER_KEY = ProjectKey(b"\x22" * 32)
SEG = 1024


@pytest.mark.parametrize("n", [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 3 * SEG + 17])
def test_round_trip_at_segment_edges(n):
    data = random.Random(n).randbytes(n)
    blob = encrypt(KEY, data, "vision", segment_bytes=SEG)
    assert len(blob) == ciphertext_size(n, SEG)
    assert parse_header(blob) == (KEY.key_id, SEG)
    assert decrypt(KEY, blob, "vision") == data
    if n >= 16:
        assert data[:16] not in blob  # it is encrypted


def test_same_content_same_ciphertext_so_chunk_ids_are_stable():
    data = os.urandom(5000)
    a = encrypt(KEY, data, "vision", segment_bytes=SEG)
    assert encrypt(KEY, data, "vision", segment_bytes=SEG) == a  # idempotent publish, dedup
    assert encrypt(KEY, data, "medical", segment_bytes=SEG) != a  # project is bound in
    assert encrypt(OTHER_KEY, data, "vision", segment_bytes=SEG) != a
    changed = bytearray(data)
    changed[-1] ^= 1
    b = encrypt(KEY, bytes(changed), "vision", segment_bytes=SEG)
    # only the changed segment's ciphertext changes (nonce is synthetic per segment)
    seg_ct = 24 + SEG + 16
    assert a[:HEADER_BYTES + 4 * seg_ct] == b[:HEADER_BYTES + 4 * seg_ct]
    assert a[HEADER_BYTES + 4 * seg_ct:] != b[HEADER_BYTES + 4 * seg_ct:]


def test_encrypted_before_chunking_streams_through_the_chunker():
    from arcnet.blobstore.chunking import ChunkingSpec

    data = random.Random(1).randbytes(300_000)
    reader = encrypting_reader(KEY, "vision", io.BytesIO(data).read, segment_bytes=64 * 1024)
    chunks = list(ChunkingSpec.fixed(50_000).chunks(reader))
    blob = b"".join(bytes(c) for c in chunks)
    assert blob == encrypt(KEY, data, "vision", segment_bytes=64 * 1024)
    d = Decryptor(KEY, "vision")
    out = b"".join(d.feed(bytes(c)) for c in chunks) + d.close()
    assert out == data


def test_wrong_key_wrong_project_tampering_truncation_and_reordering_are_caught():
    data = random.Random(2).randbytes(3 * SEG + 5)
    blob = encrypt(KEY, data, "vision", segment_bytes=SEG)
    with pytest.raises(CryptError, match="project key"):
        decrypt(OTHER_KEY, blob, "vision")
    with pytest.raises(CryptError):
        decrypt(KEY, blob, "medical")
    for i in (HEADER_BYTES + 3, HEADER_BYTES + 30, len(blob) - 1):
        bad = bytearray(blob)
        bad[i] ^= 0x40
        with pytest.raises(CryptError):
            decrypt(KEY, bytes(bad), "vision")
    seg_ct = 24 + SEG + 16
    with pytest.raises(CryptError):  # cut at a segment boundary: the new last segment is not flagged last
        decrypt(KEY, blob[: HEADER_BYTES + 2 * seg_ct], "vision")
    with pytest.raises(CryptError):  # cut inside a segment
        decrypt(KEY, blob[:-3], "vision")
    s = [blob[HEADER_BYTES + i * seg_ct: HEADER_BYTES + (i + 1) * seg_ct] for i in range(3)]
    swapped = blob[:HEADER_BYTES] + s[1] + s[0] + s[2] + blob[HEADER_BYTES + 3 * seg_ct:]
    with pytest.raises(CryptError):
        decrypt(KEY, swapped, "vision")
    for junk in (b"", b"ARCE", b"XXXX" + bytes(20), b"ARCE\x02" + bytes(12), b"ARCE\x01" + bytes(8) + b"\0\0\0\0"):
        with pytest.raises(CryptError):
            decrypt(KEY, junk, "vision")
    d = Decryptor(KEY, "vision")
    d.feed(blob)
    d.close()
    with pytest.raises(CryptError, match="after the last segment"):
        d.feed(b"x")


def test_a_peer_holding_several_keys_picks_by_key_id():
    blob = encrypt(OTHER_KEY, b"old artifact", "vision", segment_bytes=SEG)
    keys = {OTHER_KEY.key_id: OTHER_KEY}
    d = Decryptor(KEY, "vision", key_lookup=keys.get)
    assert d.feed(blob) + d.close() == b"old artifact"


def test_key_wrapping_to_a_peer_identity():
    peer, other = Identity.from_seed(b"\x31" * 32), Identity.from_seed(b"\x32" * 32)
    w = wrap_key(KEY, peer.peer_id, "vision")
    w = wire.decode(wire.encode(w))  # it travels as a wire message
    assert isinstance(w, WrappedKey) and w.key_id == KEY.key_id
    assert unwrap_key(w, peer).secret == KEY.secret
    assert wrap_key(KEY, peer.public_key, "vision").recipient == peer.peer_id
    assert wrap_key(KEY, peer.peer_id, "vision").sealed != w.sealed  # sealed boxes are randomised
    with pytest.raises(CryptError, match="wrapped for"):
        unwrap_key(w, other)
    stolen = WrappedKey(w.project, w.key_id, other.peer_id, w.sealed)  # relabelled for another peer
    with pytest.raises(CryptError, match="does not open"):
        unwrap_key(stolen, other)
    relabelled = WrappedKey("medical", w.key_id, w.recipient, w.sealed)  # presented as another project's key
    with pytest.raises(CryptError, match="not a key of project"):
        unwrap_key(relabelled, peer)
    bad_id = WrappedKey(w.project, b"\0" * 8, w.recipient, w.sealed)
    with pytest.raises(CryptError, match="key id"):
        unwrap_key(bad_id, peer)


def test_project_key_files(tmp_path):
    path = tmp_path / "vision.key"
    KEY.save(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert ProjectKey.load(path).secret == KEY.secret
    assert "11" * 8 not in repr(KEY)  # the secret never prints
    path.chmod(0o644)
    with pytest.raises(CryptError, match="chmod 600"):
        ProjectKey.load(path)
    with pytest.raises(CryptError):
        ProjectKey(b"short")
