"""How artifacts are cut into chunks, how chunks are named, and when they are compressed.

* **Model weights**: fixed 1 MiB pieces. Weights are replaced whole, not
  edited, so content-defined boundaries buy nothing, and fixed pieces let a
  reader seek to chunk ``offset // size`` directly.
* **Datasets and checkpoints**: FastCDC (Xia et al. 2016; the kernel is
  :mod:`arcnet.native.fastcdc`) with min/avg/max 256 KiB / 1 MiB / 3 MiB, so
  an edit, an append or an insert re-chunks only the chunks around it and a
  new version moves only those.
* **Chunk ids**: BLAKE3 of the uncompressed content (~3-6x the speed of
  SHA-256 per core; the ``blake3`` package), so the same bytes have the
  same id however they are stored.
* **Compression**: zstd per chunk, decided once at publish and recorded in
  the manifest (``ChunkRef.codec``): only when it shrinks the chunk by at
  least :data:`COMPRESS_RATIO_MIN` (1.1x). A 64 KiB probe is compressed
  first and a chunk whose probe does not reach the ratio is kept raw, so
  incompressible weights cost ~6% of a full compression.

Every chunk fits one data frame (:data:`~arcnet.blobstore.messages.CHUNK_MAX_BYTES`).
Private projects: the content is encrypted before it is chunked
(:mod:`arcnet.blobstore.crypt`, whose reader fits :meth:`ChunkingSpec.chunks`),
so chunk ids hash ciphertext and compression finds nothing to gain there.
Knowingly left out: dictionaries for zstd.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import blake3
import zstandard

from arcnet.native import fastcdc

from .messages import CHUNK_MAX_BYTES

__all__ = [
    "CODEC_RAW",
    "CODEC_ZSTD",
    "COMPRESS_RATIO_MIN",
    "DATASET_CHUNKING",
    "KINDS",
    "WEIGHTS_CHUNKING",
    "ChunkCodecError",
    "ChunkingSpec",
    "chunk_id",
    "decode_chunk",
    "encode_chunk",
    "guess_kind",
    "spec_for_kind",
]

CODEC_RAW = 0
CODEC_ZSTD = 1
CODECS = (CODEC_RAW, CODEC_ZSTD)
COMPRESS_RATIO_MIN = 1.1  # compress a chunk only if raw/compressed >= this
COMPRESS_LEVEL = 3  # zstd's default: ~300-500 MB/s per core on compressible data
PROBE_BYTES = 64 << 10  # the sample compressed first to skip incompressible chunks cheaply


class ChunkCodecError(ValueError):
    """Stored chunk bytes that do not decode to the declared size."""


def chunk_id(data: Any) -> bytes:
    """The 32-byte BLAKE3 id of a chunk's (uncompressed) content."""
    return blake3.blake3(data).digest()


@dataclass(frozen=True)
class ChunkingSpec:
    """``fixed`` pieces of ``avg_size`` bytes, or ``fastcdc`` with min/avg/max."""

    method: str
    min_size: int
    avg_size: int
    max_size: int

    def __post_init__(self) -> None:
        if self.method not in ("fixed", "fastcdc"):
            raise ValueError(f"unknown chunking method {self.method!r} (fixed or fastcdc)")
        if not 0 < self.max_size <= CHUNK_MAX_BYTES:
            raise ValueError(f"chunks must be 1..{CHUNK_MAX_BYTES} bytes, got max {self.max_size}")
        if self.method == "fixed" and not self.min_size == self.avg_size == self.max_size:
            raise ValueError("fixed chunking has one size")
        if self.method == "fastcdc":
            fastcdc.Params(self.min_size, self.avg_size, self.max_size)  # validates

    @classmethod
    def fixed(cls, size: int) -> "ChunkingSpec":
        return cls("fixed", size, size, size)

    @classmethod
    def cdc(cls, min_size: int, avg_size: int, max_size: int) -> "ChunkingSpec":
        return cls("fastcdc", min_size, avg_size, max_size)

    def text(self) -> str:
        """The form recorded in a manifest: ``fixed:1048576`` or ``fastcdc:262144:1048576:3145728``."""
        if self.method == "fixed":
            return f"fixed:{self.avg_size}"
        return f"fastcdc:{self.min_size}:{self.avg_size}:{self.max_size}"

    @classmethod
    def parse(cls, text: str) -> "ChunkingSpec":
        parts = text.split(":")
        try:
            if parts[0] == "fixed" and len(parts) == 2:
                return cls.fixed(int(parts[1]))
            if parts[0] == "fastcdc" and len(parts) == 4:
                return cls.cdc(int(parts[1]), int(parts[2]), int(parts[3]))
        except ValueError as exc:
            raise ValueError(f"bad chunking {text!r}: {exc}") from None
        raise ValueError(f"bad chunking {text!r} (expected fixed:N or fastcdc:MIN:AVG:MAX)")

    def chunks(self, read: Callable[[int], bytes], read_bytes: int = 8 << 20) -> Iterator[bytes]:
        """The chunks of a stream; ``read(n)`` returns up to n bytes and b"" at the end."""
        if self.method == "fastcdc":
            yield from fastcdc.iter_cuts(read, fastcdc.Params(self.min_size, self.avg_size, self.max_size), read_bytes)
            return
        size = self.avg_size
        want = max(size, read_bytes - read_bytes % size)
        tail = b""
        while True:
            block = read(want)
            if not block:
                break
            buf = tail + bytes(block) if tail else bytes(block)
            mv = memoryview(buf)
            whole = len(buf) - len(buf) % size
            for off in range(0, whole, size):
                yield bytes(mv[off : off + size])
            tail = buf[whole:]
        if tail:
            yield tail


