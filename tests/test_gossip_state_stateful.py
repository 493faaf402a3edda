"""State dissemination as a state machine: writes, lost, duplicated and reordered
messages, anti-entropy, in any order hypothesis finds.

Safety after every step: no forged entry is ever accepted, and what a peer holds
of an owner only moves forward (versions never go back). Liveness at the end:
once the network delivers (no more loss) and every owner writes once more, every
peer holds every owner's latest state: with unacked pushes through the receivers'
gap pulls alone, with acked ones through retries and one anti-entropy exchange
per pair.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from arcnet.gossip.state import REGION, StateConfig, StateCore
from arcnet.mesh.core import Send
from arcnet.mesh.identity import verify_peer

from .test_gossip_state import IDS, MEMO, PEERS, Members

N = 4
SETTINGS = settings(max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class StateSync(RuleBasedStateMachine):
    ACKS = True

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.readings = [{"battery_soc_fraction": 0.5, "battery_kwh": 500.0, "solar_kw": 100.0, "queue_length": 0} for _ in range(N)]
        cfg = dict(push_acks=self.ACKS, health_min_interval_s=0.0, energy_min_interval_s=0.0, ae_interval_s=1.0)
        self.cores = [
            StateCore(
                IDS[i].peer_id,
                rng=random.Random(i),
                membership=Members(IDS[i].peer_id, PEERS[:N]),
                signer=IDS[i].sign,
                verify=MEMO,
                sampler=lambda now, i=i: dict(self.readings[i]),
                config=StateConfig(**cfg),
                region="r0",
                lat=40.0,
                lon=-100.0,
            )
            for i in range(N)
        ]
        self.index = {c.me: i for i, c in enumerate(self.cores)}
        self.wire: list[tuple[int, str, object]] = []  # (recipient, sender, message) in flight
        self.seen: list[dict[str, int]] = [{} for _ in range(N)]  # what each peer held of each owner
        for c in self.cores:
            self._emit(c, c.start(self.now))

    def _emit(self, core: StateCore, effects: list) -> None:
        for e in effects:
            if type(e) is Send and e.to in self.index:
                self.wire.append((self.index[e.to], core.me, e.msg))

    def _tick(self) -> None:
        self.now += 0.1

    # -- what happens ------------------------------------------------------

    @rule(i=st.integers(0, N - 1), soc=st.floats(0.0, 1.0), queue=st.integers(0, 40))
    def reading_changes(self, i, soc, queue):
        self._tick()
        self.readings[i].update(battery_soc_fraction=soc, queue_length=queue)
        self._emit(self.cores[i], self.cores[i]._sample(self.now))

    @rule(i=st.integers(0, N - 1), epoch=st.integers(0, 5), stable=st.booleans())
    def a_core_writes_its_lead_key(self, i, epoch, stable):
        self._tick()
        c = self.cores[i]
        c.set_local("lead", (epoch, epoch, stable))
        self._emit(c, c._flush(self.now))

    @precondition(lambda self: self.wire)
    @rule(k=st.integers(0, 10_000))
    def deliver(self, k):
        self._tick()
        to, sender, msg = self.wire.pop(k % len(self.wire))  # any message: reordering
        self._emit(self.cores[to], self.cores[to].on_message(self.now, sender, msg))

    @precondition(lambda self: self.wire)
    @rule(k=st.integers(0, 10_000))
    def lose(self, k):
        self.wire.pop(k % len(self.wire))

    @precondition(lambda self: self.wire)
    @rule(k=st.integers(0, 10_000))
    def duplicate(self, k):
        self.wire.append(self.wire[k % len(self.wire)])

    @rule(i=st.integers(0, N - 1), timer=st.sampled_from(["ae", "retry"]))
    def timer_fires(self, i, timer):
        self._tick()
        c = self.cores[i]
        if c.timers.pending(timer):
            self._emit(c, c.on_timer(self.now, timer))

    # -- safety --------------------------------------------------------------

    @invariant()
    def nothing_forged_and_nothing_goes_back(self):
        for i, c in enumerate(self.cores):
            assert c.stats["updates_forged"] == 0
            for owner, o in c.owners.items():
                v = o.maxv[REGION]
                assert v >= self.seen[i].get(owner, 0), f"peer {i} went back on {owner[-6:]}"
                self.seen[i][owner] = v

    # -- liveness ------------------------------------------------------------

    def teardown(self) -> None:
        self._drain()
        # the network heals: every owner writes once more, and the pushes (with their
        # retries, or the receivers' gap pulls) reach everyone
        for c in self.cores:
            c.set_local("lead", (9, 9, True))
            self._emit(c, c._flush(self.now))
        self._drain()
        if self.ACKS:
            for _ in range(StateConfig().push_retries_max):
                for c in self.cores:
                    if c.timers.pending("retry"):
                        self._emit(c, c.on_timer(self.now, "retry"))
                self._drain()
            # an acked push assumes a peer it never heard from held the earlier writes:
            # anti-entropy repairs those (one exchange between every pair, each way)
            for c in self.cores:
                for d in self.cores:
                    if c is not d:
                        self.wire.append((self.index[d.me], c.me, c._syn(d.me, REGION).msg))
                        self._drain()
        # unacked pushes need no anti-entropy here: a receiver pulls every gap it sees
        for c in self.cores:
            for owner in self.cores:
                want = {k: e.version for k, e in owner._mine.keys.items() if k != "summary"}
                o = c.owners.get(owner.me)
                got = {} if o is None else {k: e.version for k, e in o.keys.items() if k != "summary"}
                assert got == want, f"{c.me[-6:]} holds {got} of {owner.me[-6:]}, which holds {want}"

    def _drain(self) -> None:
        for _ in range(10_000):
            if not self.wire:
                return
            self._tick()
            to, sender, msg = self.wire.pop(0)
            self._emit(self.cores[to], self.cores[to].on_message(self.now, sender, msg))
        raise AssertionError("messages kept coming: a loop between peers")


class UnackedStateSync(StateSync):
    ACKS = False


TestStateSyncAcked = StateSync.TestCase
TestStateSyncAcked.settings = SETTINGS
TestStateSyncUnacked = UnackedStateSync.TestCase
TestStateSyncUnacked.settings = SETTINGS

assert verify_peer  # the memo wraps the real Ed25519 check
