"""Encryption at rest for a private project's artifacts, and wrapping of project keys to peers.

**What is encrypted, when.** A private project (its policy says so, see
:mod:`arcnet.mesh.authz`) has one 32-byte secret key. The publisher encrypts
the artifact's content *before* it is chunked: the chunker, the manifest,
the store, swarm transfer and replication only ever see ciphertext, so
artifacts also move encrypted, and holders that lack the key (every peer
but those the project admits) hold and serve bytes they cannot read. Chunk
ids are hashes of ciphertext; the manifest (signed by the publisher) commits
to them, so a holder cannot substitute or splice chunks undetected.

**Format.** ``header || segment_0 || segment_1 || ...``. The header is
``"ARCE" | version (1) | key id (8) | segment_bytes (u32 BE)``, 17 bytes.
The plaintext is cut into ``segment_bytes`` segments (1 MiB default; the
last holds the rest, 1..segment_bytes bytes, or 0 for empty content); each
is ``nonce (24) || XChaCha20-Poly1305 ciphertext (+16-byte tag)`` with
associated data ``header || index (u64) || last (u8) || project``. Index
and last flag in the AD stop reordering and truncation (the STREAM
construction of Hoang, Reyhanitabar, Rogaway and Vizar, 2015); the project
name stops a ciphertext from being presented as another project's. Segments
let a multi-GiB artifact be encrypted and decrypted in bounded memory, a
segment at a time, through :func:`encrypting_reader` (which fits
:meth:`ChunkingSpec.chunks`) and :class:`Decryptor`.

**Nonces: synthetic, hence deterministic.** Each segment's nonce is a keyed
BLAKE2b of (header, index, last flag, project, plaintext) under a nonce key
derived from the project key, as SIV modes derive theirs (RFC 5297, and
RFC 8452's motivation). Chosen because:

* content addressing: the same content published twice in a project gives
  the same ciphertext, so the same chunk ids: re-publishing is idempotent,
  replicas deduplicate, and a retry of a half-finished upload resumes;
* safety without coordination: a nonce repeats only when key, position and
  plaintext all repeat, and then the ciphertext repeats too, so nothing
  leaks beyond that equality. Random 24-byte nonces would be safe as well
  but would defeat deduplication.

The price, knowingly paid: someone who holds ciphertext can tell that two
artifacts (or two segments at the same position) of one project are
identical; not across projects (different keys). Encryption and nonce keys
are separate subkeys of the project key (keyed BLAKE2b with distinct
personalisation), so the PRF output never meets the cipher key.

**Key wrapping.** A project key reaches a peer only wrapped to that peer's
Ed25519 identity: converted to Curve25519 (libsodium's
``crypto_sign_ed25519_pk_to_curve25519``) and sealed with a SealedBox
(anonymous X25519 + XSalsa20-Poly1305). The sealed plaintext carries a
domain tag and the project name, so a wrapped key cannot be replayed as
another project's. Which peers get it ("admitted for that project": its
certificate's region allowed by the project's policy) is the caller's
decision; :func:`wrap_key` only does the cryptography.

Knowingly left out: key rotation (a new key means re-encrypting, or keeping
old keys by key id: the header names the key id so a peer can hold several),
convergent encryption across projects, and hiding content length (ciphertext
length = plaintext length + 17 + 40 per segment).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import nacl.bindings as _sodium
import nacl.exceptions
import nacl.public

from arcnet.mesh import identity as _identity
from arcnet.mesh.wire import PEER_ID, Bytes, Message, Str

__all__ = [
    "HEADER_BYTES",
    "SEGMENT_BYTES",
    "CryptError",
    "Decryptor",
    "ProjectKey",
    "WrappedKey",
    "ciphertext_size",
    "decrypt",
    "encrypt",
    "encrypting_reader",
    "parse_header",
    "unwrap_key",
    "wrap_key",
]

MAGIC = b"ARCE"
VERSION = 1
KEY_BYTES = 32
KEY_ID_BYTES = 8
NONCE_BYTES = 24
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_BYTES + 4  # 17
SEGMENT_BYTES = 1 << 20  # default plaintext per segment: 1 MiB
SEGMENT_BYTES_MAX = 64 << 20  # a decoder refuses headers claiming more (bounds its memory)
PROJECT_MAX = 64

_KEY_ID_DOMAIN = b"arcnet/project-key-id/v1\0"
_WRAP_DOMAIN = b"arcnet/project-key/v1\0"
_PERSON_ENC = b"arcnet-crypt-enc"  # 16 bytes: BLAKE2b personalisation of the cipher subkey
_PERSON_NONCE = b"arcnet-crypt-nnc"  # 16 bytes: ... of the nonce subkey
_SEALED_MAX = 48 + len(_WRAP_DOMAIN) + 4 * PROJECT_MAX + 1 + KEY_BYTES


class CryptError(ValueError):
    """Ciphertext or a wrapped key that does not open: wrong key, wrong project, altered or cut bytes."""


class ProjectKey:
    """A project's 32-byte secret key and its derived subkeys; ``key_id`` names it in headers."""

    __slots__ = ("secret", "key_id", "_enc", "_nonce")

    def __init__(self, secret: bytes):
        if type(secret) is not bytes or len(secret) != KEY_BYTES:
            raise CryptError(f"a project key is {KEY_BYTES} bytes")
        self.secret = secret
        self.key_id = hashlib.blake2b(_KEY_ID_DOMAIN + secret, digest_size=KEY_ID_BYTES).digest()
        self._enc = hashlib.blake2b(b"enc", key=secret, digest_size=32, person=_PERSON_ENC).digest()
        self._nonce = hashlib.blake2b(b"nonce", key=secret, digest_size=32, person=_PERSON_NONCE).digest()

    @classmethod
    def generate(cls) -> "ProjectKey":
        return cls(os.urandom(KEY_BYTES))

    def __repr__(self) -> str:  # never print the secret
        return f"ProjectKey(id={self.key_id.hex()})"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key (hex) with mode 0600: temp file, fsync, rename."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self.secret.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ProjectKey":
        p = Path(path)
        if p.stat().st_mode & 0o077:
            raise CryptError(f"{p}: key file is accessible by group or others; run `chmod 600 {p}`")
        try:
            return cls(bytes.fromhex(p.read_text().strip()))
        except ValueError:
            raise CryptError(f"{p}: not a project key file (expected 64 hex characters)") from None


