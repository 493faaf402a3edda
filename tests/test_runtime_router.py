"""Router: each rule excludes with a reason, the ranking is a total order, every decision explains itself."""

import dataclasses

import pytest

from arcnet.mesh.identity import Identity
from arcnet.runtime.catalog import ModelEntry, ModelMeta, Score, TensorSig
from arcnet.runtime.router import RouteError, RouteRequest, RouterConfig, route

PUB = Identity.from_seed(bytes([3]) * 32).peer_id


def model(name, version="1.0.0", *, task="classify", project="public", p50=1.0, per_item=0.01, cost=1.0,
          accuracy=None, features=16, size=1_000_000, macs=10_000) -> ModelEntry:  # fmt: skip
    meta = ModelMeta(
        format=1, name=name, version=version, model_id=f"id-{name}-{version}", project=project, task=task,
        inputs=[TensorSig("x", "float32", ["n", str(features)])], outputs=[TensorSig("probs", "float32", ["n", "4"])],
        size_bytes=size, params=1, macs_per_item=macs, latency_ms_p50=p50, latency_ms_per_item=per_item,
        cost_per_1k=cost, scores=[Score("accuracy", accuracy)] if accuracy is not None else [],
        parent_id="", publisher=PUB, published_s=1,
    )  # fmt: skip
    return ModelEntry(meta, b"\0" * 64)  # the router trusts the catalog, which verified signatures


SMALL = model("small", accuracy=0.85, p50=0.2, cost=0.5)
BIG = model("big", accuracy=0.95, p50=8.0, per_item=0.5, cost=20.0, size=400_000_000)
SCORER = model("scorer", task="score")
PRIVATE = model("acme-special", project="acme", accuracy=0.99)
WIDE = model("wide", accuracy=0.97, features=256)
ALL = [SMALL, BIG, SCORER, PRIVATE, WIDE]
HOT = frozenset({SMALL.meta.model_id, BIG.meta.model_id})


def test_best_score_wins_when_budgets_allow():
    d = route(RouteRequest("classify", input_features=16), ALL, hot=HOT)
    assert d.ref == "big@1.0.0"
    assert d.reasons[0] == "task classify: 4 of 5 catalog entries"
    assert "acme-special@1.0.0 excluded: belongs to project 'acme', not 'public'" in d.reasons
    assert "wide@1.0.0 excluded: takes 256 features, the input has 16" in d.reasons
    assert d.reasons[-1].startswith("chose big@1.0.0: accuracy 0.95, best of 2 feasible; hot on this peer")


def test_latency_budget_counts_items_and_cold_start():
    req = RouteRequest("classify", items=4, input_features=16, latency_budget_ms=5.0)
    d = route(req, ALL, hot=HOT)
    assert d.ref == "small@1.0.0" and d.hot
    assert any(r.startswith("big@1.0.0 excluded: estimated 9.50 ms for 4 item(s)") for r in d.reasons)
    assert d.estimated_latency_ms == pytest.approx(0.2 + 3 * 0.01)
    # small is not hot: a session build pushes it over a 20 ms budget, and a fetch is counted when not local
    cold = route(RouteRequest("classify", input_features=16, latency_budget_ms=60.0), [SMALL],
                 hot=frozenset(), local=frozenset({SMALL.meta.model_id}))  # fmt: skip
    assert cold.estimated_latency_ms == pytest.approx(50.2)
    assert "cold: +50 ms session build" in cold.reasons[-1]
    with pytest.raises(RouteError) as info:
        route(RouteRequest("classify", input_features=16, latency_budget_ms=20.0), [SMALL], local=frozenset())
    assert any("+50 ms session build, +10.0 ms fetch" in r for r in info.value.reasons)


def test_cost_budget_and_allow_list():
    d = route(RouteRequest("classify", items=100, cost_budget=1.0, input_features=16), ALL, hot=HOT)
    assert d.ref == "small@1.0.0"
    assert "big@1.0.0 excluded: cost 2 over the budget 1" in d.reasons
    d = route(RouteRequest("classify", project="acme", allowed=frozenset({"acme-special", "small@1.0.0"})), ALL, hot=HOT)
    assert d.ref == "acme-special@1.0.0"
    assert "big@1.0.0 excluded: not on project 'acme''s allow-list" in d.reasons


def test_no_fit_raises_with_every_reason():
    with pytest.raises(RouteError) as info:
        route(RouteRequest("translate"), ALL)
    assert info.value.reasons[0] == "task translate: 0 of 5 catalog entries"
    assert "publish one for this task" in str(info.value)
    with pytest.raises(RouteError) as info:
        route(RouteRequest("classify", input_features=16, latency_budget_ms=0.01), ALL, hot=HOT)
    assert len([r for r in info.value.reasons if "excluded" in r]) == 4


def test_ties_break_by_hot_then_latency_then_version_then_name():
    a1 = model("a", "1.0.0", accuracy=0.9, p50=1.0)
    a2 = model("a", "1.2.0", accuracy=0.9, p50=1.0)
    b = model("b", "1.0.0", accuracy=0.9, p50=0.5)
    d = route(RouteRequest("classify"), [a1, a2, b], hot=frozenset({a1.meta.model_id}))
    assert d.ref == "a@1.0.0" and "ahead of b@1.0.0 on being hot here" in d.reasons[-1]
    d = route(RouteRequest("classify"), [a1, a2, b])
    assert d.ref == "b@1.0.0" and "on lower latency" in d.reasons[-1]
    d = route(RouteRequest("classify"), [a1, a2])
    assert d.ref == "a@1.2.0" and "ahead of a@1.0.0 on newer version" in d.reasons[-1]
    unscored = model("u", accuracy=None, p50=0.01)
    assert route(RouteRequest("classify"), [unscored, a1]).ref == "a@1.0.0"  # scored before unscored
    # the same inputs in any order give the same choice
    assert route(RouteRequest("classify"), [b, a2, a1]).ref == route(RouteRequest("classify"), [a1, b, a2]).ref


def test_unprofiled_models_are_estimated_from_macs():
    m = model("u", p50=0.0, macs=5_000_000)
    d = route(RouteRequest("classify", items=2), [m], hot=frozenset({m.meta.model_id}), config=RouterConfig())
    assert d.estimated_latency_ms == pytest.approx(10.0)
    assert dataclasses.replace(RouterConfig(), unprofiled_macs_per_ms=1e7).unprofiled_macs_per_ms == 1e7
