"""Reports: time series sampled during a run, a JSON report, and PNG plots.

:class:`Recorder` samples the run every ``sample_interval_s`` of virtual time
(scheduled on the simulator, so sampling is part of the deterministic run):
peers alive, membership convergence (the share of alive peers whose view
holds exactly the alive peers -- when the node factory exposes a
``view_size``), battery state of charge and power flows per region, and the
workload's queue. At the end it adds per-site load and the placement waits.

:func:`write_report` writes ``report.json``; :func:`write_plots` writes
``membership.png``, ``battery_soc.png``, ``load.png`` and
``placement_wait_cdf.png`` with matplotlib's Agg backend (no display
needed; matplotlib is imported only here, only when plotting).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["Recorder", "percentiles", "write_plots", "write_report"]

SERIES_POINTS_MAX = 20_000  # samples kept per series (a 30-day run at 2-minute samples)


def percentiles(values: list[float], qs: tuple[float, ...] = (0.5, 0.9, 0.99, 1.0)) -> dict[str, float]:
    """Nearest-rank percentiles, as plain floats (p50, p90, p99, max)."""
    if not values:
        return {}
    v = sorted(values)
    out = {}
    for q in qs:
        k = min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))
        out["max" if q == 1.0 else f"p{round(q * 100):d}"] = round(v[k], 6)
    out["mean"] = round(sum(v) / len(v), 6)
    return out


class Recorder:
    def __init__(self, run: Any):
        self.run = run
        self.interval_s = run.scenario.sample_interval_s
        regions = run.catalog.regions
        self.t_s: list[float] = []
        self.alive: list[int] = []
        self.converged: list[float | None] = []
        self.soc: dict[str, list[float]] = {r: [] for r in regions}
        self.solar_kw: dict[str, list[float]] = {r: [] for r in regions}
        self.it_load_kw: dict[str, list[float]] = {r: [] for r in regions}
        self.grid_kw: dict[str, list[float]] = {r: [] for r in regions}
        self.unserved_kw: dict[str, list[float]] = {r: [] for r in regions}
        self.jobs_queued: list[int] = []
        self.jobs_running: list[int] = []
        self.messages_sent: list[int] = []

    def schedule(self) -> None:
        self.run.sim.call_at(0.0, self.sample, "sample")

    def sample(self) -> None:
        run = self.run
        sim = run.sim
        now = sim.now
        if len(self.t_s) < SERIES_POINTS_MAX:
            alive_ids = [pid for pid in sim.order if sim.peers[pid].alive]
            self.t_s.append(round(now, 3))
            self.alive.append(len(alive_ids))
            conv = None
            if run.view_size is not None and alive_ids:
                want = len(alive_ids)
                good = 0
                known = 0
                for pid in alive_ids:
                    v = run._view(pid)
                    if v is not None:
                        known += 1
                        good += v == want
                conv = round(good / known, 4) if known else None
            self.converged.append(conv)
            for r, v in run.energy.region_soc(now).items():
                self.soc[r].append(v)
            for r, d in run.energy.region_power(now).items():
                self.solar_kw[r].append(d["solar_kw"])
                self.it_load_kw[r].append(d["it_load_kw"])
                self.grid_kw[r].append(d["grid_import_kw"])
                self.unserved_kw[r].append(d["unserved_kw"])
            w = run.workload
            self.jobs_queued.append(w.counts["queued"] if w else 0)
            self.jobs_running.append(w.counts["running"] if w else 0)
            self.messages_sent.append(sum(sim.peers[pid].messages_sent for pid in sim.order))
        nxt = now + self.interval_s
        if nxt <= run.scenario.duration_s:
            sim.call_at(nxt, self.sample, "sample")

    def report(self, *, wall_s: float, violation: str | None) -> dict[str, Any]:
        run = self.run
        sc = run.scenario
        sim = run.sim
        energy = run.energy
        hours = max(sim.now, 1e-9) / 3600.0
        it_kwh = energy.totals["it_kwh"]
        utilisation = [round(float(it_kwh[i]) / (float(energy.it_power_kw[i]) * hours), 4) for i in range(energy.n)]
        w = run.workload
        waits = list(w.waits_s) if w is not None else []
        events = int(sim.counters["events"])
        return {
            "scenario": sc.name,
            "description": sc.description,
            "source": sc.source,
            "seed": sc.seed,
            "start": sc.start.isoformat(),
            "duration_s": sc.duration_s,
            "virtual_s": sim.now,
            "factory": run.factory_name,
            "peers": len(run.peer_ids),
            "regions": run.catalog.summary(),
            "ok": violation is None,
            "violation": violation,
            "reproduce": run.reproduce,
            "trace_hash": sim.trace_hash,
            "wall_s": round(wall_s, 3),
            "build_s": round(run.build_s, 3),
            "events": events,
            "events_per_s": round(events / wall_s, 1) if wall_s > 0 else None,
            "faults": [f.to_json() for f in run.faults],
            "fault_log": [{"at_s": t, "what": what, "text": text} for t, what, text in run.injector.log],
            "liveness_checks": run.liveness_runs,
            "invariants": run.invariants.summary(),
            "statistics": run.statistics(),
            "series": {
                "t_s": self.t_s,
                "alive": self.alive,
                "membership_converged_fraction": self.converged,
                "soc_by_region": self.soc,
                "solar_kw_by_region": self.solar_kw,
                "it_load_kw_by_region": self.it_load_kw,
                "grid_import_kw_by_region": self.grid_kw,
                "unserved_kw_by_region": self.unserved_kw,
                "jobs_queued": self.jobs_queued,
                "jobs_running": self.jobs_running,
                "messages_sent": self.messages_sent,
            },
            "load": {
                "site_utilisation": utilisation,
                "site_region": [s.region for s in run.catalog.sites],
                "jobs_by_site": list(w.jobs_run_by_site) if w is not None else [],
            },
            "placement": {
                "placer": type(w.placer).__name__ if w is not None and w.placer is not None else None,
                "note": "GreedyPlacer is the simulator's stand-in (global knowledge, no protocol); its waits are a lower bound",
                "waits": len(waits),
                "wait_s": percentiles(waits),
                "waits_s": waits[:100_000],
            },
        }


def write_report(report: dict[str, Any], outdir: str | Path) -> Path:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=1, sort_keys=False, default=str) + "\n")
    return path


def _fault_spans(report: dict[str, Any], kinds: tuple[str, ...]) -> list[tuple[float, float, str]]:
    spans = []
    for f in report["faults"]:
        if f["kind"] in kinds and f.get("for_s"):
            spans.append((f["at_s"] / 3600.0, (f["at_s"] + f["for_s"]) / 3600.0, f["kind"]))
    return spans


def write_plots(report: dict[str, Any], outdir: str | Path) -> list[Path]:
    """The four PNGs; returns their paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    s = report["series"]
    t_h = [t / 3600.0 for t in s["t_s"]]
    title = f"{report['scenario']} - {report['peers']} peers, seed {report['seed']} ({report['factory']})"
    paths = []
    conn_kinds = ("partition", "isolate_region", "clog", "crash", "pause", "slow")

    def shade(ax, kinds, color):
        for a, b, k in _fault_spans(report, kinds):
            ax.axvspan(a, b, color=color, alpha=0.12, lw=0)

    # membership convergence
    fig, ax = plt.subplots(figsize=(9, 4))
    conv = s["membership_converged_fraction"]
    if any(c is not None for c in conv):
        ax.plot(t_h, [c if c is not None else float("nan") for c in conv], color="tab:blue", label="converged views")
        ax.set_ylabel("share of alive peers with a converged view")
        ax.set_ylim(-0.02, 1.02)
    else:
        ax.text(0.5, 0.5, "membership views not exposed by this node factory", ha="center", va="center", transform=ax.transAxes)
    ax2 = ax.twinx()
    ax2.plot(t_h, s["alive"], color="tab:gray", lw=1, ls="--", label="alive peers")
    ax2.set_ylabel("alive peers")
    shade(ax, conn_kinds, "tab:red")
    ax.set_xlabel("hours since start")
    ax.set_title("membership convergence (shaded: connectivity faults)\n" + title, fontsize=9)
    fig.tight_layout()
    p = out / "membership.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    # battery SoC per region
    fig, (ax, axp) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for r, v in s["soc_by_region"].items():
        ax.plot(t_h, v, label=r)
    ax.set_ylabel("battery state of charge")
    ax.set_ylim(0, 1)
    ax.legend(loc="best", fontsize=8)
    shade(ax, ("power_dip",), "tab:orange")
    for r, v in s["solar_kw_by_region"].items():
        axp.plot(t_h, [x / 1000.0 for x in v], label=f"{r} solar")
    for r, v in s["grid_import_kw_by_region"].items():
        axp.plot(t_h, [x / 1000.0 for x in v], ls=":", label=f"{r} grid")
    shade(axp, ("power_dip",), "tab:orange")
    axp.set_ylabel("MW")
    axp.set_xlabel("hours since start (" + report["start"] + ")")
    axp.legend(loc="best", fontsize=7, ncol=2)
    ax.set_title("battery SoC per region (shaded: power dips)\n" + title, fontsize=9)
    fig.tight_layout()
    p = out / "battery_soc.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    # load distribution
    fig, ax = plt.subplots(figsize=(9, 4))
    util = report["load"]["site_utilisation"]
    regions = list(s["soc_by_region"])
    by_region = [[u for u, r in zip(util, report["load"]["site_region"]) if r == reg] for reg in regions]
    ax.hist(by_region, bins=30, stacked=True, label=regions)
    ax.set_xlabel("mean IT load / IT envelope over the run, per site")
    ax.set_ylabel("sites")
    ax.legend(fontsize=8)
    ax.set_title("load distribution\n" + title, fontsize=9)
    fig.tight_layout()
    p = out / "load.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    # placement wait CDF
    fig, ax = plt.subplots(figsize=(7, 4))
    waits = sorted(report["placement"]["waits_s"])
    if waits:
        n = len(waits)
        xs = [max(w, 1e-3) for w in waits]
        ax.step(xs, [(i + 1) / n for i in range(n)], where="post")
        ax.set_xscale("log")
        ax.set_xlabel("wait from submit to start, s (log; 0 shown at 1 ms)")
        ax.set_ylabel("share of jobs")
        ax.set_ylim(0, 1.01)
    else:
        ax.text(0.5, 0.5, "no placements in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"placement wait CDF ({report['placement']['placer']})\n" + title, fontsize=9)
    fig.tight_layout()
    p = out / "placement_wait_cdf.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths
