"""``arcnet-peer``: run one peer in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from arcnet import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="arcnet-peer")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="config.toml (default: DATA_DIR/config.toml).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Data directory (default: XDG data dir).")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.option("--debug", is_flag=True, help="Show tracebacks for start-up errors.")
def main(config_path, data_dir, log_level, log_format, debug) -> None:
    """Run an ARCNet peer in the foreground."""
    import trio

    from arcnet.mesh.config import ConfigError, default_data_dir, load_config
    from arcnet.mesh.identity import Identity, IdentityError
    from arcnet.mesh.logs import setup_logging
    from arcnet.mesh.peer import DaemonError, PeerDaemon
    from arcnet.mesh.stack import build_node

    setup_logging(log_level, log_format)
    log = logging.getLogger("arcnet.peer")
    try:
        if config_path is None:
            dd = Path(data_dir) if data_dir else default_data_dir()
            candidate = dd / "config.toml"
            config_path = str(candidate) if candidate.exists() else None
        cfg = load_config(config_path, data_dir=data_dir)
        from arcnet.mesh.stack import audit_config, blob_config, gossip_config

        gossip_config(cfg.gossip)  # validate knobs now: one clear line, not a failure at start-up
        blob_config(cfg)  # [blob] and [audit] with their ARCNET_BLOB_*/ARCNET_AUDIT_* overrides
        audit_config(cfg)
        identity = Identity.load(cfg.key_path) if cfg.key_path.exists() else Identity.load_or_create(cfg.key_path)
        daemon = PeerDaemon(cfg, identity, build_node)
        trio.run(daemon.run)
    except (ConfigError, IdentityError, DaemonError) as exc:
        if debug:
            raise
        log.error("%s", exc)
        sys.exit(2)
    except BaseExceptionGroup as group:  # a start-up error raised inside the daemon's nursery
        known = _first(group, (ConfigError, IdentityError, DaemonError))
        if known is None or debug:
            raise
        log.error("%s", known)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _first(group: BaseException, types: tuple[type, ...]) -> BaseException | None:
    """The first exception of ``types`` inside (nested) exception groups."""
    if isinstance(group, types):
        return group
    for exc in getattr(group, "exceptions", ()):
        found = _first(exc, types)
        if found is not None:
            return found
    return None


if __name__ == "__main__":
    main()
