"""The blob store inside the peer daemon: serve, find, fetch, advertise and replicate artifacts.

:class:`BlobService` is a daemon :class:`~arcnet.mesh.peer.Service`. It owns

* the peer's :class:`~arcnet.blobstore.store.Store` (``DATA_DIR/blobs``);
* a :class:`~arcnet.blobstore.bulk.BulkServer` on a TCP port of the host of
  the peer's first listen address (port 0: the OS picks), and its
  :class:`~arcnet.blobstore.bulk.TicketBook`;
* the libp2p request protocol ``blob`` (``/arcnet/req/blob/1.0.0``), one
  message each way, every sender authenticated by Noise:

  ====================  ==========================================================
  request               answer
  ====================  ==========================================================
  ``ManifestRequest``   ``ManifestData`` (the signed manifest) / ``BulkRefused``
  ``BulkOpen``          ``BulkTicket`` (one-time token bound to the asking peer id
                        and the artifact, and the bulk port; the host is the one
                        in the holder's libp2p address) / ``BulkRefused``
  ``ChunkHave`` (empty) ``ChunkHave`` with the bitmap of chunks held / ``BulkRefused``
  ``ChunkHave`` (bits)  a fetcher's *pushed* bitmap ("I have these now"): a running
                        fetch of the artifact takes the sender as a partial
                        holder; the answer is my bitmap, so both learn
  ``HolderRegister``    ``HolderList``: the directory records the *sender* as a
                        (partial or complete) holder, and names the others
  ``HolderLookup``      ``HolderList``
  ``BlobReplicate``     ``BlobAck``: a regional leader's "fetch this if you lack it"
  ====================  ==========================================================

* the fetches: :meth:`BlobService.fetch` finds holders (gossip's ``cache`` key
  for my region, hint peers, and the artifact's *holder directory*: the top-R
  live peers by rendezvous hash of the artifact id keep a soft-state list of
  who holds it, which holders refresh), gets the manifest, opens bulk
  sessions to several holders at once and runs the sans-IO
  :class:`~arcnet.blobstore.swarm.SwarmFetch` over them;
* advertising: the ids of complete artifacts go into gossip as the sampler
  reading ``artifacts`` (the state core publishes them as the ``cache`` key
  and compacts them into a Bloom filter beyond its ``cache_ids_max``); the
  policies of replicated artifacts go into the ``blob_policy`` key;
* replication: when this peer is its region's leader, a timer runs
  :class:`~arcnet.blobstore.replication.ReplicationPlanner` and sends its
  instructions (see that module);
* control methods for the CLI: ``blob.put``, ``blob.get``, ``blob.ls``
  (alias ``blob.list``), ``blob.stat``, ``blob.fetch``, ``blob.verify``.

**The fetch driver.** :func:`arcnet.blobstore.fetch.fetch_swarm` runs the
core over a fixed set of complete holders. A peer in a mesh needs more, so
the daemon drives the same core here with three additions: holders join
while the fetch runs (a discovery round every ``discover_interval_s``:
gossip, hints and the directory, where fetchers register as *partial*
holders as they start, so fetchers serve each other, BitTorrent-style);
partial holders join with the bitmap they answer to ``ChunkHave`` and
refresh it each round (the core's ``ChunkHave`` handling); and verified
chunks are written by a worker thread in group commits of
``commit_bytes`` (or whenever the queue runs dry; every group when the
store is not durable: a process crash keeps the page cache), so the peer's
event loop -- gossip, probes -- never waits on the disk, and a ``kill -9``
loses at most the chunks of one unfinished group and the 4 queued for the
writer.

**Sharing while fetching.** A fetcher *pushes* its bitmap of committed
chunks (a ``ChunkHave`` request) every ``have_push_chunks`` newly committed
chunks or ``have_push_interval_s``, whichever comes first (never more than
4 times a second), to at most ``have_push_peers_max`` peers fetching the
same artifact: those fetching from it first, then its partial holders and
the fetchers the directory names. The receiver feeds the bitmap to its
swarm core (or opens a session to the pusher when it has a free slot and
the pusher has chunks it lacks); a pusher is not polled. The core asks
*origins last* (see :mod:`arcnet.blobstore.swarm`), and each fetcher gets
an *origin share*: the chunks for which it ranks first by rendezvous hash
among the fetchers it knows (directory, pushes; a fetcher that finished
keeps its place, since it now serves its share), so the seed sends each
chunk about once and the fetchers spread it. The core verifies every chunk
against the manifest before anything is written; a holder that sends 3 bad
chunks is banned for the rest of the fetch.

**Limits.** Control messages are at most 1 MiB, so ``blob.put`` takes bytes
inline only up to ``inline_bytes_max`` (900 KiB); a larger file is put
through ``path``, a file on the peer's machine that the peer process can
read (the CLI does this when the peer is on the same machine). ``blob.get``
returns at most ``inline_bytes_max`` bytes per call (``offset``/``length``
windows), or writes the artifact to a ``path`` on the peer's machine
(paths only under ``path_roots``, never in the data directory). The
transport cancels a request handler after 60 s, so ``blob.fetch`` waits at
most ``wait_s`` (<= 50 s) and the fetch goes on in the background; call it
again to follow it.

**Test-only fault hook.** ``test_corrupt_fraction`` (environment
``ARCNET_BLOB_TEST_CORRUPT_FRACTION``; 0, off, by default) makes this peer's
bulk server corrupt one in every ``round(1 / fraction)`` chunks it sends:
how the tests and the benchmark play a holder with rotting disks.

Configuration: the ``[blob]`` table of ``config.toml`` sets the knobs of
:class:`BlobConfig`; ``ARCNET_BLOB_*`` environment variables override it
(tests, benchmarks). :mod:`arcnet.mesh.stack` builds the config and passes it in.

Knowingly left out: per-project encryption on ``blob.put`` (the store
takes ciphertext from :mod:`arcnet.blobstore.crypt`; the wiring is not
done); authorisation of control methods per project (``arcnet.mesh.authz``
checks signed requests once the daemon calls it); deleting artifacts and
de-registering from directories (entries expire after ``directory_ttl_s``);
choking or upload slots beyond the bulk server's connection bound.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import trio

from arcnet.mesh.core import CancelTimer, Emit, Send, SetTimer
from arcnet.mesh.wire import BOOL, BYTES32, PEER_ID, Codec, Enum, List, Message, WireError
from arcnet.placement.hashing import hrw_rank

from .bulk import CHUNK_HEADER, CHUNK_OK, BulkError, BulkServer, BulkSession, TicketBook, _send_all
from .chunking import ChunkingSpec
from .fetch import FetchError
from .messages import (
    BLOB_PROTOCOL,
    BulkOpen,
    BulkRefused,
    BulkTicket,
    ChunkCancel,
    ChunkData,
    ChunkHave,
    ChunkMissing,
    ChunkRequest,
    Manifest,
    ManifestData,
    ManifestRequest,
)
from .replication import POLICY_CODES, REPLICATED, Fetch, Forward, RegionView, ReplicationConfig, ReplicationPlanner
from .store import POLICIES, ArtifactInfo, Store, StoreError
from .swarm import CommitChunk, SwarmConfig, SwarmFetch

__all__ = [
    "BlobAck",
    "BlobConfig",
    "BlobReplicate",
    "BlobService",
    "HolderList",
    "HolderLookup",
    "HolderRegister",
    "blobs_of",
    "info_dict",
]

log = logging.getLogger("arcnet.blob")

_POLICY_NAMES = ("cache",) + REPLICATED
_CODE_POLICY = {v: k for k, v in POLICY_CODES.items()}
HOLDERS_LIST_MAX = 64
HINTS_MAX = 8


# -- directory and replication messages (tags 0x0620-0x062F of the blob store's range) ----


class HolderRegister(Message, tag=0x0620, protocol=BLOB_PROTOCOL):
    """"I hold (``complete``) or am fetching (not complete) ``artifact``": to its directory peers."""

    artifact = BYTES32
    complete = BOOL


class HolderLookup(Message, tag=0x0621, protocol=BLOB_PROTOCOL):
    artifact = BYTES32


class HolderList(Message, tag=0x0622, protocol=BLOB_PROTOCOL):
    """Holders a directory peer knows (``complete[i]`` for ``holders[i]``), freshest first."""

    artifact = BYTES32
    holders = List(PEER_ID, HOLDERS_LIST_MAX)
    complete = List(BOOL, HOLDERS_LIST_MAX)


class BlobReplicate(Message, tag=0x0623, protocol=BLOB_PROTOCOL):
    """A leader's instruction: ``peer`` scope: fetch it if you lack it; ``region``: your region should hold it."""

    artifact = BYTES32
    policy = Enum(*_POLICY_NAMES)
    scope = Enum("peer", "region")
    hints = List(PEER_ID, HINTS_MAX)


class BlobAck(Message, tag=0x0624, protocol=BLOB_PROTOCOL):
    artifact = BYTES32
    accepted = BOOL


# -- configuration --------------------------------------------------------------------------


