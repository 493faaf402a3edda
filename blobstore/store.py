"""The on-disk content-addressed store of one peer: chunks, manifests, pins, quota.

Layout under ``<data dir>/blobs/``::

    LOCK              flock: one process per store
    index.sqlite      SQLite in WAL mode: chunks, artifacts, pins, counters
    chunks/<h>/<id>   one file per chunk, named by the hex BLAKE3 of its content
                      (16 shards by the first hex digit); the stored form (raw or zstd)
    tmp/              chunk files being written (emptied at open)
    quarantine/       chunks that failed verification, kept for inspection

**Writes are atomic and batched.** A chunk is written to ``tmp/`` at once;
every ``batch_bytes`` (64 MiB) or ``batch_chunks_max`` (256) chunks, and at
the end of a :meth:`Store.batch`, the batch is made durable in one go:
fdatasync of each file, one transaction recording the chunks as *pending*,
rename into ``chunks/``, fsync of each touched shard directory, one
transaction marking them *present*. So the index never says "present" for a
file that is not durably in place, and after ``kill -9`` (or a power cut
with ``durable=True``) at any moment, :meth:`Store.open` finds only: stray
temp files (deleted), and pending rows of the last batch (each kept if its
file is in place and verifies, dropped otherwise). A manifest and its chunk
list are one transaction. This is the write-then-rename discipline of
LevelDB's and git's object stores, with the batch commit of a group-commit
log.

**Reads verify.** :meth:`Store.read_chunk` and :meth:`Store.read_artifact`
check BLAKE3 of every chunk; a chunk that fails is counted, moved to
``quarantine/``, dropped from the index (its artifacts become partial, so a
swarm fetch re-fetches just that chunk), and reported as a
:class:`StoreError` with ``code == "corrupt"``. :meth:`Store.chunk_file`
hands out the file for ``sendfile`` without reading it: the receiver
verifies every chunk anyway.

**Pins, references, quota, GC.** An artifact is pinned while it has at
least one pin (a reason string: ``"user"``, ``"publish"``, ``"job:<id>"``).
A chunk's reference count is the number of artifacts listing it; GC deletes
unreferenced chunks. With ``cache_quota_bytes`` set, the unpinned artifacts
form the cache tier: when stored bytes would pass the quota, the least
recently used unpinned artifacts (not those being written) are evicted and
their now unreferenced chunks collected; if pinned data alone passes the
quota, the write fails with ``code == "quota"``.

**Resumable downloads.** A manifest is added before its chunks arrive
(:meth:`Store.add_manifest`); :meth:`Store.missing` says which chunks are
still needed, so a fetch that was killed resumes with only those.

Errors: every failure meant for callers is a :class:`StoreError` with a
one-line message and a ``code``.

Private projects' artifacts arrive here already encrypted
(:mod:`arcnet.blobstore.crypt` encrypts before chunking), so the store holds
ciphertext for them and needs no key. Knowingly left out: packing small
chunks into segment files, and multi-process access (one process holds the
store's lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import blake3

from arcnet.mesh import identity as _identity

from .chunking import (
    CODEC_RAW,
    CODECS,
    ChunkCodecError,
    ChunkingSpec,
    chunk_id,
    decode_chunk,
    encode_chunk,
    guess_kind,
    spec_for_kind,
)
from .manifest import ManifestError, build_manifest, decode_manifest, encode_manifest, verify_manifest
from .messages import CHUNK_MAX_BYTES, MANIFEST_CHUNKS_MAX, Manifest

__all__ = ["ArtifactInfo", "ChunkBatch", "POLICIES", "Store", "StoreError"]

POLICIES = ("hot", "warm", "durable", "cache")
SHARDS = "0123456789abcdef"
SCHEMA_VERSION = 1
QUARANTINE_KEEP_MAX = 256  # quarantined files kept; older ones are deleted

_PENDING, _PRESENT = 0, 1

# Crash injection for the crash-consistency test: called with the name of each
# step of a group commit ("written", "synced", "pending", "renamed",
# "dirs_synced", "present") and of a manifest commit ("manifest"). None in use.
fault_hook: Callable[[str], None] | None = None


def _fault(point: str) -> None:
    if fault_hook is not None:
        fault_hook(point)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id     BLOB PRIMARY KEY,      -- BLAKE3 of the content
    size   INTEGER NOT NULL,      -- content bytes
    stored INTEGER NOT NULL,      -- bytes on disk
    codec  INTEGER NOT NULL,
    state  INTEGER NOT NULL       -- 0 pending (being renamed into place), 1 present
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
    id          BLOB PRIMARY KEY,
    manifest    BLOB NOT NULL,    -- the signed manifest's encoded bytes
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    project     TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    total_size  INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    publisher   TEXT NOT NULL,
    created_s   INTEGER NOT NULL,
    policy      TEXT NOT NULL,
    complete    INTEGER NOT NULL,
    added_s     REAL NOT NULL,
    access_s    REAL NOT NULL,
    access_seq  INTEGER NOT NULL  -- LRU order: a counter, never the clock
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifact_chunks (
    artifact BLOB NOT NULL,
    idx      INTEGER NOT NULL,
    chunk    BLOB NOT NULL,
    PRIMARY KEY (artifact, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS artifact_chunks_by_chunk ON artifact_chunks (chunk);
CREATE TABLE IF NOT EXISTS pins (
    artifact BLOB NOT NULL,
    reason   TEXT NOT NULL,
    PRIMARY KEY (artifact, reason)
) WITHOUT ROWID;
"""


