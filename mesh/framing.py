"""Length-prefixed frames: a u32 big-endian length, then that many bytes.

The transport moves opaque frames over byte streams that may end at any
point: a yamux stream that the remote resets reads as a clean end of stream
(py-libp2p 0.8.1 reports ``StreamEOF``, not ``StreamReset``). A length prefix
makes the difference visible: a stream that ends between frames ended; one
that ends inside a frame was cut, and :meth:`FrameDecoder.close` says so.

:class:`FrameDecoder` does no I/O, in the manner of h11: the caller reads
bytes from wherever it likes, feeds them in, and takes whole frames out. The
length is checked against the limit as soon as its four bytes arrive, before
any of the body is buffered, so an oversized frame costs the receiver at most
one read's worth of memory. Zero-length frames are allowed (an empty payload
is a valid opaque frame).

Knowingly left out: varint lengths (libp2p's own request/response uses them;
a fixed four bytes is simpler to bound and to read) and any checksum (Noise
already authenticates every byte).
"""

from __future__ import annotations

__all__ = ["FRAME_HEADER_BYTES", "FRAME_MAX_BYTES_LIMIT", "FrameDecoder", "FrameError", "encode_frame"]

FRAME_HEADER_BYTES = 4
FRAME_MAX_BYTES_LIMIT = 0xFFFF_FFFF  # what a u32 length can say


class FrameError(ValueError):
    """Bytes that are not a sequence of valid frames: oversized or truncated.

    ``kind`` is ``"oversized"`` or ``"truncated"`` so callers can count them apart.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def encode_frame(payload: bytes, max_bytes: int = FRAME_MAX_BYTES_LIMIT) -> bytes:
    """The frame carrying ``payload``: its length as u32 big-endian, then the payload."""
    n = len(payload)
    if n > max_bytes:
        raise FrameError("oversized", f"frame of {n} bytes exceeds the limit of {max_bytes}")
    return n.to_bytes(FRAME_HEADER_BYTES, "big") + payload


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)``, then ``next_frame()`` until it returns None.

    ``max_bytes`` bounds the payload of each frame (the header not counted).
    After a :class:`FrameError` the decoder is unusable: the stream must be
    dropped, because its frame boundaries are lost.
    """

    __slots__ = ("max_bytes", "_buf", "_pos", "_need", "_failed")

    def __init__(self, max_bytes: int):
        if not 0 <= max_bytes <= FRAME_MAX_BYTES_LIMIT:
            raise ValueError(f"max_bytes must be in [0, {FRAME_MAX_BYTES_LIMIT}], got {max_bytes}")
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._pos = 0  # consumed prefix of _buf; compacted on feed, so taking a frame is O(frame)
        self._need: int | None = None  # payload length of the frame being read, once its header is in
        self._failed = False

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf) - self._pos

    @property
    def in_frame(self) -> bool:
        """True while part of a frame (header or body) has arrived but not all of it."""
        return self._need is not None or self.buffered_bytes > 0

    def feed(self, data: bytes) -> None:
        if self._failed:
            raise FrameError("truncated", "decoder used after a framing error")
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next whole frame's payload, or None if more bytes are needed."""
        buf, pos = self._buf, self._pos
        if self._need is None:
            if len(buf) - pos < FRAME_HEADER_BYTES:
                return None
            n = int.from_bytes(buf[pos : pos + FRAME_HEADER_BYTES], "big")
            if n > self.max_bytes:
                self._failed = True
                raise FrameError("oversized", f"frame of {n} bytes exceeds the limit of {self.max_bytes}")
            pos += FRAME_HEADER_BYTES
            self._pos = pos
            self._need = n
        n = self._need
        if len(buf) - pos < n:
            return None
        frame = bytes(buf[pos : pos + n])
        self._pos = pos + n
        self._need = None
        return frame

    def close(self) -> None:
        """Declare the end of the byte stream; raises FrameError if it ended inside a frame."""
        if self.in_frame and not self._failed:
            self._failed = True
            if self._need is None:
                raise FrameError("truncated", f"stream ended inside a frame header ({self.buffered_bytes} of 4 bytes)")
            raise FrameError(
                "truncated", f"stream ended inside a frame ({self.buffered_bytes} of {self._need} bytes)"
            )
