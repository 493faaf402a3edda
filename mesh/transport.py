"""The libp2p transport of the daemon: opaque frames between authenticated peers.

The transport moves bytes. It knows nothing about message types (that is
:mod:`arcnet.mesh.wire`) or about who should talk to whom (that is
membership); it gives the peer's event loop two channels:

* **messages** (``/arcnet/msg/1.0.0``): fire-and-forget frames.
  :meth:`Libp2pTransport.send_nowait` puts a frame in a bounded per-peer
  outbox and returns at once; one writer task per peer keeps ONE long-lived
  outbound stream to that peer (opened on demand, reopened after a failure,
  closed after ``stream_idle_s`` without traffic) and writes u32
  length-prefixed frames on it, batching what has queued up. Inbound frames
  go to one bounded inbox that :meth:`Libp2pTransport.receive` drains. The
  sender of a frame is the peer id authenticated by the connection's Noise
  handshake, never anything the frame says.
* **requests** (``/arcnet/req/<name>/1.0.0``): one stream per request, one
  length-prefixed frame each way; the response starts with a status byte
  (0 = ok, 1 = error text from the remote). :meth:`Libp2pTransport.request`
  raises :class:`TransportError` on timeout, reset, oversize or a remote
  handler error.

Why this shape (py-libp2p 0.8.1, measured; see shared/notes/libp2p.md): a
long-lived stream carries ~700-1,200 small round trips/s where a new stream
per message manages 100-200/s; a remote reset reads as a clean end of stream,
so frames carry their length and a frame cut short is an error; reads never
time out by themselves, so every read here runs under a trio deadline; yamux
gives up a write after 5 s without a window update and does not tell the
reader, so the reader here never stops reading: when the inbox is full it
drops (and counts) rather than stall the remote writer, and one writer task
per peer means a slow or dead peer holds up only its own outbox.

Hardening against the library's defaults, each one seen in 0.8.1:

* Noise is the only security transport (the default list also offers
  ``/plaintext/2.0.0``, with which a remote can claim any peer id), and yamux
  the only muxer.
* ``ConnectionConfig(max_connections_per_peer=1)``: with the default of 3,
  every dial waits out a 250 ms "happy eyeballs" delay.
* No auto-connector: membership, not libp2p, decides whom to dial. Zero
  watermarks are not enough (it dials toward the midpoint of low and high
  watermark, and the high one also drives pruning), so its ``start`` is
  replaced and it never runs. No retries inside libp2p's dialer
  (``max_retries=0``): the callers here back off themselves.
* TCP listen addresses only: libp2p builds a QUIC or WebSocket transport from
  the listen addresses it is given, each with its own security.
* libp2p listens with SO_REUSEPORT, so a second peer on a taken port starts
  "fine" and shares it, the kernel splitting connections between the two; a
  fixed port is probed first and refused if taken.
* A yamux read that the remote's reset wakes leaves an event entry behind for
  the connection's lifetime; finished streams' entries are removed here.
* A failed dial puts the peer in libp2p's 60 s negative cache; every dial here
  lifts that first (``Swarm.unblock_peer``), or a peer that restarted could
  not be reached for a minute.
* The peerstore keeps one TTL per peer, and ``host.connect`` sets it to
  120 s, after which all of the peer's addresses vanish. This module keeps its
  own small address book and re-adds the addresses with no expiry before
  each dial.
* ``import libp2p`` resets the ``libp2p`` logger to ``propagate=False``; it is
  set back so libp2p's warnings reach the project's log handlers.
* ``import libp2p`` costs ~0.5 s and ~68 MiB, so it happens on first use
  (constructing a transport), not when this module is imported: the
  simulator and the CLI may import this module for its names for free.

Shutdown order: the host runs inside this object's task nursery, so on
cancellation the host stops (and closes its connections) before the writer
and bootstrap tasks are reaped -- the order that avoids "Nursery is closed to
new arrivals" races when services outlive the host.

Knowingly left out: delivery guarantees (a frame is dropped, and counted,
when an outbox or the inbox is full or a stream breaks; the protocols above
are built for loss), priorities between frames, stream-level flow control
beyond yamux's, QUIC/WebSocket listeners, relaying and NAT traversal, and
expanding a ``0.0.0.0`` listen address into interface addresses.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import random
import time
import types
from typing import Any, Awaitable, Callable, Sequence

import trio

from . import identity as _identity
from .framing import FRAME_HEADER_BYTES, FrameDecoder, FrameError, encode_frame

__all__ = [
    "MSG_PROTOCOL",
    "Libp2pTransport",
    "RequestHandler",
    "TransportError",
    "request_protocol",
]

logger = logging.getLogger("arcnet.transport")

MSG_PROTOCOL = "/arcnet/msg/1.0.0"

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
ConnectCallback = Callable[[str, "str | None"], None]
DisconnectCallback = Callable[[str], None]

_STATUS_OK = 0
_STATUS_ERROR = 1
_ERROR_TEXT_MAX = 200  # characters of a remote error that travel back to the requester
_READ_CHUNK_BYTES = 64 * 1024  # one yamux frame's worth; a read returns what is buffered, up to this
_WRITE_BATCH_BYTES = 256 * 1024  # queued frames joined into one stream write, up to this (or one frame)
_INBOUND_MSG_STREAMS_PER_PEER_MAX = 4  # a well-behaved peer keeps one; a few more cover reopen overlap
_ADDRS_PER_PEER_MAX = 8  # address book: most recent addresses kept per peer
_ADDRBOOK_PEERS_MAX = 100_000  # address book: peers kept (oldest forgotten first)
_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 30.0
_CLEANUP_TIMEOUT_S = 1.0  # bound on a shielded close/reset during cleanup


def request_protocol(name: str) -> str:
    """The protocol id of request type ``name``: ``/arcnet/req/<name>/1.0.0``."""
    if not name or "/" in name or not name.isascii() or not name.isprintable() or " " in name:
        raise ValueError(f"request name must be a non-empty ASCII word without '/', got {name!r}")
    return f"/arcnet/req/{name}/1.0.0"


class TransportError(Exception):
    """A send, connect or request that failed; the message is one line that says why."""


# --------------------------------------------------------------------------
# libp2p, imported on first use


@functools.cache
def _lp() -> types.SimpleNamespace:
    """The libp2p names this module uses; imports libp2p (~0.5 s) the first time."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.crypto.keys import KeyPair
    from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
    from libp2p.network.config import ConnectionConfig, RetryConfig
    from libp2p.network.stream.exceptions import StreamEOF, StreamError, StreamReset
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux

    # `import libp2p` sets propagate=False on its logger; we want its warnings
    # in the project's logs (level stays WARNING unless LIBP2P_DEBUG is set).
    logging.getLogger("libp2p").propagate = True
    return types.SimpleNamespace(
        Multiaddr=multiaddr.Multiaddr,
        new_host=new_host,
        Ed25519PrivateKey=Ed25519PrivateKey,
        KeyPair=KeyPair,
        new_x25519_key_pair=new_x25519_key_pair,
        ConnectionConfig=ConnectionConfig,
        RetryConfig=RetryConfig,
        StreamEOF=StreamEOF,
        StreamError=StreamError,
        StreamReset=StreamReset,
        ID=ID,
        PeerInfo=PeerInfo,
        NOISE_PROTOCOL_ID=NOISE_PROTOCOL_ID,
        NoiseTransport=NoiseTransport,
        YAMUX_PROTOCOL_ID=YAMUX_PROTOCOL_ID,
        Yamux=Yamux,
    )


