"""``arcnet blob``: publish, fetch, list and inspect content-addressed artifacts.

Every command talks to a running peer through the control protocol
(``--peer MULTIADDR``, else ``$ARCNET_PEER``, else the local peer of
``--data-dir``): ``put`` publishes a file from that peer (signed by its key,
pinned there) with a replication policy; ``get`` makes the peer fetch the
artifact from the mesh (progress bar while chunks arrive) and writes it to
a file; ``ls`` lists the peer's store; ``stat`` shows size, chunks and who
holds it (the peer's gossip view and the artifact's holder directory).

How bytes cross the control path (a control message is at most 1 MiB): a
file of at most 900 KiB travels inline; a larger file is handed to the peer
as a path, which works when the peer runs on this machine (a loopback
address, or the local peer of ``--data-dir``) and can read the file.
``get`` of a large artifact from a peer on this machine has the peer write
the file; from a remote peer it reads 900 KiB windows.

``--local-dir DIR`` works on the blob store of a data directory directly,
without a peer (the peer must not be running on it): for offline
inspection and for preparing a store.

    arcnet blob put model.onnx --project vision --policy hot
    arcnet blob get 3fa9c2e1... -o model.onnx
    arcnet blob ls --json
    arcnet blob stat 3fa9c2e1...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from .client import CliError

__all__ = ["blob"]

EXIT_FAILED, EXIT_USAGE = 1, 2
_USAGE_CODES = {"invalid", "locked"}
INLINE_BYTES_MAX = 900 << 10  # what one control message carries (blobstore.service.BlobConfig.inline_bytes_max)


# -- talking to a peer -------------------------------------------------------------------------


def _target(peer: str | None, data_dir: str | None) -> tuple[str, bool]:
    """The peer's multiaddr, and whether it runs on this machine (so it can read and write our paths)."""
    from .client import resolve_peer

    addr = resolve_peer(peer, data_dir)
    host = addr.split("/")[2] if addr.count("/") >= 3 else ""
    local = host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.") or (not peer and not os.environ.get("ARCNET_PEER"))
    return addr, local


def _session(fn):
    """Run ``await fn(client)`` with one control client for the whole command."""
    import trio

    from .client import Client

    async def main():
        async with Client() as c:
            return await fn(c)

    return trio.run(main)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _progress():
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
    )


def _print_info(out: dict[str, Any]) -> None:
    for k in ("id", "name", "version", "project", "media_type", "size", "chunking", "chunks", "chunks_present",
              "complete", "policy", "pins", "publisher", "created_s"):
        if k not in out:
            continue
        v = out[k]
        if k == "size":
            v = f"{v} ({_size(v)})"
        click.echo(f"{k:<15} {v}")
    for h in out.get("holders", []):
        state = "complete" if h.get("complete") else "partial"
        click.echo(f"{'holder':<15} {h['peer']} ({h.get('where', '?')}, {state}, region {h.get('region') or '?'})")
    if out.get("regions"):
        click.echo(f"{'regions':<15} {', '.join(out['regions'])}")
    f = out.get("fetch")
    if f:
        click.echo(f"{'fetch':<15} {f['state']} {f['chunks_have']}/{f['chunks_total']} chunks"
                   + (f" ({f['error']})" if f.get("error") else ""))


peer_option = click.option("--peer", help="Any peer's multiaddr (default: $ARCNET_PEER, else the local peer of --data-dir).")
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False),
                               help="Data directory of the local peer to talk to (default: XDG data dir).")
