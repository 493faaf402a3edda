"""Dynamic batching: the sans-IO core's rules, its invariants under random traffic, and the trio shell on virtual time."""

import numpy as np
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.runtime import models as M
from arcnet.runtime.batching import BatchCore, BatchPolicy, QueueFull
from arcnet.runtime.executor import Executor
from arcnet.runtime.online import OnlineBatcher

CLF = M.mlp_classifier()


def test_flush_when_full_or_at_the_deadline():
    core = BatchCore(BatchPolicy(max_batch=4, max_delay_s=0.002))
    assert core.next_deadline() is None and core.take(0.0) is None
    assert core.submit(1.0, "a") == pytest.approx(1.002)
    core.submit(1.0005, "b")
    assert core.take(1.001) is None  # not full, not due
    assert core.take(1.002) == ["a", "b"]  # deadline of the oldest
    for i, r in enumerate("cdef"):
        core.submit(2.0 + i * 1e-4, r)
    assert core.next_deadline() == 2.0  # full: due at once
    assert core.take(2.0003) == ["c", "d", "e", "f"]
    s = core.statistics()
    assert (s["batches"], s["flush_full"], s["flush_deadline"], s["rows"], s["pending"]) == (2, 1, 1, 6, 0)
    assert s["batching_wait_s_max"] == pytest.approx(0.002) and s["queue_wait_s_max"] == pytest.approx(0.002)
    # a driver that comes late (the model was busy): the lateness is queueing, not batching
    core.submit(3.0, "g")
    assert core.take(3.010) == ["g"]
    s = core.statistics()
    assert s["batching_wait_s_max"] == pytest.approx(0.002) and s["queue_wait_s_max"] == pytest.approx(0.010)


def test_rows_count_and_big_requests_go_alone():
    core = BatchCore(BatchPolicy(max_batch=4, max_delay_s=0.01))
    core.submit(0.0, "r3", rows=3)
    core.submit(0.0, "r2", rows=2)  # 5 rows pending: full
    assert core.take(0.0) == ["r3"]  # r2 would overflow the batch
    assert core.take(0.0) is None  # 2 rows left: wait for the deadline
    core.submit(0.001, "big", rows=9)
    assert core.take(0.001) == ["r2"]
    assert core.take(0.001) == ["big"]  # larger than max_batch: alone, never split


def test_queue_is_bounded():
    core = BatchCore(BatchPolicy(max_batch=8, queue_max=2))
    core.submit(0.0, 1)
    core.submit(0.0, 2)
    with pytest.raises(QueueFull, match="retry on another peer"):
        core.submit(0.0, 3)
    assert core.statistics()["refused"] == 1
    with pytest.raises(ValueError):
        BatchPolicy(max_batch=0)


@settings(max_examples=100)
@given(
    st.integers(1, 16),
    st.floats(0.0, 0.01),
    st.lists(st.tuples(st.floats(0.0, 0.005), st.integers(1, 6)), min_size=1, max_size=60),
)
def test_driver_following_deadlines_keeps_every_promise(max_batch, delay, arrivals):
    """A driver that calls take() exactly at next_deadline(): order kept, batches bounded,
    no request waits past max_delay, nothing lost."""
    core = BatchCore(BatchPolicy(max_batch=max_batch, max_delay_s=delay))
    now, seq, served, arrived_at = 0.0, 0, [], {}
    rows_of = {}

    def drain(until):
        while (d := core.next_deadline()) is not None and d <= until:
            batch = core.take(max(d, 0.0))
            assert batch, "a due deadline must yield a batch"
            rows = sum(rows_of[r] for r in batch)
            assert rows <= max_batch or len(batch) == 1
            t = max(d, 0.0)
            for r in batch:
                assert t - arrived_at[r] <= delay + 1e-12
            served.extend(batch)

    for gap, rows in arrivals:
        drain(now + gap)
        now += gap
        arrived_at[seq], rows_of[seq] = now, rows
        core.submit(now, seq, rows)
        seq += 1
        drain(now)
    drain(float("inf"))
    assert served == list(range(seq))
    assert len(core) == 0
    assert core.statistics()["batching_wait_s_max"] <= delay + 1e-12


async def test_trio_batcher_on_virtual_time(autojump_clock):
    ex = Executor()
    ex.load("clf", CLF)
    batcher = OnlineBatcher(ex, "clf", BatchPolicy(max_batch=4, max_delay_s=0.002), outputs=["probs"], in_thread=False)
    x, _ = M.blobs(11, 6)
    want = ex.run("clf", {"x": x}, outputs=["probs"])["probs"]
    results, done_at = {}, {}

    async def client(i, at):
        await trio.sleep_until(at)
        out = await batcher.infer({"x": x[i : i + 1]})
        results[i], done_at[i] = out["probs"], trio.current_time()

    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        async with trio.open_nursery() as clients:
            for i in range(5):
                clients.start_soon(client, i, t0)  # 5 at once: a full batch of 4 now, 1 after the delay
            clients.start_soon(client, 5, t0 + 0.010)  # alone: waits the whole delay
        nursery.cancel_scope.cancel()
    for i in range(6):
        np.testing.assert_allclose(results[i][0], want[i], rtol=1e-6, atol=1e-7)
    assert sorted(round(done_at[i] - t0, 6) for i in range(5)) == [0.0, 0.0, 0.0, 0.0, 0.002]
    assert done_at[5] - t0 == pytest.approx(0.012)
    s = batcher.statistics()
    assert (s["batches"], s["flush_full"], s["flush_deadline"], s["model_calls"]) == (3, 1, 2, 3)


async def test_trio_batcher_in_a_thread_and_errors(autojump_clock):
    ex = Executor()
    ex.load("clf", CLF)
    batcher = OnlineBatcher(ex, "clf", BatchPolicy(max_batch=2, max_delay_s=0.001))
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        out = await batcher.infer({"x": np.zeros((2, 16), np.float32)})
        assert out["probs"].shape == (2, 4) and set(out) == {"probs", "logits", "embedding"}
        with pytest.raises(Exception, match="run failed"):
            await batcher.infer({"x": np.zeros((1, 5), np.float32)})
        with pytest.raises(ValueError, match="same length"):
            await batcher.infer({"x": np.zeros((1, 16), np.float32), "y": np.zeros((2, 1), np.float32)})
        nursery.cancel_scope.cancel()
    assert batcher.statistics()["batch_errors"] == 1
