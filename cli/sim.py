"""`arcnet sim`: run scenarios on the simulator (thousands of peers, virtual time, one process).

    arcnet sim run day-200-sites                  # a shipped scenario, by name
    arcnet sim run my.toml -o out/ --seed 9       # any scenario file, another seed
    arcnet sim run my.toml --factory toy --hours 1
    arcnet sim scenarios                          # list the shipped scenarios

A run prints its faults before it starts, shows a progress bar over virtual
time, and writes ``trace.txt.gz``, ``report.json`` and four PNGs to the
output folder. It ends with the trace hash and the one line that reproduces
it; a broken invariant prints the seed and that line and exits 1. A bad
scenario is one line naming the key, exit 2.

Imports of the simulator are deferred into the commands, so mounting this
group costs the main CLI nothing.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

__all__ = ["sim"]

EXIT_VIOLATION = 1
EXIT_USAGE = 2


def _shipped() -> dict[str, Path]:
    here = Path(__file__).resolve().parent.parent / "sims" / "scenarios"
    try:
        import arcnet.sims as pkg

        here = Path(pkg.__file__).resolve().parent / "scenarios"
    except Exception:  # pragma: no cover - the package is always importable when installed
        pass
    return {p.stem: p for p in sorted(here.glob("*.toml"))}


def _resolve(scenario: str) -> Path:
    p = Path(scenario)
    if p.exists():
        return p
    shipped = _shipped()
    if scenario in shipped:
        return shipped[scenario]
    if p.suffix == "" and p.name in shipped:
        return shipped[p.name]
    return p  # load_scenario reports "no such scenario file"


@click.group("sim")
def sim() -> None:
    """Simulate a mesh: the real protocol cores on virtual time, with WAN, faults, solar and batteries."""


@sim.command("scenarios")
def scenarios() -> None:
    """List the scenarios shipped with arcnet."""
    for name, path in _shipped().items():
        click.echo(f"{name:24} {path}")


@sim.command("run")
@click.argument("scenario")
@click.option("-o", "--out", "outdir", type=click.Path(file_okay=False), help="Output folder (default: sim-out/NAME-seedN).")
@click.option("--seed", type=int, help="Seed instead of the scenario's.")
@click.option("--factory", help="Node factory instead of the scenario's: gossip, toy, or module:function.")
@click.option("--hours", type=float, help="Stop after this many virtual hours (default: the scenario's duration).")
@click.option("--no-trace", is_flag=True, help="Do not write trace.txt.gz (the hash is computed anyway).")
@click.option("--no-plots", is_flag=True, help="Do not write the PNG plots.")
@click.option("--quiet", is_flag=True, help="No fault list and no progress bar.")
def run(scenario, outdir, seed, factory, hours, no_trace, no_plots, quiet) -> None:
    """Run SCENARIO (a .toml file, or the name of a shipped scenario)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from arcnet.sims.faults import format_duration
    from arcnet.sims.report import write_plots, write_report
    from arcnet.sims.scenario import Run, ScenarioError, load_scenario, resolve_factory

    console = Console(stderr=False, highlight=False)
    err = Console(stderr=True, highlight=False)
    path = _resolve(scenario)
    try:
        sc = load_scenario(path, seed=seed)
        node_factory = resolve_factory(factory or sc.factory)
    except ScenarioError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(EXIT_USAGE)
    if hours is not None and hours <= 0:
        err.print("[red]error:[/red] --hours must be > 0")
        sys.exit(EXIT_USAGE)
    out = Path(outdir) if outdir else Path("sim-out") / f"{sc.name}-seed{sc.seed}"
    out.mkdir(parents=True, exist_ok=True)

    repro = ["arcnet", "sim", "run", str(scenario), "--seed", str(sc.seed)]
    if factory:
        repro += ["--factory", factory]
    if hours is not None:
        repro += ["--hours", repr(hours)]
    if outdir:
        repro += ["-o", str(outdir)]
    reproduce = " ".join(shlex.quote(x) for x in repro)

    trace_path = None if (no_trace or not sc.trace) else str(out / "trace.txt.gz")
    if not quiet:
        console.print(f"[bold]{escape(sc.name)}[/bold] seed {sc.seed}: building {sc.sites.count} peers ...")
    try:
        r = Run(sc, factory=node_factory, trace_path=trace_path, reproduce=reproduce, factory_name=factory or sc.factory)
    except ScenarioError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(EXIT_USAGE)
    until = sc.duration_s if hours is None else min(sc.duration_s, hours * 3600.0)
    if not quiet:
        regions = ", ".join(f"{k} {v['sites']}" for k, v in r.catalog.summary().items())
        console.print(f"peers {len(r.peer_ids)} ({regions}); factory {r.factory_name}; start {sc.start.isoformat()}; "
                      f"virtual {format_duration(until)}; built in {r.build_s:.1f} s", soft_wrap=True, markup=False)
        console.print(f"faults ({len(r.faults)}):")
        for line in [f for f in _fault_lines(r)]:
            console.print(f"  {line}", soft_wrap=True, markup=False)

    if quiet:
        res = r.run(until)
    else:
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[vt]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as prog:
            task = prog.add_task("virtual time", total=until, vt=format_duration(0.0))

            def progress(now: float) -> None:
                prog.update(task, completed=now, vt=format_duration(now))

            res = r.run(until, progress=progress)
            prog.update(task, completed=until, vt=format_duration(res.virtual_s))

    write_report(res.report, out)
    plots = [] if (no_plots or not sc.plots) else write_plots(res.report, out)
    console.print(f"events {res.events:,} in {res.wall_s:.1f} s ({res.events / max(res.wall_s, 1e-9):,.0f}/s); "
                  f"report {out / 'report.json'}" + (f"; plots {len(plots)}" if plots else "")
                  + (f"; trace {trace_path}" if trace_path else ""), soft_wrap=True, markup=False)
    console.print(f"trace hash {res.trace_hash}")
    if not res.ok:
        err.print(f"[red]INVARIANT VIOLATED[/red] {escape(str(res.violation))}", soft_wrap=True)
        err.print(f"seed {res.seed}; reproduce: {reproduce}", soft_wrap=True, markup=False)
        sys.exit(EXIT_VIOLATION)
    console.print(f"reproduce: {reproduce}", soft_wrap=True, markup=False)


def _fault_lines(r) -> list[str]:
    from arcnet.sims.faults import format_fault

    return [format_fault(f) for f in r.faults]


if __name__ == "__main__":  # python -m arcnet.cli.sim run ...
    sim()