class StoreError(Exception):
    """The one error type of the store: a one-line message and a ``code``.

    Codes: ``not_found``, ``corrupt``, ``quota``, ``locked``, ``invalid``,
    ``pinned``, ``closed``.
    """

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ArtifactInfo:
    id: bytes
    name: str
    version: str
    project: str
    media_type: str
    total_size: int
    chunk_count: int
    present_chunks: int
    present_bytes: int
    complete: bool
    pins: tuple[str, ...]
    policy: str
    publisher: str
    created_s: int
    chunking: str

    @property
    def id_hex(self) -> str:
        return self.id.hex()

    @property
    def pinned(self) -> bool:
        return bool(self.pins)


def _shard_dir(root: Path, cid: bytes) -> Path:
    return root / SHARDS[cid[0] >> 4]


def _write_all(fd: int, data: Any) -> None:
    mv = memoryview(data).cast("B")
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChunkBatch:
    """Chunks written together and made durable in one group commit.

    Use through :meth:`Store.batch`; :meth:`put_chunk` returns at once (the
    bytes are in a temp file), :meth:`flush` (also called when the batch
    reaches its size bound and on leaving the ``with``) makes them durable
    and visible. Leaving with an exception flushes what was written too:
    verified chunks are worth keeping for a resumed fetch. One thread at a
    time per batch; several batches (concurrent fetches) may share a store.
    """

    def __init__(self, store: "Store"):
        self._store = store
        self._items: list[tuple[bytes, int, int, int, str, int | None]] = []  # id, size, stored, codec, tmp, fd
        self._ids: set[bytes] = set()
        self._bytes = 0
        self.chunks_written = 0
        self.bytes_written = 0

    def __enter__(self) -> "ChunkBatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flush()

    def put_chunk(
        self,
        cid: bytes,
        stored: Any,
        *,
        codec: int = CODEC_RAW,
        size: int | None = None,
        verified: bool = False,
    ) -> bool:
        """Store a chunk given in its stored form; False if it was already here.

        ``size`` is the content size (default: ``len(stored)`` for raw).
        Unless ``verified``, the content is decoded and its BLAKE3 checked
        against ``cid`` first (a mismatch raises ``code == "corrupt"``).
        """
        st = self._store
        st._check_open()
        if len(cid) != 32:
            raise StoreError(f"a chunk id is 32 bytes, got {len(cid)}")
        if codec not in CODECS:
            raise StoreError(f"unknown chunk codec {codec}")
        n = len(stored)
        if size is None:
            size = n
        if not 0 < n <= CHUNK_MAX_BYTES or not 0 < size <= CHUNK_MAX_BYTES:
            raise StoreError(f"chunk of {size} bytes ({n} stored) is outside 1..{CHUNK_MAX_BYTES}")
        if cid in self._ids or st.has_chunk(cid):
            return False
        if not verified:
            try:
                content = decode_chunk(codec, stored, size)
            except ChunkCodecError as exc:
                raise StoreError(f"chunk {cid.hex()[:16]}: {exc}", "corrupt") from None
            if chunk_id(content) != cid:
                raise StoreError(f"chunk {cid.hex()[:16]}: content does not hash to its id", "corrupt")
        st._make_room(self._bytes + n)
        tmp = str(st._tmp / f"{cid.hex()}.{next(st._tmp_seq)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, stored)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        if not st.durable:
            os.close(fd)
            fd = None  # type: ignore[assignment]
        self._items.append((cid, size, n, codec, tmp, fd))
        _fault("written")
        self._ids.add(cid)
        self._bytes += n
        if self._bytes >= st.batch_bytes or len(self._items) >= st.batch_chunks_max:
            self.flush()
        return True

    def flush(self) -> None:
        """Make every chunk written so far durable and visible (group commit)."""
        items, self._items = self._items, []
        if not items:
            return
        st = self._store
        try:
            if st.durable:
                for *_, fd in items:
                    os.fdatasync(fd)  # type: ignore[arg-type]
                    st._stats["fsyncs"] += 1
        finally:
            for *_, fd in items:
                if fd is not None:
                    os.close(fd)
        _fault("synced")
        with st._lock:
            # another batch (a concurrent fetch sharing chunks) may have committed some meanwhile
            marks = ",".join("?" * len(items))
            known = {bytes(r[0]) for r in st._db.execute(f"SELECT id FROM chunks WHERE id IN ({marks})", [it[0] for it in items])}
            if known:
                for cid, *_, tmp, _ in items:
                    if cid in known:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(tmp)
                items = [it for it in items if it[0] not in known]
                if not items:
                    self._ids.clear()
                    self._bytes = 0
                    return
            st._tx(
                "INSERT OR IGNORE INTO chunks (id, size, stored, codec, state) VALUES (?, ?, ?, ?, ?)",
                [(cid, size, n, codec, _PENDING) for cid, size, n, codec, _, _ in items],
            )
            _fault("pending")
            dirs = set()
            for cid, _, _, _, tmp, _ in items:
                d = _shard_dir(st._chunks, cid)
                os.replace(tmp, d / cid.hex())
                dirs.add(d)
                _fault("renamed")
            if st.durable:
                for d in sorted(dirs):
                    _fsync_dir(d)
                    st._stats["fsyncs"] += 1
            _fault("dirs_synced")
            st._tx(
                "UPDATE chunks SET state = ? WHERE id = ? AND state = ?",
                [(_PRESENT, cid, _PENDING) for cid, *_ in items],
            )
            _fault("present")
            added = sum(n for _, _, n, _, _, _ in items)
            st._stored_bytes += added
            st._chunk_count += len(items)
            st._stats["batches"] += 1
            st._stats["chunks_put"] += len(items)
            st._stats["bytes_put"] += added
        self.chunks_written += len(items)
        self.bytes_written += added
        self._ids.clear()
        self._bytes = 0

    def abort(self) -> None:
        """Drop the chunks written since the last flush."""
        items, self._items = self._items, []
        for *_, tmp, fd in items:
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._ids.clear()
        self._bytes = 0


class Store:
    """A peer's blob store in ``<root>/blobs`` (see the module docstring).

    ``cache_quota_bytes``: bound on stored chunk bytes (None: no bound);
    unpinned artifacts are evicted LRU-first to stay under it.
    ``durable``: fsync files and directories at each group commit (False
    keeps atomicity against process crashes, not against power loss; for
    tests and scratch stores). ``batch_bytes`` / ``batch_chunks_max``: the
    group commit size (64 MiB / 256: at ~300 MB/s of disk sync, one commit
    every ~0.2 s). ``clock``: wall-clock seconds, for display only.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        cache_quota_bytes: int | None = None,
        durable: bool = True,
        batch_bytes: int = 64 << 20,
        batch_chunks_max: int = 256,
        clock: Callable[[], float] = time.time,
    ):
        if cache_quota_bytes is not None and cache_quota_bytes < 0:
            raise StoreError("cache_quota_bytes must be >= 0")
        if batch_bytes < 1 or batch_chunks_max < 1:
            raise StoreError("batch bounds must be positive")
        self.root = Path(root) / "blobs"
        self.cache_quota_bytes = cache_quota_bytes
        self.durable = durable
        self.batch_bytes = batch_bytes
        self.batch_chunks_max = batch_chunks_max
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = True
        self._chunks = self.root / "chunks"
        self._tmp = self.root / "tmp"
        self._quarantine = self.root / "quarantine"
        self._tmp_seq = itertools.count()
        self._busy: dict[bytes, int] = {}  # artifacts being written: never evicted
        self._guard: dict[bytes, int] = {}  # chunks written for a manifest not yet added
        self._stats = dict.fromkeys(
            (
                "batches", "chunks_put", "bytes_put", "chunks_read", "bytes_read", "fsyncs",
                "corrupt_detected", "evicted_artifacts", "gc_chunks", "gc_bytes", "recovered_pending",
                "dropped_pending",
            ),
            0,
        )  # fmt: skip
        try:
            for d in (self.root, self._chunks, self._tmp, self._quarantine):
                d.mkdir(parents=True, exist_ok=True)
            for s in SHARDS:
                (self._chunks / s).mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store in {self.root}: {exc.strerror}", "invalid") from None
        self._lock_fd = os.open(self.root / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreError(
                f"{self.root} is in use by another process (stop it, or use another --data-dir)", "locked"
            ) from None
        self._db = sqlite3.connect(self.root / "index.sqlite", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._closed = False
        v = self._meta("schema_version")
        if v is None:
            self._set_meta("schema_version", SCHEMA_VERSION)
        elif v != SCHEMA_VERSION:
            self.close()
            raise StoreError(f"{self.root}: store schema {v}, this version reads {SCHEMA_VERSION}", "invalid")
        self._recover()
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(stored), 0) FROM chunks WHERE state = ?", (_PRESENT,))
        self._chunk_count, self._stored_bytes = row.fetchone()
        self._access_seq = self._db.execute("SELECT COALESCE(MAX(access_seq), 0) FROM artifacts").fetchone()[0]

    @classmethod
    def open(cls, root: str | os.PathLike[str], **kw: Any) -> "Store":
        """The same as the constructor; reads well next to :meth:`close`."""
        return cls(root, **kw)

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            os.close(self._lock_fd)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed", "closed")

    def _recover(self) -> None:
        """Bring the store back to a consistent state after a crash (see the docstring)."""
        for p in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        pending = self._db.execute("SELECT id, size, codec FROM chunks WHERE state = ?", (_PENDING,)).fetchall()
        keep, drop = [], []
        for cid, size, codec in pending:
            cid = bytes(cid)
            path = _shard_dir(self._chunks, cid) / cid.hex()
            try:
                stored = path.read_bytes()
                ok = chunk_id(decode_chunk(codec, stored, size)) == cid
            except (OSError, ChunkCodecError):
                ok = False
            if ok:
                keep.append(cid)
            else:
                drop.append(cid)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if keep:
            self._tx("UPDATE chunks SET state = ? WHERE id = ?", [(_PRESENT, c) for c in keep])
        if drop:
            self._tx("DELETE FROM chunks WHERE id = ?", [(c,) for c in drop])
        self._stats["recovered_pending"] = len(keep)
        self._stats["dropped_pending"] = len(drop)

    # -- sqlite helpers ---------------------------------------------------------

    def _tx(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _meta(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _bump_meta(self, key: str, by: int = 1) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
            (key, by, by),
        )

    # -- chunks ------------------------------------------------------------------

    def has_chunk(self, cid: bytes) -> bool:
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT 1 FROM chunks WHERE id = ? AND state = ?", (cid, _PRESENT)).fetchone()
            return row is not None

    def batch(self) -> ChunkBatch:
        """A group of chunk writes committed together (use as a context manager)."""
        self._check_open()
        return ChunkBatch(self)

    def put_chunk(self, cid: bytes, stored: Any, *, codec: int = CODEC_RAW, size: int | None = None, verified: bool = False) -> bool:
        """Store one chunk durably now (a batch of one); False if it was already here."""
        with self.batch() as b:
            return b.put_chunk(cid, stored, codec=codec, size=size, verified=verified)

    def chunk_file(self, cid: bytes) -> tuple[str, int, int, int]:
        """``(path, stored bytes, codec, content size)`` of a present chunk, unverified (for sendfile)."""
        with self._lock:
            self._check_open()
            row = self._db.execute(
                "SELECT stored, codec, size FROM chunks WHERE id = ? AND state = ?", (cid, _PRESENT)
            ).fetchone()
        if row is None:
            raise StoreError(f"chunk {cid.hex()[:16]} is not in the store", "not_found")
        return str(_shard_dir(self._chunks, cid) / cid.hex()), row[0], row[1], row[2]

    def read_chunk_stored(self, cid: bytes) -> tuple[int, bytes, int]:
        """``(codec, stored bytes, content size)`` of a chunk, verified against its id."""
        path, stored_n, codec, size = self.chunk_file(cid)
        try:
            with open(path, "rb") as f:
                stored = f.read(stored_n + 1)
        except FileNotFoundError:
            stored = b""
        try:
            content = decode_chunk(codec, stored, size)
            ok = len(stored) == stored_n and chunk_id(content) == cid
        except ChunkCodecError:
            ok = False
        if not ok:
            self._quarantine_chunk(cid, path)
            raise StoreError(
                f"chunk {cid.hex()[:16]} failed verification and was quarantined; fetch it again", "corrupt"
            )
        self._stats["chunks_read"] += 1
        self._stats["bytes_read"] += size
        return codec, stored, size

    def read_chunk(self, cid: bytes) -> bytes:
        """A chunk's content, verified against its id (``code == "corrupt"`` if not)."""
        codec, stored, size = self.read_chunk_stored(cid)
        return bytes(decode_chunk(codec, stored, size))

    def _quarantine_chunk(self, cid: bytes, path: str) -> None:
        with self._lock:
            self._stats["corrupt_detected"] += 1
            dest = self._quarantine / f"{cid.hex()}.{int(self._clock() * 1000)}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, dest)
            with self._transaction() as db:
                row = db.execute("SELECT stored FROM chunks WHERE id = ?", (cid,)).fetchone()
                db.execute("DELETE FROM chunks WHERE id = ?", (cid,))
                db.execute(
                    "UPDATE artifacts SET complete = 0 WHERE id IN (SELECT artifact FROM artifact_chunks WHERE chunk = ?)",
                    (cid,),
                )
                self._bump_meta("corrupt_chunks")
            if row is not None:
                self._stored_bytes -= row[0]
                self._chunk_count -= 1
            kept = sorted(self._quarantine.iterdir(), key=lambda p: p.stat().st_mtime_ns)
            for old in kept[: max(0, len(kept) - QUARANTINE_KEEP_MAX)]:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()

    def refcount(self, cid: bytes) -> int:
        """How many artifacts list this chunk."""
        with self._lock:
            self._check_open()
            return self._db.execute(
                "SELECT COUNT(DISTINCT artifact) FROM artifact_chunks WHERE chunk = ?", (cid,)
            ).fetchone()[0]

    # -- artifacts -----------------------------------------------------------------

    def add_manifest(
        self, manifest: Manifest, *, pin: str | None = None, policy: str = "cache", expected_id: bytes | None = None
    ) -> bytes:
        """Record a verified manifest (its chunks may come later); its artifact id.

        Adding a manifest that is already here only adds the pin.
        """
        if policy not in POLICIES:
            raise StoreError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
        try:
            aid = verify_manifest(manifest, expected_id)
        except ManifestError as exc:
            raise StoreError(str(exc), "invalid") from None
        body = manifest.body
        if len(body.chunks) > MANIFEST_CHUNKS_MAX:
            raise StoreError(f"manifest lists {len(body.chunks)} chunks, at most {MANIFEST_CHUNKS_MAX}")
        with self._lock:
            self._check_open()
            now = self._clock()
            self._access_seq += 1
            with self._transaction() as db:
                exists = db.execute("SELECT 1 FROM artifacts WHERE id = ?", (aid,)).fetchone()
                if not exists:
                    db.execute(
                        "INSERT INTO artifacts (id, manifest, name, version, project, media_type, total_size,"
                        " chunk_count, publisher, created_s, policy, complete, added_s, access_s, access_seq)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                        (
                            aid, encode_manifest(manifest), body.name, body.version, body.project,
                            body.media_type, body.total_size, len(body.chunks), body.publisher,
                            body.created_s, policy, now, now, self._access_seq,
                        ),
                    )  # fmt: skip
                    db.executemany(
                        "INSERT INTO artifact_chunks (artifact, idx, chunk) VALUES (?, ?, ?)",
                        ((aid, i, c.id) for i, c in enumerate(body.chunks)),
                    )
                elif policy != "cache":
                    db.execute("UPDATE artifacts SET policy = ? WHERE id = ?", (policy, aid))
                if pin is not None:
                    db.execute("INSERT OR IGNORE INTO pins (artifact, reason) VALUES (?, ?)", (aid, pin))
            _fault("manifest")
            self._refresh_complete(aid)
        return aid

    def _row(self, aid: bytes) -> tuple[Any, ...]:
        row = self._db.execute(
            "SELECT manifest, policy, complete FROM artifacts WHERE id = ?", (aid,)
        ).fetchone()
        if row is None:
            raise StoreError(f"artifact {aid.hex()[:16]} is not in the store", "not_found")
        return row

    def manifest(self, aid: bytes) -> Manifest:
        with self._lock:
            self._check_open()
            blob = self._row(aid)[0]
        try:
            return decode_manifest(bytes(blob), aid)[1]
        except ManifestError as exc:
            raise StoreError(f"stored manifest {aid.hex()[:16]} is damaged: {exc}", "corrupt") from None

    def resolve(self, ref: str | bytes) -> bytes:
        """An artifact id from bytes, its hex form, or a unique hex prefix (>= 8 digits)."""
        if isinstance(ref, bytes):
            return ref
        text = ref.strip().lower()
        try:
            raw = bytes.fromhex(text if len(text) % 2 == 0 else text + "0")
        except ValueError:
            raise StoreError(f"{ref!r} is not an artifact id (hex)", "invalid") from None
        if len(text) == 64:
            return raw
        if len(text) < 8:
            raise StoreError("give at least 8 hex digits of the artifact id", "invalid")
        with self._lock:
            self._check_open()
            ids = [bytes(r[0]) for r in self._db.execute("SELECT id FROM artifacts WHERE id >= ? ORDER BY id LIMIT 64", (raw,))]
        found = [i for i in ids if i.hex().startswith(text)]
        if not found:
            raise StoreError(f"no artifact id starts with {text}", "not_found")
        if len(found) > 1:
            raise StoreError(f"{text} matches {len(found)} artifacts; give more digits", "invalid")
        return found[0]

    def missing(self, aid: bytes) -> list[int]:
        """Indices of the artifact's chunks not in the store (what a resumed fetch needs)."""
        with self._lock:
            self._check_open()
            self._row(aid)
            return [
                r[0]
                for r in self._db.execute(
                    "SELECT ac.idx FROM artifact_chunks ac LEFT JOIN chunks c ON c.id = ac.chunk AND c.state = ?"
                    " WHERE ac.artifact = ? AND c.id IS NULL ORDER BY ac.idx",
                    (_PRESENT, aid),
                )
            ]

    def present_bitmap(self, aid: bytes) -> bytes:
        """Bit ``i`` (LSB first) set when chunk ``i`` is here: the ``ChunkHave`` bitmap."""
        with self._lock:
            count = self._db.execute("SELECT chunk_count FROM artifacts WHERE id = ?", (aid,)).fetchone()
            if count is None:
                raise StoreError(f"artifact {aid.hex()[:16]} is not in the store", "not_found")
            bits = bytearray(b"\xff" * ((count[0] + 7) // 8))
            if count[0] % 8:
                bits[-1] = (1 << (count[0] % 8)) - 1
            for i in self.missing(aid):
                bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
            return bytes(bits)

    def _refresh_complete(self, aid: bytes) -> bool:
        done = not self.missing(aid)
        self._db.execute("UPDATE artifacts SET complete = ? WHERE id = ?", (int(done), aid))
        return done

    def is_complete(self, aid: bytes) -> bool:
        """Whether every chunk is here (and record it)."""
        with self._lock:
            self._check_open()
            return self._refresh_complete(aid)

    @contextlib.contextmanager
    def writing(self, aid: bytes) -> Iterator[None]:
        """Mark an artifact as being fetched: the quota never evicts it meanwhile."""
        with self._lock:
            self._busy[aid] = self._busy.get(aid, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[aid] -= 1
                if not self._busy[aid]:
                    del self._busy[aid]

    def touch(self, aid: bytes) -> None:
        """Record a use of the artifact (LRU order)."""
        with self._lock:
            self._check_open()
            self._access_seq += 1
            self._db.execute(
                "UPDATE artifacts SET access_s = ?, access_seq = ? WHERE id = ?", (self._clock(), self._access_seq, aid)
            )

    def read_artifact(self, aid: bytes) -> Iterator[bytes]:
        """The artifact's content chunk by chunk, each verified; the total hash checked at the end."""
        m = self.manifest(aid)
        missing = self.missing(aid)
        if missing:
            raise StoreError(
                f"artifact {aid.hex()[:16]} is partial: {len(missing)} of {len(m.body.chunks)} chunks missing",
                "not_found",
            )
        self.touch(aid)
        total = blake3.blake3()
        for ref in m.body.chunks:
            data = self.read_chunk(ref.id)
            total.update(data)
            yield data
        if total.digest() != m.body.total_hash:
            raise StoreError(f"artifact {aid.hex()[:16]}: whole-content hash does not match the manifest", "corrupt")

    def export(self, aid: bytes, dest: str | os.PathLike[str], progress: Callable[[int], None] | None = None) -> int:
        """Write the artifact to ``dest`` atomically (temp file, fsync, rename); bytes written."""
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.part")
        written = 0
        try:
            with open(tmp, "wb") as f:
                for data in self.read_artifact(aid):
                    f.write(data)
                    written += len(data)
                    if progress is not None:
                        progress(len(data))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return written

    def publish(
        self,
        read: Callable[[int], bytes],
        *,
        identity: _identity.Identity,
        name: str,
        version: str = "",
        project: str = "default",
        media_type: str = "application/octet-stream",
        kind: str = "dataset",
        chunking: ChunkingSpec | None = None,
        policy: str = "cache",
        pin: str | None = "publish",
        created_s: int | None = None,
        labels: dict[str, str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[bytes, Manifest]:
        """Chunk, compress where it pays, store and sign a stream: ``(artifact id, manifest)``.

        The published artifact is pinned (``pin="publish"``) so the origin
        never evicts it.
        """
        spec = chunking or spec_for_kind(kind)
        refs: list[tuple[bytes, int, int]] = []
        total = blake3.blake3()
        size = 0
        guarded: list[bytes] = []
        try:
            with self.batch() as b:
                for data in spec.chunks(read):
                    cid = chunk_id(data)
                    total.update(data)
                    size += len(data)
                    if len(refs) >= MANIFEST_CHUNKS_MAX:
                        raise StoreError(
                            f"{name}: more than {MANIFEST_CHUNKS_MAX} chunks; use larger chunks", "invalid"
                        )
                    with self._lock:
                        self._guard[cid] = self._guard.get(cid, 0) + 1
                    guarded.append(cid)
                    codec, stored = encode_chunk(data)
                    b.put_chunk(cid, stored, codec=codec, size=len(data), verified=True)
                    refs.append((cid, len(data), codec))
                    if progress is not None:
                        progress(len(data))
            try:
                m = build_manifest(
                    identity,
                    name=name,
                    version=version,
                    project=project,
                    media_type=media_type,
                    chunking=spec.text(),
                    chunks=refs,
                    total_size=size,
                    total_hash=total.digest(),
                    created_s=int(self._clock()) if created_s is None else created_s,
                    labels=labels,
                )
            except ManifestError as exc:
                raise StoreError(str(exc), "invalid") from None
            aid = self.add_manifest(m, pin=pin, policy=policy)
        finally:
            with self._lock:
                for cid in guarded:
                    self._guard[cid] -= 1
                    if not self._guard[cid]:
                        del self._guard[cid]
        return aid, m

    def put_file(self, path: str | os.PathLike[str], *, identity: _identity.Identity, name: str | None = None, kind: str | None = None, **kw: Any) -> tuple[bytes, Manifest]:
        """:meth:`publish` a file (kind guessed from its suffix: weights are fixed-size chunks)."""
        path = Path(path)
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise StoreError(f"{path}: {exc.strerror}", "not_found") from None
        with f:
            return self.publish(f.read, identity=identity, name=name or path.name, kind=kind or guess_kind(path.name), **kw)

    def put_bytes(self, data: bytes, *, identity: _identity.Identity, name: str, **kw: Any) -> tuple[bytes, Manifest]:
        mv = memoryview(data)
        pos = 0

        def read(n: int) -> bytes:
            nonlocal pos
            out = mv[pos : pos + n]
            pos += len(out)
            return bytes(out)

        return self.publish(read, identity=identity, name=name, **kw)

    # -- pins, policy, deletion ------------------------------------------------------

    def pin(self, aid: bytes, reason: str = "user") -> None:
        with self._lock:
            self._check_open()
            self._row(aid)
            self._db.execute("INSERT OR IGNORE INTO pins (artifact, reason) VALUES (?, ?)", (aid, reason))

    def unpin(self, aid: bytes, reason: str = "user") -> None:
        with self._lock:
            self._check_open()
            self._db.execute("DELETE FROM pins WHERE artifact = ? AND reason = ?", (aid, reason))

    def pins(self, aid: bytes) -> tuple[str, ...]:
        with self._lock:
            return tuple(r[0] for r in self._db.execute("SELECT reason FROM pins WHERE artifact = ? ORDER BY reason", (aid,)))

    def set_policy(self, aid: bytes, policy: str) -> None:
        if policy not in POLICIES:
            raise StoreError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
        with self._lock:
            self._check_open()
            self._row(aid)
            self._db.execute("UPDATE artifacts SET policy = ? WHERE id = ?", (policy, aid))

    def delete_artifact(self, aid: bytes, *, force: bool = False) -> None:
        """Forget an artifact (its chunks go at the next :meth:`gc`); refuses a pinned one unless ``force``."""
        with self._lock:
            self._check_open()
            self._row(aid)
            pins = self.pins(aid)
            if pins and not force:
                raise StoreError(f"artifact {aid.hex()[:16]} is pinned ({', '.join(pins)}); unpin it first", "pinned")
            with self._transaction() as db:
                db.execute("DELETE FROM artifacts WHERE id = ?", (aid,))
                db.execute("DELETE FROM artifact_chunks WHERE artifact = ?", (aid,))
                db.execute("DELETE FROM pins WHERE artifact = ?", (aid,))

    def _delete_chunks(self, rows: list[tuple[bytes, int]]) -> int:
        """Delete unreferenced chunks (rows: id, stored); bytes freed. Index first, then files."""
        if not rows:
            return 0
        self._tx("DELETE FROM chunks WHERE id = ?", [(c,) for c, _ in rows])
        freed = 0
        for cid, stored in rows:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_shard_dir(self._chunks, cid) / cid.hex())
            freed += stored
        self._stored_bytes -= freed
        self._chunk_count -= len(rows)
        self._stats["gc_chunks"] += len(rows)
        self._stats["gc_bytes"] += freed
        return freed

    def gc(self, *, sweep_files: bool = True) -> dict[str, int]:
        """Delete every chunk no artifact lists (except those a publish is writing).

        ``sweep_files`` also deletes chunk files the index does not know (left
        when a crash fell between deleting a chunk's row and its file); it
        lists every shard directory, ~1 s per million chunks.
        """
        with self._lock:
            self._check_open()
            orphans = self._sweep_orphans() if sweep_files else 0
            rows = [
                (bytes(c), s)
                for c, s in self._db.execute(
                    "SELECT id, stored FROM chunks c WHERE state = ? AND NOT EXISTS"
                    " (SELECT 1 FROM artifact_chunks ac WHERE ac.chunk = c.id)",
                    (_PRESENT,),
                )
            ]
            rows = [r for r in rows if r[0] not in self._guard]
            freed = self._delete_chunks(rows)
            return {"chunks_removed": len(rows), "bytes_freed": freed, "orphan_files_removed": orphans}

    def _sweep_orphans(self) -> int:
        # A file is renamed into chunks/ only after its row is committed, so a
        # file without a row is a leftover of a deletion, never a write in flight.
        known = {bytes(r[0]).hex() for r in self._db.execute("SELECT id FROM chunks")}
        removed = 0
        for shard in SHARDS:
            with os.scandir(self._chunks / shard) as it:
                for entry in it:
                    if entry.name not in known:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                        removed += 1
        return removed

    def _evictable(self) -> list[bytes]:
        ids = [
            bytes(r[0])
            for r in self._db.execute(
                "SELECT id FROM artifacts a WHERE NOT EXISTS (SELECT 1 FROM pins p WHERE p.artifact = a.id)"
                " ORDER BY access_seq"
            )
        ]
        return [a for a in ids if a not in self._busy]

    def _evict_one(self, aid: bytes) -> int:
        """Drop an unpinned artifact and the chunks only it used; bytes freed."""
        with self._transaction() as db:
            rows = [
                (bytes(c), s)
                for c, s in db.execute(
                    "SELECT DISTINCT c.id, c.stored FROM artifact_chunks ac JOIN chunks c ON c.id = ac.chunk"
                    " WHERE ac.artifact = ? AND NOT EXISTS (SELECT 1 FROM artifact_chunks o"
                    " WHERE o.chunk = ac.chunk AND o.artifact != ac.artifact)",
                    (aid,),
                )
            ]
            db.execute("DELETE FROM artifacts WHERE id = ?", (aid,))
            db.execute("DELETE FROM artifact_chunks WHERE artifact = ?", (aid,))
        self._stats["evicted_artifacts"] += 1
        return self._delete_chunks([r for r in rows if r[0] not in self._guard])

    def _make_room(self, incoming: int) -> None:
        """Evict LRU unpinned artifacts until ``incoming`` more bytes fit the quota."""
        quota = self.cache_quota_bytes
        if quota is None:
            return
        with self._lock:
            if self._stored_bytes + incoming <= quota:
                return
            for aid in self._evictable():
                self._evict_one(aid)
                if self._stored_bytes + incoming <= quota:
                    return
            # unreferenced chunks (an aborted fetch's leftovers) go last
            self.gc()
            if self._stored_bytes + incoming > quota:
                raise StoreError(
                    f"store quota of {quota} bytes reached ({self._stored_bytes} stored, pinned or in use);"
                    " unpin artifacts or raise the quota",
                    "quota",
                )

    def evict(self, target_bytes: int) -> int:
        """Evict LRU unpinned artifacts until at most ``target_bytes`` are stored; artifacts evicted."""
        with self._lock:
            self._check_open()
            n = 0
            for aid in self._evictable():
                if self._stored_bytes <= target_bytes:
                    break
                self._evict_one(aid)
                n += 1
            return n

    # -- listing ------------------------------------------------------------------------

    def stat(self, aid: bytes) -> ArtifactInfo:
        with self._lock:
            self._check_open()
            row = self._db.execute(
                "SELECT name, version, project, media_type, total_size, chunk_count, policy, publisher, created_s,"
                " manifest FROM artifacts WHERE id = ?",
                (aid,),
            ).fetchone()
            if row is None:
                raise StoreError(f"artifact {aid.hex()[:16]} is not in the store", "not_found")
            present, present_bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(c.size), 0) FROM artifact_chunks ac JOIN chunks c ON c.id = ac.chunk"
                " WHERE ac.artifact = ? AND c.state = ?",
                (aid, _PRESENT),
            ).fetchone()
            pins = self.pins(aid)
        name, version, project, media_type, total_size, count, policy, publisher, created_s, blob = row
        try:
            chunking = decode_manifest(bytes(blob), aid)[1].body.chunking
        except ManifestError:
            chunking = "?"
        return ArtifactInfo(
            aid, name, version, project, media_type, total_size, count, present, present_bytes,
            present == count, pins, policy, publisher, created_s, chunking,
        )  # fmt: skip

    def list_artifacts(self) -> list[ArtifactInfo]:
        with self._lock:
            self._check_open()
            ids = [bytes(r[0]) for r in self._db.execute("SELECT id FROM artifacts ORDER BY name, version, id")]
            return [self.stat(a) for a in ids]

    def verify_all(self) -> dict[str, int]:
        """Read and verify every present chunk (a scrub); bad ones are quarantined."""
        with self._lock:
            ids = [bytes(r[0]) for r in self._db.execute("SELECT id FROM chunks WHERE state = ?", (_PRESENT,))]
        bad = 0
        for cid in ids:
            try:
                self.read_chunk_stored(cid)
            except StoreError as exc:
                if exc.code != "corrupt":
                    raise
                bad += 1
        return {"chunks_checked": len(ids), "corrupt": bad}

    def statistics(self) -> dict[str, float]:
        with self._lock:
            self._check_open()
            artifacts = self._db.execute("SELECT COUNT(*), COALESCE(SUM(complete), 0) FROM artifacts").fetchone()
            pinned = self._db.execute("SELECT COUNT(DISTINCT artifact) FROM pins").fetchone()[0]
            corrupt_total = self._meta("corrupt_chunks") or 0
        out: dict[str, float] = {
            "chunks": self._chunk_count,
            "stored_bytes": self._stored_bytes,
            "artifacts": artifacts[0],
            "artifacts_complete": artifacts[1],
            "artifacts_pinned": pinned,
            "quota_bytes": -1 if self.cache_quota_bytes is None else self.cache_quota_bytes,
            "corrupt_total": corrupt_total,
            "artifacts_busy": len(self._busy),
        }
        out.update(self._stats)
        return out
