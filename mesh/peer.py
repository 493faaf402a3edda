"""The daemon: drives one peer's sans-IO cores with trio, libp2p and the real clock.

This is driver 1 of the core contract (``arcnet.sims.engine`` is driver 2).
It owns everything the cores may not touch:

* the clock: ``now`` is ``trio.current_time()`` (monotonic seconds);
* the network: :class:`~arcnet.mesh.transport.Libp2pTransport` moves frames,
  the wire codec turns them into messages; a frame that does not decode is
  counted, logged (one line per kind per 10 s) and dropped, and the peer goes on;
* the disk: :class:`~arcnet.mesh.disk.Disk` performs ``Persist`` effects in one
  durable transaction *before* the sends that follow them;
* timers: a heap of ``SetTimer`` deadlines, fired in order;
* the control protocol the CLI talks to (``arcnet.mesh.control``);
* events: every ``Emit`` goes to the log (debug), to registered handlers
  (e.g. ``member.alive`` teaches the transport the member's address), and to
  the audit log once that service is attached.

Start-up writes ``run/peer.json`` in the data directory (peer id, listen
addresses, pid) so local tools and tests can find the peer; a clean stop
removes it. SIGINT and SIGTERM stop the peer cleanly.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import logging
import os
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Hashable

import trio

from .config import PeerConfig
from .admission import AdmissionError, AdmissionGate
from .authz import Authorizer, AuthzError
from .control import CONTROL_PROTOCOL, ControlError, ControlResponse, decode_args, encode_args
from .core import CancelTimer, Emit, Persist, Send, SetTimer
from .disk import Disk
from .identity import Identity
from .limits import RateLimiter
from .logs import RateLimitedLog, align_libp2p_logging
from .node import Node, UnknownProtocol
from .wire import Codec, WireError

__all__ = ["PeerDaemon", "PeerContext", "DaemonError", "Service"]

log = logging.getLogger("arcnet.peer")

STOP_GRACE_S = 10.0  # bound on the graceful part of a stop (leave, hand off, flush)

ControlMethod = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class DaemonError(Exception):
    """A reason the daemon cannot start; one line for the operator."""


@dataclass
class PeerContext:
    """What a node factory gets to build the cores of this peer."""

    identity: Identity
    config: PeerConfig
    rng: random.Random
    records: dict[str, bytes]  # what the cores persisted before the last stop
    address: str  # this peer's dialable multiaddr (with /p2p/)
    seeds: list[str] = field(default_factory=list)  # peer ids of bootstrap peers
    now: float = 0.0


class Service:
    """Daemon-side I/O work beside the cores (job runner, blob server, audit log...).

    ``attach`` runs once the transport and node exist: register control
    methods, request handlers and event handlers there. ``run`` is started in
    the daemon's nursery and runs until the peer stops; ``close`` runs on the
    way out (flush, fsync). ``statistics`` feeds the metrics endpoint.
    """

    name = "service"

    def attach(self, daemon: "PeerDaemon") -> None:
        pass

    async def run(self, daemon: "PeerDaemon") -> None:
        pass

    def close(self) -> None:
        pass

    def statistics(self) -> dict[str, float]:
        return {}


class PeerDaemon:
    """One running peer. ``await PeerDaemon(cfg, ident, factory).run()``.

    ``node_factory(ctx)`` returns the peer's :class:`Node`, or a pair
    ``(node, services)``.
    """

    def __init__(
        self,
        config: PeerConfig,
        identity: Identity,
        node_factory: Callable[[PeerContext], Node],
        *,
        codec: Codec | None = None,
    ):
        self.config = config
        self.identity = identity
        self.peer_id = identity.peer_id
        self.node_factory = node_factory
        self.codec = codec or Codec()
        self.node: Node | None = None
        self.transport: Any = None
        self.disk: Disk | None = None
        self._timers: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = 0
        self._wake = trio.Event()
        self._event_handlers: dict[str, list[Callable[[float, Emit], None]]] = {}
        self._control: dict[str, ControlMethod] = {}
        self._badlog = RateLimitedLog(log)
        self._lock_fd: int | None = None
        self.started = trio.Event()
        self.metrics: Any = None
        self.gate: AdmissionGate | None = None
        self.authz: Authorizer | None = None
        self.limits = RateLimiter()
        self._stop_requested = trio.Event()
        self._stop_hooks: list[Callable[[], Awaitable[None]]] = []
        self.services: list[Service] = []
        self.stopping = False
        self.counters: dict[str, int] = {
            "frames_in": 0,
            "frames_bad": 0,
            "frames_unrouted": 0,
            "messages_out": 0,
            "messages_out_dropped": 0,
            "encode_errors": 0,
            "timers_fired": 0,
            "events": 0,
            "control_requests": 0,
            "control_errors": 0,
            "core_errors": 0,
            "frames_rate_limited": 0,
        }
        self.register_control("ping", self._ctl_ping)
        self.register_control("statistics", self._ctl_statistics)
        self.on_event("member.alive", self._learn_address)

    # -- extension points ------------------------------------------------

    def register_control(self, method: str, fn: ControlMethod) -> None:
        """Serve control ``method``: ``await fn(client_peer_id, args) -> result dict``."""
        self._control[method] = fn

    def on_event(self, kind: str, fn: Callable[[float, Emit], None]) -> None:
        """Call ``fn(now, event)`` for every Emit of ``kind`` ("*" for all)."""
        self._event_handlers.setdefault(kind, []).append(fn)

    def now(self) -> float:
        return trio.current_time()

    # -- running ---------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from .transport import Libp2pTransport, request_protocol  # libp2p is heavy: import only here

        data_dir = self.config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock(data_dir)
        try:
            self.disk = Disk(data_dir / "state.sqlite")
            records = self.disk.load()
            self.transport = Libp2pTransport(
                self.identity,
                list(self.config.listen),
                bootstrap=list(self.config.bootstrap),
            )
            try:
                self.gate = AdmissionGate.from_data_dir(data_dir, self.identity)
                self.authz = Authorizer.from_data_dir(data_dir, revocations=self.gate.revocations)
            except (AdmissionError, AuthzError) as exc:
                raise DaemonError(str(exc)) from None
            self.gate.attach(self.transport, limiter=self.limits)  # before transport.run: no connection missed
            self.gate.on_decision = lambda kind, data: self._apply(self.now(), [Emit(kind, data)])  # to the audit log
            self.register_control("admission.revocations", self.gate.ctl_revocations)
            # every mesh request protocol a service registers is for admitted peers only
            raw_set_handler = self.transport.set_request_handler

            def admitted_only(protocol: str, handler: Any) -> None:
                raw_set_handler(protocol, self.gate.require(handler))  # type: ignore[union-attr]

            self.transport.set_request_handler = admitted_only
            align_libp2p_logging()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.transport.run)
                await nursery.start(self.gate.run)
                # clients (the CLI) hold no certificate: the control protocol checks grants instead
                raw_set_handler(request_protocol(CONTROL_PROTOCOL), self.gate.guard(self._handle_control))
                addrs = self.transport.listen_addrs()
                seeds = [a.rsplit("/p2p/", 1)[1] for a in self.config.bootstrap]
                for a in self.config.bootstrap:
                    self.transport.add_address(a.rsplit("/p2p/", 1)[1], a)
                ctx = PeerContext(
                    identity=self.identity,
                    config=self.config,
                    rng=random.Random(int.from_bytes(os.urandom(8), "big")),
                    records=records,
                    address=addrs[0] if addrs else "",
                    seeds=seeds,
                    now=self.now(),
                )
                built = self.node_factory(ctx)
                self.node, self.services = built if isinstance(built, tuple) else (built, [])
                for svc in self.services:
                    svc.attach(self)
                self._apply(self.now(), self.node.start(self.now()))
                self._start_metrics()
                self._write_run_file(addrs)
                log.info("peer %s listening on %s (region %s)", self.peer_id, ", ".join(addrs), self.config.region)
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._signal_loop, nursery.cancel_scope)
                for svc in self.services:
                    nursery.start_soon(svc.run, self)
                self.started.set()
                task_status.started(self)
        finally:
            for svc in reversed(self.services):
                try:
                    svc.close()
                except Exception:
                    log.exception("service %s failed to close", svc.name)
            if self.metrics is not None:
                self.metrics.stop()
            self._remove_run_file()
            if self.disk is not None:
                self.disk.close()
            self._release_lock()
            log.info("peer %s stopped", self.peer_id)

    def stop(self) -> None:
        """Ask the peer to stop (as SIGTERM does): graceful steps first, then cancel."""
        self._stop_requested.set()

    def on_stop(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``await fn()`` when a graceful stop begins (bounded by STOP_GRACE_S in all)."""
        self._stop_hooks.append(fn)

    async def _signal_loop(self, scope: trio.CancelScope) -> None:
        async def signals_task() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    self._stop_requested.set()
                    return

        async with trio.open_nursery() as inner:
            inner.start_soon(signals_task)
            await self._stop_requested.wait()
            inner.cancel_scope.cancel()
        self.stopping = True
        with trio.move_on_after(STOP_GRACE_S):
            for fn in self._stop_hooks:
                try:
                    await fn()
                except Exception:
                    log.exception("stop step failed")
        scope.cancel()

    async def _receive_loop(self) -> None:
        while True:
            sender, frame = await self.transport.receive()
            self.counters["frames_in"] += 1
            if not self.gate.accept_frame(sender):  # type: ignore[union-attr]  # unadmitted: dropped, counted, logged
                continue
            if not self.limits.allow(sender, "msg", self.now()):
                self.counters["frames_rate_limited"] += 1
                continue
            try:
                msg = self.codec.decode(frame)
            except WireError as exc:
                self.counters["frames_bad"] += 1
                self._badlog.warning("bad-frame", "dropped a bad frame from %s: %s", sender, exc)
                continue
            now = self.now()
            try:
                effects = self.node.on_message(now, sender, msg)  # type: ignore[union-attr]
            except UnknownProtocol as exc:
                self.counters["frames_unrouted"] += 1
                self._badlog.warning("unrouted", "dropped a message from %s: %s", sender, exc)
                continue
            except Exception:  # a core bug must not take the peer down with it
                self.counters["core_errors"] += 1
                log.exception("core failed on %s from %s", type(msg).__name__, sender)
                continue
            self._apply(now, effects)

    async def _timer_loop(self) -> None:
        while True:
            deadline = self._next_deadline()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._wake.wait()
            self._wake = trio.Event()
            now = self.now()
            while self._heap and self._heap[0][0] <= now:
                at, _, timer = heapq.heappop(self._heap)
                if self._timers.get(timer) != at:
                    continue  # moved or cancelled
                del self._timers[timer]
                self.counters["timers_fired"] += 1
                try:
                    effects = self.node.on_timer(now, timer)  # type: ignore[union-attr]
                except Exception:
                    self.counters["core_errors"] += 1
                    log.exception("core failed on timer %r", timer)
                    continue
                self._apply(now, effects)
                now = self.now()

    def _next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            at, _, timer = heap[0]
            if self._timers.get(timer) == at:
                return at
            heapq.heappop(heap)
        return None

    # -- effects ---------------------------------------------------------

    def _apply(self, now: float, effects: list) -> None:
        """Perform effects in order; each run of Persists is written before what follows it."""
        pending: list[Persist] = []
        for e in effects:
            t = type(e)
            if t is Persist:
                pending.append(e)
                continue
            if pending:
                self.disk.apply(pending)  # type: ignore[union-attr]
                pending = []
            if t is Send:
                if not self.gate.may_send(e.to):  # type: ignore[union-attr]  # a refused peer: do not dial it again
                    self.counters["messages_out_dropped"] += 1
                    continue
                try:
                    frame = self.codec.encode(e.msg)
                except WireError as exc:
                    self.counters["encode_errors"] += 1
                    log.error("core produced an unsendable %s: %s", type(e.msg).__name__, exc)
                    continue
                if self.transport.send_nowait(e.to, frame):
                    self.counters["messages_out"] += 1
                else:
                    self.counters["messages_out_dropped"] += 1
            elif t is SetTimer:
                self._timers[e.timer] = e.at
                self._seq += 1
                heapq.heappush(self._heap, (e.at, self._seq, e.timer))
                self._wake.set()
            elif t is CancelTimer:
                self._timers.pop(e.timer, None)
            elif t is Emit:
                self.counters["events"] += 1
                log.debug("event %s %s", e.kind, e.data)
                for fn in self._event_handlers.get(e.kind, []) + self._event_handlers.get("*", []):
                    try:
                        fn(now, e)
                    except Exception:
                        log.exception("event handler failed on %s", e.kind)
        if pending:
            self.disk.apply(pending)  # type: ignore[union-attr]

    def inject(self, event: Emit) -> None:
        """Hand an outside event (a finished job, a control action) to the cores.

        The event is also performed as if a core had emitted it, so event
        handlers (the audit log, job tracking) hear it, before the cores' reaction.
        """
        now = self.now()
        self._apply(now, [event] + self.node.on_event(now, event))  # type: ignore[union-attr]

    def _learn_address(self, now: float, event: Emit) -> None:
        peer, addr = event.data.get("peer"), event.data.get("addr")
        if peer and addr and peer != self.peer_id:
            self.transport.add_address(peer, addr)

    # -- control ---------------------------------------------------------

    async def _handle_control(self, client: str, payload: bytes) -> bytes:
        self.counters["control_requests"] += 1
        nonce = 0
        try:
            msg = self.codec.decode(payload)
            nonce = getattr(msg, "nonce", 0)
            if not self.limits.allow(client, "control", self.now()):
                raise ControlError("unavailable", "too many control requests; retry shortly")
            # a SignedControl (or, on an open mesh, a plain ControlRequest): signature, time window,
            # replay, grant and the method's capability; AuthzError is a ControlError
            method, raw_args, nonce, project, _grant = self.authz.authorize(  # type: ignore[union-attr]
                msg, client=client, target=self.peer_id)
            fn = self._control.get(method)
            if fn is None:
                raise ControlError("not_found", f"unknown method {method!r}")
            args = decode_args(raw_args)
            if project:
                args.setdefault("project", project)  # authorize() checked any project the args name
            result = await fn(client, args)
            return self.codec.encode(ControlResponse(nonce, True, "ok", "", encode_args(result)))
        except (ControlError, WireError) as exc:
            code = exc.code if isinstance(exc, ControlError) else "bad_request"
            self.counters["control_errors"] += 1
            if not isinstance(exc, AuthzError):  # the authoriser logged it already: one line per refusal
                self._badlog.warning(f"control-{code}", "control request from %s refused: %s", client, exc)
            return self.codec.encode(ControlResponse(nonce, False, code, str(exc)[:1000], b""))
        except Exception as exc:  # a bug in a method: report it, keep serving
            self.counters["control_errors"] += 1
            log.exception("control method failed")
            return self.codec.encode(ControlResponse(nonce, False, "internal", f"internal error: {exc}"[:1000], b""))

    async def _ctl_ping(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "region": self.config.region}

    async def _ctl_statistics(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        return self.statistics()

    def statistics(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"daemon.{k}": v for k, v in self.counters.items()}
        if self.node is not None:
            out.update(self.node.statistics())
        if self.transport is not None:
            out.update({f"transport.{k}": v for k, v in self.transport.statistics().items()})
        if self.disk is not None:
            out.update({f"disk.{k}": v for k, v in self.disk.statistics().items()})
        for svc in self.services:
            out.update({f"{svc.name}.{k}": v for k, v in svc.statistics().items()})
        if self.gate is not None:
            out.update({f"admission.{k}": v for k, v in self.gate.statistics().items()})
        if self.authz is not None:
            out.update({f"authz.{k}": v for k, v in self.authz.statistics().items()})
        out.update({f"limits.{k}": v for k, v in self.limits.statistics().items()})
        return out

    def health(self) -> dict[str, Any]:
        state = "stopping" if self.stopping else ("ok" if self.started.is_set() else "starting")
        return {"status": state, "peer_id": self.peer_id, "region": self.config.region}

    def _start_metrics(self) -> None:
        if not self.config.metrics_listen:
            return
        from .metrics import MetricsServer

        self.metrics = MetricsServer(self.config.metrics_listen, self.statistics, self.health,
                                     {"peer": self.peer_id[-8:], "region": self.config.region})
        try:
            port = self.metrics.start()
        except OSError as exc:
            self.metrics = None
            raise DaemonError(f"metrics endpoint {self.config.metrics_listen}: {exc.strerror}; "
                              f"set peer.metrics_listen to a free port or \"\"") from None
        log.info("metrics on http://%s:%d/metrics", self.metrics.host, port)

    # -- data dir --------------------------------------------------------

    def _take_lock(self, data_dir: Path) -> None:
        fd = os.open(data_dir / "peer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonError(f"{data_dir}: another arcnet-peer is running on this data directory") from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _run_file(self) -> Path:
        return self.config.data_dir / "run" / "peer.json"

    def _write_run_file(self, addrs: list[str]) -> None:
        path = self._run_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        info = {"peer_id": self.peer_id, "addrs": addrs, "pid": os.getpid(), "region": self.config.region,
                "metrics": f"http://{self.metrics.host}:{self.metrics.port}" if self.metrics else ""}
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)

    def _remove_run_file(self) -> None:
        try:
            self._run_file().unlink()
        except FileNotFoundError:
            pass
