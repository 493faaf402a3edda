"""Replication policy, sans-IO: which peers of a region should fetch which artifact.

Three policies (the publisher picks one, the manifest's holders carry it):

* ``hot`` -- every live site of every region holds the artifact;
* ``warm`` -- ``warm_copies`` (N) live holders in every region;
* ``durable`` -- holders in ``durable_regions`` (R) distinct regions: the
  regions already holding it, then the others in rendezvous order of the
  artifact id until R are named.

The planner is run by each region's leader (``gossip_of(node).leader_of(region)
== me``) on a timer. It reads a :class:`RegionView` -- the region's live peers,
which of them hold which artifact (gossip's ``cache`` key), the policy of each
artifact (its holders' ``blob_policy`` key, or a hand-off from another region's
leader), the other regions and their leaders -- and returns instructions:

* :class:`Fetch` ``(peer, artifact)`` -- "fetch this if you lack it", for a
  peer of my region (possibly me);
* :class:`Forward` ``(region, leader, artifact)`` -- "your region should hold
  this", for another region's leader, who then plans it like its own.

**Idempotent.** Every instruction means "fetch if you lack it", so two leaders
of one region (a partition, a leader change) only send some instructions
twice; the receiving peer ignores what it already holds or is fetching.
Peers are chosen in rendezvous order of the artifact id (HRW: Thaler &
Ravishankar 1998), so two leaders with the same view pick the same peers,
and a peer joining or leaving moves few choices.

**Rate-limited.** At most ``instructions_per_plan_max`` instructions per plan,
and the same (peer, artifact) or (region, artifact) is not instructed again
within ``retry_s`` / ``forward_retry_s``: a slow fetch is not re-asked every
tick. What is cut by the bound comes at the next tick (artifacts in id order,
so a long list is worked through, not starved).

Prior art: Cassandra's and Dynamo's replica placement by consistent hashing,
HDFS's replication monitor (a periodic scan that schedules the missing
copies), Ceph's "placement is computed, not stored".

Knowingly left out: removing surplus copies (eviction is the store's LRU
for unpinned artifacts; a policy pin is dropped by the operator), weighting
peers by free disk or link speed, and moving copies off draining peers
before they go (their copies are simply re-made elsewhere when they leave).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from arcnet.placement.hashing import hrw_rank

__all__ = [
    "POLICY_CODES",
    "REPLICATED",
    "Fetch",
    "Forward",
    "RegionView",
    "ReplicationConfig",
    "ReplicationPlanner",
    "target_peers",
    "target_regions",
]

REPLICATED = ("hot", "warm", "durable")
#: compact codes for the gossip ``blob_policy`` key (a state value is at most 768 bytes)
POLICY_CODES = {"hot": 1, "warm": 2, "durable": 3}


@dataclass(frozen=True)
class ReplicationConfig:
    """Knobs of the planner; units last in the names.

    ``warm_copies`` (2): holders per region of a warm artifact.
    ``durable_regions`` (3): distinct regions holding a durable artifact.
    ``instructions_per_plan_max`` (16): instructions one plan may return; at
    a 10 s plan interval a region brings 1.6 copies/s into being at most,
    which a 1 GiB model at ~0.5 GB/s per fetch keeps well ahead of.
    ``retry_s`` (120 s): the same peer is not asked for the same artifact
    again sooner (a 10 GiB model at 0.1 GB/s takes 100 s).
    ``forward_retry_s`` (300 s): the same region is not handed the same
    artifact again sooner. ``remembered_max`` (65,536): instructions
    remembered for the retry bounds (oldest forgotten first).
    ``hints_max`` (4): holders named in one instruction.
    """

    warm_copies: int = 2
    durable_regions: int = 3
    instructions_per_plan_max: int = 16
    retry_s: float = 120.0
    forward_retry_s: float = 300.0
    remembered_max: int = 65_536
    hints_max: int = 4

    def __post_init__(self) -> None:
        if self.warm_copies < 1 or self.durable_regions < 1:
            raise ValueError("warm_copies and durable_regions must be >= 1")
        if self.instructions_per_plan_max < 1 or self.remembered_max < 1 or self.hints_max < 0:
            raise ValueError("instructions_per_plan_max, remembered_max >= 1; hints_max >= 0")
        if self.retry_s < 0 or self.forward_retry_s < 0:
            raise ValueError("retry intervals must be >= 0")


@dataclass(frozen=True)
class RegionView:
    """What the leader knows of its region, and of the others, at one moment.

    ``peers``: live peers of the region, the leader included.
    ``holders``: artifact (hex id) -> peers of the region holding all of it.
    ``policies``: artifact -> ``hot`` / ``warm`` / ``durable`` (others ignored).
    ``regions``: every other known region -> its leader's peer id ('' unknown).
    ``regions_holding``: artifact -> other regions known to hold it (from
    region summaries: incomplete, so a hand-off may be sent to a region that
    holds it already, which is harmless).
    ``hints``: artifact -> peers known to hold it elsewhere (a hand-off's sender).
    """

    region: str
    peers: Sequence[str]
    holders: Mapping[str, frozenset[str]]
    policies: Mapping[str, str]
    regions: Mapping[str, str] = field(default_factory=dict)
    regions_holding: Mapping[str, frozenset[str]] = field(default_factory=dict)
    hints: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fetch:
    """Peer ``peer`` of my region should hold ``artifact`` (fetch if it lacks it)."""

    peer: str
    artifact: str
    policy: str
    hints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Forward:
    """Region ``region`` (whose leader is ``leader``) should hold ``artifact``."""

    region: str
    leader: str
    artifact: str
    policy: str
    hints: tuple[str, ...]


def target_regions(artifact: str, policy: str, my_region: str, regions: Sequence[str],
                   holding: frozenset[str], durable_regions: int) -> list[str]:
    """The regions that should hold ``artifact`` (sorted), given those known to hold it."""
    everyone = sorted(set(regions) | {my_region})
    if policy in ("hot", "warm"):
        return everyone
    if policy != "durable":
        return []
    have = sorted(r for r in holding if r in everyone)
    if len(have) >= durable_regions:
        return have
    rest = hrw_rank(artifact, [r for r in everyone if r not in holding], durable_regions - len(have))
    return sorted(have + rest)


def target_peers(artifact: str, policy: str, peers: Sequence[str], holders: frozenset[str], cfg: ReplicationConfig) -> list[str]:
    """Peers of a target region that should fetch ``artifact`` now (they lack it), in HRW order."""
    live = [p for p in peers]
    lacking = [p for p in live if p not in holders]
    have = len(live) - len(lacking)
    if policy == "hot":
        want = len(lacking)
    elif policy == "warm":
        want = max(0, min(cfg.warm_copies, len(live)) - have)
    elif policy == "durable":
        want = 0 if have >= 1 else 1
    else:
        return []
    if want <= 0:
        return []
    return hrw_rank(artifact, lacking, want)


class ReplicationPlanner:
    """Turns region views into rate-limited fetch and hand-off instructions (see the module docstring)."""

    def __init__(self, me: str, config: ReplicationConfig | None = None):
        self.me = me
        self.config = config or ReplicationConfig()
        self._sent: dict[tuple[str, str], float] = {}  # (peer or region, artifact) -> when; insertion = age order
        self._cursor = ""  # artifact id to start from at the next plan (round robin over a long list)
        self._stats = dict.fromkeys(("plans", "fetches", "forwards", "suppressed", "cut"), 0)

    def statistics(self) -> dict[str, float]:
        return {**self._stats, "remembered": len(self._sent)}

    def _recent(self, key: tuple[str, str], now: float, within_s: float) -> bool:
        at = self._sent.get(key)
        return at is not None and now - at < within_s

    def _remember(self, key: tuple[str, str], now: float) -> None:
        self._sent.pop(key, None)
        self._sent[key] = now
        while len(self._sent) > self.config.remembered_max:
            del self._sent[next(iter(self._sent))]

    def plan(self, now: float, view: RegionView) -> list[Fetch | Forward]:
        """The instructions to send now (at most ``instructions_per_plan_max``)."""
        cfg = self.config
        assert self.me in view.peers or not view.peers, "the leader plans for its own region"
        self._stats["plans"] += 1
        # forget what is older than both retry bounds: the dict stays bounded by the rate
        horizon = max(cfg.retry_s, cfg.forward_retry_s)
        while self._sent:
            k = next(iter(self._sent))
            if now - self._sent[k] < horizon:
                break
            del self._sent[k]
        out: list[Fetch | Forward] = []
        arts = sorted(a for a, p in view.policies.items() if p in REPLICATED)
        # start after the cursor, wrap around: a bound that cuts the list does not starve its tail
        k = next((i for i, a in enumerate(arts) if a > self._cursor), 0)
        order = arts[k:] + arts[:k]
        peers = sorted(view.peers)
        done = self._cursor  # the last artifact whose instructions all went out
        for art in order:
            if len(out) >= cfg.instructions_per_plan_max:
                self._stats["cut"] += 1
                self._cursor = done
                break
            policy = view.policies[art]
            holders = frozenset(p for p in view.holders.get(art, frozenset()) if p in peers)
            hints = tuple(sorted(holders)[: cfg.hints_max])
            extra = tuple(h for h in view.hints.get(art, ()) if h not in hints)
            hints = (hints + extra)[: cfg.hints_max] if cfg.hints_max else ()
            holding = frozenset(view.regions_holding.get(art, frozenset())) | ({view.region} if holders else frozenset())
            targets = target_regions(art, policy, view.region, list(view.regions), holding, cfg.durable_regions)
            if view.region in targets and (holders or hints):
                # something to fetch from: a holder in the region, or a hint from elsewhere
                for p in target_peers(art, policy, peers, holders, cfg):
                    if len(out) >= cfg.instructions_per_plan_max:
                        break
                    if self._recent((p, art), now, cfg.retry_s):
                        self._stats["suppressed"] += 1
                        continue
                    self._remember((p, art), now)
                    out.append(Fetch(p, art, policy, tuple(h for h in hints if h != p)))
                    self._stats["fetches"] += 1
            if not holders:
                continue  # only a region that holds it hands it on (it can name holders)
            for region in targets:
                if region == view.region or region in holding:
                    continue
                leader = view.regions.get(region, "")
                if not leader:
                    continue
                if len(out) >= cfg.instructions_per_plan_max:
                    break
                if self._recent((region, art), now, cfg.forward_retry_s):
                    self._stats["suppressed"] += 1
                    continue
                self._remember((region, art), now)
                out.append(Forward(region, leader, art, policy, hints))
                self._stats["forwards"] += 1
            if len(out) < cfg.instructions_per_plan_max:
                done = art
        else:
            self._cursor = ""  # the whole list was covered: next plan starts at the beginning
        assert len(out) <= cfg.instructions_per_plan_max
        return out
