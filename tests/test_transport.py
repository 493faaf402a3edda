"""The libp2p transport: real hosts on 127.0.0.1, port 0, in this process and one other.

Waiting is done by polling a condition under a deadline (``wait_for``); the
only timed waits are the timeouts under test, and those are short.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from arcnet.mesh.framing import FrameDecoder, FrameError, encode_frame
from arcnet.mesh.identity import Identity
from arcnet.mesh.transport import MSG_PROTOCOL, Libp2pTransport, TransportError, request_protocol

HERE = Path(__file__).resolve().parent
ECHO = request_protocol("echo")


def ident(n: int) -> Identity:
    return Identity.from_seed(bytes([n]) * 32)


async def wait_for(predicate, timeout_s: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout_s``."""
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(*transports: Libp2pTransport):
    async with trio.open_nursery() as nursery:
        for t in transports:
            await nursery.start(t.run)
        yield nursery
        nursery.cancel_scope.cancel()


async def receive(t: Libp2pTransport, timeout_s: float = 5.0) -> tuple[str, bytes]:
    with trio.fail_after(timeout_s):
        return await t.receive()


def raw_host(n: int, *, plaintext: bool = False):
    """A bare libp2p host (not our transport): a foreign peer that may misbehave."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.crypto.keys import KeyPair
    from libp2p.crypto.x25519 import create_new_key_pair
    from libp2p.network.config import ConnectionConfig, RetryConfig
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE, Transport as Noise

    priv = Ed25519PrivateKey(ident(n).signing_key)
    kp = KeyPair(priv, priv.get_public_key())
    sec = {PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)} if plaintext else {NOISE: Noise(kp, noise_privkey=create_new_key_pair().private_key)}
    host = new_host(
        key_pair=kp,
        sec_opt=sec,
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")],
    )
    host.get_network().retry_config = RetryConfig(max_retries=0)  # fail once, fast
    return host


async def raw_connect(host, addr: str) -> None:
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    with trio.fail_after(5):
        await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))


# --------------------------------------------------------------------------
# framing (no I/O)


def test_frame_decoder_splits_joins_and_limits():
    frames = [b"", b"a", b"hello" * 100, bytes(range(256))]
    data = b"".join(encode_frame(f) for f in frames)
    for step in (1, 3, 7, len(data)):
        dec = FrameDecoder(1000)
        out = []
        for i in range(0, len(data), step):
            dec.feed(data[i : i + step])
            while (f := dec.next_frame()) is not None:
                out.append(f)
        assert out == frames
        assert not dec.in_frame
        dec.close()  # ended between frames: fine

    dec = FrameDecoder(10)
    dec.feed(encode_frame(b"x" * 11)[:4])  # the header alone is enough to refuse it
    with pytest.raises(FrameError) as err:
        dec.next_frame()
    assert err.value.kind == "oversized"

    for cut in (2, 4 + 3):  # inside the header; inside the body
        dec = FrameDecoder(100)
        dec.feed(encode_frame(b"0123456789")[:cut])
        assert dec.next_frame() is None and dec.in_frame
        with pytest.raises(FrameError) as err:
            dec.close()
        assert err.value.kind == "truncated"

    with pytest.raises(FrameError):
        encode_frame(b"x" * 11, max_bytes=10)


def test_importing_the_module_does_not_import_libp2p():
    # import libp2p costs ~0.5 s; the simulator and CLI import this module for its names
    code = "import sys, arcnet.mesh.transport; assert 'libp2p' not in sys.modules, 'libp2p imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------
# one process, several transports


async def test_frames_both_ways_with_authenticated_senders():
    a, b, c = Libp2pTransport(ident(1)), Libp2pTransport(ident(2)), Libp2pTransport(ident(3))
    events = []
    b.on_connect = lambda peer, addr: events.append(("up", peer, addr))
    b.on_disconnect = lambda peer: events.append(("down", peer))
    assert a.peer_id == ident(1).peer_id  # libp2p's id is the mesh id
    assert str(a._host.get_id()) == a.peer_id
    async with running(a, b, c):
        (addr_b,) = b.listen_addrs()
        assert addr_b.endswith("/p2p/" + b.peer_id) and "/tcp/0/" not in addr_b
        assert await a.connect(addr_b) == b.peer_id
        await wait_for(lambda: a.peer_id in b.connected_peers())
        assert b.peer_id in a.connected_peers()

        assert a.send_nowait(b.peer_id, b"from a")
        assert await receive(b) == (a.peer_id, b"from a")
        assert b.send_nowait(a.peer_id, b"from b")  # reply over the connection a opened
        assert await receive(a) == (b.peer_id, b"from b")

        # c has only b's address, not a connection: send_nowait dials.
        c.add_address(b.peer_id, addr_b)
        for i in range(50):
            assert c.send_nowait(b.peer_id, b"c%d" % i)
        got = [await receive(b) for _ in range(50)]
        assert got == [(c.peer_id, b"c%d" % i) for i in range(50)]  # in order, sender from the Noise session
        ups = {e[1]: e[2] for e in events if e[0] == "up"}
        assert set(ups) == {a.peer_id, c.peer_id}
        assert ups[a.peer_id].startswith("/ip4/127.0.0.1/tcp/")  # where the connection came from

        sa, sb = a.statistics(), b.statistics()
        assert sa["frames_out"] == 1 and sa["bytes_out"] == 6
        assert sb["frames_in"] == 51 and sb["connected_peers"] == 2

        # a peer that goes away is reported
        await c.disconnect(b.peer_id)
        await wait_for(lambda: ("down", c.peer_id) in events)
        assert c.peer_id not in b.connected_peers()


async def test_connect_checks_the_peer_id_and_noise_is_required():
    a, b, c = Libp2pTransport(ident(1)), Libp2pTransport(ident(2)), Libp2pTransport(ident(3))
    async with running(a, b, c):
        # b's address with c's peer id: the Noise handshake proves who answers
        wrong = b.listen_addrs()[0].replace(b.peer_id, c.peer_id)
        with pytest.raises(TransportError, match="cannot connect.*no address answered as that peer"):
            await a.connect(wrong)
        assert a.statistics()["dial_failures"] == 1
        assert c.peer_id not in a.connected_peers()
        with pytest.raises(TransportError, match="/p2p/"):
            await a.connect("/ip4/127.0.0.1/tcp/1")

        # a peer offering only plaintext (where it could claim any id) is refused
        plain = raw_host(9, plaintext=True)
        async with plain.run([]):
            with pytest.raises(Exception):
                await raw_connect(plain, b.listen_addrs()[0])
        assert b.connected_peers() == []
        # and the transport still works
        assert await a.connect(b.listen_addrs()[0]) == b.peer_id


async def test_a_taken_port_or_a_non_tcp_address_is_refused():
    a = Libp2pTransport(ident(1))
    async with running(a):
        taken = a.listen_addrs()[0].split("/p2p/")[0]
        # libp2p listens with SO_REUSEPORT: without the check, b would share a's port
        b = Libp2pTransport(ident(2), [taken])
        with pytest.raises(TransportError, match="cannot listen on .*in use"):
            await b.run()
    with pytest.raises(TransportError, match="only /ip4"):
        Libp2pTransport(ident(2), ["/ip4/127.0.0.1/udp/0/quic-v1"])


async def test_request_response_errors_and_timeout():
    a, b = Libp2pTransport(ident(1)), Libp2pTransport(ident(2))
    release = trio.Event()
    started = trio.Event()

    async def echo(peer: str, payload: bytes) -> bytes:
        return peer.encode() + b":" + payload

    async def never(peer: str, payload: bytes) -> bytes:
        started.set()
        await release.wait()  # never set: the requester must give up
        return b""

    async def broken(peer: str, payload: bytes) -> bytes:
        raise RuntimeError("no such job")

    async def big(peer: str, payload: bytes) -> bytes:
        return b"x" * 5000

    b.set_request_handler(ECHO, echo)
    b.set_request_handler(request_protocol("never"), never)
    b.set_request_handler(request_protocol("broken"), broken)
    b.set_request_handler(request_protocol("big"), big)
    async with running(a, b):
        # by multiaddr (connects), then by peer id; the handler sees the authenticated requester
        assert await a.request(b.listen_addrs()[0], ECHO, b"hi") == a.peer_id.encode() + b":hi"
        assert await a.request(b.peer_id, ECHO, b"") == a.peer_id.encode() + b":"

        t0 = time.monotonic()
        with pytest.raises(TransportError, match="no response within 0.3 s"):
            await a.request(b.peer_id, request_protocol("never"), b"?", timeout_s=0.3)
        assert time.monotonic() - t0 < 2.0
        assert started.is_set()
        await wait_for(lambda: b.statistics()["requests_abandoned"] == 1)  # b cancelled the handler
        assert b.statistics()["requests_in_active"] == 0

        with pytest.raises(TransportError, match="remote error: handler failed: RuntimeError: no such job"):
            await a.request(b.peer_id, request_protocol("broken"), b"")
        assert b.statistics()["handler_errors"] == 1

        with pytest.raises(TransportError, match="response too large"):
            await a.request(b.peer_id, request_protocol("big"), b"", response_max_bytes=4999)
        assert len(await a.request(b.peer_id, request_protocol("big"), b"", response_max_bytes=5000)) == 5000

        with pytest.raises(TransportError, match="cannot open a stream"):
            await a.request(b.peer_id, request_protocol("unknown"), b"")
        with pytest.raises(TransportError, match="exceeds the limit"):
            await a.request(b.peer_id, ECHO, b"x" * ((4 << 20) + 1))

        sa = a.statistics()
        assert sa["request_timeouts"] == 1 and sa["request_failures"] == 5
        # still healthy after all that
        assert await a.request(b.peer_id, ECHO, b"ok") == a.peer_id.encode() + b":ok"


async def test_oversized_frame_is_rejected_counted_and_the_transport_keeps_working(caplog):
    a = Libp2pTransport(ident(1))
    b = Libp2pTransport(ident(2), frame_max_bytes=1000)
    async with running(a, b):
        await a.connect(b.listen_addrs()[0])
        assert a.send_nowait(b.peer_id, b"small")
        assert await receive(b) == (a.peer_id, b"small")

        assert a.send_nowait(b.peer_id, b"x" * 1001)  # a's limit allows it; b's does not
        await wait_for(lambda: b.statistics()["oversized_frames"] == 1)
        assert [r for r in caplog.records if r.name == "arcnet.transport" and "exceeds the limit" in r.getMessage()]
        await wait_for(lambda: a.statistics()["stream_failures"] == 1)  # a saw b reset the stream

        assert a.send_nowait(b.peer_id, b"after")  # a fresh stream, same connection
        assert await receive(b) == (a.peer_id, b"after")
        assert b.statistics()["frames_in"] == 2
        assert not b.send_nowait(a.peer_id, b"y" * 1001)  # over b's own limit: refused locally
        assert b.statistics()["frames_dropped_too_big"] == 1


async def test_garbage_and_truncated_frames_on_a_raw_stream_are_counted():
    b = Libp2pTransport(ident(2), read_timeout_s=0.3)
    raw = raw_host(7)
    async with running(b), raw.run([]):
        await raw_connect(raw, b.listen_addrs()[0])
        from libp2p.peer.id import ID

        async def raw_stream(data: bytes, *, close: bool = True):
            s = await raw.new_stream(ID.from_base58(b.peer_id), [MSG_PROTOCOL])
            await s.write(data)
            if close:
                await s.close()
            return s

        await raw_stream(encode_frame(b"fine") + b"\x00\x00\x00\x10abc")  # body cut short
        assert await receive(b) == (ident(7).peer_id, b"fine")
        await wait_for(lambda: b.statistics()["malformed_frames"] == 1)
        await raw_stream(b"\x00\x00")  # header cut short
        await wait_for(lambda: b.statistics()["malformed_frames"] == 2)
        await raw_stream(b"\xff\xff\xff\xffgarbage")  # a 4 GiB claim
        await wait_for(lambda: b.statistics()["oversized_frames"] == 1)
        s = await raw_stream(b"\x00\x00\x01\x00" + b"z" * 10, close=False)  # then silence
        await wait_for(lambda: b.statistics()["read_timeouts"] == 1)
        await s.reset()
        await raw_stream(encode_frame(b"still here"))
        assert await receive(b) == (ident(7).peer_id, b"still here")
        assert b.statistics()["frames_in"] == 2


async def test_slow_consumer_and_dead_peer_do_not_stall_other_peers():
    a = Libp2pTransport(ident(1))
    slow = Libp2pTransport(ident(2), inbox_max_frames=8)  # never calls receive()
    quick = Libp2pTransport(ident(3))
    async with running(a, slow, quick):
        await a.connect(slow.listen_addrs()[0])
        await a.connect(quick.listen_addrs()[0])
        # a peer whose address leads nowhere (a port nobody listens on)
        dead = ident(4).peer_id
        a.add_address(dead, "/ip4/127.0.0.1/tcp/9")
        assert a.send_nowait(dead, b"lost")
        for i in range(200):
            assert a.send_nowait(slow.peer_id, b"%d" % i)
        assert a.send_nowait(quick.peer_id, b"hello")
        assert await receive(quick) == (a.peer_id, b"hello")
        await wait_for(lambda: slow.statistics()["frames_dropped_in"] == 200 - 8)
        assert slow.statistics()["inbox_frames"] == 8
        await wait_for(lambda: a.statistics()["frames_dropped_failed"] == 1)
        assert a.statistics()["dial_failures"] >= 1

        # bounds on the sending side
        assert not a.send_nowait(ident(5).peer_id, b"no address known")
        assert not a.send_nowait(a.peer_id, b"to self")
        assert not a.send_nowait("not-a-peer-id", b"?")
        assert a.statistics()["frames_dropped_unreachable"] == 3


async def test_outbox_is_bounded():
    a = Libp2pTransport(ident(1), outbox_max_frames=4)
    b = Libp2pTransport(ident(2))
    assert not a.send_nowait(b.peer_id, b"not running")
    async with running(a, b):
        a.add_address(b.peer_id, b.listen_addrs()[0])
        results = [a.send_nowait(b.peer_id, b"%d" % i) for i in range(6)]  # no checkpoint in between
        assert results == [True] * 4 + [False] * 2
        assert a.statistics()["frames_dropped_full"] == 2
        assert [await receive(b) for _ in range(4)] == [(a.peer_id, b"%d" % i) for i in range(4)]


async def test_bootstrap_redials_a_peer_that_comes_back():
    seed_id = ident(1)
    first = Libp2pTransport(seed_id)
    async with running(first) as n1:
        addr = first.listen_addrs()[0]
        joiner = Libp2pTransport(ident(2), bootstrap=[addr])
        async with running(joiner):
            await wait_for(lambda: first.peer_id in joiner.connected_peers())
            n1.cancel_scope.cancel()  # the bootstrap peer goes away...
            await wait_for(lambda: first.peer_id not in joiner.connected_peers())
            port_addr = addr.split("/p2p/")[0]
            again = Libp2pTransport(seed_id, [port_addr])  # ...and comes back on the same port
            async with running(again):
                await wait_for(lambda: again.peer_id in joiner.connected_peers(), timeout_s=8)
                assert joiner.send_nowait(again.peer_id, b"back")
                assert await receive(again) == (joiner.peer_id, b"back")


async def test_frames_and_requests_with_a_second_os_process():
    a = Libp2pTransport(ident(1))
    seed = bytes([42]) * 32
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    async with running(a):
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(
                lambda task_status: trio.run_process(
                    [sys.executable, str(HERE / "transport_peer.py"), seed.hex(), "30"],
                    stdout=subprocess.PIPE,
                    env=env,
                    check=False,
                    task_status=task_status,
                )
            )
            try:
                lines = _LineReader(proc.stdout)
                with trio.fail_after(20):  # a fresh interpreter imports libp2p: ~1 s
                    word, addr = (await lines.next()).split()
                assert word == "LISTEN" and addr.endswith("/p2p/" + Identity.from_seed(seed).peer_id)
                other = await a.connect(addr)
                assert await a.request(other, request_protocol("whoami"), b"", timeout_s=5) == a.peer_id.encode()
                for i in range(100):
                    assert a.send_nowait(other, b"n%d" % i)
                got = [await receive(a) for _ in range(100)]
                assert got == [(other, b"echo:n%d" % i) for i in range(100)]
                assert a.send_nowait(other, b"quit")
                with trio.fail_after(10):
                    word, stats = (await lines.next()).split(" ", 1)
                assert word == "STATS" and json.loads(stats)["frames_in"] == 101
                with trio.fail_after(10):
                    await proc.wait()
                assert proc.returncode == 0
            finally:
                if proc.returncode is None:
                    proc.kill()


class _LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream):
        self._stream = stream
        self._buf = b""

    async def next(self) -> str:
        while b"\n" not in self._buf:
            chunk = await self._stream.receive_some(4096)
            if not chunk:
                raise EOFError("child process closed its stdout")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()
