"""``arcnet model``: publish ONNX models with signed metadata, and list the catalog.

For now both commands work on a local model directory (see
:class:`arcnet.runtime.store.ModelDir`): ``<data dir>/models`` by default,
``--dir`` to choose another. ``publish`` signs with the peer's key
(``<data dir>/peer.key``, made by ``arcnet init``; ``--key`` for another).
When the daemon wiring lands, ``publish`` will hand the model to the blob
store and the entry to catalog gossip instead.

    arcnet model publish clf.onnx --name clf --version 1.0.0 --task classify --score accuracy=0.93
    arcnet model ls --task classify
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from .client import CliError, call

__all__ = ["model"]

EXIT_USAGE = 2
MODEL_FILE_MAX_BYTES = 2 << 30


def _dirs(data_dir: str | None, model_dir: str | None) -> tuple[Path, Path]:
    from arcnet.mesh.config import default_data_dir

    dd = Path(data_dir) if data_dir else default_data_dir()
    return dd, Path(model_dir) if model_dir else dd / "models"


def _mesh_target(peer: str | None, data_dir: str | None, model_dir: str | None) -> str | None:
    """The peer to talk to in mesh mode, or None for the local model directory."""
    import os

    from .client import resolve_peer

    if peer or os.environ.get("ARCNET_PEER"):
        return resolve_peer(peer, data_dir)
    if model_dir is None:
        try:
            return resolve_peer(None, data_dir)
        except CliError:
            return None
    return None


def _emit(obj: Any, as_json: bool, render) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
    else:
        render(obj)


def _parse_scores(items: tuple[str, ...]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for item in items:
        metric, sep, value = item.partition("=")
        try:
            if not sep or not metric:
                raise ValueError
            scores[metric] = float(value)
        except ValueError:
            raise CliError(f"--score {item!r}: expected METRIC=NUMBER, e.g. accuracy=0.93", EXIT_USAGE) from None
    return scores


def _feeds(entry_inputs, rows: int) -> dict[str, np.ndarray]:
    """Inputs for a latency profile: symbolic axes set to ``rows`` (first) or 1; zeros for integers."""
    rng = np.random.default_rng(0)
    feeds = {}
    for t in entry_inputs:
        shape = [int(d) if d.isdigit() else (rows if i == 0 else 1) for i, d in enumerate(t.shape)]
        dtype = np.dtype(t.dtype)
        if dtype.kind == "f":
            feeds[t.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[t.name] = np.zeros(shape, dtype=dtype)  # ids of 0 are valid for any table
    return feeds


def _profile(data: bytes, inputs) -> dict[str, float]:
    from arcnet.runtime.executor import Executor, ExecutorConfig

    ex = Executor(ExecutorConfig(provider="cpu"))
    one = ex.profile("profile", _feeds(inputs, 1), model=data)
    many = ex.profile("profile", _feeds(inputs, 32), model=data)
    return {"p50_ms": one["p50_ms"], "per_item_ms": max(0.0, (many["p50_ms"] - one["p50_ms"]) / 31)}


@click.group()
def model() -> None:
    """Publish ONNX models and list the model catalog."""


@model.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="Model name: lower-case letters, digits, '.', '_', '-'.")
@click.option("--version", "version", required=True, help="Dotted integers, e.g. 1.2.0.")
@click.option("--task", required=True, help="What it does: classify, score, embed, ...")
@click.option("--project", default="public", show_default=True, help="Project namespace.")
@click.option("--parent", "parent", default="", help="Model id (or name@version in the catalog) it derives from.")
@click.option("--score", "scores", multiple=True, metavar="METRIC=VALUE", help="Evaluation score (repeatable).")
@click.option("--profile/--no-profile", default=True, show_default=True, help="Measure latency here on CPU.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Peer data directory (default: XDG data dir).")
@click.option("--dir", "model_dir", type=click.Path(file_okay=False), help="Model directory (default: DATA_DIR/models).")
@click.option("--key", "key_path", type=click.Path(dir_okay=False), help="Publisher key (default: DATA_DIR/peer.key).")
@click.option("--peer", "peer", metavar="MULTIADDR", help="Publish to the mesh through this peer.")
@click.option("--policy", default="warm", show_default=True, type=click.Choice(["cache", "hot", "warm", "durable"]),
              help="Replication policy of the model artifact (mesh mode).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def publish(path, name, version, task, project, parent, scores, profile, data_dir, model_dir, key_path, peer, policy,
            as_json) -> None:
    """Sign and store MODEL.onnx with its metadata (signature read from the graph).

    With --peer (or $ARCNET_PEER, or a peer running on --data-dir) the model is
    published to the mesh: stored as an artifact and registered in the mesh's
    catalog. With --dir, or no peer, it goes to a local model directory.
    """
    target = _mesh_target(peer, data_dir, model_dir)
    if target:
        data = Path(path).read_bytes()
        args = {"model": data, "name": name, "version": version, "task": task, "project": project,
                "parent": parent, "scores": _parse_scores(scores), "policy": policy}
        res = call(target, "model.publish", args, timeout_s=60)
        _emit(res, as_json, lambda o: click.echo(
            f"published {o['name']}@{o['version']} to the mesh\n  model id   {o['model_id']}\n"
            f"  artifact   {o['artifact']}\n  catalog on {o['catalog_peers']} peers"))
        return
    from arcnet.mesh.identity import Identity, IdentityError
    from arcnet.runtime.catalog import CatalogError, describe, entry_summary, sign_meta
    from arcnet.runtime.store import ModelDir, content_id

    dd, mdir = _dirs(data_dir, model_dir)
    key = Path(key_path) if key_path else dd / "peer.key"
    try:
        ident = Identity.load(key)
    except IdentityError as exc:
        raise CliError(f"{exc}; or pass --key FILE", EXIT_USAGE) from None
    size = Path(path).stat().st_size
    if size > MODEL_FILE_MAX_BYTES:
        raise CliError(f"{path}: {size} bytes exceeds the {MODEL_FILE_MAX_BYTES}-byte model limit", EXIT_USAGE)
    data = Path(path).read_bytes()
    store = ModelDir(mdir)
    catalog = store.load_catalog()
    parent_id = parent
    if parent and not parent.startswith("blake3:"):
        pe = catalog.resolve(parent)
        if pe is None:
            raise CliError(f"--parent {parent!r}: not in the catalog at {mdir}; give its model id", EXIT_USAGE)
        parent_id = pe.meta.model_id
    model_id = content_id(data)
    kw = dict(
        name=name, version=version, task=task, model_id=model_id, publisher=ident.peer_id,
        published_s=int(time.time()), project=project, parent_id=parent_id, scores=_parse_scores(scores),
    )  # fmt: skip
    try:
        meta = describe(data, **kw)  # first: it checks the graph and the names before anything runs
    except CatalogError as exc:
        raise CliError(f"{path}: {exc}", EXIT_USAGE) from None
    existing = catalog.get(name, version)
    if existing is not None:
        if existing.meta.model_id == model_id:
            _emit(entry_summary(existing), as_json, lambda o: click.echo(f"{name}@{version} already published as {model_id}"))
            return
        raise CliError(f"{name}@{version} is already published with other bytes; publish a new --version", 1)
    if profile:
        try:
            lat = _profile(data, meta.inputs)
        except Exception as exc:  # noqa: BLE001 - any onnxruntime failure: the model does not run here
            raise CliError(f"{path}: onnxruntime cannot run it ({str(exc).splitlines()[0][:200]}); "
                           f"fix the model or pass --no-profile", 1) from None  # fmt: skip
        meta = describe(data, **kw, latency_ms_p50=lat["p50_ms"], latency_ms_per_item=lat["per_item_ms"])
    entry = sign_meta(meta, ident)
    store.put(data)
    store.save_entry(entry)
    summary = entry_summary(entry)

    def render(o):
        click.echo(f"published {o['name']}@{o['version']} ({o['task']})")
        click.echo(f"  model id   {o['model_id']}")
        click.echo(f"  inputs     {', '.join(o['inputs'])}")
        click.echo(f"  outputs    {', '.join(o['outputs'])}")
        click.echo(f"  latency    {o['latency_ms_p50']:.3f} ms p50 at batch 1, +{o['latency_ms_per_item']:.4f} ms/item")
        click.echo(f"  publisher  {o['publisher']}")

    _emit(summary, as_json, render)


@model.command(name="ls")
@click.option("--task", default=None, help="Only models of this task.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Peer data directory (default: XDG data dir).")
@click.option("--dir", "model_dir", type=click.Path(file_okay=False), help="Model directory (default: DATA_DIR/models).")
@click.option("--peer", "peer", metavar="MULTIADDR", help="List the mesh's catalog through this peer.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def ls(task, data_dir, model_dir, peer, as_json) -> None:
    """List the catalog: every verified entry, and any entry file that failed verification."""
    target = _mesh_target(peer, data_dir, model_dir)
    if target:
        res = call(target, "model.ls", {"task": task} if task else {})

        def render_mesh(o):
            from rich.console import Console
            from rich.table import Table

            t = Table(title="models in the mesh catalog")
            for c in ("name", "version", "task", "model id", "artifact", "parent", "publisher"):
                t.add_column(c)
            for m in o["models"]:
                t.add_row(m["name"], m["version"], m["task"], m["model_id"][7:19], m["artifact"][:12],
                          (m["parent"] or "-")[:19], m["publisher"])
            Console().print(t)

        _emit(res, as_json, render_mesh)
        return
    from arcnet.runtime.catalog import Catalog, ModelEntry, entry_summary
    from arcnet.runtime.store import ModelDir

    _, mdir = _dirs(data_dir, model_dir)
    store = ModelDir(mdir)
    catalog = Catalog()
    invalid = []
    for p, e in store.iter_entries():
        if isinstance(e, ModelEntry):
            catalog.add(e)
        else:
            invalid.append({"file": str(p), "error": str(e)})
    entries = [entry_summary(e) for e in catalog.entries(task)]
    for s in entries:
        parent = catalog.by_id(s["parent_id"]) if s["parent_id"] else None
        s["parent"] = f"{parent.meta.name}@{parent.meta.version}" if parent else s["parent_id"]
        s["present"] = s["model_id"] in store
    out = {"dir": str(mdir), "models": entries, "invalid": invalid}

    def render(o):
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        t = Table(title=f"models in {o['dir']}")
        for c in ("name", "version", "task", "model id", "inputs -> outputs", "p50 ms", "scores", "parent", "publisher"):
            t.add_column(c)
        for s in o["models"]:
            t.add_row(
                s["name"], s["version"], s["task"], s["model_id"][7:19] + ("" if s["present"] else " (missing)"),
                escape(" ".join(s["inputs"]) + " -> " + " ".join(x.split(":")[0] for x in s["outputs"])),
                f"{s['latency_ms_p50']:.3f}" if s["latency_ms_p50"] else "-",
                " ".join(f"{k}={v:.3g}" for k, v in s["scores"].items()) or "-",
                s["parent"][:24] or "-", s["publisher"][-8:],
            )  # fmt: skip
        console = Console()
        console.print(t)
        for bad in o["invalid"]:
            console.print(f"[red]refused[/red] {escape(bad['file'])}: {escape(bad['error'])}")

    _emit(out, as_json, render)
