"""The bulk data path: chunks over plain TCP with a one-time ticket, served with sendfile.

Why: one yamux+Noise stream of py-libp2p 0.8.1 moves 57-147 MB/s on
loopback (shared/notes/libp2p.md), while a peer must take in artifacts at
>= 1 GB/s per core. So libp2p carries the control path (identity, who may
fetch what, the ticket) and the bytes go over a plain TCP connection:

1. The fetcher asks a holder over the authenticated control path
   (``BulkOpen``); the holder answers with a ``BulkTicket``: 32 random bytes
   bound, in the holder's :class:`TicketBook`, to the fetcher's peer id, the
   artifact and an expiry, usable once.
2. The fetcher connects to the holder's bulk port and sends
   ``b"ARCB" | version | token``; the holder redeems the ticket (unknown,
   used or expired: refused) and answers with the status and the artifact id.
3. The fetcher sends request frames (``b"R" | u32 count | count x u32 index``,
   any number, pipelined; ``b"Q"`` ends). For each index the holder sends a
   14-byte header (index, status, codec, stored length, content size) and
   the chunk's stored bytes straight from the file with ``os.sendfile``
   (a read-and-send loop where there is none).
4. The fetcher checks every chunk's BLAKE3 against the manifest it already
   holds (not against anything the holder says) before it commits it to the
   store; a bad chunk is dropped and reported, never written.

Integrity comes from the chunk hashes, authorisation from the ticket that
only the authenticated control path hands out: a plain TCP peer cannot
prove its peer id, so holding the secret token is what counts, and the
ticket's peer id and artifact are what the holder records (audit log:
"artifact served to"). The connection itself is
neither encrypted nor authenticated: a private project's artifacts are
encrypted before they are chunked (:mod:`arcnet.blobstore.crypt`), so what
this path moves for them is ciphertext. Knowingly left out: TLS on this
socket, rate limits per fetcher, and resuming one connection after a break
(the swarm re-asks for what is missing).

Measured on loopback (``bench/blobs.py``, a 2-core VM shared with other
work, load ~5): one connection sustains 0.7-1.1 GB of receive + BLAKE3 +
write per CPU second of the fetcher (0.3-0.8 GB/s wall while the other
core serves and other processes run); writing new page-cache pages is the
largest cost, then hashing, then the receive copy. Against ~0.06-0.15 GB/s
for one yamux+Noise stream.
"""

from __future__ import annotations

import contextlib
import os
import socket as _stdsocket
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import trio

from .chunking import ChunkCodecError, chunk_id, decode_chunk
from .manifest import manifest_id
from .messages import MANIFEST_CHUNKS_MAX, Manifest
from .store import Store, StoreError

__all__ = ["BulkError", "BulkResult", "BulkServer", "BulkSession", "Ticket", "TicketBook", "fetch_bulk", "serve_main"]

MAGIC = b"ARCB"
VERSION = 1
HELLO = struct.Struct(">4sB32s")
REPLY = struct.Struct(">B32s")
CHUNK_HEADER = struct.Struct(">IBBII")  # index, status, codec, stored length, content size
REQ_HEADER = struct.Struct(">cI")
REQUEST_INDICES_MAX = MANIFEST_CHUNKS_MAX  # per request frame

ST_OK, ST_BAD_TICKET, ST_BUSY, ST_NOT_FOUND = 0, 1, 2, 3
CHUNK_OK, CHUNK_NOT_HAVE = 0, 1
_STATUS_TEXT = {ST_BAD_TICKET: "ticket refused", ST_BUSY: "holder busy", ST_NOT_FOUND: "artifact not held"}


class BulkError(Exception):
    """A bulk transfer that failed: refused ticket, broken connection, protocol error."""


# -- tickets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ticket:
    token: bytes
    peer: str
    artifact: bytes
    expires_at: float