# --------------------------------------------------------------------------
# content encryption


def _header(key: ProjectKey, segment_bytes: int) -> bytes:
    return MAGIC + bytes([VERSION]) + key.key_id + segment_bytes.to_bytes(4, "big")


def parse_header(data: bytes) -> tuple[bytes, int]:
    """``(key id, segment_bytes)`` of an encrypted blob's header; CryptError if it is not one."""
    if len(data) < HEADER_BYTES:
        raise CryptError(f"not encrypted content: {len(data)} bytes, shorter than a header")
    if data[:4] != MAGIC:
        raise CryptError("not encrypted content: bad magic")
    if data[4] != VERSION:
        raise CryptError(f"encrypted content of version {data[4]} (this peer reads {VERSION})")
    seg = int.from_bytes(data[13:17], "big")
    if not 1 <= seg <= SEGMENT_BYTES_MAX:
        raise CryptError(f"encrypted content: segment size {seg} outside [1, {SEGMENT_BYTES_MAX}]")
    return bytes(data[5:13]), seg


def _ad(header: bytes, index: int, last: bool, project: bytes) -> bytes:
    return header + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00") + project


def _project_bytes(project: str) -> bytes:
    raw = project.encode()
    if not 1 <= len(project) <= PROJECT_MAX:
        raise CryptError(f"project name must be 1..{PROJECT_MAX} characters")
    return raw


def _seal_segment(key: ProjectKey, header: bytes, index: int, last: bool, project: bytes, plain: bytes) -> bytes:
    ad = _ad(header, index, last, project)
    h = hashlib.blake2b(key=key._nonce, digest_size=NONCE_BYTES)
    h.update(len(ad).to_bytes(4, "big"))
    h.update(ad)
    h.update(plain)
    nonce = h.digest()
    return nonce + _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key._enc)