@functools.lru_cache(maxsize=65536)
def _libp2p_id(peer_id: str) -> Any:
    _identity.public_key_of(peer_id)  # only Ed25519 peer ids; raises IdentityError otherwise
    return _lp().ID.from_base58(peer_id)


def _short(peer_id: str) -> str:
    return peer_id[-8:]


def _reason(exc: BaseException) -> str:
    """One short line describing an exception from libp2p (whose messages can span lines)."""
    if type(exc).__name__ == "SwarmDialAllFailedError":
        # libp2p keeps the per-address errors to its debug log; say what they can be
        return "no address answered as that peer (refused, unreachable, timed out, or another peer id there)"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    cause = exc.__cause__
    if not first and cause is not None:
        return _reason(cause)
    name = type(exc).__name__
    line = f"{name}: {first}" if first else name
    if cause is not None:  # libp2p wraps the telling error: "failed to open a stream" from "protocol not supported"
        cause_text = str(cause).strip().splitlines()
        if cause_text:
            line += f" ({cause_text[0]})"
    return line[:240]


async def _finish_stream(stream: Any, ok: bool) -> None:
    """Close (ok) or reset a stream, shielded from cancellation and bounded in time."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(_CLEANUP_TIMEOUT_S):
            try:
                if ok:
                    await stream.close()
                else:
                    await stream.reset()
            except Exception:  # the connection may be gone already; nothing left to do
                pass
    _forget_yamux_leftovers(stream)


def _forget_yamux_leftovers(stream: Any) -> None:
    """Drop the event entry py-libp2p 0.8.1's yamux leaves behind for a finished stream.

    A read that the remote's reset wakes up stores a fresh ``trio.Event`` for
    the stream after yamux has already dropped the stream's bookkeeping, and
    nothing removes it until the connection closes: one entry per request the
    requester abandoned, on a connection that may live for weeks. Stream ids
    are never reused on a connection, so removing it is safe.
    """
    muxed = getattr(stream, "muxed_stream", None)
    conn = getattr(muxed, "conn", None)
    events = getattr(conn, "stream_events", None)
    streams = getattr(conn, "streams", None)
    stream_id = getattr(muxed, "stream_id", None)
    if isinstance(events, dict) and isinstance(streams, dict) and stream_id not in streams:
        events.pop(stream_id, None)


async def _auto_connector_never_starts() -> None:
    """Stands in for ``AutoConnector.start``: leaves it stopped, so it never dials."""


def _check_port_free(maddr: Any) -> None:
    """Refuse a fixed TCP port that something already listens on.

    py-libp2p 0.8.1 listens with SO_REUSEPORT (for hole punching), so a second
    peer started on a taken port does not fail: it silently shares the port,
    and the kernel hands each incoming connection to one of the two at random.
    A probe bound without SO_REUSEPORT fails while any listener holds the port
    (SO_REUSEADDR keeps TIME_WAIT leftovers of a previous run from counting).
    Port 0 (the kernel picks a free port) needs no probe.
    """
    import socket

    protos = {p.name for p in maddr.protocols()}
    if "tcp" not in protos:
        return
    port = int(maddr.value_for_protocol("tcp"))
    if port == 0:
        return
    if "ip4" in protos:
        family, host = socket.AF_INET, maddr.value_for_protocol("ip4")
    elif "ip6" in protos:
        family, host = socket.AF_INET6, maddr.value_for_protocol("ip6")
    else:
        return
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise TransportError(f"cannot listen on {maddr}: {exc.strerror or exc} (is another peer running?)") from None


class _LogLimiter:
    """At most one log line per kind per interval, so a hostile peer cannot flood the log."""

    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def log(self, level: int, kind: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        n = self._suppressed.pop(kind, 0)
        if n:
            msg += " (%d more like this suppressed)"
            args = (*args, n)
        logger.log(level, msg, *args)


class _Outbox:
    """Frames waiting for one peer's writer task."""

    __slots__ = ("frames", "bytes", "lot")

    def __init__(self) -> None:
        self.frames: collections.deque[bytes] = collections.deque()
        self.bytes = 0
        self.lot = trio.lowlevel.ParkingLot()


class _OutStream:
    """A writer's long-lived message stream and the task that watches it for the remote's end."""

    __slots__ = ("stream", "dead", "scope")

    def __init__(self, stream: Any):
        self.stream = stream
        self.dead = trio.Event()
        self.scope = trio.CancelScope()


class _Notifee:
    """libp2p network notifee: forwards connection events to the transport.

    libp2p awaits notifees on its dial and accept paths, so these must not
    block; they only update state and call the (synchronous) callbacks.
    """

    def __init__(self, transport: "Libp2pTransport"):
        self._t = transport

    async def connected(self, network: Any, conn: Any) -> None:
        self._t._on_connection_event(conn, up=True)

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._t._on_connection_event(conn, up=False)

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


