"""``arcnet blob``: publish, fetch, list and inspect content-addressed artifacts.

For now every command works on the local blob store of a data directory
(``--data-dir``; default ``$ARCNET_DATA_DIR`` or the XDG data dir), the same
store the peer daemon uses: ``put`` chunks, signs (with ``<data dir>/peer.key``,
made by ``arcnet init``) and pins a file; ``get`` writes an artifact out,
verified chunk by chunk; ``ls`` and ``stat`` show what is held. When the
daemon wiring lands, ``get`` fetches missing chunks from the swarm and
``stat`` lists the holders that gossip reports.

    arcnet blob put model.onnx --project vision --policy hot
    arcnet blob get 3fa9c2e1 -o model.onnx
    arcnet blob ls
    arcnet blob stat 3fa9c2e1
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .client import CliError

__all__ = ["blob"]

EXIT_FAILED, EXIT_USAGE = 1, 2
_USAGE_CODES = {"invalid", "locked"}


def _data_dir(data_dir: str | None) -> Path:
    from arcnet.mesh.config import default_data_dir

    return Path(data_dir) if data_dir else default_data_dir()


def _open_store(data_dir: str | None):
    from arcnet.blobstore.store import Store, StoreError

    try:
        return Store(_data_dir(data_dir))
    except StoreError as exc:
        raise CliError(str(exc), EXIT_USAGE if exc.code in _USAGE_CODES else EXIT_FAILED) from None


def _store_errors(fn):
    """Run ``fn`` turning StoreError into one line for the terminal."""
    from arcnet.blobstore.store import StoreError

    try:
        return fn()
    except StoreError as exc:
        raise CliError(str(exc), EXIT_USAGE if exc.code in _USAGE_CODES else EXIT_FAILED) from None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _info_dict(info) -> dict[str, Any]:
    return {
        "id": info.id_hex,
        "name": info.name,
        "version": info.version,
        "project": info.project,
        "media_type": info.media_type,
        "size": info.total_size,
        "chunks": info.chunk_count,
        "chunks_present": info.present_chunks,
        "complete": info.complete,
        "policy": info.policy,
        "pins": list(info.pins),
        "publisher": info.publisher,
        "created_s": info.created_s,
        "chunking": info.chunking,
    }


def _progress():
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
    )


data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), help="Peer data directory (default: XDG data dir).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def blob() -> None:
    """Content-addressed artifacts: models, datasets, checkpoints."""


@blob.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--project", default="default", show_default=True, help="Project (namespace) of the artifact.")
@click.option("--policy", type=click.Choice(["hot", "warm", "durable"]), default="warm", show_default=True,
              help="Replication: hot = every site, warm = N per region, durable = R regions.")
@click.option("--name", help="Artifact name (default: the file name).")
@click.option("--version", "version", default="", help="Version string.")
@click.option("--kind", type=click.Choice(["model", "dataset", "checkpoint"]),
              help="model: fixed 1 MiB chunks; dataset/checkpoint: content-defined (default: by file suffix).")
@click.option("--media-type", default="application/octet-stream", show_default=True)
@click.option("--key", type=click.Path(dir_okay=False), help="Signing key (default: <data dir>/peer.key).")
@data_dir_option
@json_option
def put(file, project, policy, name, version, kind, media_type, key, data_dir, as_json) -> None:
    """Publish FILE: chunk, compress where it pays, sign, store and pin it."""
    from arcnet.mesh.identity import Identity

    path = Path(file)
    ident = Identity.load(Path(key) if key else _data_dir(data_dir) / "peer.key")
    total = path.stat().st_size
    with _open_store(data_dir) as store:
        quiet = as_json or total < (8 << 20)
        if quiet:
            aid, m = _store_errors(
                lambda: store.put_file(path, identity=ident, name=name, kind=kind, version=version, project=project,
                                       media_type=media_type, policy=policy)
            )
        else:
            with _progress() as bar:
                task = bar.add_task(f"put {path.name}", total=total)
                aid, m = _store_errors(
                    lambda: store.put_file(path, identity=ident, name=name, kind=kind, version=version, project=project,
                                           media_type=media_type, policy=policy,
                                           progress=lambda n: bar.advance(task, n))
                )
        info = store.stat(aid)
    out = _info_dict(info)
    if as_json:
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        click.echo(f"{out['id']}  {out['name']}  {_size(out['size'])} in {out['chunks']} chunks ({out['chunking']}), "
                   f"policy {policy}")


@blob.command()
@click.argument("artifact_id", metavar="ID")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where to write it (default: the artifact's name).")
@data_dir_option
def get(artifact_id, output, data_dir) -> None:
    """Write artifact ID (hex, or a unique prefix of 8+ digits) to a file, verifying every chunk."""
    with _open_store(data_dir) as store:
        aid = _store_errors(lambda: store.resolve(artifact_id))
        info = _store_errors(lambda: store.stat(aid))
        if not info.complete:
            raise CliError(
                f"{info.name}: {info.chunk_count - info.present_chunks} of {info.chunk_count} chunks are not here; "
                "fetching from other peers needs a running peer",
                EXIT_FAILED,
            )
        dest = Path(output) if output else Path(Path(info.name).name)
        with _progress() as bar:
            task = bar.add_task(f"get {info.name}", total=info.total_size)
            n = _store_errors(lambda: store.export(aid, dest, progress=lambda k: bar.advance(task, k)))
    click.echo(f"{dest}  {_size(n)}  verified")


@blob.command(name="ls")
@data_dir_option
@json_option
def ls_(data_dir, as_json) -> None:
    """List the artifacts in the local store."""
    with _open_store(data_dir) as store:
        infos = [_info_dict(i) for i in store.list_artifacts()]
    if as_json:
        click.echo(json.dumps(infos, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="artifacts")
    for c in ("id", "name", "version", "project", "size", "chunks", "policy", "pinned"):
        t.add_column(c)
    for o in infos:
        chunks = f"{o['chunks_present']}/{o['chunks']}"
        t.add_row(o["id"][:16], o["name"], o["version"], o["project"], _size(o["size"]), chunks, o["policy"],
                  ",".join(o["pins"]) or "-")
    Console().print(t)


@blob.command()
@click.argument("artifact_id", metavar="ID")
@data_dir_option
@json_option
def stat(artifact_id, data_dir, as_json) -> None:
    """Show one artifact: size, chunks, who holds it."""
    with _open_store(data_dir) as store:
        aid = _store_errors(lambda: store.resolve(artifact_id))
        out = _info_dict(_store_errors(lambda: store.stat(aid)))
        me = _local_peer_id(data_dir)
        out["holders"] = [{"peer": me, "chunks": out["chunks_present"], "where": "local"}] if out["chunks_present"] else []
    if as_json:
        click.echo(json.dumps(out, indent=2, sort_keys=True))
        return
    for k in ("id", "name", "version", "project", "media_type", "size", "chunking", "chunks", "chunks_present",
              "complete", "policy", "pins", "publisher", "created_s"):
        v = out[k]
        if k == "size":
            v = f"{v} ({_size(v)})"
        click.echo(f"{k:<15} {v}")
    for h in out["holders"]:
        click.echo(f"{'holder':<15} {h['peer']} ({h['where']}, {h['chunks']} chunks)")


def _local_peer_id(data_dir: str | None) -> str:
    from arcnet.mesh.identity import Identity, IdentityError

    try:
        return Identity.load(_data_dir(data_dir) / "peer.key").peer_id
    except IdentityError:
        return "this peer"
