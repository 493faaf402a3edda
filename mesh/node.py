"""One peer's protocol cores bundled behind the core contract (sans-IO).

A peer runs several cores (membership, state sync, placement, custody,
swarm...). :class:`Node` routes each inbound message to the core that owns
its ``PROTOCOL``, namespaces every core's timers as ``(protocol, timer)``,
and hands every :class:`~arcnet.mesh.core.Emit` to the other cores'
``on_event`` (if they have one) before returning it to the driver. The
node is itself a core, so the daemon (``arcnet.mesh.peer``) and the
simulator (``arcnet.sims.engine``) each drive exactly one object per peer.

Event fan-out is bounded (``EVENT_DEPTH_MAX``): an event handler that emits
an event that emits an event... is a bug, and the assertion says so rather
than recursing forever.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

from .core import CancelTimer, Effect, Emit, Send, SetTimer
from .wire import Message

__all__ = ["Node", "UnknownProtocol"]

EVENT_DEPTH_MAX = 8


class UnknownProtocol(Exception):
    """A message whose protocol this peer does not run."""


class Node:
    """The cores of one peer, keyed by protocol name (the order is the event order)."""

    def __init__(self, peer_id: str, cores: dict[str, Any]):
        self.peer_id = peer_id
        self.cores = dict(cores)
        self._listeners = [(name, core) for name, core in self.cores.items() if hasattr(core, "on_event")]
        self.messages_unrouted = 0

    def add_core(self, name: str, core: Any) -> None:
        """Add a core after construction (one that needs a read handle on the others)."""
        if name in self.cores:
            raise ValueError(f"core name {name!r} is taken")
        self.cores[name] = core
        if hasattr(core, "on_event"):
            self._listeners.append((name, core))

    def start(self, now: float) -> list[Effect]:
        """Call every core's ``start(now)`` (if it has one): first timers, first sends."""
        out: list[Effect] = []
        for name, core in self.cores.items():
            start = getattr(core, "start", None)
            if start is not None:
                out.extend(self._wrap(name, now, start(now), 0))
        return out

    def on_message(self, now: float, sender: str, msg: Message) -> list[Effect]:
        name = msg.PROTOCOL
        core = self.cores.get(name)
        if core is None:
            self.messages_unrouted += 1
            raise UnknownProtocol(f"no core for protocol {name!r} ({type(msg).__name__})")
        return self._wrap(name, now, core.on_message(now, sender, msg), 0)

    def on_timer(self, now: float, timer: Hashable) -> list[Effect]:
        name, inner = timer  # type: ignore[misc]
        core = self.cores.get(name)
        if core is None:
            return []
        return self._wrap(name, now, core.on_timer(now, inner), 0)

    def on_event(self, now: float, event: Emit) -> list[Effect]:
        """Deliver an outside event (e.g. from the daemon: a control request) to every core."""
        return self._fanout(None, now, event, 0)

    def next_deadline(self) -> float | None:
        best = None
        for core in self.cores.values():
            d = core.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        return best

    def statistics(self) -> dict[str, float]:
        stats: dict[str, float] = {"messages_unrouted": self.messages_unrouted}
        for name, core in self.cores.items():
            for k, v in core.statistics().items():
                stats[f"{name}.{k}"] = v
        return stats

    # -- internals -------------------------------------------------------

    def _wrap(self, name: str, now: float, effects: Sequence[Effect], depth: int) -> list[Effect]:
        out: list[Effect] = []
        for e in effects:
            t = type(e)
            if t is SetTimer:
                out.append(SetTimer((name, e.timer), e.at))
            elif t is CancelTimer:
                out.append(CancelTimer((name, e.timer)))
            elif t is Emit:
                out.append(e)
                if self._listeners:
                    out.extend(self._fanout(name, now, e, depth + 1))
            else:
                out.append(e)
        return out

    def _fanout(self, source: str | None, now: float, event: Emit, depth: int) -> list[Effect]:
        assert depth <= EVENT_DEPTH_MAX, f"event chain deeper than {EVENT_DEPTH_MAX}: {event.kind}"
        out: list[Effect] = []
        for name, core in self._listeners:
            if name == source:
                continue
            out.extend(self._wrap(name, now, core.on_event(now, event), depth))
        return out


def sends(effects: Sequence[Effect]) -> list[Send]:
    """The Send effects of a list (handy in tests)."""
    return [e for e in effects if type(e) is Send]
