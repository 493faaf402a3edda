"""The CLI's side of the control protocol: find a peer, call a method, return the result.

Which peer: ``--peer MULTIADDR`` (any peer of the mesh), else ``$ARCNET_PEER``,
else the local peer recorded in ``DATA_DIR/run/peer.json`` by a running
``arcnet-peer``. The client has its own key (``client.key`` in the CLI's
config directory, created on first use, 0600), so peers see a stable,
authenticated client id.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import trio

from arcnet.mesh.config import default_data_dir
from arcnet.mesh.admission import ADMISSION_PROTOCOL, client_admission_handler
from arcnet.mesh.authz import Grant, decode_grant, sign_control
from arcnet.mesh.control import CONTROL_PROTOCOL, ControlError, parse_response
from arcnet.mesh.identity import Identity
from arcnet.mesh.logs import align_libp2p_logging
from arcnet.mesh.wire import Codec

__all__ = ["CliError", "Client", "Unreachable", "call", "client_identity", "resolve_peer"]


class CliError(Exception):
    """An error for the person at the terminal: one line, and an exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Unreachable(CliError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=3)


def client_key_path() -> Path:
    env = os.environ.get("ARCNET_CLIENT_KEY")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "arcnet" / "client.key"


def client_identity() -> Identity:
    return Identity.load_or_create(client_key_path())


def client_grant() -> Grant | None:
    """The grant an operator issued to this client key (``arcnet ca grant``), if any.

    ``$ARCNET_GRANT``, else ``client.grant`` beside the client key. None on
    an open (development) mesh, where requests are signed but carry no grant.
    """
    env = os.environ.get("ARCNET_GRANT")
    path = Path(env) if env else client_key_path().with_name("client.grant")
    if not path.exists():
        if env:
            raise CliError(f"ARCNET_GRANT={env}: no such file", exit_code=2)
        return None
    try:
        return decode_grant(path.read_bytes())
    except ControlError as exc:
        raise CliError(f"{path}: {exc}", exit_code=2) from None


def _signed_request(ident: Identity, peer: str, method: str, args: dict[str, Any] | None, nonce: int,
                    codec: Codec, grant: Grant | None, project: str | None) -> bytes:
    """A control request signed by the client key, bound to the target peer, with the client's grant."""
    target = peer.rsplit("/p2p/", 1)[1].rstrip("/")
    project = project if project is not None else os.environ.get("ARCNET_PROJECT", "")
    return codec.encode(sign_control(ident, method, args, target=target, grant=grant, project=project, nonce=nonce))


def _client_transport(ident: Identity) -> Any:
    from arcnet.mesh.transport import Libp2pTransport, request_protocol

    transport = Libp2pTransport(ident, ["/ip4/127.0.0.1/tcp/0"])
    # peers challenge every connection for a certificate: answer "a client, none" at once
    transport.set_request_handler(request_protocol(ADMISSION_PROTOCOL), client_admission_handler(ident))
    align_libp2p_logging()
    return transport


def resolve_peer(peer: str | None, data_dir: str | None = None) -> str:
    if peer:
        return peer
    env = os.environ.get("ARCNET_PEER")
    if env:
        return env
    run = Path(data_dir) if data_dir else default_data_dir()
    info = run / "run" / "peer.json"
    try:
        addrs = json.loads(info.read_text())["addrs"]
        if addrs:
            return addrs[0]
    except (OSError, ValueError, KeyError):
        pass
    raise CliError(
        f"no peer to talk to: pass --peer MULTIADDR, set ARCNET_PEER, or start arcnet-peer on {run}", exit_code=2
    )


async def call_async(peer: str, method: str, args: dict[str, Any] | None = None, *, timeout_s: float = 10.0,
                     identity: Identity | None = None, grant: Grant | None = None,
                     project: str | None = None) -> dict[str, Any]:
    from arcnet.mesh.transport import TransportError, request_protocol

    if "/p2p/" not in peer:
        raise CliError(f"peer address {peer!r} must be a full multiaddr ending in /p2p/<peer id>", exit_code=2)
    ident = identity or client_identity()
    codec = Codec()
    nonce = secrets.randbits(63)
    payload = _signed_request(ident, peer, method, args, nonce, codec, grant if grant is not None else client_grant(),
                              project)
    transport = _client_transport(ident)
    outcome: list = []
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        try:
            with trio.fail_after(timeout_s + 5):
                outcome.append(await transport.request(peer, request_protocol(CONTROL_PROTOCOL), payload,
                                                       timeout_s=timeout_s))
        except (TransportError, trio.TooSlowError, OSError) as exc:
            outcome.append(Unreachable(f"cannot reach peer {peer}: {exc}"))
        finally:
            nursery.cancel_scope.cancel()
    if not outcome:
        raise Unreachable(f"cannot reach peer {peer}: no reply")
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    data = outcome[0]
    try:
        return parse_response(data, nonce, codec)
    except ControlError as exc:
        raise CliError(f"peer refused {method}: {exc} [{exc.code}]", exit_code=1) from None


class Client:
    """A long-lived control client (one libp2p host) for many calls: tests, the demo.

    ``async with Client() as c: await c.call(addr, "peers")``
    """

    def __init__(self, identity: Identity | None = None, timeout_s: float = 10.0, *, grant: Grant | None = None,
                 project: str | None = None):
        self.identity = identity or client_identity()
        self.timeout_s = timeout_s
        self.codec = Codec()
        self.grant = grant
        self.project = project

    async def __aenter__(self) -> "Client":
        self._transport = _client_transport(self.identity)
        self._cm = trio.open_nursery()
        self._nursery = await self._cm.__aenter__()
        await self._nursery.start(self._transport.run)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._nursery.cancel_scope.cancel()
        await self._cm.__aexit__(None, None, None)

    async def call(self, peer: str, method: str, args: dict[str, Any] | None = None, *,
                   timeout_s: float | None = None) -> dict[str, Any]:
        from arcnet.mesh.transport import TransportError, request_protocol

        t = timeout_s or self.timeout_s
        for attempt in range(2):
            nonce = secrets.randbits(63)
            try:
                with trio.fail_after(t + 5):
                    payload = _signed_request(self.identity, peer, method, args, nonce, self.codec, self.grant,
                                              self.project)
                    data = await self._transport.request(peer, request_protocol(CONTROL_PROTOCOL), payload, timeout_s=t)
                break
            except (TransportError, trio.TooSlowError, OSError) as exc:
                # A peer closes a certificate-less connection (a client's) when its grace time
                # ends; a call racing that close finds no connection and never went out: dial
                # again once. Anything else may have reached the peer and is not retried.
                if attempt == 0 and isinstance(exc, TransportError) and "No valid connections" in str(exc):
                    await trio.sleep(0.1)
                    continue
                raise Unreachable(f"cannot reach peer {peer}: {exc}") from None
        try:
            return parse_response(data, nonce, self.codec)
        except ControlError as exc:
            raise CliError(f"peer refused {method}: {exc} [{exc.code}]", exit_code=1) from None


def call(peer: str, method: str, args: dict[str, Any] | None = None, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Blocking call for CLI commands."""
    return trio.run(lambda: call_async(peer, method, args, timeout_s=timeout_s))
