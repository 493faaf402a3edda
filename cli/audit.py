"""``arcnet audit``: export a signed audit bundle, verify one offline.

    arcnet audit export [--peer MULTIADDR | --data-dir DIR] [--since PREVIOUS]
                        [--job ID [--with-peer PEER_ID ...]] [--no-views] -o BUNDLE
    arcnet audit export --log-dir DIR [--log-dir DIR ...] [--key KEYFILE ...]
                        [--since PREVIOUS] [--job ID] [--no-views] -o BUNDLE
    arcnet audit verify BUNDLE --trust KEYS [--min-cosignatures N] [--json]
    arcnet audit trust [--peer MULTIADDR | --data-dir DIR] [--members] [-o KEYS]
    arcnet audit vkey --key KEYFILE [--witness]

``export`` asks a running peer (``--peer``, else ``$ARCNET_PEER``, else the
local peer of ``--data-dir``) for a bundle of its log at a freshly signed and
witnessed checkpoint (control method ``audit.export``). With ``--job`` the
peer stitches the job's entries from the logs of every peer that took part
(intake peer, custodians, executors; ``--with-peer`` adds more) into one
bundle. A bundle too large for a control reply is written by the peer to
``--peer-path`` on its own machine (for a peer on this machine, to ``-o``
directly).

With ``--log-dir`` it reads log directories instead, offline (a running
peer's included: the files are append-only and a reader stops at the last
whole record). Given the log owner's key file and the log not open
elsewhere, it first signs a fresh checkpoint so that the bundle covers every
entry; otherwise it exports up to the log's latest checkpoint.

Either way ``--since`` takes the previous bundle (or a checkpoint note file):
only newer entries are exported, with a consistency proof from it.

``trust`` prints trust-file lines for a peer's log and witness keys (the
verifier keys, read from the peer); with ``--members``, for every member of
the mesh that peer knows (derived from their peer ids, which embed the keys).

``verify`` needs nothing but the bundle and a trust file: one key per line, as
a vkey (``arcnet audit vkey`` prints them), a peer id, or 64 hex digits;
``#`` starts a comment. It exits 0 if everything verifies, 1 if anything does
not (the report names the first bad entry and why), 2 if it could not run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..audit import bundle as _bundle
from ..audit.log import META_FILE, AuditLog, AuditLogError, default_origin
from ..audit.note import COSIGNATURE_V1, ED25519, Checkpoint, NoteError, Signer, Verifier
from ..audit.witness import witness_name, witness_signer
from ..mesh.identity import Identity, IdentityError, public_key_of
from .client import CliError, call, resolve_peer

__all__ = ["audit"]


def _console():  # rich is imported on use: `arcnet --help` stays fast
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@click.group("audit")
def audit() -> None:
    """Export and verify signed audit bundles."""


# ---------------------------------------------------------------------------
# export


def _read_since(paths: tuple[str, ...]) -> list[str]:
    notes: list[str] = []
    for p in paths:
        data = Path(p).read_bytes()
        try:
            text = data.decode("utf-8")
            Checkpoint.parse(text)
            notes.append(text)
            continue
        except (UnicodeDecodeError, NoteError):
            pass
        try:
            notes.extend(_bundle.bundle_checkpoints(data))
        except _bundle.ExportError:
            raise click.ClickException(f"{p}: neither a checkpoint note nor an audit bundle") from None
    return notes


def _open_log(directory: str, identities: dict[str, Identity]) -> tuple[AuditLog, str]:
    meta_path = Path(directory) / META_FILE
    try:
        peer = json.loads(meta_path.read_text()).get("peer")
    except (OSError, ValueError):
        raise click.ClickException(f"{directory}: not an audit log directory (no readable {META_FILE})") from None
    ident = identities.get(peer)
    if ident is not None:
        try:
            lg = AuditLog.open(directory, ident, background_commit=False)
        except AuditLogError as exc:
            if "open in another process" not in str(exc):
                raise click.ClickException(str(exc)) from None
        else:
            lg.checkpoint()
            return lg, "fresh checkpoint"
    try:
        return AuditLog.open_readonly(directory), "latest checkpoint"
    except AuditLogError as exc:
        raise click.ClickException(str(exc)) from None


_peer_option = click.option("--peer", "peer", metavar="MULTIADDR", help="Any peer of the mesh (default: $ARCNET_PEER or the local peer).")
_data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), help="Peer data directory (default: XDG data dir).")
EXPORT_TIMEOUT_S = 120.0  # a fresh checkpoint, a witness round, and for a job the other peers' parts


def _is_local(addr: str) -> bool:
    return addr.startswith(("/ip4/127.", "/ip6/::1/", "/dns4/localhost/", "/dns/localhost/"))


@audit.command("export")
@_peer_option
@_data_dir_option
@click.option("--log-dir", "log_dirs", multiple=True, type=click.Path(exists=True, file_okay=False), help="Read this audit log directory offline instead of asking a peer (repeat for several logs).")
@click.option("--key", "key_files", multiple=True, type=click.Path(exists=True, dir_okay=False), help="With --log-dir: a log owner's key file, to sign a fresh checkpoint first (repeatable).")
@click.option("--since", "since", multiple=True, type=click.Path(exists=True, dir_okay=False), help="The previous bundle or a checkpoint note: export only what is newer.")
@click.option("--job", default=None, help="Only this job's entries, with inclusion proofs and its SLSA/PROV views.")
@click.option("--with-peer", "with_peers", multiple=True, metavar="PEER_ID", help="With --job: also ask this peer for its entries of the job (repeatable).")
@click.option("--views/--no-views", default=True, help="Include SLSA provenance and PROV-JSON views (with --job).")
@click.option("--witness", "witness_vkeys", multiple=True, help="With --log-dir: vkey of a cosigner whose key is not in its name.")
@click.option("--peer-path", default=None, help="Where the peer writes a bundle too large for a reply (a path on its machine).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the bundle.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def export_cmd(
    peer: str | None,
    data_dir: str | None,
    log_dirs: tuple[str, ...],
    key_files: tuple[str, ...],
    since: tuple[str, ...],
    job: str | None,
    with_peers: tuple[str, ...],
    views: bool,
    witness_vkeys: tuple[str, ...],
    peer_path: str | None,
    output: str,
    as_json: bool,
) -> None:
    """Write a self-contained, verifiable bundle: from a peer, or offline from log directories."""
    if not log_dirs:
        if key_files or witness_vkeys:
            raise click.UsageError("--key and --witness go with --log-dir")
        _export_from_peer(peer, data_dir, since, job, with_peers, views, peer_path, output, as_json)
        return
    if peer or with_peers or peer_path:
        raise click.UsageError("--log-dir reads logs offline: drop --peer, --with-peer and --peer-path")
    identities: dict[str, Identity] = {}
    for kf in key_files:
        try:
            ident = Identity.load(kf)
        except IdentityError as exc:
            raise click.ClickException(str(exc)) from None
        identities[ident.peer_id] = ident
    try:
        witnesses = [Verifier.parse(v) for v in witness_vkeys]
    except NoteError as exc:
        raise click.ClickException(f"--witness: {exc}") from None
    notes = _read_since(since)
    logs: list[AuditLog] = []
    how: list[str] = []
    try:
        for d in log_dirs:
            lg, h = _open_log(d, identities)
            logs.append(lg)
            how.append(h)
        try:
            data = _bundle.export_bundle(logs, output, job=job, since=notes, views=views, witnesses=witnesses)
        except (_bundle.ExportError, NoteError) as exc:
            raise click.ClickException(str(exc)) from None
        summary = {
            "bundle": output,
            "bytes": len(data),
            "job": job,
            "logs": [
                {"origin": lg.origin, "size": (lg.latest_checkpoint().size if lg.latest_checkpoint() else 0), "checkpoint": h}
                for lg, h in zip(logs, how)
            ],
        }
    finally:
        for lg in logs:
            lg.close()
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    con = _console()
    con.print(f"[bold]wrote[/bold] {output} ({len(data):,} bytes)" + (f" for job [bold]{job}[/bold]" if job else ""))
    for row in summary["logs"]:
        con.print(f"  {row['origin']}  size {row['size']:,}  ({row['checkpoint']})")


def _export_from_peer(
    peer: str | None,
    data_dir: str | None,
    since: tuple[str, ...],
    job: str | None,
    with_peers: tuple[str, ...],
    views: bool,
    peer_path: str | None,
    output: str,
    as_json: bool,
) -> None:
    try:
        target = resolve_peer(peer, data_dir)
    except CliError as exc:
        raise click.ClickException(str(exc)) from None
    args: dict = {"since": _read_since(since), "views": views}
    if job:
        args["job"] = job
    if with_peers:
        args["peers"] = list(with_peers)
    if peer_path:
        args["path"] = peer_path
    out = Path(output)

    def ask(a: dict) -> dict:
        try:
            return call(target, "audit.export", a, timeout_s=EXPORT_TIMEOUT_S)
        except CliError as exc:
            if "over the" in str(exc) and "path" not in a and _is_local(target):
                # a peer on this machine writes a large bundle straight to -o
                return ask(dict(a, path=str(out.resolve())))
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    res = ask(args)
    if "bundle" in res:
        _bundle._write_atomic(out, res["bundle"])
        where = output
    else:
        where = res.get("path", "?")
    summary = {"bundle": where, "bytes": res.get("bytes"), "job": res.get("job"), "logs": res.get("logs", []),
               "unreachable": res.get("unreachable", {}), "peer": target}
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    con = _console()
    con.print(f"[bold]wrote[/bold] {where} ({summary['bytes']:,} bytes)" + (f" for job [bold]{job}[/bold]" if job else ""))
    for origin in summary["logs"]:
        con.print(f"  {origin}")
    for p, why in sorted(summary["unreachable"].items()):
        con.print(f"  [yellow]missing[/yellow] the part of {p}: {why}", markup=True)


# ---------------------------------------------------------------------------
# verify


@audit.command("verify")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option("--trust", "trust_file", required=True, type=click.Path(dir_okay=False), help="Trusted keys: vkeys, peer ids or hex keys, one per line.")
@click.option("--min-cosignatures", default=0, show_default=True, type=click.IntRange(0, 100), help="Witness cosignatures each checkpoint needs.")
@click.option("--workers", default=None, type=click.IntRange(1, 64), help="Processes for large bundles (default: one per CPU).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_cmd(bundle_path: str, trust_file: str, min_cosignatures: int, workers: int | None, as_json: bool) -> None:
    """Verify BUNDLE offline against the trusted keys; exit 1 on any failure."""
    try:
        trust = _bundle.load_trust(trust_file)
    except (OSError, NoteError) as exc:
        click.echo(f"error: {trust_file}: cannot read the trusted keys ({exc})", err=True)
        sys.exit(2)
    if not Path(bundle_path).is_file():
        click.echo(f"error: {bundle_path}: no such bundle", err=True)
        sys.exit(2)
    keys = [*trust[0], *(k for k in trust[1])]
    report = _bundle.verify_bundle(bundle_path, keys, min_cosignatures=min_cosignatures, workers=workers)
    if as_json:
        click.echo(json.dumps(report.to_json(), sort_keys=True))
    else:
        _print_report(bundle_path, report)
    sys.exit(0 if report.ok else 1)


def _print_report(path: str, report: _bundle.Report) -> None:
    from rich.table import Table

    con = _console()
    table = Table(title=f"audit bundle {path}", title_justify="left")
    for col in ("log", "size", "since", "entries", "cosigners", "ok"):
        table.add_column(col, justify="right" if col in ("size", "since", "entries") else "left", overflow="fold")
    for lg in report.logs:
        ok = "[green]yes[/green]" if lg.get("ok") else "[red]NO[/red]"
        table.add_row(
            lg.get("origin", "?"),
            f"{lg['size']:,}" if "size" in lg else "",
            f"{lg['since_size']:,}" if "since_size" in lg else "",
            f"{lg['entries']:,}" if "entries" in lg else "",
            ", ".join(c.rsplit("/", 1)[-1][-8:] for c in lg.get("cosigners", [])),
            ok,
        )
    if report.logs:
        con.print(table)
    if report.job:
        con.print(f"job: {report.job}")
    con.print(f"{report.entries_verified:,} entries verified, {report.bundle_bytes:,} bytes, {report.elapsed_s:.2f} s")
    if report.ok:
        con.print("[bold green]OK[/bold green]: every signature, proof and entry verifies")
        return
    if report.first_bad_entry is not None:
        p = report.first_bad_entry
        con.print(f"[bold red]first bad entry[/bold red]: log {p.origin} seq {p.seq}: {p.reason}")
    con.print(f"[bold red]FAILED[/bold red]: {len(report.problems)} problem(s)" + (" (first ones shown)" if report.truncated else ""))
    for p in report.problems:
        con.print(f"  - {p.where}: {p.reason}", markup=False)


# ---------------------------------------------------------------------------
# keys


@audit.command("vkey")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False), help="A peer's key file.")
@click.option("--witness", is_flag=True, help="Print the peer's witness (cosigning) key instead of its log key.")
@click.option("--origin", default=None, help="The log's origin, if not the default.")
def vkey_cmd(key_file: str, witness: bool, origin: str | None) -> None:
    """Print the verifier key (a trust-file line) of a peer's log or witness key."""
    try:
        ident = Identity.load(key_file)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from None
    if witness:
        signer = witness_signer(ident)
    else:
        signer = Signer(origin or default_origin(ident.peer_id), ident, ED25519)
    click.echo(signer.verifier.vkey())


