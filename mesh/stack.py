"""What a daemon peer runs: the assembly of this peer's cores and services.

The same cores run in the simulator (``arcnet.sims``) with other wiring; this
is the daemon's wiring. :func:`build_node` takes the
:class:`~arcnet.mesh.peer.PeerContext` (identity, config, persisted records,
address, bootstrap peers) and returns the peer's :class:`~arcnet.mesh.node.Node`
and the daemon-side services beside it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from arcnet import __version__
from arcnet.gossip.stack import GossipConfig, build_gossip_node, gossip_of

from .logs import RateLimitedLog
from .node import Node
from .peer import PeerContext, PeerDaemon, Service

__all__ = ["GossipService", "audit_config", "blob_config", "build_node", "gossip_config"]

log = logging.getLogger("arcnet.peer")


def gossip_config(knobs: dict[str, Any]) -> GossipConfig:
    """GossipConfig from the config file's ``[gossip]`` table (``membership_probe_interval_s = 0.5``...)."""
    from arcnet.mesh.config import ConfigError

    cfg = GossipConfig()
    for key, value in knobs.items():
        part, _, name = key.partition("_")
        target = getattr(cfg, part, None)
        if target is None or not hasattr(target, name):
            raise ConfigError(f"gossip.{key}: unknown knob (expected membership_*, state_* or leader_* fields)")
        current = getattr(target, name)
        if isinstance(current, (int, float)) and not isinstance(current, bool) and isinstance(value, (int, float)):
            value = type(current)(value)
        elif type(value) is not type(current):
            raise ConfigError(f"gossip.{key}: expected {type(current).__name__}, got {type(value).__name__}")
        object.__setattr__(target, name, value)
    return cfg


def blob_config(cfg: Any, environ: Mapping[str, str] | None = None) -> Any:
    """The blob service's :class:`~arcnet.blobstore.service.BlobConfig`: defaults, then the
    config file's ``[blob]`` table, then ``ARCNET_BLOB_*`` variables (``environ``, default
    ``os.environ``; for tests and benchmarks). A bad variable is a ConfigError."""
    from arcnet.blobstore.service import BlobConfig
    from arcnet.mesh.config import ConfigError

    try:
        return BlobConfig.from_env(os.environ if environ is None else environ, base=cfg.blob)
    except ValueError as exc:
        raise ConfigError(f"blob: {exc}") from None


def audit_config(cfg: Any, environ: Mapping[str, str] | None = None) -> Any:
    """The audit service's :class:`~arcnet.audit.service.AuditConfig`: defaults, then the
    config file's ``[audit]`` table, then ``ARCNET_AUDIT_*`` variables (``environ``, default
    ``os.environ``; for tests and benchmarks). A bad variable is a DaemonError."""
    from arcnet.audit.service import AuditConfig

    return AuditConfig.from_env(os.environ if environ is None else environ, base=cfg.audit)


class DrainFlag:
    """Whether this peer is draining (bids on nothing new), published through its state.

    The flag survives restarts (a file in the data dir): a site drained for
    maintenance stays drained until the operator undrains it.
    """

    def __init__(self, data_dir: Any):
        self.path = data_dir / "draining"
        self.on = self.path.exists()

    def set(self, on: bool) -> None:
        self.on = on
        if on:
            self.path.write_text("drained by the operator; `arcnet undrain` clears this\n")
        elif self.path.exists():
            self.path.unlink()

    def wrap(self, inner: Any) -> Any:
        def sample(now: float) -> dict[str, Any]:
            out = dict(inner(now)) if inner is not None else {}
            out["draining"] = self.on
            return out

        return sample


