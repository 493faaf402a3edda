"""Peer identity: Ed25519 keys (PyNaCl), libp2p peer ids, sign/verify helpers.

Every peer, operator and client has one Ed25519 key. The peer id is the
libp2p PeerID of the same key (``12D3KooW...``): the base58btc encoding of an
identity multihash over the protobuf-encoded public key. It is computed here
without importing libp2p (``import libp2p`` costs ~0.5 s and ~68 MiB, too much
for the simulator, which makes thousands of ids), and a test checks that it
matches ``libp2p.peer.id.ID.from_pubkey`` byte for byte.

Because the id embeds the public key, a signature can be checked from the
peer id alone (:func:`public_key_of`): no key directory is needed.

Key files hold the 32-byte seed, written 0600 through a temp file and a
rename; a key file that is readable by group or others is refused, as ssh
does.
"""

from __future__ import annotations

import functools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

__all__ = [
    "Identity",
    "IdentityError",
    "peer_id_from_public_key",
    "public_key_of",
    "verify",
    "verify_peer",
]

# protobuf PublicKey{Type: Ed25519 (1), Data: 32 bytes} as libp2p encodes it
_PB_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
# identity multihash: code 0x00, length 36
_MH_PREFIX = bytes([0x00, len(_PB_PREFIX) + 32])
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
PEER_ID_LEN = 52  # every Ed25519 peer id is 52 characters long


class IdentityError(Exception):
    """A key file or peer id that cannot be used; the message says what to do."""


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        i = _B58_INDEX.get(c)
        if i is None:
            raise IdentityError(f"invalid base58 character {c!r} in peer id")
        n = n * 58 + i
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


@functools.lru_cache(maxsize=65536)
def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer id (``12D3KooW...``) of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise IdentityError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    return _b58encode(_MH_PREFIX + _PB_PREFIX + public_key)


@functools.lru_cache(maxsize=65536)
def public_key_of(peer_id: str) -> bytes:
    """The raw 32-byte Ed25519 public key embedded in a peer id."""
    if not isinstance(peer_id, str) or len(peer_id) != PEER_ID_LEN:
        raise IdentityError(f"not an Ed25519 peer id: {peer_id!r}")
    raw = _b58decode(peer_id)
    if len(raw) != 38 or raw[:2] != _MH_PREFIX or raw[2:6] != _PB_PREFIX:
        raise IdentityError(f"not an Ed25519 peer id: {peer_id!r}")
    return raw[6:]


@functools.lru_cache(maxsize=65536)
def _verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(public_key)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message``."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    try:
        _verify_key(public_key).verify(message, signature)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False


def verify_peer(peer_id: str, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` over ``message`` was made by the key of ``peer_id``."""
    try:
        return verify(public_key_of(peer_id), message, signature)
    except IdentityError:
        return False


@dataclass(frozen=True)
class Identity:
    """An Ed25519 key pair and the peer id derived from it."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> "Identity":
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "Identity":
        """Deterministic identity (the simulator and tests derive keys from the run seed)."""
        if len(seed) != 32:
            raise IdentityError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @functools.cached_property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @functools.cached_property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``message``."""
        return self.signing_key.sign(message).signature

    # -- key files ---------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the seed to ``path`` with mode 0600 (temp file, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self.seed.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Identity":
        """Read a key file written by :meth:`save`; refuse one others can read."""
        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise IdentityError(f"{path}: key file not found (run `arcnet init` to create one)") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityError(
                f"{path}: key file is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`"
            )
        text = path.read_text().strip()
        try:
            seed = bytes.fromhex(text)
        except ValueError:
            raise IdentityError(f"{path}: not a key file (expected 64 hex characters)") from None
        if len(seed) != 32:
            raise IdentityError(f"{path}: not a key file (expected 64 hex characters)")
        return cls.from_seed(seed)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> "Identity":
        if Path(path).exists():
            return cls.load(path)
        ident = cls.generate()
        ident.save(path)
        return ident
