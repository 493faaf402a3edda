"""Online inference under trio: a dynamic batcher per model, driven by :class:`BatchCore`.

:class:`OnlineBatcher` is the I/O shell around the sans-IO batching core
(:mod:`arcnet.runtime.batching`): request tasks call :meth:`OnlineBatcher.infer`
and wait; one flusher task (:meth:`OnlineBatcher.run`, started in a nursery)
sleeps until the core's next deadline or until a request makes a batch due,
takes the batch, stacks the rows, runs the model once through the
:class:`~arcnet.runtime.executor.Executor`, and hands each request its rows
of every output.

The model runs in a worker thread by default (``trio.to_thread``:
onnxruntime releases the GIL, so the event loop keeps accepting requests
while a batch computes); ``in_thread=False`` runs it inline, which is what
tests under trio's virtual clock use. One batch per model is in flight at a
time: requests that arrive meanwhile form the next batch.

Time comes from ``trio.current_time()`` (the real monotonic clock in the
daemon, a ``MockClock`` in tests), so tests never sleep.

Knowingly left out: several batches of one model in flight at once (one
executor thread per model is enough until a GPU peer needs overlap of
copy and compute), and cancellation of a request once its batch is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import trio

from .batching import BatchCore, BatchPolicy, QueueFull
from .executor import Executor

__all__ = ["OnlineBatcher", "QueueFull"]


@dataclass
class _Request:
    feeds: dict[str, np.ndarray]
    rows: int
    done: trio.Event = field(default_factory=trio.Event)
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


class OnlineBatcher:
    """Batches one model's online requests. Start :meth:`run` in a nursery, then call :meth:`infer`."""

    def __init__(
        self,
        executor: Executor,
        model_id: str,
        policy: BatchPolicy | None = None,
        *,
        outputs: Sequence[str] | None = None,
        in_thread: bool = True,
        gpu_strict: bool = False,
    ):
        self.executor = executor
        self.model_id = model_id
        self.core: BatchCore[_Request] = BatchCore(policy)
        self.outputs = tuple(outputs) if outputs is not None else None
        self.in_thread = in_thread
        self.gpu_strict = gpu_strict
        self._wakeup = trio.Event()
        self._model_calls = 0
        self._errors = 0

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on ``feeds`` (every array has the same number of rows) as part of a batch."""
        rows = {int(np.shape(a)[0]) for a in feeds.values() if np.ndim(a) >= 1}
        if len(rows) != 1:
            raise ValueError("online inputs must be arrays with one leading (row) axis of the same length")
        req = _Request(dict(feeds), rows.pop())
        if req.rows < 1:
            raise ValueError("an online request needs at least one row")
        was_due = self.core.next_deadline()
        self.core.submit(trio.current_time(), req, req.rows)  # QueueFull propagates to the caller
        if was_due is None or self.core.next_deadline() != was_due:
            self._wakeup.set()  # the flusher's deadline moved: let it re-read it
        await req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The flusher: runs until cancelled."""
        task_status.started()
        while True:
            batch = self.core.take(trio.current_time())
            if batch:
                await self._execute(batch)
                continue
            deadline = self.core.next_deadline()
            self._wakeup = trio.Event()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._wakeup.wait()

    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.executor.run(self.model_id, feeds, outputs=self.outputs, gpu_strict=self.gpu_strict)

    async def _execute(self, batch: list[_Request]) -> None:
        names = list(batch[0].feeds)
        try:
            if len(batch) == 1:
                feeds = batch[0].feeds
            else:
                feeds = {n: np.concatenate([r.feeds[n] for r in batch], axis=0) for n in names}
            if self.in_thread:
                out = await trio.to_thread.run_sync(self._call, feeds)
            else:
                out = self._call(feeds)
            self._model_calls += 1
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
            self._errors += 1
            for r in batch:
                r.error = exc
                r.done.set()
            return
        start = 0
        for r in batch:
            end = start + r.rows
            r.result = {k: v[start:end] for k, v in out.items()}
            start = end
            r.done.set()

    def statistics(self) -> dict[str, Any]:
        return {**self.core.statistics(), "model_calls": self._model_calls, "batch_errors": self._errors}