class GossipService(Service):
    """Control methods over the gossip view: ``peers``, ``status``, ``drain``, ``undrain``; leave on stop."""

    name = "gossip"

    def __init__(self, node: Node, ctx: PeerContext, sampler: Any = None, drain: DrainFlag | None = None):
        self.node = node
        self.ctx = ctx
        self.sampler = sampler
        self.drain = drain or DrainFlag(ctx.config.data_dir)
        self.g = gossip_of(node)

    def attach(self, daemon: PeerDaemon) -> None:
        self.daemon = daemon
        daemon.register_control("peers", self._peers)
        daemon.register_control("status", self._status)
        daemon.register_control("drain", self._drain)
        daemon.register_control("undrain", self._undrain)
        daemon.on_stop(self._leave)
        daemon.on_event("member.alive", self._log_member)
        daemon.on_event("member.dead", self._log_member)
        daemon.on_event("leader.changed", self._log_leader)
        daemon.on_event("state.forged", self._log_forged)
        self._badlog = RateLimitedLog(log)

    def _log_member(self, now: float, ev: Any) -> None:
        d = ev.data
        log.info("%s %s (region %s, incarnation %s)", ev.kind, d.get("peer", "?")[-8:], d.get("region", "?"),
                 d.get("incarnation", "?"))

    def _log_forged(self, now: float, ev: Any) -> None:
        d = ev.data
        self._badlog.warning("state-forged", "rejected a forged state update from %s: %s of %s (version %s) is not "
                             "signed by its owner", d.get("sender", "?"), d.get("key", "?"), d.get("owner", "?"),
                             d.get("version", "?"))

    def _log_leader(self, now: float, ev: Any) -> None:
        d = ev.data
        log.info("leader of %s is now %s (epoch %s)", d.get("region"), (d.get("leader") or "none")[-8:], d.get("epoch"))

    async def _leave(self) -> None:
        import trio

        now = self.daemon.now()
        effects = self.node._wrap("swim", now, self.g.members.leave(now), 0)
        self.daemon._apply(now, effects)
        await trio.sleep(0.2)  # let the leave announcement go out before the transport stops

    async def _peers(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        g = self.g
        me = self.ctx.identity.peer_id
        peers = [me] + sorted(set(g.members.members) - {me})
        members = []
        for p in peers:
            m = g.members.member(p) or {}
            st = g.view.get(p) or {}
            members.append({
                "peer_id": p,
                "state": m.get("status", "unknown"),
                "incarnation": m.get("incarnation", 0),
                "region": m.get("region", ""),
                "addr": m.get("addr", ""),
                "draining": bool(st.get("draining", False)),
                "self": p == me,
            })
        leaders = {r: g.leader_of(r) or "" for r in sorted(set([self.ctx.config.region] + list(g.members.regions())))}
        return {"self": me, "members": members, "leaders": leaders}

    async def _drain(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        self.drain.set(True)
        log.info("draining: no new work will be accepted here (running jobs finish)")
        return {"peer_id": self.ctx.identity.peer_id, "draining": True}

    async def _undrain(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        self.drain.set(False)
        log.info("undrained: accepting work again")
        return {"peer_id": self.ctx.identity.peer_id, "draining": False}

    async def _status(self, client: str, args: dict[str, Any]) -> dict[str, Any]:
        g = self.g
        me = self.ctx.identity.peer_id
        st = g.view.get(me) or {}
        return {
            "peer_id": me,
            "version": __version__,
            "region": self.ctx.config.region,
            "roles": list(self.ctx.config.roles),
            "leader": g.leader_of(self.ctx.config.region) or "",
            "draining": self.drain.on,
            "members_alive": len(g.members.alive_peers()) + 1,
            "state": st,
            "statistics": {k: v for k, v in self.daemon.statistics().items() if isinstance(v, (int, float))},
        }


def build_node(ctx: PeerContext) -> tuple[Node, list[Service]]:
    cfg = ctx.config
    sampler = None
    if cfg.energy_source:
        from .samplers import sampler_from_source  # type: ignore[attr-defined]

        sampler = sampler_from_source(cfg.energy_source)
    from arcnet.blobstore.service import BlobService  # the store, bulk server and fetches of this peer

    blobs = BlobService(ctx, blob_config(cfg))
    drain = DrainFlag(cfg.data_dir)
    node = build_gossip_node(
        ctx.identity,
        rng=ctx.rng,
        region=cfg.region,
        config=gossip_config(cfg.gossip),
        lat=cfg.latitude,
        lon=cfg.longitude,
        addr=ctx.address,
        seeds=ctx.seeds,
        sampler=drain.wrap(blobs.sampler(sampler)),  # the state's "artifacts" reading: what this peer holds
        disk=ctx.records,
    )
    node.blobs = blobs  # type: ignore[attr-defined]  # other services: blobs_of(node) or node.blobs
    placement = _placement_core(node, ctx)
    node.add_core("place", placement)
    from .jobs import JobService

    jobs = JobService(node, ctx, placement, blobs)
    from arcnet.audit.service import AuditService  # trio-side; the audit package itself is sans-trio

    # the audit log first: services close in reverse order, so it records to the end
    return node, [AuditService(node, ctx, audit_config(cfg)), GossipService(node, ctx, sampler, drain), blobs, jobs]


def _placement_core(node: Node, ctx: PeerContext) -> Any:
    """Broker, executor and custodian of this peer, reading the gossip view."""
    import random

    from arcnet.placement.core import PlacementCore
    from arcnet.placement.gossip_view import GossipClusterView

    me = ctx.identity.peer_id
    view = GossipClusterView(me, gossip_of(node))
    return PlacementCore(me, view, random.Random(ctx.rng.getrandbits(64)), records=ctx.records)