class TicketBook:
    """One-time tickets a holder has handed out (sans-IO: the caller gives ``now`` and the token bytes).

    ``ttl_s`` (30 s): how long a ticket may wait before it is used.
    ``outstanding_max`` (1,024): unused tickets kept; the oldest goes first.
    """

    def __init__(self, ttl_s: float = 30.0, outstanding_max: int = 1024):
        self.ttl_s = ttl_s
        self.outstanding_max = outstanding_max
        self._tickets: dict[bytes, Ticket] = {}
        self.issued = 0
        self.redeemed = 0
        self.refused = 0

    def issue(self, now: float, peer: str, artifact: bytes, token: bytes) -> Ticket:
        if len(token) != 32 or len(artifact) != 32:
            raise ValueError("token and artifact id are 32 bytes each")
        while len(self._tickets) >= self.outstanding_max:
            del self._tickets[next(iter(self._tickets))]
        t = Ticket(token, peer, artifact, now + self.ttl_s)
        self._tickets[token] = t
        self.issued += 1
        return t

    def redeem(self, now: float, token: bytes) -> Ticket | None:
        """The ticket for ``token`` if valid, and it is used up; None otherwise."""
        t = self._tickets.pop(token, None)
        if t is None or now > t.expires_at:
            self.refused += 1
            return None
        self.redeemed += 1
        return t

    def statistics(self) -> dict[str, float]:
        return {"outstanding": len(self._tickets), "issued": self.issued, "redeemed": self.redeemed, "refused": self.refused}


# -- socket helpers -------------------------------------------------------------------

_RCVBUF_BYTES = 4 << 20


async def _recv_exact_into(sock: trio.socket.SocketType, mv: memoryview) -> None:
    pos, n = 0, len(mv)
    while pos < n:
        k = await sock.recv_into(mv[pos:], n - pos)
        if k == 0:
            raise BulkError(f"connection closed after {pos} of {n} bytes")
        pos += k


async def _recv_exact(sock: trio.socket.SocketType, n: int) -> bytes:
    buf = bytearray(n)
    await _recv_exact_into(sock, memoryview(buf))
    return bytes(buf)


async def _send_all(sock: trio.socket.SocketType, data: Any) -> None:
    mv = memoryview(data).cast("B")
    while mv:
        n = await sock.send(mv)
        mv = mv[n:]


_HAS_SENDFILE = hasattr(os, "sendfile")


async def _send_file(sock: trio.socket.SocketType, path: str, count: int) -> int:
    """Send ``count`` bytes of ``path``: sendfile when the OS has it; bytes sent."""
    with open(path, "rb") as f:
        fd = f.fileno()
        if not _HAS_SENDFILE:
            data = f.read(count)
            await _send_all(sock, data)
            return len(data)
        offset = 0
        while offset < count:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                n = os.sendfile(sock.fileno(), fd, offset, count - offset)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock.fileno())
                continue
            if n == 0:
                raise BulkError(f"{path} ended after {offset} of {count} bytes")
            offset += n
        return offset


# -- server -----------------------------------------------------------------------------