@dataclass
class BlobConfig:
    """Knobs of the blob service; units last in the names. The ``[blob]`` table of
    ``config.toml`` sets them (same names); an ``ARCNET_BLOB_<NAME>`` environment
    variable overrides the table (tests, benchmarks). See :meth:`from_env`.

    ``durable`` (True): fsync every group commit (False survives a process
    crash but not a power cut; for benchmarks and scratch peers).
    ``cache_quota_bytes`` (0 = no bound): bound on stored bytes; unpinned
    artifacts are evicted LRU-first.
    ``inline_bytes_max`` (900 KiB): bytes carried inline by ``blob.put`` and
    one ``blob.get`` call (a control message is at most 1 MiB).
    ``fetches_max`` (4): fetches running at once; more wait their turn.
    ``fetch_holders_max`` (8): bulk sessions one fetch keeps open; the
    swarm's in-flight bound (4 per holder, 64 in all) makes 8 plenty.
    ``discover_interval_s`` (1 s): how often a running fetch looks for new
    holders and refreshes partial holders' bitmaps; each round costs one
    directory lookup and one ``ChunkHave`` per partial holder in session.
    ``stall_timeout_s`` (30 s): a fetch that has nothing to ask of anyone
    for this long fails (it resumes from the store when asked again).
    ``request_timeout_s`` (5 s): one ``blob`` request (manifest, ticket,
    bitmap, directory).
    ``commit_bytes`` (4 MiB): verified bytes per group commit while chunks
    keep arriving (what a ``kill -9`` can lose, besides what is in flight
    and the 4 chunks queued for the writer).
    ``serve_connections_max`` (32): concurrent bulk connections served (a
    seed takes one from each of the fetchers of a swarm: origin shares
    assume every fetcher reaches it).
    ``have_push_chunks`` (8), ``have_push_interval_s`` (1 s),
    ``have_push_peers_max`` (8): pushed ``ChunkHave`` batching and fan-out
    (module docstring); ``have_push_chunks`` 0 turns pushing off.
    ``directory_replicas`` (3): R, the peers keeping an artifact's holder
    directory (top-R by rendezvous hash of the id over live members).
    ``directory_ttl_s`` (600 s): a directory entry not refreshed expires;
    ``directory_refresh_s`` (240 s): holders re-register this often, at most
    ``directory_refresh_batch_max`` (64) artifacts per round;
    ``directory_artifacts_max`` (100,000): artifacts a directory peer keeps
    (the least recently registered go first; ~64 holders each, ~10 MB).
    ``replicate_interval_s`` (10 s): the leader's planning period;
    ``warm_copies`` (2) and ``durable_regions`` (3): see
    :mod:`arcnet.blobstore.replication`.
    ``failed_retry_s`` (30 s): a prefetch or replication fetch that failed is
    not started again sooner.
    ``path_roots`` ("": the peer user's home and the system temp directory):
    colon-separated directories under which ``blob.put`` may read and
    ``blob.get`` may write a ``path``; the data directory is always refused.
    A site sets it to a staging directory: a control client that may put or
    get can otherwise read or write any file of the peer's user there.
    ``test_corrupt_fraction`` (0): the test-only fault hook (module docstring).
    """

    durable: bool = True
    cache_quota_bytes: int = 0
    inline_bytes_max: int = 900 << 10
    fetches_max: int = 4
    fetch_holders_max: int = 8
    discover_interval_s: float = 1.0
    stall_timeout_s: float = 30.0
    request_timeout_s: float = 5.0
    commit_bytes: int = 4 << 20
    serve_connections_max: int = 32
    have_push_chunks: int = 8
    have_push_interval_s: float = 1.0
    have_push_peers_max: int = 8
    directory_replicas: int = 3
    directory_ttl_s: float = 600.0
    directory_refresh_s: float = 240.0
    directory_refresh_batch_max: int = 64
    directory_artifacts_max: int = 100_000
    replicate_interval_s: float = 10.0
    warm_copies: int = 2
    durable_regions: int = 3
    failed_retry_s: float = 30.0
    path_roots: str = ""
    test_corrupt_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.inline_bytes_max <= 900 << 10:
            raise ValueError("inline_bytes_max must be in 1..921600 (a control message is at most 1 MiB)")
        if min(self.fetches_max, self.fetch_holders_max, self.serve_connections_max, self.directory_replicas) < 1:
            raise ValueError("fetches_max, fetch_holders_max, serve_connections_max, directory_replicas must be >= 1")
        if min(self.discover_interval_s, self.stall_timeout_s, self.request_timeout_s, self.replicate_interval_s) <= 0:
            raise ValueError("intervals and timeouts must be > 0")
        if not 0 <= self.test_corrupt_fraction <= 1:
            raise ValueError("test_corrupt_fraction must be in [0, 1]")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, base: Mapping[str, Any] | None = None) -> "BlobConfig":
        """``base`` (the ``[blob]`` table of ``config.toml``, already validated by
        :func:`arcnet.mesh.config.load_config`) over the defaults, each overridden by
        its ``ARCNET_BLOB_<NAME>`` variable when set (e.g. ``ARCNET_BLOB_DURABLE=0``;
        for tests and benchmarks). ``env`` None reads ``os.environ``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = dict(base or {})
        for f in fields(cls):
            raw = env.get(f"ARCNET_BLOB_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(getattr(cls, f.name, f.default))
            try:
                if kind is bool:
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                else:
                    values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"ARCNET_BLOB_{f.name.upper()}={raw!r}: expected {kind.__name__}") from None
        return cls(**values)


# -- helpers ------------------------------------------------------------------------------------


def info_dict(info: ArtifactInfo) -> dict[str, Any]:
    """An artifact's store record as plain values (control results, ``--json``)."""
    return {
        "id": info.id_hex,
        "name": info.name,
        "version": info.version,
        "project": info.project,
        "media_type": info.media_type,
        "size": info.total_size,
        "chunks": info.chunk_count,
        "chunks_present": info.present_chunks,
        "complete": info.complete,
        "policy": info.policy,
        "pins": list(info.pins),
        "publisher": info.publisher,
        "created_s": info.created_s,
        "chunking": info.chunking,
    }


def host_of(multiaddr: str) -> str | None:
    """The host of ``/ip4/H/...``, ``/ip6/H/...`` or ``/dns*/H/...``; None otherwise."""
    parts = multiaddr.split("/")
    if len(parts) >= 3 and parts[1] in ("ip4", "ip6", "dns", "dns4", "dns6"):
        return parts[2]
    return None


def blobs_of(obj: Any) -> "BlobService":
    """The blob service of a node built by ``build_node``, or of a running daemon."""
    svc = getattr(obj, "blobs", None)
    if svc is None:
        node = getattr(obj, "node", None)
        svc = getattr(node, "blobs", None)
    if svc is None:
        for s in getattr(obj, "services", ()):
            if isinstance(s, BlobService):
                svc = s
    if svc is None:
        raise LookupError("this node or daemon runs no blob service")
    return svc  # type: ignore[no-any-return]


def _control_error(code: str, message: str) -> Exception:
    from arcnet.mesh.control import ControlError as _CE

    return _CE(code, message)


class _CorruptingBulkServer(BulkServer):
    """TEST-ONLY FAULT: corrupts one in every ``period`` chunks it sends (one byte flipped)."""

    def __init__(self, *a: Any, period: int, **kw: Any):
        super().__init__(*a, **kw)
        self.period = max(1, period)
        self.sent_total = 0
        self.corrupted = 0

    async def _send_chunk(self, sock: Any, refs: Sequence[Any], index: int) -> None:
        self.sent_total += 1
        if self.sent_total % self.period or index >= len(refs):
            return await super()._send_chunk(sock, refs, index)
        try:
            path, stored, codec, size = self.store.chunk_file(refs[index].id)
        except StoreError:
            return await super()._send_chunk(sock, refs, index)
        with open(path, "rb") as f:
            data = bytearray(f.read(stored))
        data[len(data) // 2] ^= 0xFF
        self.corrupted += 1
        await _send_all(sock, CHUNK_HEADER.pack(index, CHUNK_OK, codec, stored, size))
        await _send_all(sock, data)

    def statistics(self) -> dict[str, float]:
        return {**super().statistics(), "test_corrupted": self.corrupted}


@dataclass
class _Fetch:
    """One artifact being fetched; every caller that asks for it shares it."""

    aid: bytes
    hints: list[str]
    pin: str | None
    policy: str
    state: str = "queued"  # queued | manifest | fetching | done | failed
    error: str = ""
    manifest: Manifest | None = None
    chunks_total: int = 0
    chunks_have: int = 0
    bytes_total: int = 0
    bytes_have: int = 0
    bytes_received: int = 0
    chunks_fetched: int = 0
    bad_chunks: int = 0
    banned: list[str] = field(default_factory=list)
    from_peer: dict[str, int] = field(default_factory=dict)  # chunks committed per holder
    bad_from: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0
    core: Any = None  # the SwarmFetch while it runs: its counters are reported
    swarm: dict[str, float] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)
    listeners: list[Callable[[int, int], None]] = field(default_factory=list)
    # sharing while fetching (set while the swarm runs)
    inbox: Any = None  # the driver's event channel
    flushed: bytearray | None = None  # ChunkHave bitmap of the chunks committed to the store
    downstream: OrderedDict = field(default_factory=OrderedDict)  # peer -> when it last asked us for this artifact
    pushed: dict[str, bytes] = field(default_factory=dict)  # pushed bitmaps not yet taken by the driver

    def note_downstream(self, peer: str, now: float) -> None:
        self.downstream.pop(peer, None)
        self.downstream[peer] = now
        while len(self.downstream) > HOLDERS_LIST_MAX:
            self.downstream.popitem(last=False)

    def as_dict(self, now: float) -> dict[str, Any]:
        end = self.finished_at or now
        return {
            "artifact": self.aid.hex(),
            "state": self.state,
            "error": self.error,
            "chunks_total": self.chunks_total,
            "chunks_have": self.chunks_have,
            "bytes_total": self.bytes_total,
            "bytes_have": self.bytes_have,
            "bytes_received": self.bytes_received,
            "chunks_fetched": self.chunks_fetched,
            "bad_chunks": self.bad_chunks,
            "banned": list(self.banned),
            "from_peer": dict(self.from_peer),
            "bad_from": dict(self.bad_from),
            "elapsed_s": round(end - self.started_at, 3) if self.started_at else 0.0,
            "swarm": self.core.statistics() if self.core is not None else dict(self.swarm),
        }