@audit.command("trust")
@_peer_option
@_data_dir_option
@click.option("--members", is_flag=True, help="Every member the peer knows, not just the peer itself.")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False), help="Write the trust file here (default: print).")
def trust_cmd(peer: str | None, data_dir: str | None, members: bool, output: str | None) -> None:
    """Print trust-file lines (log and witness vkeys) of a peer, or of every member it knows.

    Check them out of band (compare peer ids with the operators) before you
    rely on a verification: a trust file is only as good as where it came from.
    """
    try:
        target = resolve_peer(peer, data_dir)
        keys = call(target, "audit.keys")
        ids = [keys["peer_id"]]
        if members:
            res = call(target, "peers")
            ids += sorted(m["peer_id"] for m in res["members"] if m["peer_id"] != keys["peer_id"])
    except CliError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    lines = [f"# from {target}"]
    for pid in ids:
        try:
            pk = public_key_of(pid)
        except IdentityError:
            continue
        log_v = Verifier(default_origin(pid), pk, ED25519).vkey()
        if pid == keys["peer_id"] and log_v != keys["log_vkey"]:
            raise click.ClickException(f"{target}: its log key does not match its peer id")
        lines.append(log_v)
        lines.append(Verifier(witness_name(pid), pk, COSIGNATURE_V1).vkey())
    text = "\n".join(lines) + "\n"
    if output:
        Path(output).write_text(text)
    else:
        click.echo(text, nl=False)
