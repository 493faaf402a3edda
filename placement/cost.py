"""The cost model: what one site's bid says a task would cost it, in seconds.

A bid is a cost estimate, not a price. It is the expected completion time

    start (queue wait, or an energy window) + fetch (bytes missing / link rate)
    + load (cold model into memory) + run

plus the energy cost now, converted to seconds by the workload class
(``energy_weight_s_per_kwh``; 0 for online work, which is never steered by
energy), plus a health penalty. Energy comes first from solar surplus (solar
output above the site's draw), then from the battery above its reserve, then
from the grid; surplus is cheap, the battery a little dearer (wear), grid
import dear. A bid that misses a latency budget or a deadline still goes out
(so a broker can pick the least bad), with a penalty that ranks it behind
every bid that meets it.

Knowingly left out: price signals from the grid operator (a site can fold
them into ``grid_price``), energy forecasts beyond "seconds until my next
surplus window", and overlap of fetch with queue wait (fetching is counted
as part of the run, the conservative choice).
"""

from __future__ import annotations

from dataclasses import dataclass

from .classes import POLICIES, ClassPolicy
from .messages import TaskSpec
from .view import PeerFacts

__all__ = ["CostModel", "Estimate", "energy_split", "estimate"]


@dataclass(frozen=True, slots=True)
class CostModel:
    grid_price: float = 1.0  # relative price per kWh imported
    battery_price: float = 0.15  # per kWh drawn from the battery (wear)
    solar_price: float = 0.0  # per kWh of solar surplus
    battery_reserve_fraction: float = 0.2  # state of charge kept for outages
    health_penalty_s: float = 600.0  # added at health 0, linearly in (1 - health)
    load_bps: float = 4e9  # bytes/s to load a cached but cold artifact into memory
    cross_region_s: float = 0.1  # online: cost of answering from outside the submitter's region
    defer_max_s: float = 6 * 3600.0  # never wait longer than this for an energy window


DEFAULT_MODEL = CostModel()


@dataclass(frozen=True, slots=True)
class Estimate:
    ok: bool
    reason: str
    late: bool  # misses the latency budget or the deadline (brokers rank it behind all that do not)
    start_s: float  # queue wait plus any energy-window deferral
    defer_s: float  # of which deferral
    fetch_bytes: int
    fetch_s: float
    run_s: float
    completion_s: float
    energy_kwh: float
    surplus_fraction: float  # 0..1 of the energy from solar or battery
    energy_cost_s: float
    health_cost_s: float
    cost_s: float


def energy_split(f: PeerFacts, power_kw: float, run_s: float, reserve_fraction: float) -> tuple[float, float, float]:
    """(solar, battery, grid) kW that would feed ``power_kw`` more draw at this site now."""
    if power_kw <= 0:
        return 0.0, 0.0, 0.0
    solar_spare = max(0.0, f.solar_kw - f.draw_kw)
    deficit_now = max(0.0, f.draw_kw - f.solar_kw)  # already drawn from battery or grid
    usable_kwh = max(0.0, f.battery_soc_fraction - reserve_fraction) * f.battery_kwh
    run_h = max(run_s, 1.0) / 3600.0
    battery_spare = max(0.0, min(f.battery_kw, usable_kwh / run_h) - deficit_now)
    solar = min(power_kw, solar_spare)
    battery = min(power_kw - solar, battery_spare)
    return solar, battery, power_kw - solar - battery


def estimate(
    task: TaskSpec,
    f: PeerFacts,
    wait_s: float,
    model: CostModel = DEFAULT_MODEL,
    *,
    policy: ClassPolicy | None = None,
) -> Estimate:
    """Price ``task`` at the site whose fresh facts are ``f``, given its queue wait."""
    pol = policy or POLICIES[task.cls]
    c = task.constraints
    if f.draining:
        return _refuse("draining")
    if f.health < c.health_min:
        return _refuse("health below the job's minimum")
    if task.slots > f.slots:
        return _refuse("not enough slots for the gang")
    if c.role and c.role not in f.roles:
        return _refuse(f"not a {c.role} peer")
    if c.regions and f.region not in c.regions:
        return _refuse("region not allowed")
    for tag in c.capabilities:
        if tag not in f.capabilities:
            return _refuse(f"lacks capability {tag}")
    missing = 0
    cold = 0
    arts, warm = f.artifacts, f.warm
    for a in task.artifacts:
        if a.cid not in arts:
            missing += a.size_bytes
        elif a.cid not in warm:
            cold += a.size_bytes
    fetch_s = missing / f.link_bps if f.link_bps > 0 else float("inf")
    load_s = cold / model.load_bps
    run_s = task.run_s
    busy_s = fetch_s + load_s + run_s
    power_kw = task.slots * f.slot_kw
    kwh = power_kw * busy_s / 3600.0

    def energy(surplus: tuple[float, float, float]) -> tuple[float, float]:
        solar, battery, grid = surplus
        if power_kw <= 0:
            return 0.0, 1.0
        price = (solar * model.solar_price + battery * model.battery_price + grid * model.grid_price) / power_kw
        return pol.energy_weight_s_per_kwh * kwh * price, (solar + battery) / power_kw

    energy_cost, surplus = energy(energy_split(f, power_kw, busy_s, model.battery_reserve_fraction))
    start, defer = max(0.0, wait_s), 0.0
    window = f.surplus_window_in_s
    if pol.may_defer and surplus < 1.0 and 0.0 <= window <= model.defer_max_s and window > start:
        # Option: wait for this site's own surplus window. Surplus there is
        # assumed to cover the task (the forecast says so); take the option
        # only where it is cheaper and still meets the deadline.
        w_cost = pol.energy_weight_s_per_kwh * kwh * model.solar_price
        later = window + busy_s
        if (task.deadline_s <= 0 or later <= task.deadline_s) and window + w_cost < start + energy_cost:
            defer, start, energy_cost, surplus = window - start, window, w_cost, 1.0
    completion = start + busy_s
    health_cost = model.health_penalty_s * (1.0 - min(1.0, max(0.0, f.health)))
    cost = completion + energy_cost + health_cost
    if task.cls == "online" and task.submitter_region and f.region != task.submitter_region:
        cost += model.cross_region_s
    missed = ""
    if task.latency_budget_s > 0 and start + fetch_s + load_s > task.latency_budget_s:
        missed = "misses latency budget"
    elif task.deadline_s > 0 and completion > task.deadline_s:
        missed = "misses deadline"
    return Estimate(True, missed, bool(missed), start, defer, missing, fetch_s, run_s, completion, kwh, surplus,
                    energy_cost, health_cost, cost)


def _refuse(reason: str) -> Estimate:
    return Estimate(False, reason, False, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
