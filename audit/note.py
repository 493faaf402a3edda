"""Signed notes, checkpoints and witness cosignatures (the C2SP text formats).

A checkpoint is a log's signed tree head, written as a c2sp.org/signed-note
whose text is the c2sp.org/tlog-checkpoint body::

    arcnet.mesh/audit/12D3KooW...          origin: names the log
    48211                                  tree size
    x2Sb0yVnFq1pQz4m0I7wX3CkY8vQ9b4jvJ+Y=  base64 RFC 6962 root hash
                                           blank line
    — arcnet.mesh/audit/12D3KooW... <base64(key id || Ed25519 signature)>
    — arcnet.mesh/witness/12D3KooW... <base64(key id || u64 time || Ed25519 signature)>

The first signature is the log's (signature type 0x01, signed over the note
text); the others are witness cosignatures (c2sp.org/tlog-cosignature,
type 0x04, ``cosignature/v1``: signed over a two-line header with the time,
then the note text). A key ID is ``SHA-256(name || 0x0A || type || public
key)[:4]``; a verifier key ("vkey") is ``name+hex(key id)+base64(type ||
public key)``, the form trust files use.

Parsing is strict, because a bundle verifier must notice any changed byte:
valid UTF-8, no control characters but newline, at most
:data:`NOTE_MAX_BYTES` and :data:`SIGNATURES_MAX` lines, and base64 that
re-encodes to exactly the same text (base64 padding bits can otherwise hide a
changed character). This module does no I/O and reads no clock: the witness
passes its time in.

Knowingly left out: signature types other than Ed25519 (0x01) and Ed25519
cosignatures (0x04): no ECDSA, no ML-DSA-44 subtree cosignatures yet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass, field

from ..mesh import identity as _identity

__all__ = [
    "COSIGNATURE_V1",
    "ED25519",
    "Checkpoint",
    "NoteError",
    "Signature",
    "Signer",
    "Verifier",
    "checkpoint_body",
    "cosignature_message",
    "key_id",
    "parse_note",
    "parse_vkeys",
]

ED25519 = 0x01  # signature type: plain Ed25519 over the note text (the log's own key)
COSIGNATURE_V1 = 0x04  # signature type: timestamped Ed25519 witness cosignature
NOTE_MAX_BYTES = 16 << 10  # 16 KiB: a checkpoint with ~100 signatures
SIGNATURES_MAX = 100  # the note spec asks for at least 16; Go's note package caps at 100
NAME_MAX_LEN = 256
TIME_MAX = (1 << 63) - 1
_DASH = "\u2014 "
_NAME_RE = re.compile(r"^[^\s+]+$")


class NoteError(ValueError):
    """A note, checkpoint, signature or vkey that is malformed or does not verify."""


def _b64decode_strict(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError(f"{what}: not base64") from None
    # canonical: padding bits zero and '=' where due, so one value has one text
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what}: non-canonical base64")
    return raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _check_name(name: str, what: str = "key name") -> str:
    if not isinstance(name, str) or not name or len(name) > NAME_MAX_LEN or not _NAME_RE.match(name):
        raise NoteError(f"{what} {name!r}: must be 1..{NAME_MAX_LEN} characters, no spaces or '+'")
    return name


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def cosignature_message(body: str, timestamp: int) -> bytes:
    """What an Ed25519 cosignature (cosignature/v1) signs."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


# ---------------------------------------------------------------------------
# keys


