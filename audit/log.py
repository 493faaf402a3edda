"""The per-peer audit log: durable, append-only, hashed into an RFC 6962 tree.

Every peer appends what it did and observed (:mod:`.kinds`) to its own log.
Each entry is encoded once (:mod:`.entry`), and those exact bytes are hashed
into the Merkle tree (:mod:`.merkle`), written to disk, exported and
verified. A signed checkpoint (:mod:`.note`) commits to the tree at a size;
other peers witness checkpoints (:mod:`.witness`), so a log that later shows a
different history is caught. Entries carry no signature of their own: the
checkpoint signature covers every entry below it through the tree, which is
what lets a verifier check a million entries in seconds rather than
verifying a million Ed25519 signatures.

Durability: group commit, as databases do it. :meth:`AuditLog.append` encodes
the entry, adds it to the tree and to an in-memory batch, and returns its
sequence number at once. The batch is written and fsync'ed (fdatasync) as
one (a single write to a file opened with ``O_DSYNC``, which returns once
the data is on disk): by the first caller of :meth:`AuditLog.wait_durable` or
:meth:`AuditLog.sync` when no commit is running (the others wait for it, and
those that came too late for its batch share the next one), or by the
background committer at most ``commit_delay_ms`` after the first unsynced
append. So the fsync rate is bounded by the disk, not by the append rate, and
an entry nobody waits for is durable within ``commit_delay_ms`` plus one
fsync. Trio code waits without blocking its loop with
``await trio.to_thread.run_sync(log.wait_durable, seq)``.

A checkpoint is only ever signed over durable entries (:meth:`checkpoint`
syncs first): a crash can lose unsynced entries, never signed ones. Were
the file ever to hold fewer entries than the last checkpoint signed, or
entries that do not hash to its root, :meth:`AuditLog.open` refuses to start
(the operator must look), because appending would make the log sign a second,
inconsistent history: equivocation.

On disk, in the log's directory::

    log.json         origin and peer id (written once, atomically)
    entries.bin      magic, then records: u32 length | entry | u32 CRC-32
    checkpoints.bin  magic, then records of the same framing holding notes

A crash mid-write leaves a torn last record (short, or failing its CRC).
:meth:`AuditLog.open` truncates it and logs a warning on the
``arcnet.audit`` logger naming the offset and the bytes dropped. Where whole
records follow the damaged one (a disk that wrote the batch's pages out of
order, or corruption), the dropped bytes are kept beside the file and the
warning says so; signed entries are never dropped (see above). A read-only open (:meth:`AuditLog.open_readonly`, used by export while the
daemon runs) ignores a torn tail without touching the file.

Limits: an entry is at most 64 KiB; at most ``pending_max_entries`` (default
65,536) appended entries wait for a commit before :meth:`append` commits
inline (back-pressure rather than unbounded memory). Memory is about 72 bytes
per entry (tree hashes and file offsets): 72 MiB at a million entries.

Knowingly left out: log rotation and pruning (a log only grows); tiles on
disk (the tree is rebuilt on open: a few seconds per million entries); a job index
(exporting one job scans the log, with a cheap byte-search prefilter).
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import msgpack
from typing import Any, Callable, Iterator

from ..mesh.identity import Identity
from . import merkle
from .entry import ENTRY_MAX_BYTES, EntryError, encode_entry
from .note import ED25519, COSIGNATURE_V1, Checkpoint, NoteError, Signature, Signer, Verifier

__all__ = ["AuditLog", "AuditLogError", "EntryError", "default_origin"]

logger = logging.getLogger("arcnet.audit")

META_FILE = "log.json"
ENTRIES_FILE = "entries.bin"
CHECKPOINTS_FILE = "checkpoints.bin"
LOG_FORMAT = "arcnet-audit-log/1"
ENTRIES_MAGIC = b"ARCNET-AUDIT-ENTRIES-1\n\0"  # 24 bytes
CHECKPOINTS_MAGIC = b"ARCNET-AUDIT-CHKPTS-1\n\0\0"  # 24 bytes
_HDR = struct.Struct(">I")
RECORD_OVERHEAD = 8
CHECKPOINT_MAX_BYTES = 16 << 10
RECENT_CHECKPOINTS_MAX = 64  # kept in memory for cosignature merges

_fdatasync = getattr(os, "fdatasync", os.fsync)
_O_DSYNC = getattr(os, "O_DSYNC", 0)  # where missing, every commit calls fdatasync


class AuditLogError(Exception):
    """The log cannot be used as asked; the message says why and what to do."""


def default_origin(peer_id: str) -> str:
    """The origin line (and log key name) of a peer's audit log."""
    return f"arcnet.mesh/audit/{peer_id}"


