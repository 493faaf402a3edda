"""Abuse limits: token buckets on an injected clock, per-peer-per-protocol rates, stream caps."""

from __future__ import annotations

import pytest
import trio

from arcnet.mesh.limits import LimitExceeded, Rate, RateLimiter, StreamCap, TokenBucket, limit_handler


def test_token_bucket_burst_then_rate():
    b = TokenBucket(rate_per_s=2.0, burst=3.0, now=100.0)
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert b.wait_s(100.0) == pytest.approx(0.5)
    assert not b.take(100.4)
    assert b.take(100.5)  # 0.5 s at 2/s: one token
    assert b.take(110.0, cost=3.0) and not b.take(110.0)  # refills to the burst, never beyond
    assert not b.take(109.0)  # a clock that steps back mints nothing
    assert b.wait_s(110.0, cost=4.0) == float("inf")  # more than the burst never fits


def test_rate_limiter_is_per_peer_and_per_protocol_with_counters():
    rl = RateLimiter({"swim": Rate(1.0, 2.0), "control": Rate(0.5, 1.0)}, default=Rate(1.0, 1.0))
    t = 0.0
    assert [rl.allow("p1", "swim", t) for _ in range(3)] == [True, True, False]
    assert rl.allow("p2", "swim", t)  # another peer has its own bucket
    assert rl.allow("p1", "control", t) and not rl.allow("p1", "control", t)  # another protocol too
    assert rl.allow("p1", "other", t) and not rl.allow("p1", "other", t)  # the default rate
    assert rl.allow("p1", "swim", t + 1.0)
    with pytest.raises(LimitExceeded, match="over its rate limit"):
        rl.check("p1", "swim", t + 1.0)
    st = rl.statistics()
    assert st["allowed.swim"] == 4 and st["refused.swim"] == 2
    assert st["allowed.control"] == 1 and st["refused.control"] == 1
    assert st["buckets"] == 4
    rl.forget("p1")
    assert rl.statistics()["buckets"] == 1


def test_rate_limiter_bounds_its_buckets():
    rl = RateLimiter({}, default=Rate(1.0, 1.0), peers_max=3)
    for i in range(10):
        rl.allow(f"p{i}", "x", 0.0)
    st = rl.statistics()
    assert st["buckets"] == 3 and st["buckets_evicted"] == 7


def test_stream_cap_total_and_per_peer():
    cap = StreamCap("blob", total_max=3, peer_max=2)
    assert cap.try_acquire("a") and cap.try_acquire("a")
    assert not cap.try_acquire("a")  # per peer
    assert cap.try_acquire("b")
    assert not cap.try_acquire("c")  # total
    cap.release("a")
    with cap.hold("c"):
        assert cap.active() == 3 and cap.active("c") == 1
        with pytest.raises(LimitExceeded):
            with cap.hold("d"):
                pass
    assert cap.active() == 2
    with pytest.raises(RuntimeError):
        cap.release("zzz")
    st = cap.statistics()
    assert st["refused_peer"] == 1 and st["refused_total"] == 2 and st["high_water"] == 3 and st["active"] == 2


async def test_limit_handler_wraps_a_request_handler():
    now = [0.0]
    gate = trio.Event()
    rl = RateLimiter({"echo": Rate(0.0, 2.0)})
    cap = StreamCap("echo", total_max=1, peer_max=1)

    async def echo(peer: str, payload: bytes) -> bytes:
        await gate.wait()
        return payload

    h = limit_handler(echo, "echo", clock=lambda: now[0], limiter=rl, cap=cap, refusal=lambda exc: b"busy:" + exc.kind.encode())
    results: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _append(results, h("p", b"one")))
        await trio.testing.wait_all_tasks_blocked()
        assert await h("p", b"two") == b"busy:streams"  # the cap: one at a time
        gate.set()
    assert results == [b"one"]
    assert await h("p", b"three") == b"busy:rate"  # the rate: a burst of 2, no refill
    assert rl.statistics()["refused.echo"] == 1 and cap.statistics()["refused_total"] == 1


async def _append(out: list, coro) -> None:
    out.append(await coro)


def test_limits_module_is_sans_io():
    # every limit takes `now` from its caller, so the simulator and tests drive it on their own clocks
    import ast
    from pathlib import Path

    import arcnet.mesh.limits as limits

    tree = ast.parse(Path(limits.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"trio", "time", "os", "socket", "libp2p", "asyncio", "threading"}
