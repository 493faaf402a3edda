"""Simulator benchmark: events per second, 1,000 and 10,000 peers for an hour, memory, determinism.

    python bench/sim.py                      # table; 1,000 peers x 1 h
    python bench/sim.py --json               # one JSON object of named figures
    python bench/sim.py --hours 0.1          # measure 6 virtual minutes and extrapolate to 1 h (said so)
    python bench/sim.py --large              # also 10,000 peers (target: <= 60 min, <= 2 GiB)
    python bench/sim.py --factory toy        # the toy core instead of the real gossip stack

Figures:

* ``events_per_s`` -- the driver with the toy core on the WAN model and the
  energy samplers (1,000 peers in 3 regions, 2 virtual minutes), events per CPU second
  and per wall second; beside it, in the same process, the foundation's
  setup (SimpleNetwork, a ping core, no energy) as a baseline;
* ``wall_s_1000_peers_1h`` -- a 1,000-peer mesh in regions of about 50
  sites (``region_size = 50``, tiles: 20 regions at 1,000 peers, 200 at
  10,000 -- metro or grid areas, the regime the gossip design is for: full
  state inside a region, summaries across, so per-peer cost follows the
  region size, not N) with a
  Poisson workload, one virtual hour, run by the node factory named in
  ``factory`` (the real gossip stack when ``arcnet.gossip.stack`` exists,
  else the toy core -- the JSON says which); ``extrapolated_1000`` is true
  when fewer hours were measured and scaled (after ``warmup_s`` of
  unmeasured virtual time, so the boot burst is not scaled up with them);
* ``wall_s_10000_peers_1h`` and ``peak_rss_mib_10000`` (``--large``;
  ``--large-warmup`` sets its own warm-up);
* ``bytes_per_peer_per_s_*`` and ``messages_per_peer_per_s_*`` -- what one
  peer sends per second, measured, at 1,000 and 10,000 peers: the gossip
  design's claim that per-peer cost follows the region size, not N (the
  mesh starts pre-converged, as after its joins);
* ``trace_identical`` -- two runs of the same seed give the same trace hash,
  and a third with another seed does not.

Each mesh size runs in a fresh child process, so its peak RSS is its own.
Timings on a shared machine are noisy: CPU seconds are reported beside wall
seconds, and the wall figures are what the targets are about.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _gossip_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("arcnet.gossip.stack") is not None
    except ModuleNotFoundError:
        return False


REGION_SIZE = 50  # sites per region in the mesh-size runs (the gossip design's regime)


def _scenario(peers: int, duration_s: float, factory: str, seed: int, regions: int | None = None) -> dict:
    """The benchmark mesh: regions of about ``REGION_SIZE`` sites, or ``regions`` (the old 3) when given."""
    grouping = {"regions": regions} if regions is not None else {"region_size": REGION_SIZE}
    return {
        "name": f"bench-{peers}",
        "seed": seed,
        "start": "2025-06-21T15:00:00Z",
        "duration": max(duration_s, 1.0),
        "sites": {"count": peers, **grouping, "hpc": max(1, peers // 300), "edge": peers // 10},
        "network": {"loss": 0.001},
        "peer": {"factory": factory, "start_spread": "30s", "options": {"preconverged": True}},
        "report": {"sample_interval": "5m", "trace": False, "plots": False},
        "workload": [
            {"class": "inference", "rate_per_h": 15.0 * peers, "duration": "2m", "power_kw": 25},
            {"class": "batch", "rate_per_h": 0.6 * peers, "duration": "1h", "power_kw": 150},
        ],
    }


def child(peers: int, hours: float, factory: str, seed: int, warmup_s: float = 0.0) -> dict:
    """Build and run one mesh; report wall/CPU seconds, events and peak RSS of this process.

    With ``warmup_s`` the first seconds (boot, joins, first publishes) run
    unmeasured and the clock covers the ``hours`` after them.
    """
    import resource

    from arcnet.sims.scenario import Run, parse_scenario

    sc = parse_scenario(_scenario(peers, warmup_s + hours * 3600.0, factory, seed), f"bench-{peers}")
    t0 = time.perf_counter()
    c0 = time.process_time()
    run = Run(sc)
    build_wall, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    if warmup_s > 0:
        run.sim.run(warmup_s)
    ev0 = run.sim.counters["events"]
    b0 = sum(p.bytes_sent for p in run.sim.peers.values())
    m0 = sum(p.messages_sent for p in run.sim.peers.values())
    t1 = time.perf_counter()
    c1 = time.process_time()
    res = run.run()
    wall, cpu = time.perf_counter() - t1, time.process_time() - c1
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    span = peers * hours * 3600.0
    b1 = sum(p.bytes_sent for p in run.sim.peers.values())
    m1 = sum(p.messages_sent for p in run.sim.peers.values())
    return {
        "peers": peers,
        "hours": hours,
        "warmup_s": warmup_s,
        "factory": run.factory_name,
        "build_wall_s": round(build_wall, 2),
        "build_cpu_s": round(build_cpu, 2),
        "run_wall_s": round(wall, 2),
        "run_cpu_s": round(cpu, 2),
        "events": res.events - ev0,
        "messages": res.statistics["sim"]["messages_sent"],
        "peak_rss_mib": round(rss_mib, 1),
        "regions": len(run.catalog.regions),
        "bytes_per_peer_per_s": round((b1 - b0) / span, 1),
        "messages_per_peer_per_s": round((m1 - m0) / span, 2),
        "trace_hash": res.trace_hash,
        "ok": res.ok,
        "violation": res.violation,
    }


def run_child(peers: int, hours: float, factory: str, seed: int = 1, warmup_s: float = 0.0) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(peers), str(hours), factory, str(seed), str(warmup_s)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child run ({peers} peers) failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def events_per_s(peers: int = 1000, virtual_s: float = 120.0) -> dict:
    """Toy core on WAN + energy (the scenario runner), and the foundation's setup as a same-process baseline."""
    import random

    from arcnet.mesh.identity import Identity
    from arcnet.mesh.node import Node
    from arcnet.sims.engine import SimpleNetwork, Simulator, derive_seed
    from arcnet.sims.scenario import Run, parse_scenario
    from arcnet.sims.toy import ToyCore

    sc = parse_scenario(_scenario(peers, virtual_s, "toy", 3, regions=3) | {"workload": []}, "bench-events")
    run = Run(sc)
    t0, c0 = time.perf_counter(), time.process_time()
    res = run.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0

    ids = [Identity.from_seed(derive_seed(3, i).to_bytes(8, "big") * 4).peer_id for i in range(peers)]
    sim = Simulator(3, SimpleNetwork(random.Random(3)))
    for pid in ids:
        sim.add_peer(pid, lambda p: Node(p.peer_id, {"simtoy": ToyCore(p.peer_id, ids, p.rng, p.disk)}))
    t1, c1 = time.perf_counter(), time.process_time()
    sim.run(virtual_s)
    bwall, bcpu = time.perf_counter() - t1, time.process_time() - c1
    ev_b = sim.counters["events"]
    return {
        "events_per_s": round(res.events / wall),
        "events_per_cpu_s": round(res.events / cpu),
        "events": res.events,
        "baseline_events_per_s": round(ev_b / bwall),
        "baseline_events_per_cpu_s": round(ev_b / bcpu),
    }


