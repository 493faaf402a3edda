"""Wire messages of the blob store: manifests, chunk have/request/data, bulk tickets.

Declared with :mod:`arcnet.mesh.wire` (strict, bounded decoding). Tags
0x0600-0x06FF belong to the blob store.

* ``ChunkHave`` -- a holder's bitmap of the chunks of one artifact it holds
  (bit ``i`` of byte ``i // 8``, least significant bit first); sent when
  asked and as it gains chunks, so partial holders serve what they have.
* ``ChunkRequest`` / ``ChunkData`` / ``ChunkMissing`` / ``ChunkCancel`` -- one
  chunk per request; ``ChunkData`` travels on the data channel (frames up to
  4 MiB), so a chunk is at most :data:`CHUNK_MAX_BYTES` stored bytes.
* ``ManifestRequest`` / ``ManifestData`` -- fetch a signed manifest by id.
* ``BulkOpen`` / ``BulkTicket`` / ``BulkRefused`` -- negotiate the bulk data
  channel (plain TCP, see :mod:`arcnet.blobstore.bulk`) over the
  authenticated control path.

The manifest itself is a message (``Manifest``) so that its canonical bytes
are the codec's bytes: :mod:`arcnet.blobstore.manifest` hashes and signs them.

Limits: at most :data:`MANIFEST_CHUNKS_MAX` chunks per artifact (65,536: with
1 MiB chunks a 64 GiB artifact; the manifest then takes ~2.7 MB, inside the
4 MiB data frame).
"""

from __future__ import annotations

from arcnet.mesh.wire import (
    BYTES32,
    PEER_ID,
    SIG,
    U8,
    U16,
    U32,
    U64,
    Bytes,
    Enum,
    List,
    Map,
    Message,
    Str,
)

__all__ = [
    "BLOB_PROTOCOL",
    "CHUNK_MAX_BYTES",
    "MANIFEST_CHUNKS_MAX",
    "BulkOpen",
    "BulkRefused",
    "BulkTicket",
    "ChunkCancel",
    "ChunkData",
    "ChunkHave",
    "ChunkMissing",
    "ChunkRef",
    "ChunkRequest",
    "Manifest",
    "ManifestBody",
    "ManifestData",
    "ManifestRequest",
]

BLOB_PROTOCOL = "blob"
CHUNK_MAX_BYTES = (4 << 20) - (64 << 10)  # a chunk plus its framing fits one 4 MiB data frame
MANIFEST_CHUNKS_MAX = 1 << 16
BITMAP_MAX_BYTES = MANIFEST_CHUNKS_MAX // 8

ARTIFACT_ID = BYTES32
CHUNK_ID = BYTES32


# -- manifests ---------------------------------------------------------------


class ChunkRef(Message):
    """One chunk of an artifact: BLAKE3 of its content, its size, how it is stored.

    ``codec`` 0 = raw, 1 = zstd: decided once at publish (zstd only when it
    shrinks the chunk by >= 1.1x), so every holder stores and sends the same
    form. The id is always the hash of the uncompressed content.
    """

    id = CHUNK_ID
    size = U32
    codec = U8


class ManifestBody(Message):
    """What the publisher signs; its canonical bytes give the artifact id."""

    format = U8  # 1
    name = Str(256, 1)
    version = Str(64)
    project = Str(128, 1)
    media_type = Str(128)
    chunking = Str(64)  # "fixed:<size>" or "fastcdc:<min>:<avg>:<max>"
    total_size = U64
    total_hash = BYTES32  # BLAKE3 of the whole content
    chunks = List(ChunkRef, MANIFEST_CHUNKS_MAX)
    publisher = PEER_ID
    created_s = U64  # publisher's wall clock, seconds since the epoch (informative)
    labels = Map(Str(64, 1), Str(1024), 32)


class Manifest(Message, tag=0x0610, protocol=BLOB_PROTOCOL, channel="data"):
    body = ManifestBody
    signature = SIG  # Ed25519 by the publisher over a domain tag + the body's bytes


# -- chunk exchange ----------------------------------------------------------


class ChunkHave(Message, tag=0x0600, protocol=BLOB_PROTOCOL):
    artifact = ARTIFACT_ID
    chunk_count = U32
    bitmap = Bytes(BITMAP_MAX_BYTES)  # bit i set: chunk i is held


class ChunkRequest(Message, tag=0x0601, protocol=BLOB_PROTOCOL):
    artifact = ARTIFACT_ID
    index = U32
    chunk_id = CHUNK_ID


class ChunkData(Message, tag=0x0602, protocol=BLOB_PROTOCOL, channel="data"):
    artifact = ARTIFACT_ID
    index = U32
    chunk_id = CHUNK_ID
    codec = U8
    data = Bytes(CHUNK_MAX_BYTES)  # the stored form (see ChunkRef.codec)


class ChunkMissing(Message, tag=0x0603, protocol=BLOB_PROTOCOL):
    artifact = ARTIFACT_ID
    index = U32
    reason = Enum("not_have", "busy", "error")


class ChunkCancel(Message, tag=0x0604, protocol=BLOB_PROTOCOL):
    artifact = ARTIFACT_ID
    index = U32


class ManifestRequest(Message, tag=0x0605, protocol=BLOB_PROTOCOL):
    artifact = ARTIFACT_ID


class ManifestData(Message, tag=0x0606, protocol=BLOB_PROTOCOL, channel="data"):
    """A signed manifest, as :class:`Manifest` holds it; the receiver checks id and signature."""

    artifact = ARTIFACT_ID
    body = ManifestBody
    signature = SIG


# -- bulk channel negotiation ------------------------------------------------


class BulkOpen(Message, tag=0x0607, protocol=BLOB_PROTOCOL):
    """Ask a holder for a one-time ticket to fetch ``artifact`` over its bulk port."""

    artifact = ARTIFACT_ID


class BulkTicket(Message, tag=0x0608, protocol=BLOB_PROTOCOL):
    artifact = ARTIFACT_ID
    token = BYTES32  # random, single use, bound to (requesting peer, artifact, expiry)
    port = U16
    expires_in_ms = U32


class BulkRefused(Message, tag=0x0609, protocol=BLOB_PROTOCOL):
    artifact = ARTIFACT_ID
    reason = Enum("not_have", "busy", "disabled")