_COUNTERS = (
    "frames_out",  # message frames written to a stream
    "bytes_out",  # their payload bytes
    "frames_in",  # message frames received and queued for receive()
    "bytes_in",  # their payload bytes
    "frames_dropped_full",  # send_nowait refused: the peer's outbox is full (frames or bytes)
    "frames_dropped_unreachable",  # send_nowait refused: not running, self, bad id, or no address known
    "frames_dropped_too_big",  # send_nowait refused: frame over frame_max_bytes
    "frames_dropped_failed",  # queued frames dropped because no stream to the peer could be opened or written
    "frames_dropped_in",  # valid inbound frames dropped because the inbox (or the sender's share) was full
    "read_timeouts",  # a frame, or a request, did not arrive whole within read_timeout_s
    "oversized_frames",  # inbound frame or request with a length over the limit (stream reset)
    "malformed_frames",  # truncated frame, or bytes where the protocol has none (stream reset)
    "idle_streams_closed",  # inbound message streams closed after 2 * stream_idle_s of silence
    "streams_refused",  # inbound message streams over the per-peer limit
    "stream_failures",  # outbound message stream broke: a write failed, or the remote ended the stream
    "dial_failures",  # connect failed, or a stream needed a new connection and could not get one
    "stream_open_failures",  # connected, but the stream could not be opened (e.g. protocol not served)
    "connects",  # peers that became connected
    "disconnects",  # peers that lost their last connection
    "requests_out",
    "request_failures",  # requests that raised TransportError (timeouts included)
    "request_timeouts",
    "requests_in",
    "requests_rejected",  # inbound requests refused: too many in progress
    "requests_abandoned",  # the requester went away before the handler finished
    "handler_errors",  # request handler raised, timed out, or returned a bad value
    "callback_errors",  # on_connect / on_disconnect raised
)


