"""Membership as a state machine: probes, suspicions and refutations under lost,
duplicated and reordered messages and timers firing in any order hypothesis finds.

Safety after every step: no peer believes itself dead, and no peer holds an
incarnation of a member higher than the member's own (nobody invents one).
Liveness at the end: once the network delivers again, every peer sees every other
alive within a few minutes of virtual time (suspicions refuted, false deaths
reversed by the probes of dead members).
"""

from __future__ import annotations

import heapq
import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from arcnet.gossip.membership import ALIVE, Member, MembershipConfig, MembershipCore
from arcnet.mesh.core import CancelTimer, Send, SetTimer

from .test_gossip_membership import ids

N = 5
PEERS = ids(N, "stateful")
SETTINGS = settings(max_examples=40, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LATENCY_S = 0.01


class Membership(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        boot = [Member(p, 0, ALIVE, "", "r0") for p in PEERS]
        cfg = MembershipConfig(probe_interval_s=1.0, probe_timeout_s=0.3, indirect_timeout_s=0.6, sync_interval_s=5.0)
        self.cores = [MembershipCore(p, rng=random.Random(i), config=cfg, region="r0", bootstrap=boot) for i, p in enumerate(PEERS)]
        self.index = {p: i for i, p in enumerate(PEERS)}
        self.timers: list[dict] = [{} for _ in range(N)]  # timer -> due, from the cores' effects
        self.wire: list[tuple[int, str, object]] = []
        for i, c in enumerate(self.cores):
            self._effects(i, c.start(self.now))

    def _effects(self, i: int, effects: list) -> None:
        for e in effects:
            t = type(e)
            if t is Send:
                if e.to in self.index:
                    self.wire.append((self.index[e.to], PEERS[i], e.msg))
            elif t is SetTimer:
                self.timers[i][e.timer] = e.at
            elif t is CancelTimer:
                self.timers[i].pop(e.timer, None)

    def _fire(self, i: int, timer) -> None:
        at = self.timers[i].pop(timer)
        self.now = max(self.now, at)
        self._effects(i, self.cores[i].on_timer(self.now, timer))

    def _deliver(self, to: int, sender: str, msg) -> None:
        self._effects(to, self.cores[to].on_message(self.now, sender, msg))

    # -- what happens ------------------------------------------------------

    @precondition(lambda self: self.wire)
    @rule(k=st.integers(0, 10_000))
    def deliver(self, k):
        self._deliver(*self.wire.pop(k % len(self.wire)))

    @precondition(lambda self: self.wire)
    @rule(k=st.integers(0, 10_000))
    def lose(self, k):
        self.wire.pop(k % len(self.wire))

    @precondition(lambda self: self.wire)
    @rule(k=st.integers(0, 10_000))
    def duplicate(self, k):
        self.wire.append(self.wire[k % len(self.wire)])

    @rule(i=st.integers(0, N - 1))
    def next_timer_of_a_peer_fires(self, i):
        if self.timers[i]:
            self._fire(i, min(self.timers[i], key=lambda t: (self.timers[i][t], repr(t))))

    # -- safety --------------------------------------------------------------

    @invariant()
    def nobody_believes_itself_dead_or_invents_an_incarnation(self):
        for c in self.cores:
            assert c.status_of(c.me) == "alive"
            for p, m in c.members.items():
                owner = self.cores[self.index[p]]
                assert m.inc <= owner.inc, f"{c.me[-6:]} holds {p[-6:]} at incarnation {m.inc} > its own {owner.inc}"

    # -- liveness ------------------------------------------------------------

    @rule(i=st.integers(0, N - 1), seconds=st.floats(1.0, 30.0))
    def a_peer_is_cut_off_for_a_while(self, i, seconds):
        self._run(seconds, cut=PEERS[i])

    def teardown(self) -> None:
        self._run(300.0)
        for c in self.cores:
            for p in PEERS:
                assert c.status_of(p) == "alive", f"{c.me[-6:]} sees {p[-6:]} {c.status_of(p)} 300 s after the network healed"

    def _run(self, seconds: float, cut: str | None = None) -> None:
        """Deliver everything in time order (LATENCY_S per hop) and fire timers as they
        fall due, for ``seconds`` of virtual time; frames to or from ``cut`` are lost."""
        heap: list = []
        seq = 0

        def post() -> None:
            nonlocal seq
            for to, sender, msg in self.wire:
                if cut is not None and (sender == cut or PEERS[to] == cut):
                    continue
                seq += 1
                heapq.heappush(heap, (self.now + LATENCY_S, seq, to, sender, msg))
            self.wire = []

        post()
        end = self.now + seconds
        while self.now < end:
            best = None  # the earliest timer of any peer
            for i, ts in enumerate(self.timers):
                for t, at in ts.items():
                    if best is None or (at, i, repr(t)) < best[:3]:
                        best = (at, i, repr(t), t)
            if heap and (best is None or heap[0][0] <= best[0]):
                at, _, to, sender, msg = heapq.heappop(heap)
                self.now = max(self.now, at)
                self._deliver(to, sender, msg)
            elif best is not None:
                self._fire(best[1], best[3])
            else:
                break
            post()
        self.wire.extend((to, sender, msg) for _, _, to, sender, msg in sorted(heap))


TestMembership = Membership.TestCase
TestMembership.settings = SETTINGS
