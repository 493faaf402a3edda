"""A witness: cosigns other peers' checkpoints only if they extend what it saw.

Every peer witnesses some other peers' audit logs. For each log it keeps the
latest checkpoint it cosigned (size and root). Offered a new checkpoint of
that log together with a consistency proof from that size, it checks the
log's signature and the proof (RFC 9162 2.1.4.2) and only then cosigns,
with a c2sp.org/tlog-cosignature ``cosignature/v1`` line. A log that shows
different witnesses different histories (a split view) is caught when
witnesses compare notes, and a log that rewrites its own past is caught the
next time it asks for a cosignature. This is the witness protocol of
c2sp.org/tlog-witness, minus the HTTP: the ``old size`` a request names must
be the size the witness holds, else the answer is a :class:`Conflict` that
tells the caller which proof to send.

Outcomes of :meth:`Witness.add_checkpoint`:

* :class:`Cosigned`: the new cosignature line; the witness's state moved on.
  The driver must persist :meth:`Witness.snapshot` before it sends the line
  (a witness that forgets what it cosigned can be fooled into cosigning a
  fork); that is the same rule as every core's ``Persist`` effect.
* :class:`Conflict`: the request's old size is not the witness's; resend
  with a proof from ``known_size``.
* :class:`Rejected`: malformed, unknown log, bad signature, older than what
  was witnessed.
* :class:`Equivocation`: the log signed two checkpoints that cannot both be
  true. ``proven`` is True when the evidence stands on its own (same size,
  different roots: anyone with the log's key can check the two notes, see
  :meth:`Equivocation.check`); False when the log signed a larger tree and
  the consistency proof offered for it does not verify, which convicts the
  log only if the proof came from the log itself (the daemon knows who sent
  it). Either way the witness does not cosign and keeps its state.

Sans-IO (like every ARCNet core): no I/O, no clock; ``now`` (seconds since
the epoch) is passed in and becomes the cosignature's timestamp.

Knowingly left out: the witness does not fetch proofs or checkpoints itself
(its driver does), and cosigning several checkpoints of one size from
different origins sharing a key (each log has its own key and origin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..mesh.identity import Identity
from . import merkle
from .note import COSIGNATURE_V1, ED25519, Checkpoint, NoteError, Signer, Verifier

__all__ = ["Conflict", "Cosigned", "Equivocation", "Rejected", "Witness", "WitnessError", "witness_name", "witness_signer"]

EVIDENCE_MAX_PER_LOG = 16  # equivocation reports kept per log (oldest dropped)
PROOF_HASHES_MAX = 128  # a consistency proof in a tree of 2^63 leaves has < 128 hashes


class WitnessError(ValueError):
    """Bad configuration of a witness."""


def witness_name(peer_id: str) -> str:
    """A peer's witness name (its cosigning key name): ends in its peer id,
    so a verifier can read the key from the name."""
    return f"arcnet.mesh/witness/{peer_id}"


def witness_signer(identity: Identity) -> Signer:
    """The cosigning key of a peer acting as witness (the peer's own Ed25519
    key, signature type 0x04: its messages start ``cosignature/v1``, so they
    can never be mistaken for a log signature or a wire envelope)."""
    return Signer(witness_name(identity.peer_id), identity, COSIGNATURE_V1)


@dataclass(frozen=True)
class Cosigned:
    origin: str
    size: int
    root: bytes
    line: str  # the cosignature line to attach to the checkpoint
    timestamp: int


@dataclass(frozen=True)
class Conflict:
    origin: str
    known_size: int  # resend with a consistency proof from this size


@dataclass(frozen=True)
class Rejected:
    origin: str
    reason: str


@dataclass(frozen=True)
class Equivocation:
    """Evidence that a log signed two inconsistent checkpoints."""

    origin: str
    first: str  # the note the witness had cosigned
    second: str  # the note it was offered
    proof: tuple[bytes, ...]  # the consistency proof offered with ``second``
    proven: bool
    reason: str

    def check(self, log: Verifier) -> bool:
        """True if this evidence convicts ``log`` on its own: two notes with
        valid signatures by ``log``, of the same size, with different roots.

        Evidence with ``proven`` False never passes: a failed consistency
        proof shows only that *the proof* was bad, which convicts the log
        only if the log itself sent it.
        """
        try:
            a, b = Checkpoint.parse(self.first), Checkpoint.parse(self.second)
        except NoteError:
            return False
        if a.origin != b.origin or a.origin != log.name:
            return False
        return a.size == b.size and a.root != b.root and a.verify(log) and b.verify(log)


@dataclass
class _LogState:
    verifier: Verifier
    size: int = -1  # -1: never seen
    root: bytes = b""
    note: str = ""
    evidence: list[Equivocation] = field(default_factory=list)


class Witness:
    """The witness core for the logs it is configured to watch.

    ``signer`` is the witness's cosigning key (signature type 0x04; its name
    is the witness's name, e.g. ``arcnet.mesh/witness/<peer id>``); ``logs``
    the vkeys (type 0x01) of the logs it witnesses, each named by its origin.
    """

    def __init__(self, signer: Signer, logs: Iterable[Verifier] = ()) -> None:
        if signer.sig_type != COSIGNATURE_V1:
            raise WitnessError("a witness signs with a cosignature/v1 (type 0x04) key")
        self._signer = signer
        self._logs: dict[str, _LogState] = {}
        self._counts = {"cosigned": 0, "conflicts": 0, "rejected": 0, "equivocations": 0}
        for v in logs:
            self.add_log(v)

    @property
    def name(self) -> str:
        return self._signer.name

    @property
    def verifier(self) -> Verifier:
        return self._signer.verifier

    def add_log(self, log: Verifier) -> None:
        """Start witnessing ``log`` (a type 0x01 vkey named by its origin)."""
        if log.sig_type != ED25519:
            raise WitnessError(f"{log.name}: a log key has signature type 0x01")
        if log.name not in self._logs:
            self._logs[log.name] = _LogState(log)

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        """(size, root) last cosigned for ``origin``, or None."""
        st = self._logs.get(origin)
        return None if st is None or st.size < 0 else (st.size, st.root)

    def evidence(self, origin: str | None = None) -> list[Equivocation]:
        if origin is not None:
            st = self._logs.get(origin)
            return list(st.evidence) if st else []
        return [e for st in self._logs.values() for e in st.evidence]

    def add_checkpoint(
        self, now: float, note: str, old_size: int = 0, proof: Sequence[bytes] = ()
    ) -> Cosigned | Conflict | Rejected | Equivocation:
        """Consider cosigning ``note``, offered with a consistency proof from ``old_size``."""
        try:
            cp = Checkpoint.parse(note)
        except NoteError as exc:
            return self._reject("?", f"malformed checkpoint: {exc}")
        st = self._logs.get(cp.origin)
        if st is None:
            return self._reject(cp.origin, "not a log this witness watches")
        if not cp.verify(st.verifier):
            return self._reject(cp.origin, "no valid signature by the log's key")
        if len(proof) > PROOF_HASHES_MAX or any(type(p) is not bytes or len(p) != 32 for p in proof):
            return self._reject(cp.origin, "malformed consistency proof")
        if st.size < 0:  # first sighting: nothing to be consistent with (trust on first use)
            if old_size != 0:
                self._counts["conflicts"] += 1
                return Conflict(cp.origin, 0)
            return self._cosign(now, st, cp)
        if cp.size == st.size:
            if cp.root == st.root:
                return self._cosign(now, st, cp)
            return self._equivocation(st, cp, proof, True, f"two checkpoints of size {cp.size} with different roots")
        if cp.size < st.size:
            return self._reject(cp.origin, f"size {cp.size} is older than the witnessed size {st.size}")
        if old_size != st.size:
            self._counts["conflicts"] += 1
            return Conflict(cp.origin, st.size)
        if not merkle.verify_consistency(st.size, cp.size, st.root, cp.root, proof):
            return self._equivocation(
                st, cp, proof, False, f"size {cp.size} does not extend the witnessed size {st.size}: the consistency proof fails"
            )
        return self._cosign(now, st, cp)

    def _cosign(self, now: float, st: _LogState, cp: Checkpoint) -> Cosigned:
        ts = int(now)
        if ts < 0:
            raise WitnessError("now must be seconds since the epoch")
        line = self._signer.sign_line(cp.text, ts)
        st.size, st.root, st.note = cp.size, cp.root, cp.note
        self._counts["cosigned"] += 1
        return Cosigned(cp.origin, cp.size, cp.root, line, ts)

    def _reject(self, origin: str, reason: str) -> Rejected:
        self._counts["rejected"] += 1
        return Rejected(origin, reason)

    def _equivocation(self, st: _LogState, cp: Checkpoint, proof: Sequence[bytes], proven: bool, reason: str) -> Equivocation:
        ev = Equivocation(cp.origin, st.note, cp.note, tuple(proof), proven, reason)
        st.evidence.append(ev)
        if len(st.evidence) > EVIDENCE_MAX_PER_LOG:
            st.evidence.pop(0)
        self._counts["equivocations"] += 1
        return ev

    # -- durable state: the driver persists this after every Cosigned ----------

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Plain state to persist: per origin, the last cosigned size, root and note."""
        return {o: {"size": st.size, "root": st.root, "note": st.note} for o, st in self._logs.items() if st.size >= 0}

    def restore(self, snapshot: dict[str, dict[str, object]]) -> None:
        """Load what :meth:`snapshot` returned (for logs already added)."""
        for origin, s in snapshot.items():
            st = self._logs.get(origin)
            if st is None:
                continue
            cp = Checkpoint.parse(str(s["note"]))
            if cp.origin != origin or not cp.verify(st.verifier):
                raise WitnessError(f"{origin}: stored checkpoint does not verify")
            st.size, st.root, st.note = cp.size, cp.root, cp.note

    def statistics(self) -> dict[str, int]:
        out = dict(self._counts)
        out["logs"] = len(self._logs)
        out["evidence_kept"] = sum(len(st.evidence) for st in self._logs.values())
        return out
