"""Dynamic batching for online inference: the decision logic, with no clock and no I/O.

One :class:`BatchCore` per model. Requests go in with ``submit(now, ...)``;
the driver asks :meth:`BatchCore.next_deadline` when to come back and calls
:meth:`BatchCore.take` then, which hands out a batch when one is due:

* **full** -- the pending rows reach ``max_batch``: flush now;
* **deadline** -- the oldest pending request has waited ``max_delay_s``:
  flush what there is, so no request waits longer than that for batching.

A batch is whole requests in arrival order, at most ``max_batch`` rows,
except that a single request larger than ``max_batch`` goes alone (it is
never split: its rows must come back together). The queue is bounded by
``queue_max`` requests; past it :meth:`submit` raises :class:`QueueFull`,
which the shell turns into a "busy, retry elsewhere" reply.

The delay a request pays *for batching* is at most ``max_delay_s``; when
the driver takes a due batch late (the model was busy with the previous
one), that extra wait is load, not batching, and the statistics report it
apart (``batching_wait_s_max`` and ``queue_wait_s_max``).

Why it pays: one model call costs a fixed overhead plus a per-row cost
that is far smaller in a batch (one GEMM instead of many GEMVs, one
framework dispatch instead of many); under load, ``max_delay_s`` of 1-2 ms
buys several times the throughput. This is the policy of Clipper's
adaptive batching and Triton's dynamic batcher (max batch size, max queue
delay), without Clipper's AIMD tuning of the batch size.

The trio shell that drives this core is :mod:`arcnet.runtime.online`.

Knowingly left out: preferred batch sizes (Triton's), priorities, and
per-request deadlines (a request that cannot meet its budget is not
dropped early).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["BatchCore", "BatchPolicy", "QueueFull"]

T = TypeVar("T")


class QueueFull(Exception):
    """The batcher's queue is at its bound; the request should go elsewhere or retry later."""


@dataclass(frozen=True)
class BatchPolicy:
    """max_batch: rows per model call (default 32; GEMM efficiency flattens
    past ~64 rows for small MLPs). max_delay_s: the most a request waits
    for others to join it, in seconds (default 0.002). queue_max: pending
    requests before new ones are refused (default 4096: at 2 ms per batch of
    32 that is ~0.25 s of backlog)."""

    max_batch: int = 32
    max_delay_s: float = 0.002
    queue_max: int = 4096

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= 1 << 20:
            raise ValueError("max_batch must lie in 1..2^20")
        if not 0.0 <= self.max_delay_s <= 10.0:
            raise ValueError("max_delay_s must lie in 0..10 s")
        if not 1 <= self.queue_max <= 1 << 24:
            raise ValueError("queue_max must lie in 1..2^24")


@dataclass
class _Pending(Generic[T]):
    request: T
    rows: int
    arrived: float


class BatchCore(Generic[T]):
    """Pending requests of one model and the rule for when to run them."""

    def __init__(self, policy: BatchPolicy | None = None):
        self.policy = policy or BatchPolicy()
        self._queue: deque[_Pending[T]] = deque()
        self._rows = 0  # rows pending
        self._submitted = 0
        self._refused = 0
        self._batches = 0
        self._batched_rows = 0
        self._flush_full = 0
        self._flush_deadline = 0
        self._full_at: float | None = None  # when the pending rows last reached max_batch
        self._batching_wait_s_max = 0.0
        self._queue_wait_s_max = 0.0

    def submit(self, now: float, request: T, rows: int = 1) -> float:
        """Queue ``request`` (of ``rows`` rows) arrived at ``now``; returns the new next deadline."""
        if rows < 1:
            raise ValueError("a request has at least one row")
        if len(self._queue) >= self.policy.queue_max:
            self._refused += 1
            raise QueueFull(f"batch queue full ({self.policy.queue_max} requests); retry on another peer")
        if self._queue:
            assert now >= self._queue[-1].arrived - 1e-9, "time went backwards"
        self._queue.append(_Pending(request, rows, now))
        self._rows += rows
        if self._rows >= self.policy.max_batch and self._full_at is None:
            self._full_at = now
        self._submitted += 1
        deadline = self.next_deadline()
        assert deadline is not None
        return deadline

    def next_deadline(self) -> float | None:
        """When :meth:`take` will next hand out a batch (None: nothing pending)."""
        if not self._queue:
            return None
        first = self._queue[0]
        if self._rows >= self.policy.max_batch:
            return first.arrived  # full: due already (any time at or after arrival)
        return first.arrived + self.policy.max_delay_s

    def take(self, now: float) -> list[T] | None:
        """A batch of requests if one is due at ``now``, else None."""
        if not self._queue:
            return None
        full = self._rows >= self.policy.max_batch
        first = self._queue[0]
        if not full and now < first.arrived + self.policy.max_delay_s:
            return None
        batch: list[T] = []
        rows = 0
        while self._queue:
            p = self._queue[0]
            if batch and rows + p.rows > self.policy.max_batch:
                break
            self._queue.popleft()
            batch.append(p.request)
            rows += p.rows
            if rows >= self.policy.max_batch:
                break
        self._rows -= rows
        assert self._rows >= 0 and (self._rows == 0) == (not self._queue)
        # When the batch was due: at its deadline, or earlier if it filled up.
        # Time past that was spent waiting for the driver (a busy executor),
        # not for batching; the two are reported apart.
        due = first.arrived + self.policy.max_delay_s
        if full and self._full_at is not None:
            due = min(due, max(first.arrived, self._full_at))
        if self._rows < self.policy.max_batch:
            self._full_at = None
        self._batches += 1
        self._batched_rows += rows
        if full:
            self._flush_full += 1
        else:
            self._flush_deadline += 1
        self._batching_wait_s_max = max(self._batching_wait_s_max, min(now, due) - first.arrived)
        self._queue_wait_s_max = max(self._queue_wait_s_max, now - first.arrived)
        return batch

    def __len__(self) -> int:
        return len(self._queue)

    def statistics(self) -> dict[str, Any]:
        return {
            "pending": len(self._queue),
            "pending_rows": self._rows,
            "submitted": self._submitted,
            "refused": self._refused,
            "batches": self._batches,
            "rows": self._batched_rows,
            "mean_batch_rows": self._batched_rows / self._batches if self._batches else 0.0,
            "flush_full": self._flush_full,
            "flush_deadline": self._flush_deadline,
            "batching_wait_s_max": self._batching_wait_s_max,  # <= max_delay_s by construction
            "queue_wait_s_max": self._queue_wait_s_max,  # batching plus waiting for the executor
            "max_batch": self.policy.max_batch,
            "max_delay_s": self.policy.max_delay_s,
        }