def _frame(payload: bytes) -> bytes:
    head = _HDR.pack(len(payload))
    return head + payload + _HDR.pack(zlib.crc32(payload, zlib.crc32(head)))


def _scan(buf: bytes | memoryview, start: int, max_payload: int) -> tuple[list[tuple[int, bytes]], int, str]:
    """Parse records from ``start``; returns [(offset, payload)], the end of the
    last good record, and why scanning stopped ('' at a clean end)."""
    out = []
    append = out.append
    pos, n = start, len(buf)
    view = memoryview(buf)
    unpack = _HDR.unpack_from
    crc32 = zlib.crc32
    while pos < n:
        if n - pos < 4:
            return out, pos, "short record header"
        (length,) = unpack(view, pos)
        if length == 0 or length > max_payload:
            return out, pos, f"impossible record length {length}"
        body = pos + 4 + length
        if body + 4 > n:
            return out, pos, "record cut short"
        if unpack(view, body)[0] != crc32(view[pos:body]):
            return out, pos, "record checksum mismatch"
        append((pos, bytes(view[pos + 4 : body])))
        pos = body + 4
    return out, pos, ""


_UINT_SIZE = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


def _peek_seq(raw: bytes) -> int:
    """The seq of an entry from its first bytes (msgpack uint after 0x95), or -1."""
    if len(raw) < 2 or raw[0] != 0x95:
        return -1
    b = raw[1]
    if b < 0x80:
        return b
    size = _UINT_SIZE.get(b)
    if size is None or len(raw) < 2 + size:
        return -1
    return int.from_bytes(raw[2 : 2 + size], "big")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """One peer's audit log. Thread-safe; see the module docstring.

    Open with :meth:`open` (read-write, needs the peer's identity) or
    :meth:`open_readonly`; close with :meth:`close` or a ``with`` block.
    """

    def __init__(self, *_: Any, **__: Any) -> None:
        raise TypeError("use AuditLog.open(directory, identity) or AuditLog.open_readonly(directory)")

    # -- opening --------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        identity: Identity,
        origin: str | None = None,
        *,
        clock_ms: Callable[[], int] | None = None,
        commit_delay_ms: float = 2.0,
        background_commit: bool = True,
        pending_max_entries: int = 65536,
        checkpoint_interval_s: float = 60.0,
        checkpoint_every_entries: int = 10_000,
        on_durable: Callable[[int], None] | None = None,
    ) -> "AuditLog":
        """Open (creating if needed) the log in ``directory`` for appending.

        ``origin``: the log's name in checkpoints (default
        ``arcnet.mesh/audit/<peer id>``); must match an existing log's.
        ``clock_ms``: wall clock for entry times (ms since the epoch; default
        the system clock; the simulator passes its virtual clock).
        ``commit_delay_ms``: how long the background committer lets unsynced
        entries gather before one commit (default 2 ms: at 20,000 appends/s
        at least 40 entries share a disk sync; more while a sync runs). ``background_commit=False`` runs no
        thread: entries become durable only through :meth:`sync` /
        :meth:`wait_durable` (tests, the simulator).
        ``checkpoint_interval_s`` / ``checkpoint_every_entries``: when
        :meth:`maybe_checkpoint` signs a new checkpoint (default: once a minute
        or every 10,000 entries, whichever comes first, and only if the log grew).
        ``on_durable(durable_size)``: called after each commit, from the
        committing thread, outside the log's lock (a trio daemon can wake its
        loop from it with ``trio.from_thread.run_sync``); it must not block.
        """
        if not isinstance(identity, Identity):
            raise TypeError("identity must be an arcnet.mesh.identity.Identity")
        self = object.__new__(cls)
        self._init_common(Path(directory), writable=True)
        self._identity = identity
        origin = origin or default_origin(identity.peer_id)
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._commit_delay_s = max(0.0, commit_delay_ms / 1000.0)
        self._pending_max = max(1, int(pending_max_entries))
        self._cp_interval_s = float(checkpoint_interval_s)
        self._cp_every = max(1, int(checkpoint_every_entries))
        self._on_durable = on_durable
        self._dir.mkdir(parents=True, exist_ok=True)
        meta_path = self._dir / META_FILE
        if meta_path.exists():
            meta = self._read_meta()
            if meta["peer"] != identity.peer_id:
                raise AuditLogError(
                    f"{self._dir}: this log belongs to peer {meta['peer']}, not {identity.peer_id}; "
                    "open it with that peer's key"
                )
            if meta["origin"] != origin:
                raise AuditLogError(f"{self._dir}: this log's origin is {meta['origin']!r}, not {origin!r}")
        else:
            meta = {"format": LOG_FORMAT, "origin": origin, "peer": identity.peer_id}
            tmp = meta_path.with_name(META_FILE + ".tmp")
            with open(tmp, "w") as f:
                json.dump(meta, f, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, meta_path)
            _fsync_dir(self._dir)
        self._origin = meta["origin"]
        self._peer = meta["peer"]
        self._signer = Signer(self._origin, identity, ED25519)
        try:
            self._open_files()
            self._load()
        except BaseException:
            self._close_fds()
            raise
        if background_commit:
            self._thread = threading.Thread(target=self._committer, name=f"audit-commit-{self._peer[-6:]}", daemon=True)
            self._thread.start()
        return self

    @classmethod
    def open_readonly(cls, directory: str | os.PathLike[str]) -> "AuditLog":
        """Open an existing log to read, prove and export, never to write.

        Safe while the owning peer has it open: reads stop at the last whole
        record. Append and checkpoint raise.
        """
        self = object.__new__(cls)
        self._init_common(Path(directory), writable=False)
        if not (self._dir / META_FILE).exists():
            raise AuditLogError(f"{self._dir}: not an audit log directory (no {META_FILE})")
        meta = self._read_meta()
        self._origin, self._peer = meta["origin"], meta["peer"]
        try:
            self._open_files()
            self._load()
        except BaseException:
            self._close_fds()
            raise
        return self

    def _init_common(self, directory: Path, writable: bool) -> None:
        self._dir = directory
        self._writable = writable
        self._identity = None
        self._signer = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._tree = merkle.MerkleTree()
        self._offsets = array.array("Q")  # file offset of each entry's record
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._size = 0
        self._durable = 0
        self._end = 0  # file offset after the last record written or pending
        self._committing = False
        self._pending_since = 0.0  # monotonic time of the oldest unsynced append
        self._failed: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._last_time_ms = 0
        self._latest: Checkpoint | None = None
        self._recent: list[Checkpoint] = []
        self._cp_last_size = 0
        self._cp_last_at: float | None = None
        self._fd = self._rfd = self._cfd = -1
        self._commit_delay_s = 0.0
        self._pending_max = 65536
        self._cp_interval_s = 60.0
        self._cp_every = 10_000
        self._clock_ms = lambda: time.time_ns() // 1_000_000
        self._on_durable: Callable[[int], None] | None = None
        self._stats = {
            "commits": 0,
            "fsyncs": 0,
            "bytes_written": 0,
            "commit_entries_max": 0,
            "commit_ms_max": 0.0,
            "commit_ms_total": 0.0,
            "checkpoints_signed": 0,
            "cosignatures_added": 0,
            "torn_bytes_dropped": 0,
            "inline_commits": 0,
            "committed_entries": 0,
        }
        self._cp_lock = threading.Lock()

    def _read_meta(self) -> dict[str, str]:
        path = self._dir / META_FILE
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise AuditLogError(f"{path}: unreadable ({exc}); restore it from a backup") from None
        if not isinstance(meta, dict) or meta.get("format") != LOG_FORMAT:
            raise AuditLogError(f"{path}: not an {LOG_FORMAT} log")
        if not isinstance(meta.get("origin"), str) or not isinstance(meta.get("peer"), str):
            raise AuditLogError(f"{path}: origin or peer missing")
        return meta

    def _open_files(self) -> None:
        ep = self._dir / ENTRIES_FILE
        cp = self._dir / CHECKPOINTS_FILE
        if self._writable:
            created = not ep.exists() or not cp.exists()
            # O_DSYNC: each write returns once its data is on disk, so a commit
            # is one system call (one release of the GIL, not two)
            self._fd = os.open(ep, os.O_RDWR | os.O_CREAT | os.O_APPEND | _O_DSYNC, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise AuditLogError(f"{self._dir}: the log is open in another process (is the peer running?)") from None
                raise
            self._cfd = os.open(cp, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            for fd, magic in ((self._fd, ENTRIES_MAGIC), (self._cfd, CHECKPOINTS_MAGIC)):
                if os.fstat(fd).st_size < len(magic):
                    # new, or torn while being created: nothing in it can matter
                    os.ftruncate(fd, 0)
                    os.write(fd, magic)
                    os.fsync(fd)
            if created:
                _fsync_dir(self._dir)
            self._rfd = os.open(ep, os.O_RDONLY)
        else:
            try:
                self._rfd = os.open(ep, os.O_RDONLY)
                self._cfd = os.open(cp, os.O_RDONLY)
            except FileNotFoundError as exc:
                raise AuditLogError(f"{self._dir}: {exc.filename} missing") from None

    def _read_all(self, fd: int) -> bytes:
        size = os.fstat(fd).st_size
        chunks = []
        off = 0
        while off < size:
            b = os.pread(fd, min(64 << 20, size - off), off)
            if not b:
                break
            chunks.append(b)
            off += len(b)
        return b"".join(chunks)

    def _load(self) -> None:
        # checkpoints first: they bound what the entry file must hold
        cbuf = self._read_all(self._cfd)
        if cbuf[: len(CHECKPOINTS_MAGIC)] != CHECKPOINTS_MAGIC:
            raise AuditLogError(f"{self._dir / CHECKPOINTS_FILE}: not an audit checkpoint file")
        records, good_end, why = _scan(cbuf, len(CHECKPOINTS_MAGIC), CHECKPOINT_MAX_BYTES)
        if why:
            fd = self._cfd if self._writable else -1
            self._torn(CHECKPOINTS_FILE, fd, good_end, len(cbuf), why, cbuf, CHECKPOINT_MAX_BYTES)
        for _, payload in records:
            try:
                cp = Checkpoint.parse(payload)
            except NoteError as exc:
                raise AuditLogError(f"{self._dir / CHECKPOINTS_FILE}: damaged checkpoint ({exc})") from None
            if cp.origin != self._origin:
                raise AuditLogError(f"{self._dir}: checkpoint for origin {cp.origin!r} in this log")
            self._remember(cp)
        del cbuf

        buf = self._read_all(self._rfd)
        if buf[: len(ENTRIES_MAGIC)] != ENTRIES_MAGIC:
            raise AuditLogError(f"{self._dir / ENTRIES_FILE}: not an audit entry file")
        records, good_end, why = _scan(buf, len(ENTRIES_MAGIC), ENTRY_MAX_BYTES)
        if why:
            self._torn(ENTRIES_FILE, self._fd if self._writable else -1, good_end, len(buf), why, buf, ENTRY_MAX_BYTES)
        payloads = [p for _, p in records]
        hashes = merkle.leaf_hashes(payloads)
        seqs = list(map(_peek_seq, payloads))
        if seqs != list(range(len(seqs))):
            i = next(i for i, q in enumerate(seqs) if q != i)
            raise AuditLogError(
                f"{self._dir / ENTRIES_FILE}: record {i} holds seq {seqs[i]}; "
                "the file is damaged, restore it from a backup or a peer's export"
            )
        del payloads, seqs
        self._offsets = array.array("Q", (off for off, _ in records))
        self._tree = merkle.MerkleTree.from_leaf_hashes(hashes)
        self._size = self._durable = len(records)
        self._end = good_end
        if records:
            self._last_time_ms = self._peek_time(records[-1][1])
        del buf, records, hashes

        latest = self._latest
        if latest is not None:
            if latest.size > self._size:
                raise AuditLogError(
                    f"{self._dir}: the log holds {self._size} entries but its last checkpoint signed "
                    f"{latest.size}: signed entries are missing. Refusing to open, since appending now "
                    "would sign a second history. Restore entries.bin from a backup."
                )
            if self._tree.root(latest.size) != latest.root:
                raise AuditLogError(
                    f"{self._dir}: the entries do not hash to the root the last checkpoint signed "
                    f"(size {latest.size}); the file is damaged. Restore entries.bin from a backup."
                )
            self._cp_last_size = latest.size

    def _peek_time(self, raw: bytes) -> int:
        try:
            return int(msgpack.unpackb(raw)[1])
        except Exception:  # only a hint for clock monotonicity
            return 0

    def _torn(self, name: str, fd: int, good_end: int, file_len: int, why: str, buf: bytes, max_payload: int) -> None:
        """Truncate a damaged tail at ``good_end`` (writable) or ignore it (read-only).

        A crash tears only what was not yet fsync'ed, but the disk may have
        written that batch's pages out of order, so whole records can follow
        the tear. Those were never acknowledged either, so truncating is
        right; still, when whole records follow, the dropped bytes are kept
        beside the log (``<file>.dropped-<offset>``) and the warning says so,
        because the same picture is what corruption of synced data looks
        like. Signed entries are protected separately: open() refuses a log
        shorter than its last checkpoint.
        """
        dropped = file_len - good_end
        if fd < 0 or not self._writable:
            logger.info("audit log %s: ignoring %d bytes of unfinished tail in %s (%s)", self._dir, dropped, name, why)
            return
        follows = 0
        limit = min(file_len, good_end + 2 * (max_payload + RECORD_OVERHEAD))
        view = memoryview(buf)[:limit]
        for probe in range(good_end + 1, limit - RECORD_OVERHEAD):
            (length,) = _HDR.unpack_from(view, probe)
            if 0 < length <= max_payload and probe + length + RECORD_OVERHEAD <= limit:
                recs, _, _ = _scan(view, probe, max_payload)
                if len(recs) >= 2:  # two whole records chained: not noise
                    follows = len(recs)
                    break
        if follows:
            keep = self._dir / f"{name}.dropped-{good_end}"
            with open(keep, "wb") as f:
                f.write(buf[good_end:file_len])
                f.flush()
                os.fsync(f.fileno())
            logger.warning(
                "audit log %s: damaged record in %s at byte %d (%s) followed by whole records; "
                "truncating %d bytes (kept in %s). If the peer did not crash mid-write, the disk is corrupting data.",
                self._dir,
                name,
                good_end,
                why,
                dropped,
                keep.name,
            )
        else:
            logger.warning(
                "audit log %s: torn tail in %s at byte %d (%s): truncating %d bytes that were never durable",
                self._dir,
                name,
                good_end,
                why,
                dropped,
            )
        os.ftruncate(fd, good_end)
        os.fsync(fd)
        self._stats["torn_bytes_dropped"] += dropped

    # -- properties -----------------------------------------------------------

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def peer_id(self) -> str:
        return self._peer

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def size(self) -> int:
        """Entries appended (durable or not)."""
        return self._size

    @property
    def durable_size(self) -> int:
        """Entries known to be on disk (fsync'ed)."""
        return self._durable

    @property
    def verifier(self) -> Verifier:
        """The vkey that verifies this log's checkpoints."""
        from ..mesh.identity import public_key_of

        return Verifier(self._origin, public_key_of(self._peer), ED25519)

    # -- appending ------------------------------------------------------------

    def append(self, kind: str, data: dict[str, Any], *, time_ms: int | None = None) -> int:
        """Append an entry; returns its seq at once (not yet durable).

        Raises EntryError for data that does not suit ``kind`` (see
        :mod:`.kinds`) and AuditLogError if the log is read-only, closed or
        failed. Wait for durability with :meth:`wait_durable`.
        """
        if not self._writable:
            raise AuditLogError(f"{self._dir}: opened read-only")
        commit_now = False
        with self._lock:
            if self._closed:
                raise AuditLogError(f"{self._dir}: log is closed")
            if self._failed is not None:
                raise AuditLogError(f"{self._dir}: a commit failed ({self._failed}); reopen the log")
            t = self._clock_ms() if time_ms is None else time_ms
            if t < self._last_time_ms:  # wall clocks step back; entry times never do
                t = self._last_time_ms
            seq = self._size
            raw = encode_entry(seq, t, kind, self._peer, data)
            rec = _frame(raw)
            self._tree.append(raw)
            self._offsets.append(self._end)
            self._end += len(rec)
            was_empty = not self._pending
            if was_empty:
                self._pending_since = time.monotonic()
            self._pending.append(rec)
            self._pending_bytes += len(rec)
            self._size = seq + 1
            self._last_time_ms = t
            if was_empty and self._thread is not None:
                self._cond.notify_all()
            if len(self._pending) >= self._pending_max:
                commit_now = True
                self._stats["inline_commits"] += 1
        if commit_now:
            self.wait_durable(seq)
        return seq

    def append_durable(self, kind: str, data: dict[str, Any], *, time_ms: int | None = None) -> int:
        """:meth:`append`, then :meth:`wait_durable`: returns once on disk."""
        seq = self.append(kind, data, time_ms=time_ms)
        self.wait_durable(seq)
        return seq

    def wait_durable(self, seq: int, timeout_s: float | None = None) -> bool:
        """Block until entry ``seq`` is on disk; False on timeout.

        The first waiter when no commit is running commits the whole batch
        (group commit); the rest wait for it. Safe from many threads; from
        trio, ``await trio.to_thread.run_sync(log.wait_durable, seq)``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._cond:
                if self._durable > seq:
                    return True
                if seq >= self._size or seq < 0:
                    raise ValueError(f"seq {seq} was never appended (size {self._size})")
                if self._failed is not None:
                    raise AuditLogError(f"{self._dir}: a commit failed ({self._failed}); reopen the log")
                if not self._committing:
                    self._committing = True
                    lead = True
                else:
                    lead = False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            if lead:
                self._commit()

    def wait_durable_nowait(self, seq: int) -> bool:
        """True if ``seq`` is durable already (never blocks)."""
        return self._durable > seq

    def sync(self) -> int:
        """Make every entry appended so far durable; returns the durable size."""
        with self._lock:
            n = self._size
        if n:
            self.wait_durable(n - 1)
        return self._durable

    def _commit(self) -> None:
        """Write and fsync the pending batch. Caller set ``_committing``."""
        try:
            with self._lock:
                batch = self._pending
                target = self._size
                nbytes = self._pending_bytes
                self._pending = []
                self._pending_bytes = 0
            if batch:
                t0 = time.perf_counter()
                data = b"".join(batch)
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                if not _O_DSYNC:
                    _fdatasync(self._fd)
                ms = (time.perf_counter() - t0) * 1000.0
                st = self._stats
                st["commits"] += 1
                st["fsyncs"] += 1
                st["committed_entries"] += len(batch)
                st["bytes_written"] += nbytes
                st["commit_ms_total"] += ms
                if ms > st["commit_ms_max"]:
                    st["commit_ms_max"] = ms
                if len(batch) > st["commit_entries_max"]:
                    st["commit_entries_max"] = len(batch)
        except BaseException as exc:
            with self._cond:
                self._failed = exc
                self._committing = False
                self._cond.notify_all()
            logger.error("audit log %s: commit failed: %s", self._dir, exc)
            raise AuditLogError(f"{self._dir}: commit failed ({exc})") from exc
        with self._cond:
            if target > self._durable:
                self._durable = target
            self._committing = False
            self._cond.notify_all()
        if self._on_durable is not None and batch:
            try:
                self._on_durable(target)
            except Exception:  # a broken callback must not break durability
                logger.exception("audit log %s: on_durable callback failed", self._dir)

    def _committer(self) -> None:
        """Background group commit: unsynced entries wait at most commit_delay."""
        delay = self._commit_delay_s
        while True:
            with self._cond:
                while not self._closed and (not self._pending or self._committing):
                    self._cond.wait()
                if self._closed:
                    return
                if delay > 0:
                    # measured from the oldest unsynced append: entries that
                    # arrived during the last commit have waited already
                    deadline = self._pending_since + delay
                    while not self._closed and self._pending and not self._committing:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or len(self._pending) >= self._pending_max:
                            break
                        self._cond.wait(remaining)
                if self._closed or self._committing or not self._pending or self._failed is not None:
                    if self._failed is not None:
                        return
                    continue
                self._committing = True
            try:
                self._commit()
            except AuditLogError:
                return

    # -- checkpoints ----------------------------------------------------------

    def _remember(self, cp: Checkpoint) -> None:
        if self._latest is None or cp.size >= self._latest.size:
            self._latest = cp
        for i, old in enumerate(self._recent):
            if old.size == cp.size:
                self._recent[i] = cp
                break
        else:
            self._recent.append(cp)
            if len(self._recent) > RECENT_CHECKPOINTS_MAX:
                self._recent.pop(0)

    def _store_checkpoint(self, cp: Checkpoint) -> None:
        rec = _frame(cp.note.encode())
        os.write(self._cfd, rec)
        os.fsync(self._cfd)

    def checkpoint(self) -> str:
        """Sign (or return the current) checkpoint over every durable entry.

        Syncs first, so the checkpoint covers everything appended before the
        call. Returns the note text (with any cosignatures it has gathered).
        """
        if not self._writable or self._signer is None:
            raise AuditLogError(f"{self._dir}: opened read-only; checkpoints need the peer's key")
        self.sync()
        with self._cp_lock:  # one checkpoint or cosignature write at a time
            with self._lock:
                size = self._durable
                root = self._tree.root(size)
                latest = self._latest
            if latest is not None and latest.size == size:
                return latest.note
            if latest is not None and latest.size > size:  # cannot happen: open() refuses such a log
                raise AuditLogError(f"{self._dir}: log shrank below its last checkpoint")
            cp = Checkpoint.sign(self._signer, size, root)
            self._store_checkpoint(cp)
            with self._lock:
                self._remember(cp)
                self._stats["checkpoints_signed"] += 1
            self._cp_last_size = size
        return cp.note

    def maybe_checkpoint(self, now: float) -> str | None:
        """Sign a checkpoint if one is due (the daemon calls this from a timer).

        ``now`` is the driver's monotonic clock in seconds. Due when the log
        grew by ``checkpoint_every_entries`` or ``checkpoint_interval_s`` passed
        since the last one and the log grew at all.
        """
        if self._cp_last_at is None:
            self._cp_last_at = now
        grown = self._size - self._cp_last_size
        if grown <= 0:
            return None
        if grown >= self._cp_every or now - self._cp_last_at >= self._cp_interval_s:
            self._cp_last_at = now
            return self.checkpoint()
        return None

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint (parsed), with its cosignatures."""
        return self._latest

    def checkpoint_at(self, size: int) -> Checkpoint | None:
        """A recent stored checkpoint of exactly ``size`` entries, if kept."""
        for cp in self._recent:
            if cp.size == size:
                return cp
        return None

    def add_cosignature(self, size: int, line: str, witness: Verifier) -> Checkpoint:
        """Attach a witness's cosignature line to the stored checkpoint of ``size``.

        The line is verified against ``witness`` (a cosignature/v1 vkey) first;
        NoteError if it does not verify. Stored durably; returns the checkpoint.
        """
        if not self._writable:
            raise AuditLogError(f"{self._dir}: opened read-only")
        if witness.sig_type != COSIGNATURE_V1:
            raise NoteError(f"{witness.name}: not a witness (cosignature/v1) key")
        sig = Signature.parse(line)
        with self._cp_lock:
            with self._lock:
                cp = self.checkpoint_at(size)
            if cp is None:
                raise NoteError(f"no recent checkpoint of size {size} to cosign")
            if not witness.verify_line(sig, cp.text):
                raise NoteError(f"cosignature by {witness.name} does not verify for size {size}")
            cp = cp.with_signature(line)
            self._store_checkpoint(cp)
            with self._lock:
                self._remember(cp)
                self._stats["cosignatures_added"] += 1
        return cp

    # -- reading and proving --------------------------------------------------

    def root(self, size: int | None = None) -> bytes:
        with self._lock:
            return self._tree.root(size)

    def leaf_hash(self, seq: int) -> bytes:
        with self._lock:
            return self._tree.leaf_hash(seq)

    def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        with self._lock:
            return self._tree.inclusion_proof(seq, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        with self._lock:
            return self._tree.consistency_proof(old_size, new_size)

    def compact_range(self, size: int) -> list[bytes]:
        with self._lock:
            return self._tree.compact_range(size)

    def leaf_hashes(self, start: int, end: int) -> bytes:
        """Concatenated leaf hashes of ``[start, end)``."""
        with self._lock:
            if not 0 <= start <= end <= self._size:
                raise IndexError(f"[{start}, {end}) outside 0..{self._size}")
            return bytes(self._tree._levels[0][start * 32 : end * 32])

    def read_entries(self, start: int, end: int) -> list[bytes]:
        """The canonical bytes of entries ``[start, end)``, from disk (syncs if needed)."""
        if not 0 <= start <= end <= self._size:
            raise IndexError(f"[{start}, {end}) outside 0..{self._size}")
        if end > self._durable:
            if not self._writable:
                raise IndexError(f"entries beyond {self._durable} are not on disk yet")
            self.sync()
        if start == end:
            return []
        lo = self._offsets[start]
        hi = self._offsets[end] if end < len(self._offsets) else self._end
        buf = os.pread(self._rfd, hi - lo, lo)
        out = []
        pos = 0
        unpack = _HDR.unpack_from
        for _ in range(end - start):
            (n,) = unpack(buf, pos)
            out.append(buf[pos + 4 : pos + 4 + n])
            pos += n + RECORD_OVERHEAD
        return out

    def iter_entries(self, start: int = 0, end: int | None = None, chunk: int = 65536) -> Iterator[tuple[int, bytes]]:
        """(seq, bytes) for entries ``[start, end)``, read in chunks."""
        end = self._durable if end is None else end
        for lo in range(start, end, chunk):
            hi = min(end, lo + chunk)
            yield from zip(range(lo, hi), self.read_entries(lo, hi))

    # -- the rest -------------------------------------------------------------

    def statistics(self) -> dict[str, float]:
        """Plain numbers for metrics and reports."""
        with self._lock:
            st = dict(self._stats)
            st.update(
                size=self._size,
                durable_size=self._durable,
                pending_entries=len(self._pending),
                pending_bytes=self._pending_bytes,
                file_bytes=self._end,
                checkpoint_size=self._latest.size if self._latest else 0,
                checkpoint_cosignatures=max(0, len(self._latest.signatures) - 1) if self._latest else 0,
                tree_bytes=self._tree.statistics()["bytes"],
            )
        st["commit_entries_mean"] = (st["committed_entries"] / st["commits"]) if st["commits"] else 0.0
        return st

    def close(self) -> None:
        """Commit what is pending, stop the committer and close the files."""
        if self._closed:
            return
        if self._writable and self._failed is None:
            try:
                self.sync()
            except AuditLogError:
                pass
        with self._cond:
            self._closed = True  # from here append() refuses
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self._writable and self._failed is None:
            with self._cond:  # an append that raced the sync above
                while self._committing:
                    self._cond.wait()
                lead = bool(self._pending)
                if lead:
                    self._committing = True
            if lead:
                try:
                    self._commit()
                except AuditLogError:
                    pass
        self._close_fds()

    def _close_fds(self) -> None:
        for name in ("_fd", "_rfd", "_cfd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, -1)

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AuditLog {self._origin} size={self._size} durable={self._durable}>"