class BulkServer:
    """Serves chunks of the store to ticket holders over TCP.

    ``connections_max`` (16): concurrent connections (more get "busy").
    ``idle_timeout_s`` (30 s): a connection quiet this long is closed.
    ``clock``: seconds for ticket expiry (the daemon passes trio's clock).
    """

    def __init__(
        self,
        store: Store,
        tickets: TicketBook,
        *,
        clock: Callable[[], float] | None = None,
        connections_max: int = 16,
        idle_timeout_s: float = 30.0,
    ):
        self.store = store
        self.tickets = tickets
        self._clock = clock or trio.current_time
        self.connections_max = connections_max
        self.idle_timeout_s = idle_timeout_s
        self.port: int | None = None
        self._active = 0
        self._stats = dict.fromkeys(("connections", "refused", "chunks_sent", "bytes_sent", "not_have"), 0)

    def statistics(self) -> dict[str, float]:
        return {"active": self._active, **self._stats, **{f"tickets_{k}": v for k, v in self.tickets.statistics().items()}}

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``task_status.started(port)``."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle_stream, listeners, handler_nursery=nursery)

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        sock = stream.socket
        self._stats["connections"] += 1
        try:
            with trio.fail_after(self.idle_timeout_s):
                hello = await _recv_exact(sock, HELLO.size)
            await self._serve(sock, hello)
        except (BulkError, OSError, trio.BrokenResourceError, trio.TooSlowError):
            pass  # the fetcher went away: it re-asks through the swarm
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def _serve(self, sock: trio.socket.SocketType, hello: bytes) -> None:
        magic, version, token = HELLO.unpack(hello)
        if self._active >= self.connections_max:  # before redeeming: the ticket stays good for a retry
            self._stats["refused"] += 1
            await _send_all(sock, REPLY.pack(ST_BUSY, b"\0" * 32))
            return
        ticket = self.tickets.redeem(self._clock(), token) if magic == MAGIC and version == VERSION else None
        if ticket is None:
            self._stats["refused"] += 1
            await _send_all(sock, REPLY.pack(ST_BAD_TICKET, b"\0" * 32))
            return
        try:
            refs = self.store.manifest(ticket.artifact).body.chunks
        except StoreError:
            await _send_all(sock, REPLY.pack(ST_NOT_FOUND, ticket.artifact))
            return
        self._active += 1
        try:
            await _send_all(sock, REPLY.pack(ST_OK, ticket.artifact))
            while True:
                with trio.fail_after(self.idle_timeout_s):
                    head = await _recv_exact(sock, REQ_HEADER.size)
                    kind, count = REQ_HEADER.unpack(head)
                    if kind == b"Q":
                        return
                    if kind != b"R" or count > REQUEST_INDICES_MAX:
                        raise BulkError(f"bad request frame {kind!r} x {count}")
                    body = await _recv_exact(sock, 4 * count)
                for (index,) in struct.iter_unpack(">I", body):
                    with trio.fail_after(self.idle_timeout_s):  # a fetcher that stops reading is let go
                        await self._send_chunk(sock, refs, index)
        finally:
            self._active -= 1

    async def _send_chunk(self, sock: trio.socket.SocketType, refs: Sequence[Any], index: int) -> None:
        if index >= len(refs):
            raise BulkError(f"chunk index {index} out of range")
        try:
            path, stored, codec, size = self.store.chunk_file(refs[index].id)
        except StoreError:
            self._stats["not_have"] += 1
            await _send_all(sock, CHUNK_HEADER.pack(index, CHUNK_NOT_HAVE, 0, 0, 0))
            return
        await _send_all(sock, CHUNK_HEADER.pack(index, CHUNK_OK, codec, stored, size))
        try:
            await _send_file(sock, path, stored)
        except FileNotFoundError:
            # removed under us (GC, quarantine): the stream cannot be resynchronised
            raise BulkError(f"chunk {index} vanished while being sent") from None
        self._stats["chunks_sent"] += 1
        self._stats["bytes_sent"] += stored


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


# -- client -------------------------------------------------------------------------------


@dataclass
class BulkResult:
    """What one bulk fetch did: indices committed, already here, refused, bad."""

    committed: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)
    not_have: list[int] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)
    bytes_received: int = 0
    bytes_committed: int = 0