# -- the service ----------------------------------------------------------------------------------


class BlobService:
    """The blob store of one running peer (see the module docstring).

    API for other services (find it with :func:`blobs_of` on the node or the
    daemon, or as ``node.blobs``)::

        m = await blobs.fetch(artifact_id, hint_peers=(entry_peer, *custodians), progress=cb)
        blobs.prefetch([artifact_id, ...], hint_peers=(...))      # returns at once
        aid, m = await blobs.put_bytes(data, name="out.bin", project="p", policy="warm")
        aid, m = await blobs.put_file(path, project="p", policy="hot")
        blobs.store                                                 # the Store (read chunks, stat)
    """

    name = "blob"

    def __init__(self, ctx: Any, config: BlobConfig | None = None):
        self.ctx = ctx
        self.config = cfg = config or BlobConfig()  # the daemon passes config.toml [blob] + environment
        self.me: str = ctx.identity.peer_id
        self.region: str = ctx.config.region
        self.store = Store.open(ctx.config.data_dir, durable=cfg.durable,
                                cache_quota_bytes=cfg.cache_quota_bytes or None)
        self.tickets = TicketBook(ttl_s=30.0)
        if cfg.test_corrupt_fraction > 0:
            period = max(1, round(1 / cfg.test_corrupt_fraction))
            log.warning("TEST FAULT ON: this peer's bulk server corrupts 1 in %d chunks it sends", period)
            self.server: BulkServer = _CorruptingBulkServer(self.store, self.tickets,
                                                            connections_max=cfg.serve_connections_max, period=period)
        else:
            self.server = BulkServer(self.store, self.tickets, connections_max=cfg.serve_connections_max)
        self.host = host_of(ctx.address) or "127.0.0.1"
        self.rng = random.Random(ctx.rng.getrandbits(64))
        self.swarm_config = SwarmConfig()
        self.planner = ReplicationPlanner(self.me, ReplicationConfig(warm_copies=cfg.warm_copies,
                                                                     durable_regions=cfg.durable_regions))
        self.daemon: Any = None
        self.node: Any = None
        self.codec = Codec()
        self._nursery: trio.Nursery | None = None
        self._limiter = trio.CapacityLimiter(cfg.fetches_max)
        self._fetches: dict[bytes, _Fetch] = {}
        self._finished: OrderedDict[bytes, _Fetch] = OrderedDict()  # the last 256, for blob.fetch / stat
        self._failed_at: dict[bytes, float] = {}
        self._directory: OrderedDict[bytes, dict[str, tuple[bool, float]]] = OrderedDict()
        self._adopted: dict[str, tuple[str, tuple[str, ...], float]] = {}  # hex -> (policy, hints, until)
        self._hint_addrs: dict[str, str] = {}
        self._advertised: list[str] = []
        self._policies: list[tuple[bytes, str]] = []
        self._replicate_wake = trio.Event()
        self._stats = dict.fromkeys(
            (
                "bytes_in", "chunks_verified", "bad_chunks", "bans", "fetches_started", "fetches_done",
                "fetches_failed", "requests_served", "requests_refused", "requests_bad", "tickets_issued",
                "directory_registers", "directory_lookups", "replicate_sent", "replicate_received",
                "replicate_refused", "forwards_sent", "puts", "holders_connected", "holder_connect_failures",
                "haves_pushed", "haves_received", "sessions_swapped",
            ),
            0,
        )  # fmt: skip
        self._refresh_local()

    # -- wiring ------------------------------------------------------------------------

    def sampler(self, inner: Callable[[float], Mapping[str, Any]] | None) -> Callable[[float], Mapping[str, Any]]:
        """Wrap the gossip sampler so the peer's state carries the complete artifacts it holds."""

        def sample(now: float) -> Mapping[str, Any]:
            readings = dict(inner(now) or {}) if inner is not None else {}
            readings["artifacts"] = self._advertised
            return readings

        return sample

    def attach(self, daemon: Any) -> None:
        from arcnet.mesh.transport import request_protocol

        self.daemon = daemon
        self.node = daemon.node
        self.codec = daemon.codec
        daemon.transport.set_request_handler(request_protocol(BLOB_PROTOCOL), self._handle_request)
        for name, fn in (
            ("blob.put", self._ctl_put),
            ("blob.get", self._ctl_get),
            ("blob.ls", self._ctl_ls),
            ("blob.list", self._ctl_ls),
            ("blob.stat", self._ctl_stat),
            ("blob.fetch", self._ctl_fetch),
            ("blob.verify", self._ctl_verify),
        ):
            daemon.register_control(name, fn)

    async def run(self, daemon: Any) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            port = await nursery.start(self.server.serve, self.host, 0)
            log.info("blob store: %d artifacts, %d bytes; bulk port %s:%d", len(self._advertised),
                     self.store.statistics()["stored_bytes"], self.host, port)
            nursery.start_soon(self._directory_loop)
            nursery.start_soon(self._replication_loop)
            self._publish_policies()

    def close(self) -> None:
        self.store.close()

    def statistics(self) -> dict[str, float]:
        out: dict[str, float] = dict(self._stats)
        srv = self.server.statistics()
        out["bytes_out"] = srv.get("bytes_sent", 0)
        out["chunks_out"] = srv.get("chunks_sent", 0)
        out["serve_active"] = srv.get("active", 0)
        out["serve_refused"] = srv.get("refused", 0)
        if "test_corrupted" in srv:
            out["test_corrupted"] = srv["test_corrupted"]
        running = list(self._fetches.values())
        out["fetches_active"] = len(running)
        out["fetch_chunks_have"] = sum(f.chunks_have for f in running)
        out["fetch_chunks_total"] = sum(f.chunks_total for f in running)
        out["fetch_bytes_have"] = sum(f.bytes_have for f in running)
        out["fetch_bytes_total"] = sum(f.bytes_total for f in running)
        out["directory_artifacts"] = len(self._directory)
        out["advertised"] = len(self._advertised)
        try:
            st = self.store.statistics()
        except StoreError:
            st = {}
        out["store_bytes"] = st.get("stored_bytes", 0)
        out["store_chunks"] = st.get("chunks", 0)
        out["store_artifacts"] = st.get("artifacts", 0)
        out["store_corrupt_detected"] = st.get("corrupt_detected", 0)
        for k, v in self.planner.statistics().items():
            out[f"replication_{k}"] = v
        return out

    # -- audit ---------------------------------------------------------------------------------

    def _audit(self, kind: str, data: dict[str, Any]) -> None:
        """Append an ``artifact.*`` entry to the peer's audit log, when the daemon runs one."""
        if self.daemon is None:
            return
        try:
            from arcnet.audit.service import audit_of
        except ImportError:
            return
        svc = audit_of(self.daemon)
        if svc is not None:
            svc.record(kind, {"artifact": f"blake3:{data.pop('aid').hex()}", **data})

    # -- gossip: what this peer holds ----------------------------------------------------------

    @property
    def gossip(self) -> Any:
        from arcnet.gossip.stack import gossip_of

        return gossip_of(self.node)

    def _refresh_local(self) -> None:
        """Recompute the advertised ids (complete artifacts) and the replicated policies."""
        try:
            infos = self.store.list_artifacts()
        except StoreError:
            return
        self._advertised = sorted(i.id_hex for i in infos if i.complete)
        self._policies = sorted((i.id, i.policy) for i in infos if i.complete and i.policy in REPLICATED)
        if self.node is not None:
            self._publish_policies()

    def _publish_policies(self) -> None:
        # a state value is at most 768 bytes: 16 x (32-byte id + code) fits; the rest is left out
        value = tuple((aid, POLICY_CODES[p]) for aid, p in self._policies[:16])
        state = self.gossip.state
        if state.local("blob_policy") != value and (value or state.local("blob_policy") is not None):
            state.set_local("blob_policy", value)

    def _alive(self) -> list[str]:
        """Live members of the mesh, me included, sorted."""
        g = self.gossip
        return sorted(set(g.members.alive_peers()) | {self.me})

    def _directory_peers(self, aid: bytes) -> list[str]:
        return hrw_rank(aid.hex(), self._alive(), self.config.directory_replicas)

    def _bulk_host(self, peer: str) -> str | None:
        m = self.gossip.members.member(peer)
        addr = (m or {}).get("addr") or self._hint_addrs.get(peer, "")
        return host_of(addr) if addr else None

    # -- the blob request protocol: client side -----------------------------------------------

    async def _ask(self, peer: str, msg: Message, timeout_s: float | None = None) -> Message:
        from arcnet.mesh.transport import TransportError, request_protocol

        try:
            data = await self.daemon.transport.request(peer, request_protocol(BLOB_PROTOCOL), self.codec.encode(msg),
                                                       timeout_s=timeout_s or self.config.request_timeout_s)
            return self.codec.decode(data)
        except (TransportError, WireError) as exc:
            raise BulkError(str(exc)) from None

    async def _register(self, aid: bytes, complete: bool) -> None:
        """Tell the artifact's directory peers that I hold it (or am fetching it)."""
        msg = HolderRegister(aid, complete)

        async def one(peer: str) -> None:
            with contextlib.suppress(BulkError):
                await self._ask(peer, msg)
                self._stats["directory_registers"] += 1

        async with trio.open_nursery() as n:
            for peer in self._directory_peers(aid):
                if peer == self.me:
                    self._dir_add(aid, self.me, complete)
                else:
                    n.start_soon(one, peer)

    async def _lookup(self, aid: bytes, peers: Sequence[str] | None = None) -> dict[str, bool]:
        """Holders the directory peers know: peer -> complete."""
        out: dict[str, bool] = {}

        def merge(holders: Iterable[str], complete: Iterable[bool]) -> None:
            for h, c in zip(holders, complete):
                out[h] = out.get(h, False) or bool(c)

        async def one(peer: str) -> None:
            try:
                reply = await self._ask(peer, HolderLookup(aid))
            except BulkError:
                return
            self._stats["directory_lookups"] += 1
            if isinstance(reply, HolderList) and reply.artifact == aid:
                merge(reply.holders, reply.complete)

        async with trio.open_nursery() as n:
            for peer in peers if peers is not None else self._directory_peers(aid):
                if peer == self.me:
                    local = self._dir_list(aid)
                    merge(local.holders, local.complete)
                else:
                    n.start_soon(one, peer)
        return out

    # -- the directory (soft state on the top-R peers of each artifact) ----------------------

    def _dir_add(self, aid: bytes, peer: str, complete: bool) -> None:
        now = trio.current_time()
        entry = self._directory.pop(aid, None) or {}
        old = entry.pop(peer, None)
        entry[peer] = (complete or (old is not None and old[0] and now < old[1]), now + self.config.directory_ttl_s)
        while len(entry) > HOLDERS_LIST_MAX:
            del entry[next(iter(entry))]  # the least recently registered goes
        self._directory[aid] = entry
        while len(self._directory) > self.config.directory_artifacts_max:
            self._directory.popitem(last=False)

    def _dir_list(self, aid: bytes) -> HolderList:
        now = trio.current_time()
        entry = self._directory.get(aid, {})
        alive = self.gossip.members.is_alive
        live = [(p, c) for p, (c, until) in entry.items() if until > now and alive(p)]
        live.reverse()  # freshest first
        if self.me not in entry and self._complete(aid):
            live.insert(0, (self.me, True))
        live = live[:HOLDERS_LIST_MAX]
        return HolderList(aid, [p for p, _ in live], [c for _, c in live])

    async def _directory_loop(self) -> None:
        """Re-register complete artifacts with their (possibly moved) directory peers; expire old entries."""
        cfg = self.config
        cursor = 0
        while True:
            await trio.sleep(cfg.directory_refresh_s)
            now = trio.current_time()
            for aid in list(self._directory):
                entry = self._directory[aid]
                for p in [p for p, (_, until) in entry.items() if until <= now]:
                    del entry[p]
                if not entry:
                    del self._directory[aid]
            ids = self._advertised
            if not ids:
                continue
            batch = [ids[(cursor + i) % len(ids)] for i in range(min(len(ids), cfg.directory_refresh_batch_max))]
            cursor = (cursor + len(batch)) % len(ids)
            for h in batch:
                await self._register(bytes.fromhex(h), True)

    # -- the blob request protocol: server side -----------------------------------------------

    def _complete(self, aid: bytes) -> bool:
        try:
            return self.store.stat(aid).complete
        except StoreError:
            return False

    async def _handle_request(self, peer: str, payload: bytes) -> bytes:
        try:
            msg = self.codec.decode(payload)
        except WireError:
            self._stats["requests_bad"] += 1
            raise
        self._stats["requests_served"] += 1
        reply = await self._answer(peer, msg)
        if isinstance(reply, BulkRefused):
            self._stats["requests_refused"] += 1
        return self.codec.encode(reply)

    async def _answer(self, peer: str, msg: Message) -> Message:
        if isinstance(msg, ManifestRequest):
            try:
                m = self.store.manifest(msg.artifact)
            except StoreError:
                return BulkRefused(msg.artifact, "not_have")
            return ManifestData(msg.artifact, m.body, m.signature)
        if isinstance(msg, BulkOpen):
            if self.server.port is None:
                return BulkRefused(msg.artifact, "disabled")
            try:
                self.store.manifest(msg.artifact)
            except StoreError:
                return BulkRefused(msg.artifact, "not_have")
            if self.server.statistics()["active"] >= self.server.connections_max:
                return BulkRefused(msg.artifact, "busy")
            job = self._fetches.get(msg.artifact)
            if job is not None:
                job.note_downstream(peer, trio.current_time())
            token = secrets.token_bytes(32)
            self.tickets.issue(self.daemon.now(), peer, msg.artifact, token)
            self._stats["tickets_issued"] += 1
            # what the holder can vouch for: a ticket for this artifact went to this authenticated peer
            self._audit("artifact.served", {"aid": msg.artifact, "to": peer,
                                            "size_bytes": self.store.stat(msg.artifact).total_size})
            return BulkTicket(msg.artifact, token, self.server.port, int(self.tickets.ttl_s * 1000))
        if isinstance(msg, ChunkHave):
            job = self._fetches.get(msg.artifact)
            if job is not None and job.inbox is not None and job.flushed is not None:
                # a peer fetching this artifact too: it pulls from us, or pushes what it has
                job.note_downstream(peer, trio.current_time())
                if msg.chunk_count == job.chunks_total and any(msg.bitmap):
                    self._stats["haves_received"] += 1
                    if peer not in job.pushed and len(job.pushed) < HOLDERS_LIST_MAX:
                        job.inbox.send_nowait(("pushed", peer))  # coalesced: one event per peer pending
                    if peer in job.pushed or len(job.pushed) < HOLDERS_LIST_MAX:
                        job.pushed[peer] = bytes(msg.bitmap)
                return ChunkHave(msg.artifact, job.chunks_total, bytes(job.flushed))
            try:
                bitmap = self.store.present_bitmap(msg.artifact)
                n = self.store.stat(msg.artifact).chunk_count
            except StoreError:
                return BulkRefused(msg.artifact, "not_have")
            return ChunkHave(msg.artifact, n, bitmap)
        if isinstance(msg, HolderRegister):
            self._dir_add(msg.artifact, peer, msg.complete)
            return self._dir_list(msg.artifact)
        if isinstance(msg, HolderLookup):
            return self._dir_list(msg.artifact)
        if isinstance(msg, BlobReplicate):
            return BlobAck(msg.artifact, self._on_replicate(peer, msg))
        self._stats["requests_bad"] += 1
        raise ValueError(f"the blob protocol does not answer {type(msg).__name__}")

    # -- fetching ------------------------------------------------------------------------------

    def _hint_ids(self, hint_peers: Iterable[str]) -> list[str]:
        out: list[str] = []
        for h in hint_peers:
            if not h:
                continue
            if h.startswith("/"):
                if "/p2p/" not in h:
                    continue
                pid = h.rsplit("/p2p/", 1)[1]
                self._hint_addrs.pop(pid, None)
                self._hint_addrs[pid] = h
                while len(self._hint_addrs) > 4096:
                    del self._hint_addrs[next(iter(self._hint_addrs))]
                with contextlib.suppress(Exception):
                    self.daemon.transport.add_address(pid, h)
                h = pid
            if h != self.me and h not in out:
                out.append(h)
        return out[:HINTS_MAX]

    def job(self, aid: bytes) -> _Fetch | None:
        """The running (or a recently finished) fetch of ``aid``."""
        return self._fetches.get(aid) or self._finished.get(aid)

    def _start(self, aid: bytes, hints: Sequence[str], pin: str | None, policy: str) -> _Fetch:
        job = self._fetches.get(aid)
        if job is not None:
            for h in self._hint_ids(hints):
                if h not in job.hints:
                    job.hints.append(h)
            return job
        if self._nursery is None:
            raise FetchError("the blob service is not running")
        job = _Fetch(aid, self._hint_ids(hints), pin, policy if policy in POLICIES else "cache")
        job.started_at = trio.current_time()
        self._fetches[aid] = job
        self._finished.pop(aid, None)
        self._stats["fetches_started"] += 1
        self._nursery.start_soon(self._run_fetch, job)
        return job

    async def fetch(self, artifact_id: bytes | str, hint_peers: Sequence[str] = (), progress: Callable[[int, int], None] | None = None,
                    *, pin: str | None = None, policy: str = "cache") -> Manifest:
        """Make the artifact complete in this peer's store (fetching what is missing); its manifest.

        ``hint_peers``: peer ids or multiaddrs likely to hold it (a job's entry
        peer and custodians), besides gossip and the directory. ``progress``
        is called with ``(bytes_have, bytes_total)`` as chunks arrive.
        ``pin``: pin reason to add (e.g. ``"job:<id>"``). Raises
        :class:`~arcnet.blobstore.fetch.FetchError` when no holder can finish it.
        """
        aid = bytes.fromhex(artifact_id) if isinstance(artifact_id, str) else artifact_id
        if self._complete(aid):
            if pin:
                self.store.pin(aid, pin)
            self.store.touch(aid)
            return self.store.manifest(aid)
        job = self._start(aid, hint_peers, pin, policy)
        if progress is not None:
            job.listeners.append(progress)
        try:
            await job.done.wait()
        finally:
            if progress is not None and progress in job.listeners:
                job.listeners.remove(progress)
        if job.state != "done":
            raise FetchError(job.error or "fetch failed")
        assert job.manifest is not None
        return job.manifest

    def prefetch(self, artifact_ids: Iterable[bytes | str], hint_peers: Sequence[str] = (), *, pin: str | None = None,
                 policy: str = "cache") -> int:
        """Start fetching each artifact not held (at most ``fetches_max`` run at once); returns at once.

        Meant for a job service when a task is awarded. An artifact whose
        fetch failed less than ``failed_retry_s`` ago is not started again
        (rate limit); one held or already being fetched costs nothing.
        Returns how many fetches were started or joined.
        """
        now = trio.current_time()
        n = 0
        for a in artifact_ids:
            aid = bytes.fromhex(a) if isinstance(a, str) else a
            if len(aid) != 32 or self._complete(aid):
                continue
            failed = self._failed_at.get(aid)
            if failed is not None and now - failed < self.config.failed_retry_s and aid not in self._fetches:
                continue
            try:
                self._start(aid, hint_peers, pin, policy)
            except FetchError:
                return n
            n += 1
        return n

    async def _run_fetch(self, job: _Fetch) -> None:
        try:
            async with self._limiter:
                await self._fetch_one(job)
            job.state = "done"
            self._stats["fetches_done"] += 1
            self._failed_at.pop(job.aid, None)
        except (FetchError, StoreError, BulkError, OSError) as exc:
            job.state = "failed"
            job.error = str(exc) or type(exc).__name__
            self._stats["fetches_failed"] += 1
            self._failed_at[job.aid] = trio.current_time()
            while len(self._failed_at) > 4096:
                del self._failed_at[next(iter(self._failed_at))]
            log.warning("fetch of %s failed: %s", job.aid.hex()[:16], job.error)
        finally:
            job.finished_at = trio.current_time()
            self._fetches.pop(job.aid, None)
            self._finished[job.aid] = job
            while len(self._finished) > 256:
                self._finished.popitem(last=False)
            job.done.set()

    async def _candidates(self, aid: bytes, job: _Fetch, directory: bool) -> dict[str, bool | None]:
        """Possible holders: peer -> True (complete), False (partial), None (unknown)."""
        out: dict[str, bool | None] = {}
        if directory:
            for p, c in (await self._lookup(aid)).items():
                out[p] = c
        for p in self.gossip.view.holders_of(aid.hex()):
            out[p] = True
        for p in job.hints:
            out.setdefault(p, None)
        out.pop(self.me, None)
        return out

    async def _get_manifest(self, aid: bytes, job: _Fetch) -> Manifest:
        with contextlib.suppress(StoreError):
            m = self.store.manifest(aid)
            self.store.add_manifest(m, pin=job.pin, policy=job.policy)
            return m
        cands = await self._candidates(aid, job, directory=True)
        order = sorted(cands, key=lambda p: (cands[p] is not True, p not in job.hints, p))
        errors = []
        for peer in order[:8]:
            try:
                reply = await self._ask(peer, ManifestRequest(aid))
            except BulkError as exc:
                errors.append(f"{peer[-8:]}: {exc}")
                continue
            if not isinstance(reply, ManifestData) or reply.artifact != aid:
                continue
            m = Manifest(reply.body, reply.signature)
            try:
                self.store.add_manifest(m, pin=job.pin, policy=job.policy, expected_id=aid)
            except StoreError as exc:  # a bad or forged manifest: try the next holder
                errors.append(f"{peer[-8:]}: {exc}")
                continue
            return m
        why = "; ".join(errors[:3]) or "no peer named it"
        raise FetchError(f"artifact {aid.hex()[:16]}: no holder found ({len(cands)} candidates; {why})")

    async def _fetch_one(self, job: _Fetch) -> None:
        aid = job.aid
        job.state = "manifest"
        m = await self._get_manifest(aid, job)
        job.manifest = m
        refs = m.body.chunks
        job.chunks_total, job.bytes_total = len(refs), m.body.total_size
        missing = set(self.store.missing(aid))
        job.chunks_have = len(refs) - len(missing)
        job.bytes_have = sum(r.size for i, r in enumerate(refs) if i not in missing)
        if missing:
            job.state = "fetching"
            await self._register(aid, False)  # before looking for the others: fetchers starting together meet
            with self.store.writing(aid):
                await self._swarm(job, m, missing)
        if not self.store.is_complete(aid):
            raise FetchError(f"artifact {aid.hex()[:16]}: {len(self.store.missing(aid))} chunks still missing")
        if job.pin:
            self.store.pin(aid, job.pin)
        if missing:
            self._audit("artifact.fetched", {"aid": aid, "size_bytes": m.body.total_size,
                                             "sources": sorted(job.from_peer)})
        self._refresh_local()
        assert self._nursery is not None
        self._nursery.start_soon(self._register, aid, True)
        if job.policy in REPLICATED:
            self._replicate_wake.set()

    async def _open_holder(self, aid: bytes, m: Manifest, peer: str, complete: bool | None) -> tuple[BulkSession, bytes | None] | None:
        """Ticket, bitmap and bulk session for one holder; None if it has nothing for us now."""
        n = len(m.body.chunks)
        bitmap: bytes | None = None
        if complete is not True:
            reply = await self._ask(peer, ChunkHave(aid, 0, b""))
            if not isinstance(reply, ChunkHave) or reply.chunk_count != n:
                return None
            if not any(reply.bitmap):
                return None
            bitmap = None if reply.bitmap == self._full(n) else reply.bitmap
        host = self._bulk_host(peer)
        if host is None:
            raise BulkError(f"no address known for {peer[-8:]}")
        reply = await self._ask(peer, BulkOpen(aid))
        if not isinstance(reply, BulkTicket) or reply.artifact != aid:
            return None
        session = BulkSession((host, reply.port), reply.token, m)
        await session.connect()
        return session, bitmap

    async def _swarm(self, job: _Fetch, m: Manifest, missing: set[int]) -> None:
        """Run the swarm core until every chunk is here (see "The fetch driver" above)."""
        cfg = self.config
        aid = job.aid
        refs = m.body.chunks
        n = len(refs)
        core = SwarmFetch(m, rng=random.Random(self.rng.getrandbits(64)), have=set(range(n)) - missing,
                          config=self.swarm_config, artifact_id=aid)
        job.core = core
        inbox_send, inbox_recv = trio.open_memory_channel[tuple[Any, ...]](math.inf)
        commit_send, commit_recv = trio.open_memory_channel[CommitChunk](4)
        flushed = bytearray((n + 7) // 8)  # what the store has made visible: what we push and answer
        for i in range(n):
            if i not in missing:
                flushed[i >> 3] |= 1 << (i & 7)
        committed = [n - len(missing)]  # chunks in `flushed`
        job.flushed, job.inbox, job.pushed = flushed, inbox_send, {}
        fetchers_dir: set[str] = set()  # partial holders the directory named last
        pushed_at: dict[str, float] = {}
        complete_peers: set[str] = set()
        seen_fetching: set[str] = set()  # peers seen fetching it: complete later, still not origins
        share_of: list[frozenset[str]] = [frozenset()]
        sessions: dict[str, BulkSession] = {}
        partial: set[str] = set()
        connecting: set[str] = set()
        retry_at: dict[str, float] = {}
        cancels: dict[str, trio.CancelScope] = {}
        timers: dict[Any, float] = {}
        failure: list[str] = []

        async def reader(peer: str, session: BulkSession, scope: trio.CancelScope) -> None:
            with scope:
                try:
                    while True:
                        index, ok, codec, _size, data = await session.receive()
                        msg: Any = ChunkData(aid, index, refs[index].id, codec, data) if ok else ChunkMissing(aid, index, "not_have")
                        inbox_send.send_nowait(("msg", peer, msg))
                except (BulkError, OSError):
                    inbox_send.send_nowait(("broken", peer))
                finally:
                    with contextlib.suppress(Exception):
                        await session.aclose()

        async def connect(peer: str, complete: bool | None) -> None:
            try:
                with trio.fail_after(cfg.request_timeout_s * 2):
                    got = await self._open_holder(aid, m, peer, complete)
            except (BulkError, OSError, trio.TooSlowError) as exc:
                self._stats["holder_connect_failures"] += 1
                log.debug("holder %s for %s: %s", peer[-8:], aid.hex()[:16], exc)
                got = None
            inbox_send.send_nowait(("holder", peer, got))

        async def refresh(peer: str) -> None:
            try:
                reply = await self._ask(peer, ChunkHave(aid, 0, b""))
            except BulkError:
                return
            if isinstance(reply, ChunkHave) and reply.chunk_count == n:
                inbox_send.send_nowait(("have", peer, reply.bitmap))

        rediscover = [trio.Event()]

        def new_fetcher(peer: str) -> None:
            if peer not in share_of[0]:
                rediscover[0].set()

        async def discover(nursery: trio.Nursery) -> None:
            rounds = 0
            while True:
                now = trio.current_time()
                # the directory at the first two rounds (fetchers starting together find each other),
                # then every fourth: each lookup is R requests
                directory = rounds < 2 or rounds % 4 == 0
                cands = await self._candidates(aid, job, directory=directory)
                rounds += 1
                if directory:
                    fetchers_dir.clear()
                    fetchers_dir.update(p for p, c in cands.items() if c is False)
                    seen_fetching.update(fetchers_dir)
                complete_peers.update(p for p, c in cands.items() if c is True)
                # the fetchers sharing the origin's work: those fetching now, and those that finished
                # (they brought their share into the swarm and serve it; dropping them would widen
                # the stragglers' shares and send them back to the origin for chunks peers hold)
                others = frozenset(p for p in fetchers_dir | set(partial) | {p for p, t in pushed_at.items() if now - t < 10.0}
                                   if p not in complete_peers) | (complete_peers & seen_fetching)
                if others != share_of[0]:
                    share_of[0] = others
                    share = await trio.to_thread.run_sync(self._origin_share, aid, n, sorted(others))
                    inbox_send.send_nowait(("share", share))
                free = cfg.fetch_holders_max - len(sessions) - len(connecting)
                fresh = [p for p in cands if p not in sessions and p not in connecting and retry_at.get(p, 0) <= now
                         and core.holder_state(p) != "banned"]
                # complete holders first (at most 2, spread by a per-fetcher hash), then partial ones
                ranked = hrw_rank(aid.hex() + self.me, fresh)
                have_complete = sum(1 for p in sessions if p not in partial)
                first = [p for p in ranked if cands[p] is True][: max(0, 2 - have_complete)]
                order = first + [p for p in ranked if p not in first and cands[p] is not True] + \
                    [p for p in ranked if p not in first and cands[p] is True]
                for p in order[: max(0, free)]:
                    connecting.add(p)
                    nursery.start_soon(connect, p, cands[p])
                if free <= 0:
                    # a fetcher that finished (complete, seen fetching) serves everything we lack:
                    # the event loop (the core's only driver) makes room for it if a session is idle
                    done_fetchers = [p for p in ranked if cands[p] is True and p in seen_fetching]
                    if done_fetchers:
                        inbox_send.send_nowait(("swap_for", done_fetchers[0]))
                for p in list(partial):
                    if p in sessions and now - pushed_at.get(p, -math.inf) > 2 * cfg.discover_interval_s:
                        nursery.start_soon(refresh, p)  # a peer that pushes its bitmap is not polled
                # the next round in discover_interval_s, or at once when a fetcher we did not count
                # shows up: until the origin share counts it, both ask the origin for the same chunks
                with trio.move_on_after(cfg.discover_interval_s):
                    await rediscover[0].wait()
                rediscover[0] = trio.Event()

        pushing: set[str] = set()

        async def push_one(peer: str, bitmap: bytes) -> None:
            try:
                with trio.move_on_after(cfg.request_timeout_s):
                    reply = await self._ask(peer, ChunkHave(aid, n, bitmap))
                    self._stats["haves_pushed"] += 1
                    if isinstance(reply, ChunkHave) and reply.chunk_count == n:
                        inbox_send.send_nowait(("have", peer, reply.bitmap))  # its answer is its bitmap
            except BulkError:
                pass
            finally:
                pushing.discard(peer)

        async def pusher(nursery: trio.Nursery) -> None:
            """Push the bitmap of committed chunks to peers fetching the artifact (batched, bounded)."""
            if cfg.have_push_chunks <= 0:
                return
            sent, last, cursor = committed[0], -math.inf, 0
            while True:
                await trio.sleep(0.25)
                now = trio.current_time()
                new = committed[0] - sent
                if new <= 0 or (new < cfg.have_push_chunks and now - last < cfg.have_push_interval_s):
                    continue
                sent, last = committed[0], now
                # peers fetching from us first, then partial holders we fetch from, then other fetchers
                down = [p for p, t in reversed(job.downstream.items()) if now - t < 60.0]
                rest = sorted((partial | fetchers_dir | set(pushed_at)) - set(down))
                if rest:
                    cursor = (cursor + 1) % len(rest)
                    rest = rest[cursor:] + rest[:cursor]  # rotate: every fetcher hears from us now and then
                bitmap = bytes(flushed)
                targets = [p for p in dict.fromkeys(down + rest)
                           if p != self.me and p not in complete_peers and core.holder_state(p) != "banned"]
                for p in targets[: cfg.have_push_peers_max]:
                    if p not in pushing:
                        pushing.add(p)
                        nursery.start_soon(push_one, p, bitmap)

        async def swap_out(now: float) -> bool:
            """Sessions are full: close one with a partial holder that has nothing we lack
            (it will not have, until it fetches more), to make room for a peer that has.
            Without this an idle fetcher, its sessions full of peers as far along as
            itself, falls back to the origin while other peers hold what it needs."""
            for p in list(sessions):
                if p in partial and not core.is_origin(p) and not core.holder_useful(p):
                    self._stats["sessions_swapped"] += 1
                    await apply(core.remove_holder(now, p))  # its session closes on holder_dropped
                    retry_at[p] = now + 2 * cfg.discover_interval_s
                    return True
            return False

        def lacks(bitmap: bytes) -> bool:
            """The bitmap has a chunk the core is still missing."""
            have = core._have  # noqa: SLF001 - read-only look at the core's bytes
            return any(bitmap[i >> 3] >> (i & 7) & 1 and not have[i] for i in range(min(n, len(bitmap) * 8)))

        async def committer() -> None:
            batch = self.store.batch()
            pending = 0

            def write(group: list[CommitChunk], flush: bool) -> int:
                for fx in group:
                    batch.put_chunk(fx.chunk_id, fx.data, codec=fx.codec, size=fx.size, verified=True)
                size = sum(len(fx.data) for fx in group)
                if flush:
                    batch.flush()
                return size

            written: list[int] = []

            def visible() -> None:
                for i in written:
                    flushed[i >> 3] |= 1 << (i & 7)
                committed[0] += len(written)
                written.clear()

            try:
                async for first in commit_recv:
                    group = [first]
                    while len(group) < 64:
                        try:
                            group.append(commit_recv.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    idle = commit_recv.statistics().current_buffer_used == 0
                    pending += sum(len(fx.data) for fx in group)
                    # not durable: every group (cheap, and a kill -9 keeps what the page cache has)
                    flush = idle or pending >= cfg.commit_bytes or not self.store.durable
                    await trio.to_thread.run_sync(write, group, flush)
                    written.extend(fx.index for fx in group)
                    if flush:
                        pending = 0
                        visible()
            except (StoreError, OSError) as exc:
                failure.append(f"writing to the store: {exc}")
                commit_recv.close()  # a sender blocked on a full queue wakes with BrokenResourceError
                inbox_send.send_nowait(("stop",))
                with contextlib.suppress(Exception):
                    batch.abort()
            finally:
                # verified chunks are worth keeping, on a stop too: a later fetch resumes from them
                with trio.CancelScope(shield=True), contextlib.suppress(StoreError, OSError):
                    await trio.to_thread.run_sync(batch.flush)
                    visible()

        async def apply(effects: Any) -> None:
            for fx in effects:
                t = type(fx)
                if t is CommitChunk:
                    job.chunks_fetched += 1
                    self._stats["chunks_verified"] += 1
                    job.from_peer[fx.sender] = job.from_peer.get(fx.sender, 0) + 1
                    with contextlib.suppress(trio.BrokenResourceError):  # the committer failed: see failure
                        await commit_send.send(fx)
                elif t is Send:
                    if isinstance(fx.msg, ChunkRequest):
                        s = sessions.get(fx.to)
                        if s is not None:
                            try:
                                await s.request([fx.msg.index])
                            except (BulkError, OSError):
                                inbox_send.send_nowait(("broken", fx.to))
                    elif not isinstance(fx.msg, ChunkCancel):  # a bulk holder answers what it was asked
                        raise AssertionError(f"unexpected message {fx.msg!r}")
                elif t is SetTimer:
                    timers[fx.timer] = fx.at
                elif t is CancelTimer:
                    timers.pop(fx.timer, None)
                elif t is Emit:
                    self._on_swarm_event(job, fx, sessions, cancels, partial)

        async with trio.open_nursery() as outer:
            outer.start_soon(committer)
            async with commit_send:
                async with trio.open_nursery() as inner:
                    # the origin share before the first request: the fetchers the directory names now
                    with trio.move_on_after(cfg.request_timeout_s):
                        fetchers_dir.update(p for p, c in (await self._lookup(aid)).items() if c is False and p != self.me)
                    seen_fetching.update(fetchers_dir)
                    share_of[0] = frozenset(fetchers_dir)
                    if fetchers_dir:
                        core.set_origin_share(trio.current_time(), self._origin_share(aid, n, sorted(fetchers_dir)))
                    inner.start_soon(discover, inner)
                    inner.start_soon(pusher, inner)
                    await apply(core.start(trio.current_time()))
                    idle_since: float | None = None
                    while not core.done and not failure:
                        now = trio.current_time()
                        if core.statistics()["inflight"] == 0:
                            idle_since = now if idle_since is None else idle_since
                            if now - idle_since > cfg.stall_timeout_s:
                                failure.append(
                                    f"artifact {aid.hex()[:16]}: {n - core.chunks_have} chunks missing and no holder"
                                    f" served them for {cfg.stall_timeout_s:g} s ({len(sessions)} in session)")
                                break
                        else:
                            idle_since = None
                        deadline = core.next_deadline()
                        wake = min(deadline if deadline is not None else math.inf,
                                   (idle_since + cfg.stall_timeout_s + 0.01) if idle_since is not None else math.inf)
                        ev = None
                        with trio.move_on_at(wake):
                            ev = await inbox_recv.receive()
                        # only the wait has a deadline: an event's effects are applied whole (a deadline
                        # passing while apply() waits on the writer queue must not drop its timers and sends)
                        if ev is not None:
                            now = trio.current_time()
                            kind = ev[0]
                            if kind == "msg":
                                _, peer, msg = ev
                                if isinstance(msg, ChunkData):
                                    job.bytes_received += len(msg.data)
                                    self._stats["bytes_in"] += len(msg.data)
                                await apply(core.on_message(now, peer, msg))
                            elif kind == "broken":
                                peer = ev[1]
                                sessions.pop(peer, None)
                                partial.discard(peer)
                                retry_at[peer] = now + 2 * cfg.discover_interval_s
                                await apply(core.remove_holder(now, peer))
                            elif kind == "holder":
                                _, peer, got = ev
                                connecting.discard(peer)
                                if got is None:
                                    retry_at[peer] = now + 2 * cfg.discover_interval_s
                                    continue
                                session, bitmap = got
                                if core.holder_state(peer) == "banned" or core.done:
                                    await session.aclose()
                                    continue
                                sessions[peer] = session
                                self._stats["holders_connected"] += 1
                                if bitmap is not None:
                                    partial.add(peer)
                                    seen_fetching.add(peer)
                                    new_fetcher(peer)
                                cancels[peer] = trio.CancelScope()
                                inner.start_soon(reader, peer, session, cancels[peer])
                                # origins (asked last): complete holders never seen fetching it
                                await apply(core.add_holder(now, peer, bitmap,
                                                            origin=bitmap is None and peer not in seen_fetching))
                            elif kind in ("have", "pushed"):
                                if kind == "pushed":
                                    peer = ev[1]
                                    bitmap = job.pushed.pop(peer, None)
                                    if bitmap is None:
                                        continue
                                    pushed_at[peer] = now
                                    seen_fetching.add(peer)
                                    new_fetcher(peer)
                                    while len(pushed_at) > HOLDERS_LIST_MAX:
                                        del pushed_at[min(pushed_at, key=pushed_at.__getitem__)]
                                else:
                                    _, peer, bitmap = ev
                                if bitmap == self._full(n):
                                    complete_peers.add(peer)
                                if peer in sessions:
                                    if bitmap == self._full(n):
                                        partial.discard(peer)  # it has everything now: no more refreshes
                                    await apply(core.on_message(now, peer, ChunkHave(aid, n, bitmap)))
                                elif (peer not in connecting and peer != self.me and core.holder_state(peer) != "banned"
                                      and lacks(bitmap)
                                      and (len(sessions) + len(connecting) < cfg.fetch_holders_max
                                           or await swap_out(now))):
                                    connecting.add(peer)  # a fetcher with chunks we lack: fetch from it too
                                    inner.start_soon(connect, peer, False)
                            elif kind == "share":
                                await apply(core.set_origin_share(now, ev[1]))
                            elif kind == "swap_for":
                                peer = ev[1]
                                if peer not in sessions and peer not in connecting and await swap_out(now):
                                    connecting.add(peer)
                                    inner.start_soon(connect, peer, True)
                            continue
                        now = trio.current_time()
                        for t, at in sorted(timers.items(), key=lambda kv: kv[1]):
                            if at <= now:
                                timers.pop(t, None)
                                await apply(core.on_timer(now, t))
                    inner.cancel_scope.cancel()
        while True:  # sessions that connected after the end: close them
            try:
                ev = inbox_recv.receive_nowait()
            except trio.WouldBlock:
                break
            if ev[0] == "holder" and ev[2] is not None:
                await ev[2][0].aclose()
        job.swarm, job.core = core.statistics(), None
        job.inbox = job.flushed = None
        job.pushed = {}
        if failure:
            raise FetchError(failure[0])

    def _origin_share(self, aid: bytes, n: int, others: Sequence[str]) -> bytes | None:
        """The chunks this peer asks origins for: those for which it ranks first (rendezvous hash)
        among the peers fetching the artifact; None (every chunk) when it fetches alone.

        Blocks of chunks are ranked when there are many (at most ~100k hashes)."""
        import hashlib

        peers = sorted(set(others) | {self.me})
        if len(peers) == 1:
            return None
        block = max(1, -(-n * len(peers) // 100_000))
        keys = [p.encode() for p in peers]
        mine = peers.index(self.me)
        bits = bytearray((n + 7) // 8)
        for b in range(0, n, block):
            base = aid + b.to_bytes(4, "big")
            scores = [hashlib.blake2b(base + k, digest_size=8).digest() for k in keys]
            if max(range(len(peers)), key=scores.__getitem__) == mine:
                for i in range(b, min(n, b + block)):
                    bits[i >> 3] |= 1 << (i & 7)
        return bytes(bits)

    @staticmethod
    def _full(n: int) -> bytes:
        return n // 8 * b"\xff" + (bytes([(1 << (n % 8)) - 1]) if n % 8 else b"")

    def _on_swarm_event(self, job: _Fetch, ev: Emit, sessions: dict, cancels: dict, partial: set) -> None:
        d = ev.data
        if ev.kind == "swarm.progress":
            job.chunks_have, job.bytes_have = d["chunks_have"], d["bytes_have"]
            for fn in list(job.listeners):
                try:
                    fn(job.bytes_have, job.bytes_total)
                except Exception:
                    log.exception("fetch progress callback failed")
        elif ev.kind == "swarm.bad_chunk":
            job.bad_chunks += 1
            self._stats["bad_chunks"] += 1
            job.bad_from[d["peer"]] = d["bad_chunks"]
            log.warning("bad chunk %d of %s from %s (%d from it so far)", d["index"], job.aid.hex()[:16],
                        d["peer"][-8:], d["bad_chunks"])
        elif ev.kind in ("swarm.holder_banned", "swarm.holder_dropped"):
            peer = d["peer"]
            sessions.pop(peer, None)
            partial.discard(peer)
            scope = cancels.pop(peer, None)
            if scope is not None:
                scope.cancel()
            if ev.kind == "swarm.holder_banned":
                job.banned.append(peer)
                self._stats["bans"] += 1
                log.warning("banned %s for %s: %d bad chunks", peer[-8:], job.aid.hex()[:16], d["bad_chunks"])

    # -- publishing ----------------------------------------------------------------------------

    async def put_bytes(self, data: bytes, *, name: str, project: str = "default", policy: str = "cache",
                        chunk_bytes: int | None = None, **kw: Any) -> tuple[bytes, Manifest]:
        """Publish ``data`` from this peer (signed by its key, pinned); ``(artifact id, manifest)``."""
        if chunk_bytes:
            kw["chunking"] = ChunkingSpec.fixed(chunk_bytes)
        aid, m = await trio.to_thread.run_sync(
            lambda: self.store.put_bytes(data, identity=self.ctx.identity, name=name, project=project, policy=policy, **kw))
        await self._published(aid, policy)
        return aid, m

    async def put_file(self, path: str | os.PathLike[str], *, project: str = "default", policy: str = "cache",
                       chunk_bytes: int | None = None, **kw: Any) -> tuple[bytes, Manifest]:
        """Publish a file of this peer's machine; ``(artifact id, manifest)``."""
        if chunk_bytes:
            kw["chunking"] = ChunkingSpec.fixed(chunk_bytes)
        aid, m = await trio.to_thread.run_sync(
            lambda: self.store.put_file(path, identity=self.ctx.identity, project=project, policy=policy, **kw))
        await self._published(aid, policy)
        return aid, m

    async def _published(self, aid: bytes, policy: str) -> None:
        self._stats["puts"] += 1
        self._audit("artifact.published", {"aid": aid, "size_bytes": self.store.stat(aid).total_size})
        self._refresh_local()
        if self._nursery is not None:
            self._nursery.start_soon(self._register, aid, True)
        if policy in REPLICATED:
            self._replicate_wake.set()

    # -- replication ---------------------------------------------------------------------------

    def _region_view(self, now: float) -> RegionView:
        g = self.gossip
        peers = sorted(p for p in g.members.members_in_region(self.region) if g.members.is_alive(p))
        policies: dict[str, str] = {}
        for p in peers:
            st = g.view.get(p) or {}
            for item in st.get("blob_policy") or ():
                try:
                    aid, code = item
                    policies.setdefault(bytes(aid).hex(), _CODE_POLICY[code])
                except (TypeError, ValueError, KeyError):
                    continue
        for aid, pol in self._policies:
            policies[aid.hex()] = pol
        hints: dict[str, tuple[str, ...]] = {}
        for h, (pol, hs, until) in list(self._adopted.items()):
            if until <= now:
                del self._adopted[h]
                continue
            policies.setdefault(h, pol)
            hints[h] = hs
        mine = set(self._advertised)
        holders = {}
        for h in policies:
            hs = set(g.view.holders_of(h))
            if h in mine:
                hs.add(self.me)
            holders[h] = frozenset(hs)
        regions = {r: g.leader_of(r) or "" for r in g.members.regions() if r != self.region}
        holding = {h: frozenset(g.view.regions_holding(h)) for h in policies}
        return RegionView(self.region, peers, holders, policies, regions, holding, hints)

    async def _replication_loop(self) -> None:
        while True:
            with trio.move_on_after(self.config.replicate_interval_s):
                await self._replicate_wake.wait()
            self._replicate_wake = trio.Event()
            await trio.sleep(0)  # let a burst of wake-ups settle
            # a leader that is leaving (no longer alive in its own view) plans nothing
            if self.gossip.leader_of(self.region) != self.me or not self.gossip.members.is_alive(self.me):
                continue
            now = trio.current_time()
            for ins in self.planner.plan(now, self._region_view(now)):
                assert self._nursery is not None
                self._nursery.start_soon(self._instruct, ins)

    async def _instruct(self, ins: Fetch | Forward) -> None:
        aid = bytes.fromhex(ins.artifact)
        if isinstance(ins, Fetch):
            if ins.peer == self.me:
                self.prefetch([aid], ins.hints, pin="policy", policy=ins.policy)
                return
            target, msg = ins.peer, BlobReplicate(aid, ins.policy, "peer", list(ins.hints) + [self.me])
        else:
            target, msg = ins.leader, BlobReplicate(aid, ins.policy, "region", list(ins.hints) + [self.me])
            self._stats["forwards_sent"] += 1
        msg.hints = list(dict.fromkeys(msg.hints))[:HINTS_MAX]
        with contextlib.suppress(BulkError):
            await self._ask(target, msg)
            self._stats["replicate_sent"] += 1

    def _on_replicate(self, sender: str, msg: BlobReplicate) -> bool:
        g = self.gossip
        region = g.members.region_of(sender)
        # only a region's leader (as this peer sees it) gives these instructions; "fetch if you
        # lack it" is harmless twice, so two leaders in a partition do no harm
        if region is None or g.leader_of(region) != sender:
            self._stats["replicate_refused"] += 1
            return False
        self._stats["replicate_received"] += 1
        hints = [h for h in msg.hints if h != self.me] + [sender]
        if msg.scope == "region":
            if g.leader_of(self.region) != self.me:
                self._stats["replicate_refused"] += 1
                return False
            self._adopted[msg.artifact.hex()] = (msg.policy, tuple(dict.fromkeys(hints))[:HINTS_MAX],
                                                 trio.current_time() + 3600.0)
            while len(self._adopted) > 1024:
                del self._adopted[next(iter(self._adopted))]
            self._replicate_wake.set()
            return True
        self.prefetch([msg.artifact], hints, pin="policy", policy=msg.policy)
        return True

    # -- control methods -----------------------------------------------------------------------

    def _check_path(self, path: str) -> Path:
        """An absolute path under ``path_roots`` and outside the data directory (resolved), or a refusal."""
        import tempfile

        p = Path(path)
        if not p.is_absolute():
            raise _control_error("bad_request", f"path: {path!r} must be absolute (a file on the peer's machine)")
        real = p.resolve()
        roots = [Path(r) for r in self.config.path_roots.split(":") if r] or [Path.home(), Path(tempfile.gettempdir())]
        data = Path(self.ctx.config.data_dir).resolve()
        if real == data or data in real.parents:
            raise _control_error("forbidden", f"path: {path} is inside the peer's data directory")
        if not any(real == r.resolve() or r.resolve() in real.parents for r in roots):
            raise _control_error("forbidden", f"path: {path} is outside the directories this peer reads and writes "
                                 f"for clients ({', '.join(str(r) for r in roots)}; ARCNET_BLOB_PATH_ROOTS)")
        return real

    def _resolve(self, args: dict[str, Any]) -> bytes:
        ref = args.get("id")
        if not isinstance(ref, str) or not ref:
            raise _control_error("bad_request", "id: expected an artifact id (hex)")
        text = ref.strip().lower()
        if len(text) == 64:
            try:
                return bytes.fromhex(text)
            except ValueError:
                raise _control_error("bad_request", f"{ref!r} is not an artifact id (hex)") from None
        try:
            return self.store.resolve(text)
        except StoreError as exc:
            raise _control_error("not_found" if exc.code == "not_found" else "bad_request", str(exc)) from None

    @staticmethod
    def _arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        v = args.get(name, default)
        if v is None or isinstance(v, kind) and not (kind is int and isinstance(v, bool)):
            return v
        raise _control_error("bad_request", f"{name}: expected {getattr(kind, '__name__', kind)}, got {type(v).__name__}")

    async def _ctl_put(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        data = self._arg(args, "data", bytes)
        path = self._arg(args, "path", str)
        project = self._arg(args, "project", str, "default")
        policy = self._arg(args, "policy", str, "warm")
        if policy not in POLICIES:
            raise _control_error("bad_request", f"policy: one of {', '.join(POLICIES)}")
        kw: dict[str, Any] = {
            "version": self._arg(args, "version", str, ""),
            "media_type": self._arg(args, "media_type", str, "application/octet-stream"),
        }
        kind = self._arg(args, "kind", str)
        chunk_bytes = self._arg(args, "chunk_bytes", int)
        if chunk_bytes is not None and not 4096 <= chunk_bytes <= 4 << 20:
            raise _control_error("bad_request", "chunk_bytes: 4096..4194304")
        name = self._arg(args, "name", str)
        if (data is None) == (path is None):
            raise _control_error("bad_request", "give exactly one of data (bytes) or path (a file on the peer's machine)")
        try:
            if data is not None:
                if len(data) > self.config.inline_bytes_max:
                    raise _control_error("bad_request", f"data: {len(data)} bytes; inline puts take at most "
                                         f"{self.config.inline_bytes_max} (use path)")
                if not name:
                    raise _control_error("bad_request", "name: required with data")
                aid, _ = await self.put_bytes(data, name=name, project=project, policy=policy,
                                              chunk_bytes=chunk_bytes, kind=kind or "dataset", **kw)
            else:
                p = self._check_path(path)
                aid, _ = await self.put_file(p, name=name or Path(path).name, kind=kind, project=project, policy=policy,
                                             chunk_bytes=chunk_bytes, **kw)
        except StoreError as exc:
            raise _control_error("not_found" if exc.code == "not_found" else "bad_request", str(exc)) from None
        return info_dict(self.store.stat(aid))

    async def _ctl_get(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        aid = self._resolve(args)
        path = self._arg(args, "path", str)
        try:
            info = self.store.stat(aid)
        except StoreError as exc:
            raise _control_error("not_found", f"{exc}; fetch it first (blob.fetch)") from None
        if not info.complete:
            raise _control_error("not_found", f"artifact {aid.hex()[:16]} is partial here "
                                 f"({info.present_chunks}/{info.chunk_count} chunks); fetch it first (blob.fetch)")
        if path is not None:
            p = self._check_path(path)
            try:
                n = await trio.to_thread.run_sync(self.store.export, aid, p)
            except OSError as exc:
                raise _control_error("bad_request", f"{path}: {exc.strerror}") from None
            except StoreError as exc:
                raise _control_error("internal", str(exc)) from None
            return {"id": aid.hex(), "path": str(p), "size": n}
        offset = self._arg(args, "offset", int, 0)
        length = self._arg(args, "length", int, self.config.inline_bytes_max)
        if offset < 0 or length < 0:
            raise _control_error("bad_request", "offset and length must be >= 0")
        length = min(length, self.config.inline_bytes_max, max(0, info.total_size - offset))
        try:
            data = await trio.to_thread.run_sync(self._read_window, aid, offset, length)
        except StoreError as exc:
            raise _control_error("internal", str(exc)) from None
        return {"id": aid.hex(), "offset": offset, "size": info.total_size, "data": data,
                "eof": offset + len(data) >= info.total_size}

    def _read_window(self, aid: bytes, offset: int, length: int) -> bytes:
        """``length`` bytes of the artifact from ``offset``, every chunk touched verified."""
        if length <= 0:
            return b""
        m = self.store.manifest(aid)
        out = bytearray()
        pos = 0
        for ref in m.body.chunks:
            end = pos + ref.size
            if end > offset and pos < offset + length:
                data = self.store.read_chunk(ref.id)
                out += data[max(0, offset - pos): min(ref.size, offset + length - pos)]
            pos = end
            if pos >= offset + length:
                break
        return bytes(out)

    async def _ctl_ls(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        project = self._arg(args, "project", str)
        infos = [info_dict(i) for i in self.store.list_artifacts() if project is None or i.project == project]
        return {"peer": self.me, "artifacts": infos[:10_000]}

    async def _ctl_stat(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        aid = self._resolve(args)
        out: dict[str, Any] = {"id": aid.hex(), "local": False}
        with contextlib.suppress(StoreError):
            out.update(info_dict(self.store.stat(aid)))
            out["local"] = True
        holders: dict[str, dict[str, Any]] = {}
        if out.get("chunks_present"):
            holders[self.me] = {"peer": self.me, "where": "local", "complete": bool(out.get("complete"))}
        g = self.gossip
        for p in g.view.holders_of(aid.hex()):
            holders.setdefault(p, {"peer": p, "where": "gossip", "complete": True})
        with trio.move_on_after(self.config.request_timeout_s):
            for p, c in (await self._lookup(aid)).items():
                holders.setdefault(p, {"peer": p, "where": "directory", "complete": c})
        for h in holders.values():
            h["region"] = g.members.region_of(h["peer"]) or ""
        out["holders"] = sorted(holders.values(), key=lambda h: (h["peer"] != self.me, h["peer"]))
        out["regions"] = sorted(set(g.view.regions_holding(aid.hex())) | {h["region"] for h in holders.values() if h["complete"] and h["region"]})
        if not out["local"]:
            for p in [h["peer"] for h in out["holders"] if h["peer"] != self.me][:3]:
                try:
                    reply = await self._ask(p, ManifestRequest(aid))
                except BulkError:
                    continue
                if isinstance(reply, ManifestData) and reply.artifact == aid:
                    b = reply.body
                    out.update({"name": b.name, "version": b.version, "project": b.project, "media_type": b.media_type,
                                "size": b.total_size, "chunks": len(b.chunks), "chunks_present": 0, "complete": False,
                                "publisher": b.publisher, "created_s": b.created_s, "chunking": b.chunking})
                    break
        job = self.job(aid)
        if job is not None:
            out["fetch"] = job.as_dict(trio.current_time())
        return out

    async def _ctl_fetch(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        aid = self._resolve(args)
        hints = self._arg(args, "hints", list, [])
        if not all(isinstance(h, str) for h in hints):
            raise _control_error("bad_request", "hints: expected a list of peer ids or multiaddrs")
        wait_s = self._arg(args, "wait_s", (int, float), 50.0)
        wait_s = max(0.0, min(float(wait_s), 50.0))  # the transport cancels a handler after 60 s
        pin = "user" if self._arg(args, "pin", bool, True) else None
        policy = self._arg(args, "policy", str, "cache")
        if policy not in POLICIES:
            raise _control_error("bad_request", f"policy: one of {', '.join(POLICIES)}")
        now = trio.current_time()
        if self._complete(aid) and aid not in self._fetches:
            if pin:
                self.store.pin(aid, pin)
            info = self.store.stat(aid)
            return {"artifact": aid.hex(), "state": "done", "chunks_total": info.chunk_count,
                    "chunks_have": info.chunk_count, "bytes_total": info.total_size, "bytes_have": info.total_size,
                    "bytes_received": 0, "chunks_fetched": 0, "bad_chunks": 0, "banned": [], "from_peer": {},
                    "bad_from": {}, "error": "", "elapsed_s": 0.0, "swarm": {}, "already": True}
        job = self._fetches.get(aid)
        if job is None:
            try:
                job = self._start(aid, hints, pin, policy)
            except FetchError as exc:
                raise _control_error("unavailable", str(exc)) from None
        else:
            self._start(aid, hints, pin, policy)  # adds the hints
        with trio.move_on_after(wait_s):
            await job.done.wait()
        return job.as_dict(trio.current_time()) | {"already": False, "waited_s": round(trio.current_time() - now, 3)}

    async def _ctl_verify(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        res = await trio.to_thread.run_sync(self.store.verify_all)
        self._refresh_local()
        return res