local_dir_option = click.option("--local-dir", type=click.Path(file_okay=False),
                                help="Work on this data directory's store directly, without a peer.")
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
@click.option("--chunk-kib", type=click.IntRange(4, 4032), hidden=True, help="Fixed chunks of this many KiB.")
@click.option("--key", type=click.Path(dir_okay=False), help="With --local-dir: signing key (default: <dir>/peer.key).")
@peer_option
@data_dir_option
@local_dir_option
@json_option
def put(file, project, policy, name, version, kind, media_type, chunk_kib, key, peer, data_dir, local_dir, as_json) -> None:
    """Publish FILE: chunk, compress where it pays, sign, store and pin it on the peer."""
    path = Path(file).resolve()
    if local_dir:
        out = _local_put(path, project, policy, name, version, kind, media_type, key, local_dir, as_json)
    else:
        addr, local = _target(peer, data_dir)
        size = path.stat().st_size
        args: dict[str, Any] = {"project": project, "policy": policy, "name": name or path.name, "version": version,
                                "media_type": media_type}
        if kind:
            args["kind"] = kind
        if chunk_kib:
            args["chunk_bytes"] = chunk_kib << 10
        if size <= INLINE_BYTES_MAX:
            args["data"] = path.read_bytes()
            if not kind:
                from arcnet.blobstore.chunking import guess_kind

                args["kind"] = guess_kind(path.name)
        elif local:
            args["path"] = str(path)
        else:
            raise CliError(f"{file} is {_size(size)}; files above {_size(INLINE_BYTES_MAX)} are put through a path on the "
                           "peer's machine: run this command there (or use a peer on this machine)", EXIT_USAGE)
        out = _session(lambda c: c.call(addr, "blob.put", args, timeout_s=55.0))
    if as_json:
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        click.echo(f"{out['id']}  {out['name']}  {_size(out['size'])} in {out['chunks']} chunks ({out['chunking']}), "
                   f"policy {out['policy']}")


