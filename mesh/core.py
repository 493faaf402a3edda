"""The sans-IO core contract: protocols as state machines that return effects.

Every protocol (membership, state sync, leaders, bidding, custody, swarm
scheduling) is a plain object that never touches a socket, a clock or a
task -- the discipline of h11, wsproto and aioquic's connection object::

    effects = core.on_message(now, sender, msg)   # -> [Send, SetTimer, Emit, ...]
    effects = core.on_timer(now, timer)
    deadline = core.next_deadline()               # earliest pending timer or None

``now`` is seconds (float) on the driver's clock: the real monotonic clock in
the daemon (``arcnet.mesh.peer``), a virtual clock in the simulator
(``arcnet.sims.engine``). Randomness comes only from the ``random.Random``
a core is given. Two drivers run the same cores, so the code tested at
10,000 simulated peers is the code that ships.

Effects are small frozen records. A driver performs them in order: it writes
every :class:`Persist` before it performs the sends that follow it (so a
crash never leaves a promise sent but not recorded), then sends, sets and
cancels timers, and hands :class:`Emit` events to the peer's other cores and
to its logs and metrics.

Timers are named by any hashable value (a string or a tuple); setting a timer
with a name that is already pending moves it. :class:`Timers` is the small
bookkeeping helper cores use so that ``next_deadline()`` is always right.

This module imports nothing with I/O; cores may import it freely.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Protocol, Sequence

from .wire import Message

__all__ = [
    "Core",
    "CancelTimer",
    "Effect",
    "Emit",
    "Persist",
    "Send",
    "SetTimer",
    "Timers",
]


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``msg`` to peer ``to`` (a peer id). Delivery is best effort."""

    to: str
    msg: Message


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call ``on_timer(now, timer)`` at time ``at`` (driver clock, seconds)."""

    timer: Hashable
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: Hashable


@dataclass(frozen=True, slots=True)
class Emit:
    """Something happened that other cores, logs, metrics or the audit log care about.

    ``kind`` is a short dotted name (``member.dead``, ``leader.changed``);
    ``data`` holds plain values only (str, int, float, bool, bytes, lists,
    dicts) so events can be logged, traced and audited as they are.
    """

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Persist:
    """Durably record ``value`` (bytes) under ``key`` before later effects run.

    ``value`` None deletes the key. The daemon writes to SQLite with fsync;
    the simulator models the disk, including losing unsynced writes.
    """

    key: str
    value: bytes | None


Effect = Send | SetTimer | CancelTimer | Emit | Persist


class Core(Protocol):
    """What every protocol core offers its driver."""

    def on_message(self, now: float, sender: str, msg: Message) -> Sequence[Effect]: ...

    def on_timer(self, now: float, timer: Hashable) -> Sequence[Effect]: ...

    def next_deadline(self) -> float | None: ...

    def statistics(self) -> dict[str, float]: ...


class Timers:
    """Pending timers of one core: emits SetTimer/CancelTimer, tracks the earliest.

    A lazy-deletion heap: moving or cancelling a timer leaves a stale heap
    entry that is skipped later, so every operation is O(log n).
    """

    __slots__ = ("_due", "_heap", "_seq")

    def __init__(self) -> None:
        self._due: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = 0  # tie-break by insertion order, never by hash or id()

    def set(self, timer: Hashable, at: float) -> SetTimer:
        self._due[timer] = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, timer))
        return SetTimer(timer, at)

    def cancel(self, timer: Hashable) -> CancelTimer | None:
        if self._due.pop(timer, None) is None:
            return None
        return CancelTimer(timer)

    def fire(self, timer: Hashable) -> bool:
        """Mark ``timer`` as fired; False if it was not pending (stale call)."""
        return self._due.pop(timer, None) is not None

    def pending(self, timer: Hashable) -> bool:
        return timer in self._due

    def due(self, timer: Hashable) -> float | None:
        return self._due.get(timer)

    def next_deadline(self) -> float | None:
        heap, due = self._heap, self._due
        while heap:
            at, _, t = heap[0]
            if due.get(t) == at:
                return at
            heapq.heappop(heap)
        return None

    def __len__(self) -> int:
        return len(self._due)

    def names(self) -> Iterable[Hashable]:
        return self._due.keys()