def trace_identical() -> bool:
    a = run_child(200, 5 / 60, "toy", 11)
    b = run_child(200, 5 / 60, "toy", 11)
    c = run_child(200, 5 / 60, "toy", 12)
    return a["trace_hash"] == b["trace_hash"] and a["trace_hash"] != c["trace_hash"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--hours", type=float, default=1.0, help="virtual hours to measure (scaled to 1 h when < 1)")
    ap.add_argument("--large", action="store_true", help="also run 10,000 peers")
    ap.add_argument("--large-hours", type=float, default=None, help="virtual hours for the 10,000-peer run (default: --hours)")
    ap.add_argument("--factory", default=None, help="gossip (default when available) or toy")
    ap.add_argument("--warmup", type=float, default=None,
                    help="virtual seconds run unmeasured before the measured hours (default: 0 for a full hour, 120 when extrapolating)")
    ap.add_argument("--large-warmup", type=float, default=None, help="warm-up of the 10,000-peer run (default: --warmup)")
    ap.add_argument("--child", nargs=5, metavar=("PEERS", "HOURS", "FACTORY", "SEED", "WARMUP"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(int(a.child[0]), float(a.child[1]), a.child[2], int(a.child[3]), float(a.child[4]))))
        return
    if not 0 < a.hours <= 1.0:
        ap.error("--hours must be in (0, 1]")
    factory = a.factory or ("gossip" if _gossip_available() else "toy")
    fig: dict = {"factory": factory}
    if factory == "toy":
        fig["note"] = "measured with the toy core (arcnet.sims.toy), not the real gossip stack"
    fig.update(events_per_s())
    warmup = a.warmup if a.warmup is not None else (0.0 if a.hours >= 1.0 else 120.0)
    fig["warmup_s"] = warmup
    sizes = [(1000, a.hours, warmup)]
    if a.large:
        sizes.append((10000, a.large_hours or a.hours, a.large_warmup if a.large_warmup is not None else warmup))
    for peers, hours, warm in sizes:
        r = run_child(peers, hours, factory, warmup_s=warm)
        fig[f"wall_s_{peers}_peers_1h"] = round(r["run_wall_s"] / hours, 1)
        fig[f"cpu_s_{peers}_peers_1h"] = round(r["run_cpu_s"] / hours, 1)
        fig[f"extrapolated_{peers}"] = hours < 1.0
        fig[f"measured_hours_{peers}"] = hours
        fig[f"build_s_{peers}"] = r["build_wall_s"]
        for key in ("peak_rss_mib", "events", "ok", "regions", "bytes_per_peer_per_s", "messages_per_peer_per_s"):
            fig[f"{key}_{peers}"] = r[key]
    fig["trace_identical"] = trace_identical()
    if a.json:
        print(json.dumps(fig))
        return
    print(f"simulator benchmark (factory: {factory}{'; TOY CORE, not the gossip stack' if factory == 'toy' else ''})")
    rows = [
        ("events/s (toy core, WAN + energy, 1,000 peers)", f"{fig['events_per_s']:,}  ({fig['events_per_cpu_s']:,} per CPU s)"),
        ("  baseline: SimpleNetwork, no energy", f"{fig['baseline_events_per_s']:,}  ({fig['baseline_events_per_cpu_s']:,} per CPU s)"),
        ("1,000 peers x 1 h, wall s (target <= 600)",
         f"{fig['wall_s_1000_peers_1h']:,}{' (extrapolated from %g h)' % a.hours if fig['extrapolated_1000'] else ''}"
         f"  cpu {fig['cpu_s_1000_peers_1h']:,}  build {fig['build_s_1000']} s  rss {fig['peak_rss_mib_1000']} MiB"),
    ]
    if a.large:
        rows.append(("10,000 peers x 1 h, wall s (target <= 3600)",
                     f"{fig['wall_s_10000_peers_1h']:,}{' (extrapolated from %g h)' % fig['measured_hours_10000'] if fig['extrapolated_10000'] else ''}"
                     f"  cpu {fig['cpu_s_10000_peers_1h']:,}  build {fig['build_s_10000']} s"))
        rows.append(("peak RSS, 10,000 peers, MiB (target <= 2048)", f"{fig['peak_rss_mib_10000']:,}"))
    rows.append(("trace identical (same seed) / differs (other seed)", str(fig["trace_identical"])))
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")


if __name__ == "__main__":
    main()
