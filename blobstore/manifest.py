"""Signed manifests: what an artifact is, who published it, and its id.

A manifest lists the artifact's chunks in order (BLAKE3 id, size, codec),
its total size and BLAKE3 hash, media type, name, version, project,
chunking, and the publisher's peer id, all in a :class:`ManifestBody`.

* **Canonical bytes** are the msgpack array the wire codec writes for the
  body (field order fixed by the declaration, integers in their shortest
  form). A manifest received from elsewhere is re-encoded before hashing
  or verifying, so a non-canonical encoding cannot change the id.
* **Artifact id** = BLAKE3(``"arcnet/manifest/v1\\0"`` + canonical body).
  It commits to every chunk id, so content fetched by id is verified chunk
  by chunk against a manifest that itself hashes to the id.
* **Signature**: Ed25519 by the publisher (:mod:`arcnet.mesh.identity`) over
  ``"arcnet/manifest-sig/v1\\0"`` + the id; checked against the key embedded
  in the publisher's peer id, so no key directory is needed.

Knowingly left out: multiple signers and revocation (a project key that
authorises publishers belongs to the admission layer).
"""

from __future__ import annotations

from typing import Iterable

import blake3
import msgpack

from arcnet.mesh import identity as _identity
from arcnet.mesh.wire import DEFAULT_CODEC, WireError

from .messages import ChunkRef, Manifest, ManifestBody

__all__ = [
    "ManifestError",
    "build_manifest",
    "decode_manifest",
    "encode_manifest",
    "manifest_id",
    "verify_manifest",
]

FORMAT = 1
_ID_DOMAIN = b"arcnet/manifest/v1\0"
_SIG_DOMAIN = b"arcnet/manifest-sig/v1\0"


class ManifestError(ValueError):
    """A manifest that is malformed, inconsistent or badly signed."""


def body_bytes(body: ManifestBody) -> bytes:
    """Canonical bytes of a manifest body."""
    return msgpack.packb(body._to_fields(), use_bin_type=True)


def manifest_id(m: Manifest | ManifestBody) -> bytes:
    """The 32-byte artifact id."""
    body = m.body if isinstance(m, Manifest) else m
    return blake3.blake3(_ID_DOMAIN + body_bytes(body)).digest()


def build_manifest(
    ident: _identity.Identity,
    *,
    name: str,
    chunks: Iterable[tuple[bytes, int, int]],
    total_size: int,
    total_hash: bytes,
    chunking: str,
    version: str = "",
    project: str = "default",
    media_type: str = "application/octet-stream",
    created_s: int = 0,
    labels: dict[str, str] | None = None,
) -> Manifest:
    """A manifest for ``chunks`` (``(id, size, codec)`` in order), signed by ``ident``."""
    body = ManifestBody(
        FORMAT,
        name,
        version,
        project,
        media_type,
        chunking,
        total_size,
        total_hash,
        [ChunkRef(cid, size, codec) for cid, size, codec in chunks],
        ident.peer_id,
        int(created_s),
        dict(labels or {}),
    )
    try:
        body.validate()
    except WireError as exc:
        raise ManifestError(f"manifest for {name!r}: {exc}") from None
    _check_consistent(body)
    aid = manifest_id(body)
    return Manifest(body, ident.sign(_SIG_DOMAIN + aid))


def _check_consistent(body: ManifestBody) -> None:
    if body.format != FORMAT:
        raise ManifestError(f"manifest format {body.format} is not supported (this peer reads {FORMAT})")
    total = sum(c.size for c in body.chunks)
    if total != body.total_size:
        raise ManifestError(f"manifest chunk sizes add up to {total}, not the declared {body.total_size}")
    if any(c.size == 0 for c in body.chunks):
        raise ManifestError("manifest lists an empty chunk")


def verify_manifest(m: Manifest, expected_id: bytes | None = None) -> bytes:
    """Check a manifest's consistency and signature; its id (raises ManifestError)."""
    _check_consistent(m.body)
    aid = manifest_id(m)
    if expected_id is not None and aid != expected_id:
        raise ManifestError(f"manifest hashes to {aid.hex()[:16]}..., not the requested {expected_id.hex()[:16]}...")
    if not _identity.verify_peer(m.body.publisher, _SIG_DOMAIN + aid, m.signature):
        raise ManifestError(f"manifest {aid.hex()[:16]}...: bad signature by {m.body.publisher}")
    return aid


def encode_manifest(m: Manifest) -> bytes:
    return DEFAULT_CODEC.encode(m)


def decode_manifest(data: bytes, expected_id: bytes | None = None) -> tuple[bytes, Manifest]:
    """Decode and verify stored or received manifest bytes: ``(id, manifest)``."""
    try:
        m = DEFAULT_CODEC.decode(data)
    except WireError as exc:
        raise ManifestError(f"not a manifest: {exc}") from None
    if not isinstance(m, Manifest):
        raise ManifestError(f"not a manifest: a {type(m).__name__} message")
    return verify_manifest(m, expected_id), m
