"""A trio driver that runs the swarm core over bulk connections: fetch one artifact from many holders.

The scheduling decisions are :class:`~arcnet.blobstore.swarm.SwarmFetch`'s
(sans-IO, tested on virtual time); this module only performs its effects
with real sockets, the real clock and the store:

* ``Send(ChunkRequest)`` -> a request frame on that holder's
  :class:`~arcnet.blobstore.bulk.BulkSession`; ``Send(ChunkCancel)`` is
  dropped (a bulk holder answers what it was asked; the late copy arrives
  and is ignored as unsolicited);
* answers read from each session -> ``ChunkData`` / ``ChunkMissing`` into
  ``on_message`` (the core verifies the hash);
* ``CommitChunk`` -> the store, in a group commit; ``SetTimer`` -> a trio
  deadline; ``Emit`` -> ``on_event``; a banned holder's session is closed.

Holders come as ``peer id -> (address, ticket token)``: the tickets were got
over the authenticated control path (``BulkOpen``/``BulkTicket``), which the
daemon will do; here the caller does. A resumed fetch only asks for what
:meth:`Store.missing` lists.

Knowingly left out: getting tickets and holder lists (the daemon's job),
re-opening a broken session (the holder is dropped and the swarm goes on
with the others), and writing chunks off the event-loop thread (the swarm
path is bounded by several holders' links, not by one core; the
single-connection fast path is :func:`~arcnet.blobstore.bulk.fetch_bulk`).
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Mapping

import trio

from arcnet.mesh.core import CancelTimer, Emit, Send, SetTimer

from .bulk import BulkError, BulkSession
from .messages import ChunkCancel, ChunkData, ChunkMissing, ChunkRequest, Manifest
from .store import Store
from .swarm import CommitChunk, SwarmConfig, SwarmFetch

__all__ = ["FetchError", "fetch_swarm"]


class FetchError(Exception):
    """The fetch cannot finish: no live holder has the missing chunks."""


async def fetch_swarm(
    store: Store,
    manifest: Manifest,
    holders: Mapping[str, tuple[tuple[str, int], bytes]],
    *,
    rng: random.Random,
    config: SwarmConfig | None = None,
    on_event: Callable[[Emit], None] | None = None,
) -> dict[str, float]:
    """Fetch ``manifest``'s missing chunks from ``holders`` into ``store``; the core's statistics."""
    aid = store.add_manifest(manifest)
    have = set(range(len(manifest.body.chunks))) - set(store.missing(aid))
    core = SwarmFetch(manifest, rng=rng, have=have, config=config, artifact_id=aid)
    refs = manifest.body.chunks
    inbox_send, inbox_recv = trio.open_memory_channel[tuple[str, Any]](math.inf)
    sessions: dict[str, BulkSession] = {}
    timers: dict[Any, float] = {}
    batch = store.batch()

    async def reader(peer: str, session: BulkSession, cancel: trio.CancelScope) -> None:
        with cancel:
            try:
                while True:
                    index, ok, codec, _size, data = await session.receive()
                    if ok:
                        msg: Any = ChunkData(aid, index, refs[index].id, codec, data)
                    else:
                        msg = ChunkMissing(aid, index, "not_have")
                    inbox_send.send_nowait((peer, msg))
            except (BulkError, OSError):
                inbox_send.send_nowait((peer, None))  # the session broke: the holder leaves
            finally:
                await session.aclose()

    stuck = ""
    with store.writing(aid):
        async with trio.open_nursery() as nursery:
            cancels: dict[str, trio.CancelScope] = {}

            async def apply(effects: Any) -> None:
                for fx in effects:
                    if isinstance(fx, CommitChunk):
                        batch.put_chunk(fx.chunk_id, fx.data, codec=fx.codec, size=fx.size, verified=True)
                    elif isinstance(fx, Send):
                        if isinstance(fx.msg, ChunkRequest) and fx.to in sessions:
                            try:
                                await sessions[fx.to].request([fx.msg.index])
                            except (BulkError, OSError):
                                inbox_send.send_nowait((fx.to, None))
                        elif not isinstance(fx.msg, ChunkCancel):
                            raise AssertionError(f"unexpected message {fx.msg!r}")
                    elif isinstance(fx, SetTimer):
                        timers[fx.timer] = fx.at
                    elif isinstance(fx, CancelTimer):
                        timers.pop(fx.timer, None)
                    elif isinstance(fx, Emit):
                        if fx.kind in ("swarm.holder_banned", "swarm.holder_dropped"):
                            peer = fx.data["peer"]
                            sessions.pop(peer, None)
                            if peer in cancels:
                                cancels.pop(peer).cancel()
                        if on_event is not None:
                            on_event(fx)

            for peer, (address, token) in holders.items():
                session = BulkSession(address, token, manifest)
                try:
                    await session.connect()
                except (BulkError, OSError) as exc:
                    if on_event is not None:
                        on_event(Emit("swarm.holder_unreachable", {"peer": peer, "error": str(exc)}))
                    continue
                sessions[peer] = session
                cancels[peer] = trio.CancelScope()
                nursery.start_soon(reader, peer, session, cancels[peer])
                await apply(core.add_holder(trio.current_time(), peer))
            await apply(core.start(trio.current_time()))
            try:
                while not core.done:
                    if not core.statistics()["inflight"]:  # nothing asked, nothing to ask: stuck
                        stuck = (
                            f"artifact {aid.hex()[:16]}: {core.n - core.chunks_have} chunks missing"
                            " and no live holder has them"
                        )
                        break
                    deadline = core.next_deadline()
                    with trio.move_on_at(deadline if deadline is not None else math.inf):
                        peer, msg = await inbox_recv.receive()
                        now = trio.current_time()
                        if msg is None:
                            sessions.pop(peer, None)
                            await apply(core.remove_holder(now, peer))
                        else:
                            await apply(core.on_message(now, peer, msg))
                        continue
                    now = trio.current_time()
                    for t, at in sorted(timers.items(), key=lambda kv: kv[1]):
                        if at <= now:
                            timers.pop(t, None)
                            await apply(core.on_timer(now, t))
            finally:
                batch.flush()
                nursery.cancel_scope.cancel()
    if stuck:
        raise FetchError(stuck)
    store.is_complete(aid)
    return core.statistics()
