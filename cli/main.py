"""``arcnet``: the command line for operators, application owners, model owners and auditors.

Every command that talks to the mesh takes ``--peer MULTIADDR`` (any peer
will do), or uses ``$ARCNET_PEER``, or the local peer of ``--data-dir``.
Every read command takes ``--json``. Errors are one line on stderr; add
``--debug`` for a traceback.

Exit codes:
  0  success
  1  the peer refused, the operation failed, or ``audit verify`` found a problem
  2  usage or configuration error
  3  peer unreachable
  130 interrupted
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from arcnet import __version__

from .client import CliError, call, resolve_peer

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def emit(obj: Any, as_json: bool, render=None) -> None:
    """Print ``obj`` as JSON, or through ``render`` (a callable printing a table)."""
    if as_json or render is None:
        click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
    else:
        render(obj)


class ArcnetGroup(click.Group):
    """Turns expected errors into one line and an exit code; --debug shows tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = ctx.params.get("debug") or "--debug" in sys.argv
        try:
            return super().invoke(ctx)
        except CliError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # an expected failure type we did not anticipate: still one line
            from arcnet.mesh.config import ConfigError
            from arcnet.mesh.identity import IdentityError

            if debug:
                raise
            if isinstance(exc, (ConfigError, IdentityError)):
                click.echo(f"error: {exc}", err=True)
                ctx.exit(EXIT_USAGE)
            click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for details)", err=True)
            ctx.exit(EXIT_FAILED)


peer_option = click.option("--peer", "peer", metavar="MULTIADDR", help="Any peer of the mesh (default: $ARCNET_PEER or the local peer).")
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), help="Peer data directory (default: XDG data dir).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group(cls=ArcnetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="arcnet")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """ARCNet mesh: submit work to, inspect and operate a mesh of compute sites."""


@cli.command()
@data_dir_option
@click.option("--listen", default="/ip4/127.0.0.1/tcp/4001", show_default=True, help="libp2p listen multiaddr.")
@click.option("--bootstrap", multiple=True, metavar="MULTIADDR", help="Peer to join through (repeatable).")
@click.option("--region", default="default", show_default=True)
@click.option("--lat", "latitude", type=float, default=0.0, help="Site latitude, degrees.")
@click.option("--lon", "longitude", type=float, default=0.0, help="Site longitude, degrees.")
@click.option("--roles", default="site", show_default=True, help="Comma-separated: site,hpc,edge.")
@click.option("--metrics-listen", default="127.0.0.1:9464", show_default=True, help='host:port, or "" to disable.')
@click.option("--force", is_flag=True, help="Overwrite an existing config (the key is never overwritten).")
@json_option
def init(data_dir, listen, bootstrap, region, latitude, longitude, roles, metrics_listen, force, as_json) -> None:
    """Create a peer key and a commented config.toml in the data directory."""
    from arcnet.mesh.config import ROLES, default_config_text, default_data_dir, load_config
    from arcnet.mesh.identity import Identity

    dd = Path(data_dir) if data_dir else default_data_dir()
    role_list = [r.strip() for r in roles.split(",") if r.strip()]
    for r in role_list:
        if r not in ROLES:
            raise CliError(f"--roles: unknown role {r!r} (expected any of {', '.join(ROLES)})", EXIT_USAGE)
    dd.mkdir(parents=True, exist_ok=True)
    ident = Identity.load_or_create(dd / "peer.key")
    cfg_path = dd / "config.toml"
    if cfg_path.exists() and not force:
        raise CliError(f"{cfg_path} exists; pass --force to overwrite it", EXIT_USAGE)
    cfg_path.write_text(
        default_config_text(
            listen=listen,
            bootstrap=list(bootstrap),
            region=region,
            latitude=latitude,
            longitude=longitude,
            roles=role_list,
            metrics_listen=metrics_listen,
        )
    )
    load_config(cfg_path)  # what we wrote must load
    out = {"peer_id": ident.peer_id, "data_dir": str(dd), "config": str(cfg_path), "key": str(dd / "peer.key")}
    emit(out, as_json, lambda o: click.echo(f"peer id  {o['peer_id']}\nconfig   {o['config']}\nkey      {o['key']}\n"
                                            f"start it with: arcnet-peer --config {o['config']}"))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    Console().print(t)


@cli.command()
@peer_option
@data_dir_option
@json_option
def peers(peer, data_dir, as_json) -> None:
    """List the members a peer sees, with their state."""
    target = resolve_peer(peer, data_dir)
    res = call(target, "peers")

    def render(o):
        rows = [[m["peer_id"], m.get("region", ""), m.get("state", ""), m.get("incarnation", ""), m.get("addr", "")]
                for m in o.get("members", [])]
        _table(f"members seen by {o.get('self', '?')}", ["peer", "region", "state", "inc", "address"], rows)

    emit(res, as_json, render)


@cli.command()
@peer_option
@data_dir_option
@json_option
def status(peer, data_dir, as_json) -> None:
    """One peer's status: region, leader, energy, load, provider."""
    target = resolve_peer(peer, data_dir)
    res = call(target, "status")

    def render(o):
        rows = [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in sorted(o.items())]
        _table(f"status of {o.get('peer_id', '?')}", ["field", "value"], rows)

    emit(res, as_json, render)


# Subcommand groups that live beside their subsystem; mounted if present.
for _name in ("audit", "blob", "model", "sim", "jobs", "ops", "ca"):
    try:
        _mod = importlib.import_module(f"arcnet.cli.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"arcnet.cli.{_name}":
            raise
        continue
    for _attr in getattr(_mod, "COMMANDS", None) or [getattr(_mod, _name, None)]:
        if isinstance(_attr, click.Command):
            cli.add_command(_attr)


def main() -> None:
    from arcnet.mesh.logs import setup_logging

    # The CLI speaks through its exit code and one error line; library chatter
    # (e.g. libp2p's dial errors) is only shown with --debug. Configured here,
    # not in the group callback, so embedding the group changes no one's logging.
    setup_logging("debug" if "--debug" in sys.argv[1:] else "critical")
    cli(prog_name="arcnet")


if __name__ == "__main__":
    main()
