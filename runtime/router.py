"""Rules-based model choice per request or workflow step, with the reasons for each decision.

A request names a task ("classify", "score") rather than a model; the
router picks a catalog entry for it on this peer. The rules, in order --
each one either passes a candidate or excludes it with a reason:

=========  ==============================================================
rule       a candidate passes when
=========  ==============================================================
task       its task is the request's task
project    it belongs to the request's project or to "public"
allowed    the project's allow-list (names or name@version) names it, if
           the request carries one
input      its first input's last axis equals the request's feature
           width, when both are known
latency    its estimated latency fits the budget: profiled p50 at batch
           1, plus the per-item cost of the other rows, plus a session
           build if it is not hot here, plus the fetch if its bytes are
           not here (unprofiled models: MACs at a conservative rate)
cost       cost_per_1k x items / 1000 fits the cost budget
=========  ==============================================================

Among the candidates that pass, the best is the one with the highest
evaluation score (the request's metric, else "accuracy", else unscored
last), then hot here, then lower estimated latency, then lower cost, then
the newer version, then the name: a total order, so equal inputs give the
same choice on every peer. The decision carries every reason as a line of
text; job status shows them.

The router is a pure function (no clock, no I/O): what is hot and what is
local are inputs, read by the caller from the executor and the store.

Prior art: rules-first routing as in model-serving gateways (Clipper's
model selection layer, Triton's ensemble scheduler) rather than a learned
router; a learned policy can replace the ranking step later.

Knowingly left out: queue length per model (the batcher's statistics
could feed it), GPU-only models (a ``requires`` field in the metadata),
and spreading load across equal candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .catalog import ModelEntry, version_key

__all__ = ["Decision", "RouteError", "RouteRequest", "RouterConfig", "route"]


class RouteError(Exception):
    """No model can serve a request; ``reasons`` says why each candidate was excluded."""

    def __init__(self, message: str, reasons: tuple[str, ...] = ()):
        super().__init__(message)
        self.reasons = reasons


@dataclass(frozen=True)
class RouteRequest:
    """What a request or workflow step needs. Units in the names; None means "no limit"."""

    task: str
    items: int = 1  # rows in the request
    input_features: int | None = None  # width of the input's last axis
    latency_budget_ms: float | None = None
    cost_budget: float | None = None  # cost units for the whole request
    project: str = "public"
    allowed: frozenset[str] | None = None  # model names or name@version; None = any
    metric: str | None = None  # evaluation score to rank by

    def __post_init__(self) -> None:
        if self.items < 1:
            raise ValueError("items must be >= 1")


@dataclass(frozen=True)
class RouterConfig:
    """Estimates for what the catalog does not say.

    session_build_ms: building a session for a model that is not hot;
        default 50 ms (small MLPs take ~5 ms, large graphs seconds).
    fetch_bytes_per_s: fetching a model this peer lacks; default 100 MB/s
        (a swarm fetch in-region; cross-region is slower).
    unprofiled_macs_per_ms: speed assumed for a model published without a
        latency profile; default 1e6 (1 GMAC/s, one slow core), so an
        unprofiled model is never chosen on optimism.
    """

    session_build_ms: float = 50.0
    fetch_bytes_per_s: float = 100e6
    unprofiled_macs_per_ms: float = 1e6


@dataclass(frozen=True)
class Decision:
    entry: ModelEntry
    reasons: tuple[str, ...]
    estimated_latency_ms: float
    estimated_cost: float
    hot: bool

    @property
    def ref(self) -> str:
        return f"{self.entry.meta.name}@{self.entry.meta.version}"


# what each component of the ranking key means, for the reasons
_RANK_CRITERIA = ("having a score", "score", "being hot here", "lower latency", "lower cost", "newer version", "name")


def _ref(e: ModelEntry) -> str:
    return f"{e.meta.name}@{e.meta.version}"


def _score(e: ModelEntry, metric: str | None) -> tuple[str, float] | None:
    scores = {s.metric: s.value for s in e.meta.scores}
    for m in (metric, "accuracy"):
        if m is not None and m in scores:
            return m, scores[m]
    return None


def _latency(e: ModelEntry, items: int, hot: bool, local: bool, cfg: RouterConfig) -> tuple[float, list[str]]:
    m = e.meta
    notes = []
    if m.latency_ms_p50 > 0:
        ms = m.latency_ms_p50 + m.latency_ms_per_item * (items - 1)
    else:
        ms = m.macs_per_item * items / cfg.unprofiled_macs_per_ms
        notes.append("unprofiled: from MACs")
    if not hot:
        ms += cfg.session_build_ms
        notes.append(f"+{cfg.session_build_ms:g} ms session build")
    if not local:
        fetch_ms = m.size_bytes / cfg.fetch_bytes_per_s * 1e3
        ms += fetch_ms
        notes.append(f"+{fetch_ms:.1f} ms fetch")
    return ms, notes


def _input_width(e: ModelEntry) -> int | None:
    if not e.meta.inputs or not e.meta.inputs[0].shape:
        return None
    last = e.meta.inputs[0].shape[-1]
    return int(last) if last.isdigit() else None


def route(
    request: RouteRequest,
    entries: Iterable[ModelEntry],
    *,
    hot: frozenset[str] = frozenset(),
    local: frozenset[str] | None = None,
    config: RouterConfig | None = None,
) -> Decision:
    """Choose a model for ``request`` among ``entries``; raise :class:`RouteError` if none fits.

    ``hot``: model ids with a session on this peer. ``local``: model ids
    whose bytes this peer holds (None: assume all are local).
    """
    cfg = config or RouterConfig()
    req = request
    all_entries = list(entries)
    reasons: list[str] = []
    pool = [e for e in all_entries if e.meta.task == req.task]
    reasons.append(f"task {req.task}: {len(pool)} of {len(all_entries)} catalog entries")
    feasible: list[tuple[ModelEntry, float, float, bool, list[str]]] = []
    for e in pool:
        m, ref = e.meta, _ref(e)
        if m.project not in (req.project, "public"):
            reasons.append(f"{ref} excluded: belongs to project {m.project!r}, not {req.project!r}")
            continue
        if req.allowed is not None and m.name not in req.allowed and ref not in req.allowed:
            reasons.append(f"{ref} excluded: not on project {req.project!r}'s allow-list")
            continue
        width = _input_width(e)
        if req.input_features is not None and width is not None and width != req.input_features:
            reasons.append(f"{ref} excluded: takes {width} features, the input has {req.input_features}")
            continue
        is_hot = m.model_id in hot
        is_local = local is None or m.model_id in local or is_hot
        ms, notes = _latency(e, req.items, is_hot, is_local, cfg)
        if req.latency_budget_ms is not None and ms > req.latency_budget_ms:
            why = f" ({', '.join(notes)})" if notes else ""
            reasons.append(
                f"{ref} excluded: estimated {ms:.2f} ms for {req.items} item(s){why} over the {req.latency_budget_ms:g} ms budget"
            )
            continue
        cost = m.cost_per_1k * req.items / 1000
        if req.cost_budget is not None and cost > req.cost_budget:
            reasons.append(f"{ref} excluded: cost {cost:.4g} over the budget {req.cost_budget:g}")
            continue
        feasible.append((e, ms, cost, is_hot, notes))
    if not feasible:
        reasons.append("no model fits: relax the budgets, allow more models, or publish one for this task")
        raise RouteError(f"no model for task {req.task!r}: " + "; ".join(reasons[1:]), tuple(reasons))

    def rank(item: tuple[ModelEntry, float, float, bool, list[str]]) -> tuple:
        e, ms, cost, is_hot, _ = item
        sc = _score(e, req.metric)
        return (
            0 if sc is not None else 1,
            -(sc[1] if sc else 0.0),
            0 if is_hot else 1,
            ms,
            cost,
            tuple(-p for p in version_key(e.meta.version)),
            e.meta.name,
        )

    feasible.sort(key=rank)
    e, ms, cost, is_hot, notes = feasible[0]
    sc = _score(e, req.metric)
    why = [f"{sc[0]} {sc[1]:.4g}" if sc else "no evaluation score"]
    if len(feasible) > 1:
        why[0] += f", best of {len(feasible)} feasible"
        first, second = rank(feasible[0]), rank(feasible[1])
        criterion = next(i for i in range(len(first)) if first[i] != second[i])
        if criterion >= 2:  # equal scores: say what decided it
            why.append(f"ahead of {_ref(feasible[1][0])} on {_RANK_CRITERIA[criterion]}")
    why.append("hot on this peer" if is_hot else "cold: " + ", ".join(n for n in notes if n.startswith("+")))
    why.append(f"estimated {ms:.2f} ms for {req.items} item(s), cost {cost:.4g}")
    reasons.append(f"chose {_ref(e)}: " + "; ".join(why))
    return Decision(e, tuple(reasons), ms, cost, is_hot)