WEIGHTS_CHUNKING = ChunkingSpec.fixed(1 << 20)
DATASET_CHUNKING = ChunkingSpec.cdc(256 << 10, 1 << 20, 3 << 20)
KINDS = {"model": WEIGHTS_CHUNKING, "dataset": DATASET_CHUNKING, "checkpoint": DATASET_CHUNKING}
_MODEL_SUFFIXES = (".onnx", ".safetensors", ".gguf", ".ort", ".tflite", ".engine", ".plan")


def spec_for_kind(kind: str) -> ChunkingSpec:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown artifact kind {kind!r} (one of {', '.join(KINDS)})") from None


def guess_kind(filename: str) -> str:
    """``model`` for weight files (by suffix), else ``dataset``."""
    return "model" if filename.lower().endswith(_MODEL_SUFFIXES) else "dataset"


# -- compression ---------------------------------------------------------------

_local = threading.local()  # zstd (de)compressor objects are not thread-safe


def _cctx() -> zstandard.ZstdCompressor:
    c = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = zstandard.ZstdCompressor(level=COMPRESS_LEVEL, write_content_size=True)
    return c


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def encode_chunk(data: bytes) -> tuple[int, bytes]:
    """``(codec, stored bytes)``: zstd only if it pays (>= 1.1x), else raw."""
    n = len(data)
    if n < 512:
        return CODEC_RAW, data
    cctx = _cctx()
    if n > 2 * PROBE_BYTES:
        probe = cctx.compress(data[:PROBE_BYTES])
        if PROBE_BYTES < COMPRESS_RATIO_MIN * len(probe):
            return CODEC_RAW, data
    packed = cctx.compress(data)
    if n >= COMPRESS_RATIO_MIN * len(packed):
        return CODEC_ZSTD, packed
    return CODEC_RAW, data


def decode_chunk(codec: int, stored: Any, size: int) -> Any:
    """The content of a stored chunk of ``size`` bytes; raises ChunkCodecError.

    Raw chunks come back as given (no copy). The decompressed size is bounded
    by ``size``, so a hostile frame cannot inflate past what the manifest says.
    """
    if codec == CODEC_RAW:
        if len(stored) != size:
            raise ChunkCodecError(f"raw chunk of {len(stored)} bytes, expected {size}")
        return stored
    if codec == CODEC_ZSTD:
        try:
            # the frame header's content size decides the allocation: check it first
            declared = zstandard.frame_content_size(stored)
            if declared > size:
                raise ChunkCodecError(f"zstd chunk declares {declared} bytes, expected {size}")
            out = _dctx().decompress(stored, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise ChunkCodecError(f"zstd chunk does not decode: {exc}") from None
        if len(out) != size:
            raise ChunkCodecError(f"zstd chunk decodes to {len(out)} bytes, expected {size}")
        return out
    raise ChunkCodecError(f"unknown chunk codec {codec}")