@blob.command()
@click.argument("artifact_id", metavar="ID")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where to write it (default: the artifact's name).")
@click.option("--hint", "hints", multiple=True, help="A peer (id or multiaddr) likely to hold it; repeatable.")
@peer_option
@data_dir_option
@local_dir_option
@json_option
def get(artifact_id, output, hints, peer, data_dir, local_dir, as_json) -> None:
    """Fetch artifact ID through the peer (every chunk verified) and write it to a file."""
    if local_dir:
        dest, n = _local_get(artifact_id, output, local_dir)
        out = {"path": str(dest), "size": n}
    else:
        addr, local = _target(peer, data_dir)
        out = _session(lambda c: _peer_get(c, addr, local, artifact_id, output, list(hints), as_json))
    if as_json:
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        click.echo(f"{out['path']}  {_size(out['size'])}  verified")


async def _peer_get(c, addr: str, local: bool, ref: str, output: str | None, hints: list[str], quiet: bool) -> dict[str, Any]:
    import trio

    st = await c.call(addr, "blob.stat", {"id": ref}, timeout_s=20.0)
    aid, name, total = st["id"], st.get("name") or st["id"][:16], int(st.get("size") or 0)
    dest = Path(output) if output else Path(Path(name).name)
    dest = dest.resolve()
    bar = None if quiet else _progress()
    task = None
    try:
        if bar is not None:
            bar.start()
            task = bar.add_task(f"fetch {name}", total=total or None)
        while True:  # the peer fetches in the background; each call waits up to wait_s and reports progress
            r = await c.call(addr, "blob.fetch", {"id": aid, "hints": hints, "wait_s": 0.5, "pin": False}, timeout_s=20.0)
            if bar is not None:
                bar.update(task, completed=r["bytes_have"], total=r["bytes_total"] or None)
            if r["state"] == "done":
                break
            if r["state"] == "failed":
                raise CliError(f"fetch of {aid[:16]} failed: {r['error']}", EXIT_FAILED)
            await trio.sleep(0.2)
        total = r["bytes_total"]
        if local:
            res = await c.call(addr, "blob.get", {"id": aid, "path": str(dest)}, timeout_s=55.0)
            return {"id": aid, "path": res["path"], "size": res["size"]}
        if bar is not None:
            task = bar.add_task(f"read {name}", total=total)
        tmp = dest.with_name(f".{dest.name}.part")
        offset = 0
        try:
            with open(tmp, "wb") as f:
                while offset < total:
                    res = await c.call(addr, "blob.get", {"id": aid, "offset": offset, "length": INLINE_BYTES_MAX}, timeout_s=30.0)
                    data = res["data"]
                    if not data:
                        raise CliError(f"peer returned no data at offset {offset} of {total}", EXIT_FAILED)
                    f.write(data)
                    offset += len(data)
                    if bar is not None:
                        bar.update(task, completed=offset)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return {"id": aid, "path": str(dest), "size": offset}
    finally:
        if bar is not None:
            bar.stop()


@blob.command(name="ls")
@click.option("--project", help="Only this project's artifacts.")
@peer_option
@data_dir_option
@local_dir_option
@json_option
def ls_(project, peer, data_dir, local_dir, as_json) -> None:
    """List the artifacts in the peer's store."""
    if local_dir:
        infos = _local_ls(local_dir)
        if project:
            infos = [i for i in infos if i["project"] == project]
    else:
        addr, _ = _target(peer, data_dir)
        args = {"project": project} if project else {}
        infos = _session(lambda c: c.call(addr, "blob.ls", args))["artifacts"]
    if as_json:
        click.echo(json.dumps(infos, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="artifacts")
    for col in ("id", "name", "version", "project", "size", "chunks", "policy", "pinned"):
        t.add_column(col)
    for o in infos:
        chunks = f"{o['chunks_present']}/{o['chunks']}"
        t.add_row(o["id"][:16], o["name"], o["version"], o["project"], _size(o["size"]), chunks, o["policy"],
                  ",".join(o["pins"]) or "-")
    Console().print(t)


@blob.command()
@click.argument("artifact_id", metavar="ID")
@peer_option
@data_dir_option
@local_dir_option
@json_option
def stat(artifact_id, peer, data_dir, local_dir, as_json) -> None:
    """Show one artifact: size, chunks, who holds it."""
    if local_dir:
        out = _local_stat(artifact_id, local_dir)
    else:
        addr, _ = _target(peer, data_dir)
        out = _session(lambda c: c.call(addr, "blob.stat", {"id": artifact_id}, timeout_s=20.0))
    if as_json:
        click.echo(json.dumps(out, indent=2, sort_keys=True))
        return
    _print_info(out)


# -- --local-dir: the store of a data directory, no peer ------------------------------------------


def _open_store(local_dir: str):
    from arcnet.blobstore.store import Store, StoreError

    try:
        return Store(Path(local_dir))
    except StoreError as exc:
        raise CliError(str(exc), EXIT_USAGE if exc.code in _USAGE_CODES else EXIT_FAILED) from None


def _store_errors(fn):
    """Run ``fn`` turning StoreError into one line for the terminal."""
    from arcnet.blobstore.store import StoreError

    try:
        return fn()
    except StoreError as exc:
        raise CliError(str(exc), EXIT_USAGE if exc.code in _USAGE_CODES else EXIT_FAILED) from None


def _local_put(path: Path, project, policy, name, version, kind, media_type, key, local_dir, as_json) -> dict[str, Any]:
    from arcnet.blobstore.service import info_dict
    from arcnet.mesh.identity import Identity

    ident = Identity.load(Path(key) if key else Path(local_dir) / "peer.key")
    total = path.stat().st_size
    kw = dict(identity=ident, name=name, kind=kind, version=version, project=project, media_type=media_type, policy=policy)
    with _open_store(local_dir) as store:
        if as_json or total < (8 << 20):
            aid, _ = _store_errors(lambda: store.put_file(path, **kw))
        else:
            with _progress() as bar:
                task = bar.add_task(f"put {path.name}", total=total)
                aid, _ = _store_errors(lambda: store.put_file(path, progress=lambda n: bar.advance(task, n), **kw))
        return info_dict(store.stat(aid))


def _local_get(ref: str, output: str | None, local_dir: str) -> tuple[Path, int]:
    with _open_store(local_dir) as store:
        aid = _store_errors(lambda: store.resolve(ref))
        info = _store_errors(lambda: store.stat(aid))
        if not info.complete:
            raise CliError(
                f"{info.name}: {info.chunk_count - info.present_chunks} of {info.chunk_count} chunks are not here; "
                "fetching from other peers needs a running peer (drop --local-dir)",
                EXIT_FAILED,
            )
        dest = Path(output) if output else Path(Path(info.name).name)
        with _progress() as bar:
            task = bar.add_task(f"get {info.name}", total=info.total_size)
            n = _store_errors(lambda: store.export(aid, dest, progress=lambda k: bar.advance(task, k)))
    return dest, n


def _local_ls(local_dir: str) -> list[dict[str, Any]]:
    from arcnet.blobstore.service import info_dict

    with _open_store(local_dir) as store:
        return [info_dict(i) for i in store.list_artifacts()]


def _local_stat(ref: str, local_dir: str) -> dict[str, Any]:
    from arcnet.blobstore.service import info_dict
    from arcnet.mesh.identity import Identity, IdentityError

    with _open_store(local_dir) as store:
        aid = _store_errors(lambda: store.resolve(ref))
        out = info_dict(_store_errors(lambda: store.stat(aid)))
    try:
        me = Identity.load(Path(local_dir) / "peer.key").peer_id
    except IdentityError:
        me = "this peer"
    out["holders"] = [{"peer": me, "where": "local", "complete": out["complete"]}] if out["chunks_present"] else []
    return out
