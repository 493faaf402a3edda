"""Job and operator commands: submit, jobs, job show|rerun, result, drain, undrain, join."""

from __future__ import annotations

import io
import json
import os
import time
import tomllib
from pathlib import Path
from typing import Any

import click

from .client import CliError, call, resolve_peer

EXIT_USAGE = 2
INLINE_MAX_BYTES = 900 * 1024

peer_option = click.option("--peer", "peer", metavar="MULTIADDR", help="Any peer of the mesh (default: $ARCNET_PEER or the local peer).")
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), help="Local peer's data directory.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _emit(obj: Any, as_json: bool, render) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    else:
        render(obj)


def _json_default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray)):
        return {"bytes": len(o)}
    return str(o)


def _read_input(target: str, name: str, path: Path) -> Any:
    """Inline bytes for small inputs; an artifact put from the file for large ones (local peers)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CliError(f"input {name}: {path}: {exc.strerror}", EXIT_USAGE) from None
    if size <= INLINE_MAX_BYTES:
        return path.read_bytes()
    res = call(target, "blob.put", {"path": str(path.resolve()), "name": f"input:{name}"}, timeout_s=120)
    return "artifact:" + res["id"]


def load_job_file(path: str) -> dict[str, Any]:
    """A job description in TOML (see examples/jobs/*.toml); input paths relative to the file."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise CliError(f"{path}: file not found", EXIT_USAGE) from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path}: not valid TOML: {exc}", EXIT_USAGE) from None
    known = {"kind", "model", "class", "project", "regions", "capabilities", "slots", "run_s", "deadline_s",
             "latency_budget_s", "params", "inputs", "gpu_strict"}
    for key in doc:
        if key not in known:
            raise CliError(f"{path}: {key}: unknown key (known: {', '.join(sorted(known))})", EXIT_USAGE)
    inputs = doc.get("inputs", {})
    if not isinstance(inputs, dict):
        raise CliError(f"{path}: inputs: expected a table of name = \"file\"", EXIT_USAGE)
    doc["inputs"] = {k: (v if v.startswith("artifact:") else str((p.parent / v).resolve()))
                     for k, v in inputs.items() if isinstance(v, str)}
    return doc


@click.command()
@click.argument("job_file", required=False, type=click.Path(dir_okay=False))
@click.option("--model", help="Model: name, name@version or model id.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE", help="An input (repeatable); FILE may be artifact:<id>.")
@click.option("--kind", type=click.Choice(["online", "batch", "finetune", "workflow"]), help="Job kind (default online).")
@click.option("--param", "params", multiple=True, metavar="KEY=JSON", help="A parameter (repeatable).")
@click.option("--region", "regions", multiple=True, help="Allowed region (repeatable; data residency).")
@click.option("--project", default=None, help="Project namespace.")
@click.option("--wait/--no-wait", default=False, help="Wait until the job is done and show it.")
@click.option("--timeout", "timeout_s", default=300.0, show_default=True, help="With --wait: give up after this many seconds.")
@peer_option
@data_dir_option
@json_option
def submit(job_file, model, inputs, kind, params, regions, project, wait, timeout_s, peer, data_dir, as_json) -> None:
    """Submit a job to any peer: JOB.toml, or --model M --input NAME=FILE."""
    target = resolve_peer(peer, data_dir)
    doc: dict[str, Any] = load_job_file(job_file) if job_file else {}
    if model:
        doc["model"] = model
    if kind:
        doc["kind"] = kind
    if project:
        doc["project"] = project
    if regions:
        doc["regions"] = list(regions)
    doc.setdefault("kind", "online")
    doc.setdefault("inputs", {})
    for item in inputs:
        name, sep, path = item.partition("=")
        if not sep:
            raise CliError(f"--input {item!r}: expected NAME=FILE", EXIT_USAGE)
        doc["inputs"][name] = path
    p = doc.setdefault("params", {})
    for item in params:
        k, sep, v = item.partition("=")
        if not sep:
            raise CliError(f"--param {item!r}: expected KEY=JSON", EXIT_USAGE)
        try:
            p[k] = json.loads(v)
        except json.JSONDecodeError:
            p[k] = v
    if not doc.get("model") and doc["kind"] != "workflow":
        raise CliError("a model is required: --model NAME[@VERSION] or model = \"...\" in the job file", EXIT_USAGE)
    doc["inputs"] = {name: (path if path.startswith("artifact:") else _read_input(target, name, Path(path)))
                     for name, path in doc["inputs"].items()}
    res = call(target, "submit", doc, timeout_s=60)
    job_id = res["job_id"]
    if not wait:
        _emit(res, as_json, lambda o: click.echo(f"submitted {o['job_id']} (entry peer {o['entry'][-8:]}); "
                                                 f"follow it with: arcnet job show {o['job_id']}"))
        return
    deadline = time.monotonic() + timeout_s
    show: dict[str, Any] = {}
    while time.monotonic() < deadline:
        show = call(target, "job.show", {"job_id": job_id})
        if show.get("state") in ("done", "failed"):
            break
        time.sleep(0.5)
    else:
        raise CliError(f"job {job_id} not finished after {timeout_s:.0f} s (state {show.get('state')})", 1)
    _emit(show, as_json, _render_show)
    if show.get("state") != "done":
        raise SystemExit(1)


@click.command(name="jobs")
@click.option("--limit", default=50, show_default=True)
@peer_option
@data_dir_option
@json_option
def jobs_cmd(limit, peer, data_dir, as_json) -> None:
    """Jobs submitted through a peer, newest last."""
    res = call(resolve_peer(peer, data_dir), "jobs", {"limit": limit})

    def render(o):
        from rich.console import Console
        from rich.table import Table

        t = Table(title="jobs")
        for c in ("job", "kind", "state", "executor", "attempts", "output / error"):
            t.add_column(c)
        for j in o["jobs"]:
            t.add_row(j["job_id"], j["kind"], j["state"], j["executor"][-8:], str(j["attempts"]), j["output"][:12] or j.get("error", "")[:40])
        Console().print(t)

    _emit(res, as_json, render)


def _render_show(o: dict[str, Any]) -> None:
    click.echo(f"job {o['job_id']}: {o.get('state', o.get('custody', {}).get('state', '?'))}"
               f" ({o.get('kind', '?')}, attempts {o.get('attempts', 0)})")
    if o.get("executor"):
        click.echo(f"  executor  {o['executor']}")
    pl = o.get("placement")
    if pl:
        click.echo(f"  placement won by {pl.get('executor', '')[-8:]}: cost {pl.get('cost_s', 0):.2f} s "
                   f"(completion {pl.get('completion_s', 0):.2f} s), surplus energy {pl.get('surplus_fraction', 0):.0%}, "
                   f"{pl.get('bids', 0)} bids of {pl.get('asked', 0)} asked, {pl.get('near_best', 0)} within 5%")
    if o.get("output"):
        click.echo(f"  output    {o['output']}")
    if o.get("error"):
        click.echo(f"  error     {o['error']}")
    for e in o.get("events", []):
        extra = " ".join(f"{k}={str(v)[-12:]}" for k, v in e.items() if k not in ("t", "event", "job", "task"))
        click.echo(f"  {time.strftime('%H:%M:%S', time.localtime(e['t']))} {e['event']:<16} {extra}")


@click.group(name="job")
def job_group() -> None:
    """Inspect or re-run one job."""


@job_group.command(name="show")
@click.argument("job_id")
@peer_option
@data_dir_option
@json_option
def job_show(job_id, peer, data_dir, as_json) -> None:
    """State, placement reasons and attempts of a job."""
    _emit(call(resolve_peer(peer, data_dir), "job.show", {"job_id": job_id}), as_json, _render_show)


@job_group.command(name="rerun")
@click.argument("job_id")
@peer_option
@data_dir_option
@json_option
def job_rerun(job_id, peer, data_dir, as_json) -> None:
    """Re-run a finished job on the entry peer (CPU) and check the outputs bit for bit."""
    res = call(resolve_peer(peer, data_dir), "job.rerun", {"job_id": job_id}, timeout_s=300)
    _emit(res, as_json, lambda o: click.echo(
        f"rerun of {o['job_id']}: outputs {'identical' if o['identical'] else 'DIFFER'} "
        f"({', '.join(f'{k}={v}' for k, v in o['outputs'].items())})"))
    if not res["identical"]:
        raise SystemExit(1)


@click.command()
@click.argument("job_id")
@click.option("-o", "--output", "out", type=click.Path(), help="Directory for the outputs (one file each) and manifest.json.")
@peer_option
@data_dir_option
@json_option
def result(job_id, out, peer, data_dir, as_json) -> None:
    """Fetch a finished job's outputs through any peer."""
    import msgpack

    target = resolve_peer(peer, data_dir)
    args: dict[str, Any] = {"job_id": job_id}
    tmp = None
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        tmp = Path(out).resolve() / ".result.bin"
        args["path"] = str(tmp)
    res = call(target, "result", args, timeout_s=120)
    if "path" in res:  # too big to travel inline: the (local) peer wrote it where we asked
        doc = msgpack.unpackb(Path(res["path"]).read_bytes(), raw=False)
        os.unlink(res["path"])
        from arcnet.runtime.manifest import RunManifest

        res = {"job_id": job_id, "output": res["output"], "outputs": doc["outputs"],
               "manifest": RunManifest.from_bytes(doc["manifest"]).to_plain()}
    if out:
        for name, data in res["outputs"].items():
            (Path(out) / _filename(name, data)).write_bytes(data)
        (Path(out) / "manifest.json").write_text(json.dumps(res["manifest"], indent=2, sort_keys=True, default=str))
    summary = {"job_id": job_id, "output": res["output"], "outputs": {k: len(v) for k, v in res["outputs"].items()},
               "manifest": res["manifest"], "written_to": out or ""}

    def render(o):
        m = o["manifest"]
        click.echo(f"job {o['job_id']} output {o['output'][:16]}: " +
                   ", ".join(f"{k} ({v} bytes)" for k, v in o["outputs"].items()))
        click.echo(f"  ran on {m.get('peer', '')[-8:]} with {m.get('model_name')}@{m.get('model_version')} "
                   f"on {m.get('provider')}, {m.get('timings_ms', {}).get('total', 0):.1f} ms, "
                   f"{m.get('energy_j', 0):.2f} J")
        if _preview(res["outputs"]):
            click.echo(f"  {_preview(res['outputs'])}")
        if o["written_to"]:
            click.echo(f"  written to {o['written_to']}/")

    _emit(summary, as_json, render)


def _filename(name: str, data: bytes) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "output"
    return safe + (".npy" if data[:6] == b"\x93NUMPY" else ".bin")


def _preview(outputs: dict[str, bytes]) -> str:
    import numpy as np

    for name, data in outputs.items():
        if data[:6] == b"\x93NUMPY":
            a = np.load(io.BytesIO(data), allow_pickle=False)
            if a.ndim == 2 and a.shape[0] <= 64:
                return f"{name}: shape {a.shape}, argmax per row {a.argmax(axis=1).tolist()[:16]}"
            return f"{name}: shape {a.shape}, dtype {a.dtype}"
    return ""


@click.command()
@peer_option
@data_dir_option
@json_option
def drain(peer, data_dir, as_json) -> None:
    """Stop taking new work on a peer (it finishes what runs, keeps serving artifacts)."""
    _emit(call(resolve_peer(peer, data_dir), "drain"), as_json,
          lambda o: click.echo(f"{o['peer_id']} is draining: it bids on nothing new"))


@click.command()
@peer_option
@data_dir_option
@json_option
def undrain(peer, data_dir, as_json) -> None:
    """Let a drained peer take work again."""
    _emit(call(resolve_peer(peer, data_dir), "undrain"), as_json,
          lambda o: click.echo(f"{o['peer_id']} takes work again"))


@click.command()
@click.option("--bootstrap", "bootstrap", required=True, multiple=True, metavar="MULTIADDR", help="A peer of the mesh (repeatable).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="This node's data directory.")
@click.option("--region", default=None, help="Region of this site (default: keep the config's).")
@click.option("--baseline", "baseline", multiple=True, metavar="ARTIFACT", help="Artifact to pull before taking work (repeatable).")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True)
def join(bootstrap, data_dir, region, baseline, timeout_s) -> None:
    """Join this node to a mesh: write the bootstrap into its config, start it drained, pull
    the baseline artifacts, then advertise it ready (undrain)."""
    import subprocess
    import sys

    from arcnet.mesh.config import default_config_text, default_data_dir, load_config
    from arcnet.mesh.identity import Identity

    dd = Path(data_dir) if data_dir else default_data_dir()
    dd.mkdir(parents=True, exist_ok=True)
    ident = Identity.load_or_create(dd / "peer.key")
    cfg_path = dd / "config.toml"
    cfg = load_config(cfg_path) if cfg_path.exists() else None
    text = default_config_text(
        listen=(cfg.listen[0] if cfg else "/ip4/127.0.0.1/tcp/0"), bootstrap=list(bootstrap),
        region=region or (cfg.region if cfg else "default"),
        latitude=cfg.latitude if cfg else 0.0, longitude=cfg.longitude if cfg else 0.0,
        roles=cfg.roles if cfg else ["site"], metrics_listen=cfg.metrics_listen if cfg else "127.0.0.1:0")
    cfg_path.write_text(text)
    (dd / "draining").write_text("joining: pulling baseline artifacts\n")
    log = open(dd / "peer.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "arcnet.cli.peer", "--config", str(cfg_path)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run_file = dd / "run" / "peer.json"
    deadline = time.monotonic() + timeout_s
    while not run_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise CliError(f"the peer did not start; see {dd / 'peer.log'}", 1)
        time.sleep(0.1)
    addr = json.loads(run_file.read_text())["addrs"][0]
    click.echo(f"started {ident.peer_id} (pid {proc.pid}), joining through {len(bootstrap)} bootstrap peer(s)")
    while time.monotonic() < deadline:
        members = call(addr, "peers")["members"]
        if sum(1 for m in members if m["state"] == "alive") > 1:
            break
        time.sleep(0.5)
    else:
        raise CliError("joined no one: check the bootstrap addresses", 3)
    for aid in baseline:
        click.echo(f"pulling baseline artifact {aid[:16]}...")
        call(addr, "blob.fetch", {"id": aid}, timeout_s=timeout_s)
    call(addr, "undrain")
    click.echo(f"ready: {ident.peer_id} takes work (logs in {dd / 'peer.log'})")


COMMANDS = [submit, jobs_cmd, job_group, result, drain, undrain, join]