@dataclass(frozen=True)
class Verifier:
    """A trusted public key: a name, a signature type and 32 Ed25519 bytes."""

    name: str
    public_key: bytes
    sig_type: int = ED25519

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.sig_type not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"{self.name}: unsupported signature type {self.sig_type:#04x}")
        if len(self.public_key) != 32:
            raise NoteError(f"{self.name}: an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public_key)

    @property
    def peer_id(self) -> str:
        return _identity.peer_id_from_public_key(self.public_key)

    @property
    def is_witness(self) -> bool:
        return self.sig_type == COSIGNATURE_V1

    def vkey(self) -> str:
        """``name+hex(key id)+base64(type || key)``: one line of a trust file."""
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([self.sig_type]) + self.public_key)}"

    @classmethod
    def parse(cls, vkey: str) -> "Verifier":
        """Parse a vkey; NoteError names what is wrong."""
        parts = vkey.strip().split("+", 2)  # names have no '+'; base64 may
        if len(parts) != 3:
            raise NoteError(f"vkey {vkey[:60]!r}: expected name+keyid+key")
        name, kid_hex, key_b64 = parts
        _check_name(name)
        if not re.fullmatch(r"[0-9a-f]{8}", kid_hex):
            raise NoteError(f"vkey {name}: key id must be 8 lowercase hex digits")
        raw = _b64decode_strict(key_b64, f"vkey {name}")
        if len(raw) != 33:
            raise NoteError(f"vkey {name}: expected a type byte and a 32-byte key")
        v = cls(name, raw[1:], raw[0])
        if v.key_id.hex() != kid_hex:
            raise NoteError(f"vkey {name}: key id does not match the key")
        return v

    def verify_line(self, sig: "Signature", text: str) -> bool:
        """True if ``sig`` (already matched by name and key id) signs ``text``."""
        if sig.name != self.name or sig.key_id != self.key_id:
            return False
        if self.sig_type == ED25519:
            return len(sig.signature) == 64 and _identity.verify(self.public_key, text.encode(), sig.signature)
        if sig.timestamp is None or len(sig.signature) != 64:
            return False
        return _identity.verify(self.public_key, cosignature_message(text, sig.timestamp), sig.signature)