def _open_segment(key: ProjectKey, header: bytes, index: int, last: bool, project: bytes, seg: bytes) -> bytes:
    if len(seg) < NONCE_BYTES + TAG_BYTES:
        raise CryptError(f"segment {index} cut short")
    try:
        return _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(seg[NONCE_BYTES:], _ad(header, index, last, project),
                                                                    seg[:NONCE_BYTES], key._enc)
    except nacl.exceptions.CryptoError:
        raise CryptError(f"segment {index} does not open: wrong key or project, or altered, reordered or cut") from None


def ciphertext_size(plain_size: int, segment_bytes: int = SEGMENT_BYTES) -> int:
    """Bytes of the encryption of ``plain_size`` bytes (for manifests and quotas)."""
    segments = max(1, -(-plain_size // segment_bytes))
    return HEADER_BYTES + plain_size + segments * (NONCE_BYTES + TAG_BYTES)


def encrypting_reader(
    key: ProjectKey, project: str, read: Callable[[int], bytes], segment_bytes: int = SEGMENT_BYTES
) -> Callable[[int], bytes]:
    """A ``read(n)`` over the ciphertext of what ``read`` gives: feed it to ``ChunkingSpec.chunks``.

    Memory: two segments of plaintext (one of look-ahead, to know which is last).
    """
    if not 1 <= segment_bytes <= SEGMENT_BYTES_MAX:
        raise CryptError(f"segment_bytes must be in [1, {SEGMENT_BYTES_MAX}]")
    proj = _project_bytes(project)
    header = _header(key, segment_bytes)

    def read_exact(n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            b = read(n - got)
            if not b:
                break
            parts.append(bytes(b))
            got += len(b)
        return b"".join(parts)

    def segments() -> Iterator[bytes]:
        yield header
        cur = read_exact(segment_bytes)
        index = 0
        while True:
            nxt = read_exact(segment_bytes) if len(cur) == segment_bytes else b""
            last = not nxt
            yield _seal_segment(key, header, index, last, proj, cur)
            if last:
                return
            cur, index = nxt, index + 1

    gen = segments()
    buf = bytearray()

    def reader(n: int) -> bytes:
        while len(buf) < n:
            piece = next(gen, None)
            if piece is None:
                break
            buf.extend(piece)
        out = bytes(buf[:n])
        del buf[:n]
        return out

    return reader


def encrypt(key: ProjectKey, data: bytes, project: str, segment_bytes: int = SEGMENT_BYTES) -> bytes:
    """Encrypt ``data`` for ``project`` (whole content in memory; see :func:`encrypting_reader`)."""
    view = memoryview(data)
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        out = bytes(view[pos : pos + n])
        pos += len(out)
        return out

    reader = encrypting_reader(key, project, read, segment_bytes)
    return reader(ciphertext_size(len(data), segment_bytes))


class Decryptor:
    """Incremental decryption: ``feed(ciphertext)`` returns the plaintext it completes; ``close()`` checks the end.

    Holds at most one segment of ciphertext plus one read. Plaintext is
    released only after its segment's tag verified; a stream cut at a
    segment boundary is caught at ``close()`` (the last segment is flagged).
    """

    def __init__(self, key: ProjectKey, project: str, key_lookup: Callable[[bytes], ProjectKey | None] | None = None):
        self.key = key
        self.project = _project_bytes(project)
        self._lookup = key_lookup
        self._buf = bytearray()
        self._header: bytes | None = None
        self._seg = 0
        self._index = 0
        self._done = False

    def _full(self) -> int:
        return NONCE_BYTES + self._seg + TAG_BYTES

    def feed(self, data: bytes) -> bytes:
        if self._done and data:
            raise CryptError("bytes after the last segment")
        self._buf += data
        out = []
        if self._header is None:
            if len(self._buf) < HEADER_BYTES:
                return b""
            kid, self._seg = parse_header(bytes(self._buf[:HEADER_BYTES]))
            if kid != self.key.key_id:
                other = self._lookup(kid) if self._lookup is not None else None
                if other is None:
                    raise CryptError(f"content encrypted with project key {kid.hex()}, this peer has {self.key.key_id.hex()}")
                self.key = other
            self._header = bytes(self._buf[:HEADER_BYTES])
            del self._buf[:HEADER_BYTES]
        full = self._full()
        # A full segment is known not to be the last only once a byte beyond it has arrived.
        while len(self._buf) > full:
            out.append(_open_segment(self.key, self._header, self._index, False, self.project, bytes(self._buf[:full])))
            del self._buf[:full]
            self._index += 1
        return b"".join(out)

    def close(self) -> bytes:
        """The last segment's plaintext; CryptError if the content was cut or altered."""
        if self._done:
            return b""
        if self._header is None:
            raise CryptError("encrypted content ended inside its header")
        plain = _open_segment(self.key, self._header, self._index, True, self.project, bytes(self._buf))
        self._buf.clear()
        self._done = True
        return plain


def decrypt(key: ProjectKey, blob: bytes, project: str) -> bytes:
    """Decrypt a whole blob made by :func:`encrypt`; CryptError on any mismatch."""
    if type(blob) is not bytes:
        blob = bytes(blob)
    d = Decryptor(key, project)
    return d.feed(blob) + d.close()


# --------------------------------------------------------------------------
# key wrapping


class WrappedKey(Message, tag=0x0A30, protocol="crypt"):
    """A project key sealed to one peer's identity key (tags 0x0A30-0x0A3F)."""

    project = Str(PROJECT_MAX, 1)
    key_id = Bytes(KEY_ID_BYTES, KEY_ID_BYTES)
    recipient = PEER_ID
    sealed = Bytes(_SEALED_MAX, 48)


def wrap_key(key: ProjectKey, recipient: str | bytes, project: str) -> WrappedKey:
    """Seal ``key`` to ``recipient`` (a peer id or a raw Ed25519 public key)."""
    if isinstance(recipient, str):
        pk = _identity.public_key_of(recipient)
        peer_id = recipient
    else:
        pk = bytes(recipient)
        peer_id = _identity.peer_id_from_public_key(pk)
    try:
        curve = nacl.public.PublicKey(_sodium.crypto_sign_ed25519_pk_to_curve25519(pk))
    except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError, ValueError):
        raise CryptError(f"peer {peer_id[-8:]}: not a usable Ed25519 public key") from None
    plain = _WRAP_DOMAIN + _project_bytes(project) + b"\0" + key.secret
    return WrappedKey(project, key.key_id, peer_id, nacl.public.SealedBox(curve).encrypt(plain))


def unwrap_key(wrapped: WrappedKey, ident: _identity.Identity) -> ProjectKey:
    """Open a wrapped key with this peer's identity; CryptError if it is not for this peer or project."""
    if wrapped.recipient != ident.peer_id:
        raise CryptError(f"project key wrapped for {wrapped.recipient[-8:]}, this is {ident.peer_id[-8:]}")
    box = nacl.public.SealedBox(ident.signing_key.to_curve25519_private_key())
    try:
        plain = box.decrypt(wrapped.sealed)
    except (nacl.exceptions.CryptoError, ValueError):
        raise CryptError("wrapped project key does not open with this peer's key") from None
    prefix = _WRAP_DOMAIN + wrapped.project.encode() + b"\0"
    if not plain.startswith(prefix) or len(plain) != len(prefix) + KEY_BYTES:
        raise CryptError(f"wrapped key is not a key of project {wrapped.project!r}")
    key = ProjectKey(plain[len(prefix):])
    if key.key_id != wrapped.key_id:
        raise CryptError("wrapped key does not match its key id")
    return key


def wrap_keys(key: ProjectKey, recipients: Iterable[str], project: str) -> list[WrappedKey]:
    """One wrapped key per recipient peer id."""
    return [wrap_key(key, r, project) for r in recipients]