async def fetch_bulk(
    address: tuple[str, int],
    token: bytes,
    manifest: Manifest,
    indices: Sequence[int],
    store: Store | None,
    *,
    on_chunk: Callable[[int, bool], None] | None = None,
    bad_chunks_max: int = 3,
    buffers: int = 8,
) -> BulkResult:
    """Fetch chunks ``indices`` of ``manifest`` from a holder's bulk port into ``store``.

    Each chunk is verified against the manifest before it is committed
    (``store`` None: verify and drop, for measurements). ``on_chunk(index,
    ok)`` reports each chunk. After ``bad_chunks_max`` bad chunks the
    connection is abandoned and :class:`BulkError` raised: the holder is
    corrupting data and the swarm bans it.

    Receiving overlaps verifying and writing: this task reads chunk k+1 from
    the socket into one of ``buffers`` reusable buffers (8: a few ms of
    slack at 1 GB/s when a file create waits on the journal) while a worker
    thread hashes and writes chunk k (BLAKE3, zstd and ``os.write`` all
    release the GIL), so one connection keeps two cores busy.
    """
    refs = manifest.body.chunks
    aid = manifest_id(manifest)
    want = list(indices)
    for i in want:
        if not 0 <= i < len(refs):
            raise BulkError(f"chunk index {i} out of range (artifact has {len(refs)})")
    if buffers < 1:
        raise ValueError("buffers must be >= 1")
    result = BulkResult()
    batch = store.batch() if store is not None else None

    def commit(items: list[tuple[int, int, int, int, bytearray]]) -> list[tuple[int, bool]]:
        """In a worker thread: verify each chunk, write the good ones."""
        out = []
        for index, codec, stored, size, buf in items:
            if len(result.bad) >= bad_chunks_max:
                break  # abandoned: nothing after the last straw is looked at
            ref = refs[index]
            payload = memoryview(buf)[:stored]
            try:
                ok = size == ref.size and chunk_id(decode_chunk(codec, payload, ref.size)) == ref.id
            except ChunkCodecError:
                ok = False
            if ok and batch is not None:
                fresh = batch.put_chunk(ref.id, payload, codec=codec, size=ref.size, verified=True)
                (result.committed if fresh else result.already).append(index)
                if fresh:
                    result.bytes_committed += ref.size
            elif ok:
                result.committed.append(index)
            else:
                result.bad.append(index)
            out.append((index, ok))
        return out

    # a stored chunk is never larger than its content (zstd is kept only when it pays)
    buf_bytes = max((refs[i].size for i in want), default=0)
    free_send, free_recv = trio.open_memory_channel[bytearray](buffers)
    for _ in range(buffers):
        free_send.send_nowait(bytearray(buf_bytes))
    full_send, full_recv = trio.open_memory_channel[tuple[int, int, int, int, bytearray]](buffers)

    async def committer(cancel: trio.CancelScope) -> None:
        async for first in full_recv:
            items = [first]
            while True:  # take whatever else has arrived: one thread hop per group
                try:
                    items.append(full_recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            done = await trio.to_thread.run_sync(commit, items)
            for *_, buf in items:
                free_send.send_nowait(buf)
            for index, ok in done:
                if on_chunk is not None:
                    on_chunk(index, ok)
            if len(result.bad) >= bad_chunks_max:
                cancel.cancel()  # stop receiving; reported below
                return

    sock = trio.socket.socket(_stdsocket.AF_INET6 if ":" in address[0] else _stdsocket.AF_INET)
    try:
        with sock:
            with contextlib.suppress(OSError):
                sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, _RCVBUF_BYTES)
            await sock.connect(address)
            await _send_all(sock, HELLO.pack(MAGIC, VERSION, token))
            status, art = REPLY.unpack(await _recv_exact(sock, REPLY.size))
            if status != ST_OK:
                raise BulkError(f"bulk fetch from {address[0]}:{address[1]}: {_STATUS_TEXT.get(status, f'status {status}')}")
            if art != aid:
                raise BulkError("the holder's ticket is for another artifact")
            for k in range(0, len(want), REQUEST_INDICES_MAX):
                part = want[k : k + REQUEST_INDICES_MAX]
                await _send_all(sock, REQ_HEADER.pack(b"R", len(part)) + struct.pack(f">{len(part)}I", *part))
            await _send_all(sock, REQ_HEADER.pack(b"Q", 0))
            head = bytearray(CHUNK_HEADER.size)
            hv = memoryview(head)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(committer, nursery.cancel_scope)
                async with full_send:
                    for expected in want:
                        await _recv_exact_into(sock, hv)
                        index, status, codec, stored, size = CHUNK_HEADER.unpack(head)
                        if index != expected:
                            raise BulkError(f"holder answered chunk {index} out of order")
                        if status == CHUNK_NOT_HAVE:
                            result.not_have.append(index)
                            if on_chunk is not None:
                                on_chunk(index, False)
                            continue
                        if stored > refs[index].size:
                            raise BulkError(f"chunk {index}: {stored} stored bytes for a {refs[index].size}-byte chunk")
                        buf = await free_recv.receive()
                        await _recv_exact_into(sock, memoryview(buf)[:stored])
                        result.bytes_received += stored
                        await full_send.send((index, codec, stored, size, buf))
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:  # one failure (a broken connection, a protocol error): say it plainly
            raise leaves[0] from None
        raise
    finally:
        if batch is not None:
            await trio.to_thread.run_sync(batch.flush)
    if len(result.bad) >= bad_chunks_max:
        raise BulkError(f"holder sent {len(result.bad)} bad chunks; abandoned")
    return result


