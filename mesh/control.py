"""The control protocol: how the CLI (or any client) asks a peer to do something.

A request is one :class:`ControlRequest` on its own libp2p stream
(``/arcnet/req/control/1.0.0``); the reply is one :class:`ControlResponse`.
The client has its own Ed25519 key, so the peer knows who is asking from the
Noise-authenticated connection. Arguments and results are msgpack maps of
plain values inside the envelope, so adding a method never changes the wire
format; each method validates its own arguments.

Errors travel as ``ok=False`` with a one-line ``error`` and a stable ``code``
(``bad_request``, ``not_found``, ``forbidden``, ``unavailable``,
``internal``) that the CLI maps to its exit status.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .wire import BOOL, Bytes, Codec, Enum, Message, Str, U64, WireError

__all__ = [
    "CONTROL_PROTOCOL",
    "ControlError",
    "ControlRequest",
    "ControlResponse",
    "decode_args",
    "encode_args",
]

CONTROL_PROTOCOL = "control"
ARGS_MAX_BYTES = (1 << 20) - 4096
ERROR_CODES = ("ok", "bad_request", "not_found", "forbidden", "unavailable", "internal", "refused")


class ControlRequest(Message, tag=0x0201, protocol="control"):
    method = Str(64, 1)
    args = Bytes(ARGS_MAX_BYTES)  # msgpack map
    nonce = U64  # echoed back; with the security layer, also replay protection


class ControlResponse(Message, tag=0x0202, protocol="control"):
    nonce = U64
    ok = BOOL
    code = Enum(*ERROR_CODES)
    error = Str(1000)
    result = Bytes(ARGS_MAX_BYTES)  # msgpack map


class ControlError(Exception):
    """A control request that failed; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def encode_args(value: dict[str, Any]) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def decode_args(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as exc:  # any msgpack failure means a bad request
        raise WireError(f"control args: malformed msgpack ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise WireError("control args: expected a map")
    return value


def request(method: str, args: dict[str, Any] | None, nonce: int, codec: Codec) -> bytes:
    return codec.encode(ControlRequest(method, encode_args(args or {}), nonce))


def parse_response(data: bytes, nonce: int, codec: Codec) -> dict[str, Any]:
    """Decode a reply; raise ControlError for ``ok=False`` or a bad frame."""
    try:
        msg = codec.decode(data)
    except WireError as exc:
        raise ControlError("internal", f"malformed reply from peer: {exc}") from None
    if not isinstance(msg, ControlResponse):
        raise ControlError("internal", f"unexpected reply type {type(msg).__name__}")
    if msg.nonce != nonce:
        raise ControlError("internal", "reply does not match the request")
    if not msg.ok:
        raise ControlError(msg.code, msg.error)
    try:
        return decode_args(msg.result)
    except WireError as exc:
        raise ControlError("internal", str(exc)) from None