class Libp2pTransport:
    """Frames and requests between peers over libp2p (TCP, Noise, yamux).

    Construct, then run :meth:`run` in a nursery (``await nursery.start(t.run)``).
    :meth:`connect` and :meth:`request` raise, and :meth:`send_nowait`
    returns False, unless it is running; handlers, addresses and callbacks
    may be set before. After it stops, :meth:`receive` raises TransportError.
    A transport runs once; make a new one to run again.

    Knobs (units in the names; defaults sized for a ~1,000-site mesh where a
    peer talks to tens of peers at a time):

    * ``frame_max_bytes`` (4 MiB): largest message frame or request/response
      payload accepted or sent; matches the wire codec's data limit.
    * ``read_timeout_s`` (10 s): a frame or request that has started must
      arrive whole within this; also bounds each stream write.
    * ``outbox_max_frames`` (1,024) and ``outbox_max_bytes`` (16 MiB): per
      peer; ``send_nowait`` returns False beyond them. At 100 busy peers the
      byte bound caps queued output at 1.6 GiB in the worst case.
    * ``inbox_max_frames`` (4,096), ``inbox_max_bytes`` (64 MiB): the one
      inbound queue; ``inbox_peer_max_frames`` (512) is one sender's share,
      so a flooding peer cannot crowd the others out.
    * ``dial_timeout_s`` (5 s): connect, or open a stream, within this.
    * ``stream_idle_s`` (60 s): a writer closes its stream after this long
      without frames; a reader closes an inbound message stream after twice
      that (so a live writer always closes first).
    * ``handler_timeout_s`` (60 s): an inbound request's handler is cancelled
      after this long; ``requests_inbound_max`` (128) handlers run at once.
    * ``connections_max`` (1,024): libp2p's connection manager prunes beyond it.
    * ``bootstrap``: full multiaddrs ending in ``/p2p/<peer id>``; while
      running, each is redialled with exponential backoff (0.1 s to 30 s,
      jittered) whenever it is not connected.
    * ``on_connect(peer_id, remote_addr_or_None)``, ``on_disconnect(peer_id)``:
      synchronous callbacks (also settable as attributes) called when a peer
      gains its first or loses its last connection. They must not block;
      exceptions are logged and counted.
    """

    def __init__(
        self,
        identity: _identity.Identity,
        listen_addrs: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
        *,
        frame_max_bytes: int = 4 << 20,
        read_timeout_s: float = 10.0,
        outbox_max_frames: int = 1024,
        bootstrap: Sequence[str] = (),
        outbox_max_bytes: int = 16 << 20,
        inbox_max_frames: int = 4096,
        inbox_max_bytes: int = 64 << 20,
        inbox_peer_max_frames: int = 512,
        dial_timeout_s: float = 5.0,
        stream_idle_s: float = 60.0,
        handler_timeout_s: float = 60.0,
        requests_inbound_max: int = 128,
        connections_max: int = 1024,
        on_connect: ConnectCallback | None = None,
        on_disconnect: DisconnectCallback | None = None,
    ):
        if isinstance(listen_addrs, str):
            raise TypeError("listen_addrs is a list of multiaddrs, not one string")
        if not 0 <= frame_max_bytes < (1 << 32) - 1:
            raise ValueError(f"frame_max_bytes must be in [0, 2**32 - 1), got {frame_max_bytes}")
        for name, value in (
            ("read_timeout_s", read_timeout_s),
            ("dial_timeout_s", dial_timeout_s),
            ("stream_idle_s", stream_idle_s),
            ("handler_timeout_s", handler_timeout_s),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        for name, value in (
            ("outbox_max_frames", outbox_max_frames),
            ("inbox_max_frames", inbox_max_frames),
            ("inbox_peer_max_frames", inbox_peer_max_frames),
            ("requests_inbound_max", requests_inbound_max),
            ("connections_max", connections_max),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if outbox_max_bytes < frame_max_bytes or inbox_max_bytes < frame_max_bytes:
            raise ValueError("outbox_max_bytes and inbox_max_bytes must be at least frame_max_bytes")

        lp = _lp()
        self.identity = identity
        self.peer_id: str = identity.peer_id
        self.frame_max_bytes = frame_max_bytes
        self.read_timeout_s = float(read_timeout_s)
        self.outbox_max_frames = outbox_max_frames
        self.outbox_max_bytes = outbox_max_bytes
        self.inbox_max_frames = inbox_max_frames
        self.inbox_max_bytes = inbox_max_bytes
        self.inbox_peer_max_frames = inbox_peer_max_frames
        self.dial_timeout_s = float(dial_timeout_s)
        self.stream_idle_s = float(stream_idle_s)
        self.handler_timeout_s = float(handler_timeout_s)
        self.requests_inbound_max = requests_inbound_max
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect

        self._listen_maddrs = [self._parse_listen_addr(a) for a in listen_addrs]
        if not self._listen_maddrs:
            raise ValueError("need at least one listen address")
        self._bootstrap = [self._parse_p2p_addr(a) for a in bootstrap]

        self._stats: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._log = _LogLimiter()
        self._rng = random.Random()  # jitter only; never protocol decisions
        self._started = False  # run() was called (a transport runs once)
        self._running = False  # listening, and not yet stopping
        self._stopped = False
        self._nursery: trio.Nursery | None = None
        self._outboxes: dict[str, _Outbox] = {}
        self._inbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._inbox_bytes = 0
        self._inbox_per_peer: dict[str, int] = {}
        self._inbox_lot = trio.lowlevel.ParkingLot()
        self._inbound_msg_streams: dict[str, int] = {}
        self._requests_in_active = 0
        self._handlers: dict[str, RequestHandler] = {}
        self._addrbook: dict[str, list[str]] = {}  # peer id -> dialable multiaddrs without /p2p, newest last
        self._connected: set[str] = set()
        self._conn_changed = trio.Event()

        priv = lp.Ed25519PrivateKey(identity.signing_key)
        key_pair = lp.KeyPair(priv, priv.get_public_key())
        noise = lp.NoiseTransport(key_pair, noise_privkey=lp.new_x25519_key_pair().private_key)
        connection_config = lp.ConnectionConfig(
            max_connections_per_peer=1,
            min_connections=0,
            low_watermark=0,
            high_watermark=connections_max,
            max_connections=connections_max,
            dial_timeout=self.dial_timeout_s,
        )
        self._host = lp.new_host(
            key_pair=key_pair,
            sec_opt={lp.NOISE_PROTOCOL_ID: noise},
            muxer_opt={lp.YAMUX_PROTOCOL_ID: lp.Yamux},
            listen_addrs=self._listen_maddrs,
            connection_config=connection_config,
        )
        host_id = str(self._host.get_id())
        if host_id != self.peer_id:  # the wire identity must be the mesh identity
            raise AssertionError(f"libp2p peer id {host_id} differs from identity peer id {self.peer_id}")
        self._swarm = self._host.get_network()
        self._swarm.retry_config = lp.RetryConfig(max_retries=0)
        # libp2p's auto-connector dials peers from the peerstore until it holds
        # (low + high watermark) / 2 connections, whatever the watermarks; a
        # connector that never starts never dials. Membership decides whom to dial.
        self._swarm.auto_connector.start = _auto_connector_never_starts
        self._swarm.register_notifee(_Notifee(self))
        self._host.set_stream_handler(MSG_PROTOCOL, self._on_msg_stream)

    # ------------------------------------------------------------------
    # lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the host, listen, dial bootstrap peers; runs until cancelled."""
        if self._started:
            raise TransportError("this transport has already been run; make a new one")
        self._started = True
        for maddr in self._listen_maddrs:
            _check_port_free(maddr)
        try:
            # Our tasks (writers, bootstrap) live in the outer nursery, the host
            # inside it: on cancellation the host stops first.
            async with trio.open_nursery() as nursery:
                async with self._host.run(self._listen_maddrs):
                    listening = set(self._swarm.listeners)
                    missing = [str(m) for m in self._listen_maddrs if str(m) not in listening]
                    if missing:
                        raise TransportError(f"cannot listen on {', '.join(missing)} (address in use or not local?)")
                    self._nursery = nursery
                    self._running = True
                    for peer_id, maddr in self._bootstrap:
                        nursery.start_soon(self._bootstrap_loop, peer_id, maddr)
                    logger.info("transport %s listening on %s", _short(self.peer_id), " ".join(self.listen_addrs()))
                    task_status.started()
                    try:
                        await trio.sleep_forever()
                    finally:
                        self._running = False
                        nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # A failure to start comes out of libp2p's and our nurseries wrapped;
            # give the caller the one clear TransportError.
            ours, rest = group.split(TransportError)
            if ours is not None and rest is None:
                while isinstance(ours, BaseExceptionGroup):
                    ours = ours.exceptions[0]
                raise ours from None
            raise
        finally:
            self._running = False
            self._stopped = True
            self._nursery = None
            self._connected.clear()
            self._inbox_lot.unpark_all()  # receive() raises TransportError from now on

    def listen_addrs(self) -> list[str]:
        """Full multiaddrs with concrete ports, ending in ``/p2p/<peer id>`` (empty before run)."""
        suffix = f"/p2p/{self.peer_id}"
        return [str(a) + suffix for a in self._host.get_transport_addrs()]

    def connected_peers(self) -> list[str]:
        """Peers with at least one open connection, sorted."""
        return sorted(
            str(pid) for pid, conns in self._swarm.connections.items() if any(not c.is_closed for c in conns)
        )

    def is_connected(self, peer_id: str) -> bool:
        try:
            conns = self._swarm.connections.get(_libp2p_id(peer_id), ())
        except _identity.IdentityError:
            return False
        return any(not c.is_closed for c in conns)

    # ------------------------------------------------------------------
    # addresses and connections

    def add_address(self, peer_id: str, multiaddr: str) -> None:
        """Remember a dialable address of ``peer_id`` (with or without its ``/p2p/`` suffix)."""
        try:
            _libp2p_id(peer_id)
        except _identity.IdentityError as exc:
            raise TransportError(f"add_address: {exc}") from None
        try:
            maddr = _lp().Multiaddr(multiaddr)
        except Exception as exc:
            raise TransportError(f"add_address: not a multiaddr: {multiaddr!r} ({_reason(exc)})") from None
        p2p = maddr.get_peer_id()
        if p2p is not None:
            if p2p != peer_id:
                raise TransportError(f"add_address: {multiaddr} names peer {p2p}, not {peer_id}")
            maddr = maddr.decapsulate(_lp().Multiaddr(f"/p2p/{p2p}"))
        self._remember(peer_id, maddr)

    async def connect(self, multiaddr: str) -> str:
        """Connect to ``.../p2p/<peer id>`` (Noise checks the peer id); returns the peer id."""
        self._require_running()
        peer_id, maddr = self._parse_p2p_addr(multiaddr)
        if peer_id == self.peer_id:
            raise TransportError(f"cannot connect to {multiaddr}: that is this peer")
        self._remember(peer_id, maddr)
        pid = _libp2p_id(peer_id)
        self._swarm.unblock_peer(pid)
        try:
            with trio.fail_after(self.dial_timeout_s):
                await self._host.connect(_lp().PeerInfo(pid, [maddr]))
        except trio.TooSlowError:
            self._stats["dial_failures"] += 1
            raise TransportError(f"cannot connect to {multiaddr}: no connection within {self.dial_timeout_s:g} s") from None
        except Exception as exc:
            self._stats["dial_failures"] += 1
            raise TransportError(f"cannot connect to {multiaddr}: {_reason(exc)}") from None
        finally:
            self._refresh_peerstore(peer_id)  # host.connect set a 120 s TTL on all of the peer's addresses
        return peer_id

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to ``peer_id``; a later send or request dials again."""
        try:
            pid = _libp2p_id(peer_id)
        except _identity.IdentityError as exc:
            raise TransportError(f"disconnect: {exc}") from None
        with trio.move_on_after(self.dial_timeout_s):
            try:
                await self._swarm.close_peer(pid)
            except Exception as exc:
                logger.info("disconnect from %s: %s", _short(peer_id), _reason(exc))

    def _remember(self, peer_id: str, maddr: Any) -> None:
        addrs = self._addrbook.pop(peer_id, None)
        if addrs is None:
            addrs = []
            if len(self._addrbook) >= _ADDRBOOK_PEERS_MAX:
                del self._addrbook[next(iter(self._addrbook))]
        text = str(maddr)
        if text in addrs:
            addrs.remove(text)
        addrs.append(text)
        del addrs[:-_ADDRS_PER_PEER_MAX]
        self._addrbook[peer_id] = addrs  # re-inserted: dict order is recency
        self._refresh_peerstore(peer_id)

    def _refresh_peerstore(self, peer_id: str) -> None:
        addrs = self._addrbook.get(peer_id)
        if addrs:
            lp = _lp()
            # ttl 0 = no expiry; the peerstore keeps one TTL per peer, set by the last add.
            # Newest first: a peer that restarted on a new port is dialled at its new
            # address before the stale ones (the dialer tries them in order).
            store = self._host.get_peerstore()
            pid = _libp2p_id(peer_id)
            store.clear_addrs(pid)
            store.add_addrs(pid, [lp.Multiaddr(a) for a in reversed(addrs)], 0)

    def _reachable(self, peer_id: str) -> bool:
        if peer_id in self._addrbook or self.is_connected(peer_id):
            return True
        try:
            return bool(self._host.get_peerstore().addrs(_libp2p_id(peer_id)))
        except Exception:  # PeerStoreError: unknown or expired
            return False

    def _prepare_dial(self, peer_id: str) -> None:
        if not self.is_connected(peer_id):
            self._swarm.unblock_peer(_libp2p_id(peer_id))
            self._refresh_peerstore(peer_id)

    async def _open_stream(self, peer_id: str, protocol: str) -> Any:
        """A new stream to ``peer_id`` speaking ``protocol``, dialing if needed; TransportError otherwise."""
        dialing = not self.is_connected(peer_id)
        self._prepare_dial(peer_id)
        try:
            with trio.fail_after(self.dial_timeout_s):
                return await self._host.new_stream(_libp2p_id(peer_id), [protocol])
        except trio.TooSlowError:
            reason = f"not open within {self.dial_timeout_s:g} s"
        except Exception as exc:
            reason = _reason(exc)
        self._stats["dial_failures" if dialing else "stream_open_failures"] += 1
        what = "cannot reach" if dialing else "cannot open a stream to"
        raise TransportError(f"{what} {_short(peer_id)} for {protocol}: {reason}")

    def _on_connection_event(self, conn: Any, up: bool) -> None:
        try:
            peer_id = str(conn.muxed_conn.peer_id)
        except Exception:
            return
        if up and peer_id not in self._connected:
            self._connected.add(peer_id)
            self._stats["connects"] += 1
            remote = None
            with contextlib.suppress(Exception):
                addrs = conn.get_transport_addresses()
                remote = str(addrs[0]) if addrs else None
            self._call_back(self.on_connect, peer_id, remote)
        elif not up and peer_id in self._connected and not self.is_connected(peer_id):
            self._connected.discard(peer_id)
            self._stats["disconnects"] += 1
            self._call_back(self.on_disconnect, peer_id)
        self._conn_changed.set()
        self._conn_changed = trio.Event()

    def _call_back(self, fn: Callable[..., None] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            self._stats["callback_errors"] += 1
            logger.error("connection callback %r raised", fn, exc_info=True)

    async def _bootstrap_loop(self, peer_id: str, maddr: Any) -> None:
        """Keep a bootstrap peer connected: redial with jittered exponential backoff."""
        addr = f"{maddr}/p2p/{peer_id}"
        backoff_s = _BACKOFF_MIN_S
        while True:
            while self.is_connected(peer_id):
                await self._conn_changed.wait()
            try:
                await self.connect(addr)
                backoff_s = _BACKOFF_MIN_S
                continue
            except TransportError as exc:
                self._log.log(logging.INFO, "bootstrap", "bootstrap %s: %s; retrying in %.1f s", addr, exc, backoff_s)
            await trio.sleep(backoff_s * self._rng.uniform(0.5, 1.0))
            backoff_s = min(backoff_s * 2, _BACKOFF_MAX_S)

    # ------------------------------------------------------------------
    # messages: sending

    def send_nowait(self, peer_id: str, frame: bytes) -> bool:
        """Queue ``frame`` for ``peer_id``; False (and a counter) if it cannot be queued.

        Never blocks. A True return means queued, not delivered: a frame can
        still be dropped (and counted) if no stream to the peer can be opened.
        """
        if type(frame) is not bytes:
            frame = bytes(frame)  # queued frames must not change under us
        n = len(frame)
        if n > self.frame_max_bytes:
            self._stats["frames_dropped_too_big"] += 1
            return False
        box = self._outboxes.get(peer_id)
        if box is None:
            if not self._running or self._nursery is None or peer_id == self.peer_id:
                self._stats["frames_dropped_unreachable"] += 1
                return False
            try:
                reachable = self._reachable(peer_id)
            except _identity.IdentityError:
                reachable = False
            if not reachable:
                self._stats["frames_dropped_unreachable"] += 1
                return False
            box = _Outbox()
            self._outboxes[peer_id] = box
            self._nursery.start_soon(self._writer, peer_id, box)
        if len(box.frames) >= self.outbox_max_frames or box.bytes + n > self.outbox_max_bytes:
            self._stats["frames_dropped_full"] += 1
            return False
        box.frames.append(frame)
        box.bytes += n
        box.lot.unpark()
        return True

    async def _writer(self, peer_id: str, box: _Outbox) -> None:
        """One per peer with queued frames: owns the peer's long-lived outbound message stream."""
        out: _OutStream | None = None
        failures = 0
        try:
            async with trio.open_nursery() as watchers:
                while True:
                    if not box.frames:
                        with trio.move_on_after(self.stream_idle_s):
                            await box.lot.park()
                        if not box.frames:
                            if out is None:
                                # Idle with no stream: retire. No await between this check and the
                                # removal, so send_nowait cannot slip a frame into a retired box.
                                del self._outboxes[peer_id]
                                watchers.cancel_scope.cancel()
                                return
                            await self._drop_out_stream(out, ok=True)
                            out = None
                        continue
                    batch = [box.frames.popleft()]
                    size = FRAME_HEADER_BYTES + len(batch[0])
                    while box.frames and size + FRAME_HEADER_BYTES + len(box.frames[0]) <= _WRITE_BATCH_BYTES:
                        f = box.frames.popleft()
                        batch.append(f)
                        size += FRAME_HEADER_BYTES + len(f)
                    payload_bytes = size - FRAME_HEADER_BYTES * len(batch)
                    box.bytes -= payload_bytes
                    data = b"".join(encode_frame(f) for f in batch)
                    sent = unreachable = False
                    # Two tries: on the current stream, then on a fresh one (the remote may
                    # have closed an idle stream, or reset one after a bad frame).
                    for _ in range(2):
                        if out is not None and out.dead.is_set():  # counted by the watcher
                            await self._drop_out_stream(out, ok=False)
                            out = None
                        if out is None:
                            try:
                                stream = await self._open_stream(peer_id, MSG_PROTOCOL)
                            except TransportError as exc:
                                self._log.log(logging.INFO, "send", "send to %s: %s", _short(peer_id), exc)
                                unreachable = True
                                break
                            out = _OutStream(stream)
                            watchers.start_soon(self._watch_out_stream, peer_id, out)
                        try:
                            with trio.fail_after(self.read_timeout_s):
                                await out.stream.write(data)
                            sent = True
                            break
                        except Exception as exc:  # TooSlowError or a stream error
                            self._stats["stream_failures"] += 1
                            self._log.log(logging.INFO, "send", "send to %s: stream broke: %s", _short(peer_id), _reason(exc))
                            await self._drop_out_stream(out, ok=False)
                            out = None
                    if sent:
                        self._stats["frames_out"] += len(batch)
                        self._stats["bytes_out"] += payload_bytes
                        failures = 0
                    else:
                        self._stats["frames_dropped_failed"] += len(batch)
                        if unreachable:
                            # Whatever else is queued would be stale by the time the peer
                            # is back; drop it now rather than hold it through the backoff.
                            self._stats["frames_dropped_failed"] += len(box.frames)
                            box.frames.clear()
                            box.bytes = 0
                        failures += 1
                        delay = min(_BACKOFF_MIN_S * 2 ** (failures - 1), _BACKOFF_MAX_S)
                        await trio.sleep(delay * self._rng.uniform(0.5, 1.0))
        finally:
            if self._outboxes.get(peer_id) is box:
                del self._outboxes[peer_id]
            if box.frames:
                self._stats["frames_dropped_failed"] += len(box.frames)
                box.frames.clear()
                box.bytes = 0
            if out is not None:
                await self._drop_out_stream(out, ok=True)

    async def _watch_out_stream(self, peer_id: str, out: _OutStream) -> None:
        """Notice when the remote ends our message stream, so the writer reopens it before writing.

        The remote never writes on a message stream, so this read returns only
        when the stream ends. It has no deadline of its own: it lives exactly as
        long as the stream, which the writer closes after ``stream_idle_s``.
        """
        with out.scope:
            try:
                data = await out.stream.read(1)
            except Exception:  # EOF, reset, connection gone: all mean the stream is over
                data = b""
            if data:
                self._stats["malformed_frames"] += 1
                self._log.log(logging.WARNING, "malformed_frames", "peer %s wrote on a message stream it receives; resetting it", _short(peer_id))
            # Only the remote ends a watched stream (the writer cancels the watch
            # before it closes or resets one itself).
            self._stats["stream_failures"] += 1
            out.dead.set()

    async def _drop_out_stream(self, out: _OutStream, ok: bool) -> None:
        out.scope.cancel()
        await _finish_stream(out.stream, ok)

    # ------------------------------------------------------------------
    # messages: receiving

    async def receive(self) -> tuple[str, bytes]:
        """The next inbound message frame and its authenticated sender's peer id."""
        while not self._inbox:
            if self._stopped:
                raise TransportError("transport stopped")
            await self._inbox_lot.park()
        return self._take()

    def receive_nowait(self) -> tuple[str, bytes]:
        """Like :meth:`receive`; raises ``trio.WouldBlock`` when the inbox is empty."""
        if not self._inbox:
            raise trio.WouldBlock
        return self._take()

    def _take(self) -> tuple[str, bytes]:
        peer_id, frame = self._inbox.popleft()
        self._inbox_bytes -= len(frame)
        left = self._inbox_per_peer[peer_id] - 1
        if left:
            self._inbox_per_peer[peer_id] = left
        else:
            del self._inbox_per_peer[peer_id]
        return peer_id, frame

    def _deliver(self, peer_id: str, frame: bytes) -> None:
        n = len(frame)
        mine = self._inbox_per_peer.get(peer_id, 0)
        if (
            len(self._inbox) >= self.inbox_max_frames
            or self._inbox_bytes + n > self.inbox_max_bytes
            or mine >= self.inbox_peer_max_frames
        ):
            # Never block here: a stalled reader lets the sender's yamux window
            # run dry, and yamux drops the writer after 5 s without telling anyone.
            self._stats["frames_dropped_in"] += 1
            self._log.log(logging.WARNING, "inbox", "inbox full: dropping a frame from %s (%d queued)", _short(peer_id), len(self._inbox))
            return
        self._inbox.append((peer_id, frame))
        self._inbox_bytes += n
        self._inbox_per_peer[peer_id] = mine + 1
        self._stats["frames_in"] += 1
        self._stats["bytes_in"] += n
        self._inbox_lot.unpark()

    async def _on_msg_stream(self, stream: Any) -> None:
        """Inbound message stream: read frames until the remote closes it."""
        peer_id = str(stream.muxed_conn.peer_id)
        open_now = self._inbound_msg_streams.get(peer_id, 0)
        if open_now >= _INBOUND_MSG_STREAMS_PER_PEER_MAX:
            self._stats["streams_refused"] += 1
            self._log.log(logging.WARNING, "refused", "peer %s opened too many message streams; refusing one", _short(peer_id))
            await _finish_stream(stream, ok=False)
            return
        self._inbound_msg_streams[peer_id] = open_now + 1
        decoder = FrameDecoder(self.frame_max_bytes)
        ok = False
        try:
            while True:
                in_frame = decoder.in_frame
                try:
                    with trio.fail_after(self.read_timeout_s if in_frame else 2 * self.stream_idle_s):
                        data = await stream.read(_READ_CHUNK_BYTES)
                except trio.TooSlowError:
                    if in_frame:
                        self._stats["read_timeouts"] += 1
                        self._log.log(logging.WARNING, "timeout", "peer %s: frame not complete within %g s; resetting stream", _short(peer_id), self.read_timeout_s)
                    else:
                        self._stats["idle_streams_closed"] += 1
                        ok = True
                    return
                except Exception:  # EOF, reset (0.8.1 mostly reports it as EOF too), connection gone
                    data = b""
                if not data:
                    decoder.close()  # FrameError if the stream ended inside a frame
                    ok = True
                    return
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    self._deliver(peer_id, frame)
        except FrameError as exc:
            key = "oversized_frames" if exc.kind == "oversized" else "malformed_frames"
            self._stats[key] += 1
            self._log.log(logging.WARNING, key, "peer %s: bad message frame: %s; resetting stream", _short(peer_id), exc)
        except Exception as exc:  # never let one stream's trouble reach libp2p's connection task
            self._stats["malformed_frames"] += 1
            self._log.log(logging.WARNING, "stream", "peer %s: message stream failed: %s", _short(peer_id), _reason(exc))
        finally:
            left = self._inbound_msg_streams[peer_id] - 1
            if left:
                self._inbound_msg_streams[peer_id] = left
            else:
                del self._inbound_msg_streams[peer_id]
            await _finish_stream(stream, ok)

    # ------------------------------------------------------------------
    # requests

    def set_request_handler(self, protocol: str, handler: RequestHandler) -> None:
        """Serve ``protocol``: ``await handler(peer_id, payload)`` returns the response bytes.

        A handler that raises, times out (``handler_timeout_s``) or returns
        something other than bytes gives the requester a TransportError with
        a short error text; it never affects the transport.
        """
        if not isinstance(protocol, str) or not protocol.startswith("/") or protocol == MSG_PROTOCOL:
            raise ValueError(f"not a request protocol id: {protocol!r} (use request_protocol(name))")
        self._handlers[protocol] = handler
        self._host.set_stream_handler(protocol, functools.partial(self._on_request_stream, protocol))

    async def request(
        self,
        peer_id_or_multiaddr: str,
        protocol: str,
        payload: bytes,
        *,
        timeout_s: float = 10.0,
        response_max_bytes: int | None = None,
    ) -> bytes:
        """Send one request on a new stream and return the response payload.

        ``peer_id_or_multiaddr`` is a peer id (dialled at a known address if
        not connected) or a full multiaddr ending in ``/p2p/<peer id>``.
        ``timeout_s`` covers everything: dialing, sending, the remote handler
        and the response. Raises TransportError on timeout, reset, oversize,
        or an error from the remote handler.
        """
        self._require_running()
        limit = self.frame_max_bytes if response_max_bytes is None else response_max_bytes
        if not 0 <= limit < (1 << 32) - 1:
            raise ValueError(f"response_max_bytes must be in [0, 2**32 - 1), got {limit}")
        self._stats["requests_out"] += 1
        if len(payload) > self.frame_max_bytes:
            self._stats["request_failures"] += 1
            raise TransportError(f"request {protocol}: payload of {len(payload)} bytes exceeds the limit of {self.frame_max_bytes}")
        target = peer_id_or_multiaddr
        body: bytes | None = None
        with trio.move_on_after(timeout_s) as scope:
            try:
                body = await self._request_once(peer_id_or_multiaddr, protocol, bytes(payload), limit)
            except TransportError as exc:
                if not scope.cancel_called:  # else the deadline caused it: reported as a timeout below
                    self._stats["request_failures"] += 1
                    raise TransportError(f"request {protocol} to {_short(target)}: {exc}") from None
        if body is None:
            self._stats["request_failures"] += 1
            self._stats["request_timeouts"] += 1
            raise TransportError(f"request {protocol} to {_short(target)}: no response within {timeout_s:g} s")
        if not body:
            self._stats["request_failures"] += 1
            raise TransportError(f"request {protocol} to {_short(target)}: empty response (no status byte)")
        status = body[0]
        if status == _STATUS_OK:
            return body[1:]
        self._stats["request_failures"] += 1
        if status == _STATUS_ERROR:
            text = body[1 : 1 + 4 * _ERROR_TEXT_MAX].decode("utf-8", "replace")[:_ERROR_TEXT_MAX]
            raise TransportError(f"request {protocol} to {_short(target)}: remote error: {text}")
        raise TransportError(f"request {protocol} to {_short(target)}: unknown response status {status}")

    async def _request_once(self, target: str, protocol: str, payload: bytes, limit: int) -> bytes:
        if target.startswith("/"):
            peer_id = await self.connect(target)
        else:
            peer_id = target
            try:
                _libp2p_id(peer_id)
            except _identity.IdentityError as exc:
                raise TransportError(str(exc)) from None
            if peer_id == self.peer_id:
                raise TransportError("cannot send a request to this peer itself")
        stream = await self._open_stream(peer_id, protocol)
        ok = False
        try:
            # The request side stays open until the response is in: the server
            # reads our end of stream as "requester gone" and cancels its handler.
            await stream.write(encode_frame(payload))
            decoder = FrameDecoder(limit + 1)  # + the status byte
            body = await self._read_frame(stream, decoder)
            ok = True
            return body
        except FrameError as exc:
            if exc.kind == "oversized":
                raise TransportError(f"response too large: {exc}") from None
            raise TransportError("stream ended before the whole response arrived (remote reset it?)") from None
        except Exception as exc:
            raise TransportError(f"stream failed: {_reason(exc)}") from None
        finally:
            await _finish_stream(stream, ok)

    async def _read_frame(self, stream: Any, decoder: FrameDecoder) -> bytes:
        """Read exactly one frame; the caller bounds the time (fail_after / move_on_after)."""
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                return frame
            try:
                data = await stream.read(_READ_CHUNK_BYTES)
            except Exception:  # EOF, reset, connection gone: the stream is over
                data = b""
            if not data:
                decoder.close()
                raise FrameError("truncated", "stream ended before a frame")
            decoder.feed(data)

    async def _on_request_stream(self, protocol: str, stream: Any) -> None:
        peer_id = str(stream.muxed_conn.peer_id)
        self._stats["requests_in"] += 1
        if self._requests_in_active >= self.requests_inbound_max:
            self._stats["requests_rejected"] += 1
            self._log.log(logging.WARNING, "busy", "refusing a %s request from %s: %d in progress", protocol, _short(peer_id), self._requests_in_active)
            await self._respond(stream, _STATUS_ERROR, b"busy: too many requests in progress")
            await _finish_stream(stream, ok=True)
            return
        self._requests_in_active += 1
        ok = False
        try:
            decoder = FrameDecoder(self.frame_max_bytes)
            try:
                with trio.fail_after(self.read_timeout_s):
                    payload = await self._read_frame(stream, decoder)
            except trio.TooSlowError:
                self._stats["read_timeouts"] += 1
                self._log.log(logging.WARNING, "timeout", "peer %s: %s request not complete within %g s; resetting stream", _short(peer_id), protocol, self.read_timeout_s)
                return
            except FrameError as exc:
                key = "oversized_frames" if exc.kind == "oversized" else "malformed_frames"
                self._stats[key] += 1
                self._log.log(logging.WARNING, key, "peer %s: bad %s request: %s; resetting stream", _short(peer_id), protocol, exc)
                return
            if decoder.buffered_bytes:
                self._stats["malformed_frames"] += 1
                self._log.log(logging.WARNING, "malformed_frames", "peer %s: bytes after a %s request; resetting stream", _short(peer_id), protocol)
                return
            handler = self._handlers.get(protocol)
            if handler is None:  # libp2p negotiated it, so it was registered; be safe anyway
                await self._respond(stream, _STATUS_ERROR, b"no handler")
                ok = True
                return
            outcome = await self._run_handler(handler, protocol, peer_id, payload, stream)
            if outcome is None:  # requester gone
                return
            status, body = outcome
            ok = await self._respond(stream, status, body)
        except Exception as exc:  # never let one stream's trouble reach libp2p's connection task
            self._log.log(logging.WARNING, "stream", "peer %s: %s request stream failed: %s", _short(peer_id), protocol, _reason(exc))
        finally:
            self._requests_in_active -= 1
            await _finish_stream(stream, ok)

    async def _run_handler(
        self, handler: RequestHandler, protocol: str, peer_id: str, payload: bytes, stream: Any
    ) -> tuple[int, bytes] | None:
        """(status, body) to send back, or None if the requester went away first."""
        outcome: tuple[int, bytes] | None = None
        gone = False

        async with trio.open_nursery() as nursery:

            async def watch_requester() -> None:
                # The requester writes nothing after its request and keeps its side
                # open until it has the response: any end of stream means it gave up.
                # Bounded by the handler's own deadline (the nursery is cancelled then).
                nonlocal gone
                try:
                    data = await stream.read(1)
                except Exception:
                    data = b""
                if data:
                    self._stats["malformed_frames"] += 1
                gone = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_requester)
            with trio.move_on_after(self.handler_timeout_s) as deadline:
                try:
                    result = await handler(peer_id, payload)
                except Exception as exc:
                    self._stats["handler_errors"] += 1
                    logger.error("%s handler failed on a request from %s", protocol, _short(peer_id), exc_info=True)
                    outcome = (_STATUS_ERROR, f"handler failed: {type(exc).__name__}: {exc}".encode()[: 4 * _ERROR_TEXT_MAX])
                else:
                    if type(result) is not bytes and not isinstance(result, (bytearray, memoryview)):
                        self._stats["handler_errors"] += 1
                        logger.error("%s handler returned %s, not bytes", protocol, type(result).__name__)
                        outcome = (_STATUS_ERROR, b"handler returned a non-bytes response")
                    elif len(result) > self.frame_max_bytes:
                        self._stats["handler_errors"] += 1
                        logger.error("%s handler returned %d bytes, over the %d-byte limit", protocol, len(result), self.frame_max_bytes)
                        outcome = (_STATUS_ERROR, b"response over the frame size limit")
                    else:
                        outcome = (_STATUS_OK, bytes(result))
            if deadline.cancelled_caught:
                self._stats["handler_errors"] += 1
                self._log.log(logging.WARNING, "handler_timeout", "%s handler timed out after %g s", protocol, self.handler_timeout_s)
                outcome = (_STATUS_ERROR, f"handler timed out after {self.handler_timeout_s:g} s".encode())
            nursery.cancel_scope.cancel()
        if gone and outcome is None:
            self._stats["requests_abandoned"] += 1
            return None
        return outcome

    async def _respond(self, stream: Any, status: int, body: bytes) -> bool:
        try:
            with trio.fail_after(self.read_timeout_s):
                await stream.write(encode_frame(bytes([status]) + body))
            return True
        except Exception as exc:
            self._log.log(logging.INFO, "respond", "could not send a response: %s", _reason(exc))
            return False

    # ------------------------------------------------------------------
    # helpers

    def statistics(self) -> dict[str, int]:
        """Counters since construction, plus current queue sizes; plain ints."""
        stats = dict(self._stats)
        stats["connected_peers"] = len(self._connected)
        stats["outboxes"] = len(self._outboxes)
        stats["outbox_frames"] = sum(len(b.frames) for b in self._outboxes.values())
        stats["outbox_bytes"] = sum(b.bytes for b in self._outboxes.values())
        stats["inbox_frames"] = len(self._inbox)
        stats["inbox_bytes"] = self._inbox_bytes
        stats["requests_in_active"] = self._requests_in_active
        return stats

    def _require_running(self) -> None:
        if not self._running:
            raise TransportError("transport is not running (start it with nursery.start(transport.run))")

    @staticmethod
    def _parse_listen_addr(text: str) -> Any:
        try:
            maddr = _lp().Multiaddr(text)
            names = [p.name for p in maddr.protocols()]
        except Exception as exc:
            raise TransportError(f"not a listen multiaddr: {text!r} ({_reason(exc)})") from None
        # TCP only: libp2p would build a QUIC or WebSocket transport from such an
        # address, with security other than the Noise this transport insists on.
        if names not in (["ip4", "tcp"], ["ip6", "tcp"]):
            raise TransportError(f"listen address {text!r}: only /ip4/<addr>/tcp/<port> and /ip6/<addr>/tcp/<port> are supported")
        return maddr

    @staticmethod
    def _parse_p2p_addr(text: str) -> tuple[str, Any]:
        """``/ip4/.../tcp/.../p2p/<id>`` -> (peer id, address without /p2p)."""
        lp = _lp()
        try:
            maddr = lp.Multiaddr(text)
            peer_id = maddr.get_peer_id()
        except Exception as exc:
            raise TransportError(f"not a multiaddr: {text!r} ({_reason(exc)})") from None
        if not peer_id or not str(text).rstrip("/").endswith(f"/p2p/{peer_id}"):
            raise TransportError(f"{text!r} does not end in /p2p/<peer id>")
        try:
            _libp2p_id(peer_id)
        except _identity.IdentityError as exc:
            raise TransportError(f"{text!r}: {exc}") from None
        base = maddr.decapsulate(lp.Multiaddr(f"/p2p/{peer_id}"))
        if not str(base):
            raise TransportError(f"{text!r} has no address before /p2p/")
        return peer_id, base