def parse_vkeys(text: str) -> list[Verifier]:
    """A trust file: one vkey per line; blank lines and ``#`` comments ignored."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(Verifier.parse(line))
        except NoteError as exc:
            raise NoteError(f"line {n}: {exc}") from None
    return out


@dataclass(frozen=True)
class Signer:
    """A private key that signs notes: the log's (type 0x01) or a witness's (0x04)."""

    name: str
    identity: _identity.Identity
    sig_type: int = ED25519

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.sig_type not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"unsupported signature type {self.sig_type:#04x}")

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.identity.public_key, self.sig_type)

    def sign_line(self, text: str, timestamp: int | None = None) -> str:
        """A signature line (without the final newline) over the note text."""
        kid = key_id(self.name, self.sig_type, self.identity.public_key)
        if self.sig_type == ED25519:
            raw = kid + self.identity.sign(text.encode())
        else:
            if timestamp is None or not 0 <= timestamp <= TIME_MAX:
                raise NoteError("a cosignature needs a timestamp in 0..2^63-1")
            raw = kid + struct.pack(">Q", timestamp) + self.identity.sign(cosignature_message(text, timestamp))
        return f"{_DASH}{self.name} {_b64(raw)}"


# ---------------------------------------------------------------------------
# notes


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes  # the Ed25519 signature proper (64 bytes when well formed)
    timestamp: int | None  # cosignature/v1 time, None for a plain signature
    line: str  # the exact line, without its newline

    @classmethod
    def parse(cls, line: str) -> "Signature":
        if not line.startswith(_DASH):
            raise NoteError("signature line must start with an em dash and a space")
        rest = line[len(_DASH) :]
        name, sep, b64 = rest.partition(" ")
        if not sep:
            raise NoteError("signature line must be '— name signature'")
        _check_name(name)
        raw = _b64decode_strict(b64, f"signature by {name}")
        if len(raw) < 5:
            raise NoteError(f"signature by {name}: too short")
        kid, sig = raw[:4], raw[4:]
        ts = None
        if len(sig) == 72:  # cosignature/v1: u64 time, then the signature
            ts = struct.unpack(">Q", sig[:8])[0]
            sig = sig[8:]
            if ts > TIME_MAX:
                raise NoteError(f"cosignature by {name}: time out of range")
        return cls(name, kid, sig, ts, line)


@dataclass(frozen=True)
class Note:
    text: str  # what signatures cover, ending in a newline
    signatures: tuple[Signature, ...]

    def format(self) -> str:
        return self.text + "\n" + "".join(s.line + "\n" for s in self.signatures)


def parse_note(note: str | bytes) -> Note:
    """Parse a signed note strictly (see the module docstring); no verification."""
    if isinstance(note, bytes):
        if len(note) > NOTE_MAX_BYTES:
            raise NoteError(f"note of {len(note)} bytes exceeds {NOTE_MAX_BYTES}")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("note is not valid UTF-8") from None
    if not isinstance(note, str):
        raise NoteError("note must be text")
    if len(note.encode("utf-8", "surrogatepass")) > NOTE_MAX_BYTES:
        raise NoteError(f"note exceeds {NOTE_MAX_BYTES} bytes")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("note is not valid UTF-8") from None
    if any(c < " " and c != "\n" for c in note):
        raise NoteError("note contains a control character")
    if not note.endswith("\n"):
        raise NoteError("note must end with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("note has no blank line before its signatures")
    text, sigs = note[: cut + 1], note[cut + 2 :]
    lines = sigs.split("\n")[:-1]
    if not lines:
        raise NoteError("note has no signatures")
    if len(lines) > SIGNATURES_MAX:
        raise NoteError(f"note has {len(lines)} signatures, at most {SIGNATURES_MAX}")
    return Note(text, tuple(Signature.parse(line) for line in lines))


# ---------------------------------------------------------------------------
# checkpoints


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    _check_name(origin, "origin")
    if not 0 <= size <= TIME_MAX or len(root) != 32:
        raise NoteError("checkpoint needs a size in 0..2^63-1 and a 32-byte root")
    return f"{origin}\n{size}\n{_b64(root)}\n"


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint note. ``note`` is the exact text it was parsed from."""

    origin: str
    size: int
    root: bytes
    text: str  # the signed body (origin, size, root lines)
    signatures: tuple[Signature, ...] = field(default=())

    @property
    def note(self) -> str:
        return Note(self.text, self.signatures).format()

    @classmethod
    def parse(cls, note: str | bytes) -> "Checkpoint":
        n = parse_note(note)
        lines = n.text.split("\n")[:-1]
        if len(lines) < 3:
            raise NoteError("checkpoint text needs origin, size and root lines")
        if len(lines) > 3:
            raise NoteError("checkpoint has extension lines (this log writes none)")
        origin, size_s, root_s = lines
        _check_name(origin, "origin")
        if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size_s) or int(size_s) > TIME_MAX:
            raise NoteError(f"checkpoint size {size_s[:24]!r} is not a decimal number without leading zeros")
        root = _b64decode_strict(root_s, "checkpoint root")
        if len(root) != 32:
            raise NoteError("checkpoint root hash is not 32 bytes")
        return cls(origin, int(size_s), root, n.text, n.signatures)

    @classmethod
    def sign(cls, signer: Signer, size: int, root: bytes) -> "Checkpoint":
        """A new checkpoint for the log ``signer.name`` (the key name is the origin)."""
        text = checkpoint_body(signer.name, size, root)
        sig = Signature.parse(signer.sign_line(text))
        return cls(signer.name, size, root, text, (sig,))

    def signature_by(self, verifier: Verifier) -> Signature | None:
        for s in self.signatures:
            if s.name == verifier.name and s.key_id == verifier.key_id:
                return s
        return None

    def verify(self, verifier: Verifier) -> bool:
        """True if this checkpoint carries a valid signature by ``verifier``."""
        s = self.signature_by(verifier)
        return s is not None and verifier.verify_line(s, self.text)

    def with_signature(self, line: str) -> "Checkpoint":
        """This checkpoint with one more signature line (a duplicate key is replaced)."""
        sig = Signature.parse(line)
        kept = tuple(s for s in self.signatures if (s.name, s.key_id) != (sig.name, sig.key_id))
        if len(kept) + 1 > SIGNATURES_MAX:
            raise NoteError(f"at most {SIGNATURES_MAX} signatures")
        return Checkpoint(self.origin, self.size, self.root, self.text, kept + (sig,))

    def without_signature(self, name: str) -> "Checkpoint":
        return Checkpoint(self.origin, self.size, self.root, self.text, tuple(s for s in self.signatures if s.name != name))