class BulkSession:
    """One bulk connection whose requests the caller issues one by one (the swarm driver's view).

    ``request(indices)`` may be called any time (requests are pipelined);
    ``receive()`` returns the answers in request order as
    ``(index, ok, codec, size, stored bytes)``; ``ok`` False means the holder
    does not have the chunk. Nothing is verified here: the caller checks
    every chunk against its manifest.
    """

    def __init__(self, address: tuple[str, int], token: bytes, manifest: Manifest):
        self.address = address
        self._token = token
        self._aid = manifest_id(manifest)
        self._sizes = [c.size for c in manifest.body.chunks]
        self._count = len(self._sizes)
        self._sock: trio.socket.SocketType | None = None
        self._head = bytearray(CHUNK_HEADER.size)
        self.bytes_received = 0

    async def connect(self) -> None:
        sock = trio.socket.socket(_stdsocket.AF_INET6 if ":" in self.address[0] else _stdsocket.AF_INET)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, _RCVBUF_BYTES)
            await sock.connect(self.address)
            await _send_all(sock, HELLO.pack(MAGIC, VERSION, self._token))
            status, art = REPLY.unpack(await _recv_exact(sock, REPLY.size))
        except BaseException:
            sock.close()
            raise
        if status != ST_OK or art != self._aid:
            sock.close()
            why = _STATUS_TEXT.get(status, f"status {status}") if status != ST_OK else "ticket for another artifact"
            raise BulkError(f"bulk session with {self.address[0]}:{self.address[1]}: {why}")
        self._sock = sock

    async def request(self, indices: Sequence[int]) -> None:
        if self._sock is None:
            raise BulkError("bulk session is not connected")
        if any(not 0 <= i < self._count for i in indices) or len(indices) > REQUEST_INDICES_MAX:
            raise BulkError("chunk index out of range")
        await _send_all(self._sock, REQ_HEADER.pack(b"R", len(indices)) + struct.pack(f">{len(indices)}I", *indices))

    async def receive(self) -> tuple[int, bool, int, int, bytearray]:
        if self._sock is None:
            raise BulkError("bulk session is not connected")
        await _recv_exact_into(self._sock, memoryview(self._head))
        index, status, codec, stored, size = CHUNK_HEADER.unpack(self._head)
        if index >= self._count:
            raise BulkError(f"holder answered chunk {index}, which does not exist")
        if status != CHUNK_OK:
            return index, False, 0, 0, bytearray()
        if stored > self._sizes[index]:  # a stored chunk is never larger than its content
            raise BulkError(f"chunk {index}: {stored} stored bytes for a {self._sizes[index]}-byte chunk")
        buf = bytearray(stored)
        await _recv_exact_into(self._sock, memoryview(buf))
        self.bytes_received += stored
        return index, True, codec, size, buf

    async def aclose(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with sock:
            with contextlib.suppress(OSError, trio.BrokenResourceError):
                with trio.move_on_after(1.0):
                    await _send_all(sock, REQ_HEADER.pack(b"Q", 0))


def serve_main(argv: Sequence[str] | None = None) -> None:
    """``python -m arcnet.blobstore.bulk DATA_DIR ARTIFACT_HEX TOKEN_HEX...``: serve one store.

    Issues a ticket for each token (for whoever presents it), prints the
    port, and serves until stdin closes: a stand-in for the daemon's ticket
    exchange in tests, demos and benchmarks.
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3:
        raise SystemExit("usage: python -m arcnet.blobstore.bulk DATA_DIR ARTIFACT_HEX TOKEN_HEX...")
    root, aid_hex, tokens = args[0], args[1], args[2:]

    async def main() -> None:
        store = Store(root, durable=False)
        book = TicketBook(ttl_s=3600.0)
        server = BulkServer(store, book)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            for t in tokens:
                book.issue(trio.current_time(), "", bytes.fromhex(aid_hex), bytes.fromhex(t))
            print(port, flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()
        store.close()

    trio.run(main)


if __name__ == "__main__":
    serve_main()
