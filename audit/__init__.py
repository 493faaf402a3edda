"""Signed, append-only Merkle audit log on every peer; checkpoints, witnesses, bundles.

The public API the daemon and the CLI use:

* :class:`AuditLog` (:mod:`.log`): ``AuditLog.open(dir, identity, origin=...)``,
  ``append(kind, data) -> seq``, ``wait_durable(seq)`` / ``sync()``,
  ``checkpoint() -> str`` (a signed note), ``maybe_checkpoint(now)``,
  ``add_cosignature(size, line, witness_vkey)``, proofs, ``statistics()``.
* Entry kinds and their required fields: :mod:`.kinds` (``JOB_FINISHED``, ...).
* :class:`Witness` (:mod:`.witness`): the sans-IO cosigning core.
* :func:`export_bundle` and :func:`verify_bundle` (:mod:`.bundle`).
* RFC 6962 hashing and proofs: :mod:`.merkle`; signed notes: :mod:`.note`.

See ``ARCHITECTURE.md`` ("Prove") for where this sits in the peer.
"""

from . import kinds
from .bundle import ExportError, Problem, Report, bundle_checkpoints, export_bundle, load_trust, verify_bundle
from .entry import Entry, EntryError, decode_entry, encode_entry
from .log import AuditLog, AuditLogError, default_origin
from .note import COSIGNATURE_V1, ED25519, Checkpoint, NoteError, Signer, Verifier, parse_vkeys
from .witness import Conflict, Cosigned, Equivocation, Rejected, Witness, witness_name, witness_signer

__all__ = [
    "COSIGNATURE_V1",
    "ED25519",
    "AuditLog",
    "AuditLogError",
    "Checkpoint",
    "Conflict",
    "Cosigned",
    "Entry",
    "EntryError",
    "Equivocation",
    "ExportError",
    "NoteError",
    "Problem",
    "Rejected",
    "Report",
    "Signer",
    "Verifier",
    "Witness",
    "bundle_checkpoints",
    "decode_entry",
    "default_origin",
    "encode_entry",
    "export_bundle",
    "kinds",
    "load_trust",
    "parse_vkeys",
    "verify_bundle",
    "witness_name",
    "witness_signer",
]

