"""Peer configuration: one TOML file, every knob with its unit, default and scaling.

``arcnet init`` writes a commented ``config.toml`` into the data directory
(:func:`default_config_text`); ``arcnet-peer --config FILE`` reads it
(:func:`load_config`). A mistake is one :class:`ConfigError` line naming the
file and the key, e.g. ``config.toml: peer.region: expected a string, got
integer``: never a traceback.

Unknown keys are errors too (a typo such as ``bootstrapp`` must not be
silently ignored; the error suggests the closest known key).

Tables: ``[peer]`` (this module), ``[gossip]`` (:func:`arcnet.mesh.stack.gossip_config`),
``[blob]`` (the knobs of :class:`arcnet.blobstore.service.BlobConfig`) and
``[audit]`` (the knobs of :class:`arcnet.audit.service.AuditConfig`). A
``[blob]``/``[audit]`` key is the config class's field name; its type is the
type of the field's default, units are in the names (``_s`` seconds,
``_bytes`` bytes) and the defaults and meanings are documented on those
classes and in ``examples/config.toml``. Numbers must be finite and not
negative, durations (``_s``) greater than zero, and each value must pass the
class's own range checks; a bad value is one error naming the key, the value
and the unit.

Precedence for ``[blob]``/``[audit]``: an ``ARCNET_BLOB_<KEY>`` /
``ARCNET_AUDIT_<KEY>`` environment variable, when set, overrides the table,
which overrides the default (the variables are for tests and benchmarks; see
:func:`arcnet.mesh.stack.blob_config` and :func:`arcnet.mesh.stack.audit_config`).
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "PeerConfig",
    "default_config_text",
    "default_data_dir",
    "load_config",
]

ROLES = ("site", "hpc", "edge")
_SECTIONS = ("peer", "gossip", "blob", "audit")


class ConfigError(Exception):
    """A configuration problem; the message names the file and the key."""


def default_data_dir() -> Path:
    """``$ARCNET_DATA_DIR``, else ``$XDG_DATA_HOME/arcnet``, else ``~/.local/share/arcnet``."""
    env = os.environ.get("ARCNET_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg) / "arcnet" if xdg else Path.home() / ".local" / "share" / "arcnet"


@dataclass
class PeerConfig:
    """Every setting of one peer. Field comments give unit, default and scaling."""

    data_dir: Path
    #: libp2p listen multiaddrs. Default one TCP port on loopback; a site uses
    #: its routable address (never 0.0.0.0: it would be advertised as is).
    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/4001"])
    #: Full multiaddrs (``.../p2p/12D3KooW...``) of peers to join through.
    #: Two or three per region are plenty at any mesh size.
    bootstrap: list[str] = field(default_factory=list)
    #: Region name: leaders, replication policy and data residency are per region.
    region: str = "default"
    #: Site coordinates in degrees (WGS84): locality and the solar model use them.
    latitude: float = 0.0
    longitude: float = 0.0
    #: What this peer is: any of "site", "hpc", "edge".
    roles: list[str] = field(default_factory=lambda: ["site"])
    #: Metrics and health HTTP endpoint (host:port); "" disables it.
    metrics_listen: str = "127.0.0.1:9464"
    #: Where energy readings come from: "" (none; report zeros), "file:PATH"
    #: (JSON or TOML of readings, re-read every sample) or "command:CMD"
    #: (a command that prints readings as JSON).
    energy_source: str = ""
    #: Gossip protocol knobs, passed to the gossip stack (see gossip.membership.Config).
    gossip: dict[str, Any] = field(default_factory=dict)
    #: ``[blob]`` knobs as given in the file (validated; floats coerced), over the
    #: defaults of :class:`arcnet.blobstore.service.BlobConfig`, e.g.
    #: ``durable`` (true), ``cache_quota_bytes`` (0 = no bound), ``fetches_max`` (4),
    #: ``discover_interval_s`` (1 s), ``path_roots`` ("" = home and temp dir).
    #: ``ARCNET_BLOB_<KEY>`` variables override them (tests, benchmarks).
    blob: dict[str, Any] = field(default_factory=dict)
    #: ``[audit]`` knobs as given in the file, over the defaults of
    #: :class:`arcnet.audit.service.AuditConfig`, e.g. ``checkpoint_interval_s``
    #: (60 s), ``witnesses`` (2), ``request_timeout_s`` (10 s). ``ARCNET_AUDIT_<KEY>``
    #: variables override them (tests, benchmarks).
    audit: dict[str, Any] = field(default_factory=dict)
    #: Where this config came from (for error messages).
    source: str = "<defaults>"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "peer.key"


_PEER_KEYS: dict[str, tuple[type, ...]] = {
    "data_dir": (str,),
    "listen": (list,),
    "bootstrap": (list,),
    "region": (str,),
    "latitude": (float, int),
    "longitude": (float, int),
    "roles": (list,),
    "metrics_listen": (str,),
    "energy_source": (str,),
}
_TYPE_NAMES = {str: "a string", list: "a list", float: "a number", int: "a number", dict: "a table"}


def _type_name(v: Any) -> str:
    return {str: "string", int: "integer", float: "float", bool: "boolean", list: "list", dict: "table"}.get(
        type(v), type(v).__name__
    )


def _unknown_key(src: str, section: str, key: str, known: Any) -> ConfigError:
    """``unknown key``, suggesting the closest known one (or listing them all)."""
    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(names)}"
    return ConfigError(f"{src}: {section}.{key}: unknown key ({hint})")


#: Extra bounds of table knobs that their config class does not check itself: (low, high), inclusive.
_KNOB_BOUNDS: dict[tuple[str, str], tuple[float, float]] = {
    # a control reply carries up to 1 MiB (as blob.inline_bytes_max)
    ("audit", "export_inline_max_bytes"): (1, 900 << 10),
}


def _knob_unit(name: str, default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, str):
        return "a string"
    if name.endswith("_s"):
        return "seconds"
    if name.endswith("_bytes") or "_bytes_" in name:
        return "bytes"
    if name.endswith("_fraction"):
        return "a fraction in [0, 1]"
    return "a count"


def _knob_table(src: str, section: str, table: Any, cls: type) -> dict[str, Any]:
    """Validate one ``[blob]``/``[audit]`` table against the fields of ``cls`` (a dataclass with defaults).

    Returns the values with ints widened to float where the default is a float.
    Each mistake is one :class:`ConfigError` naming the key, the value and the unit.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{src}: {section}: expected a table, got {_type_name(table)}")
    defaults = {f.name: f.default for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in defaults:
            raise _unknown_key(src, section, key, defaults)
        default = defaults[key]
        unit = _knob_unit(key, default)
        where = f"{src}: {section}.{key}"
        if isinstance(default, bool):
            if type(value) is not bool:
                raise ConfigError(f"{where}: expected true or false, got {_type_name(value)} {value!r}")
        elif isinstance(default, str):
            if type(value) is not str:
                raise ConfigError(f"{where}: expected a string, got {_type_name(value)} {value!r}")
        elif isinstance(default, int):
            if type(value) is not int:
                raise ConfigError(f"{where}: expected a whole number ({unit}), got {_type_name(value)} {value!r}")
        else:  # float
            if type(value) not in (int, float):
                raise ConfigError(f"{where}: expected a number ({unit}), got {_type_name(value)} {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{where}: {value!r} ({unit}) is not a finite number")
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value < 0:
                raise ConfigError(f"{where}: {value!r} ({unit}) must not be negative")
            if key.endswith("_s") and value <= 0:
                raise ConfigError(f"{where}: {value!r} ({unit}) must be greater than 0")
            lo, hi = _KNOB_BOUNDS.get((section, key), (-math.inf, math.inf))
            if not lo <= value <= hi:
                raise ConfigError(f"{where}: {value!r} ({unit}) is outside [{lo:g}, {hi:g}]")
            try:
                cls(**{key: value})  # the class's own range checks, one key at a time
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{where}: {value!r} ({unit}) is out of range: {exc}") from None
        out[key] = value
    return out


def load_config(path: str | os.PathLike[str] | None, *, data_dir: str | os.PathLike[str] | None = None) -> PeerConfig:
    """Read and validate a config file (or defaults when ``path`` is None)."""
    raw: dict[str, Any] = {}
    src = "<defaults>"
    if path is not None:
        src = str(path)
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{src}: file not found (run `arcnet init` to create one)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{src}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{src}: cannot read: {exc.strerror}") from None
    for top in raw:
        if top not in _SECTIONS:
            close = difflib.get_close_matches(top, _SECTIONS, n=1, cutoff=0.6)
            hint = f"did you mean [{close[0]}]?" if close else "expected " + ", ".join(f"[{t}]" for t in _SECTIONS)
            raise ConfigError(f"{src}: {top}: unknown section ({hint})")
    peer = raw.get("peer", {})
    if not isinstance(peer, dict):
        raise ConfigError(f"{src}: peer: expected a table")
    values: dict[str, Any] = {}
    for key, value in peer.items():
        types = _PEER_KEYS.get(key)
        if types is None:
            raise _unknown_key(src, "peer", key, _PEER_KEYS)
        if type(value) not in types:
            raise ConfigError(f"{src}: peer.{key}: expected {_TYPE_NAMES[types[0]]}, got {_type_name(value)}")
        values[key] = value
    for key in ("listen", "bootstrap", "roles"):
        for i, item in enumerate(values.get(key, [])):
            if not isinstance(item, str):
                raise ConfigError(f"{src}: peer.{key}[{i}]: expected a string, got {_type_name(item)}")
    for i, addr in enumerate(values.get("listen", [])):
        if not addr.startswith("/ip4/") and not addr.startswith("/ip6/"):
            raise ConfigError(f"{src}: peer.listen[{i}]: {addr!r} is not a multiaddr like /ip4/127.0.0.1/tcp/4001")
    for i, addr in enumerate(values.get("bootstrap", [])):
        if "/p2p/" not in addr:
            raise ConfigError(f"{src}: peer.bootstrap[{i}]: {addr!r} must end with /p2p/<peer id>")
    for role in values.get("roles", []):
        if role not in ROLES:
            raise ConfigError(f"{src}: peer.roles: unknown role {role!r} (expected any of {', '.join(ROLES)})")
    lat = values.get("latitude", 0.0)
    lon = values.get("longitude", 0.0)
    if not -90 <= lat <= 90:
        raise ConfigError(f"{src}: peer.latitude: {lat} is outside [-90, 90]")
    if not -180 <= lon <= 180:
        raise ConfigError(f"{src}: peer.longitude: {lon} is outside [-180, 180]")
    src_ = values.get("energy_source", "")
    if src_ and not (src_.startswith("file:") or src_.startswith("command:")):
        raise ConfigError(f"{src}: peer.energy_source: expected 'file:PATH' or 'command:CMD', got {src_!r}")
    gossip = raw.get("gossip", {})
    if not isinstance(gossip, dict):
        raise ConfigError(f"{src}: gossip: expected a table")
    tables: dict[str, dict[str, Any]] = {}
    for section in ("blob", "audit"):
        table = raw.get(section, {})
        if table == {}:
            tables[section] = {}
            continue
        # the config classes live with their services (imported only when a table is given)
        if section == "blob":
            from arcnet.blobstore.service import BlobConfig as cls
        else:
            from arcnet.audit.service import AuditConfig as cls  # type: ignore[assignment]
        tables[section] = _knob_table(src, section, table, cls)
    dd = data_dir if data_dir is not None else values.pop("data_dir", None)
    values.pop("data_dir", None)
    if dd is None:
        dd = Path(path).parent if path is not None else default_data_dir()
    cfg = PeerConfig(data_dir=Path(dd), gossip=dict(gossip), source=src, **tables, **values)
    cfg.latitude = float(cfg.latitude)
    cfg.longitude = float(cfg.longitude)
    return cfg


def default_config_text(
    *,
    listen: str = "/ip4/127.0.0.1/tcp/4001",
    bootstrap: list[str] | None = None,
    region: str = "default",
    latitude: float = 0.0,
    longitude: float = 0.0,
    roles: list[str] | None = None,
    metrics_listen: str = "127.0.0.1:9464",
) -> str:
    """The commented config that ``arcnet init`` writes."""
    boot = ", ".join(f'"{b}"' for b in (bootstrap or []))
    role_list = ", ".join(f'"{r}"' for r in (roles or ["site"]))
    return f"""\
# arcnet-peer configuration. Every key is optional; the values shown are the defaults
# or what `arcnet init` was given. Units are in the names or the comments.

[peer]
# libp2p listen addresses. Use the site's routable address; never 0.0.0.0 (it would be
# advertised as is). Port 0 picks a free port at start.
listen = ["{listen}"]

# Peers to join through: full multiaddrs ending in /p2p/<peer id>. Two or three per
# region are plenty at any mesh size; the rest is learned by gossip.
bootstrap = [{boot}]

# Region of this site: leaders, replication policy and data residency are per region.
region = "{region}"

# Site coordinates, degrees (WGS84). Used for locality and the solar model.
latitude = {latitude}
longitude = {longitude}

# What this peer is: any of "site" (a 1 MW AI data-center module), "hpc", "edge".
roles = [{role_list}]

# Prometheus metrics and /health on this host:port; "" turns the endpoint off.
metrics_listen = "{metrics_listen}"

# Energy telemetry: "file:/run/arcnet/energy.json" (re-read every sample) or
# "command:/usr/local/bin/site-energy --json" (prints JSON readings). "" = none.
energy_source = ""

[blob]
# Blob store knobs (`arcnet.blobstore.service.BlobConfig`; examples/config.toml lists
# every one with its unit and default), e.g.:
# durable = true            # fsync every group commit
# cache_quota_bytes = 0     # bytes stored at most; 0 = no bound
# path_roots = ""           # colon-separated dirs for blob.put/get paths; "" = home and temp

[audit]
# Audit log knobs (`arcnet.audit.service.AuditConfig`; see examples/config.toml), e.g.:
# checkpoint_interval_s = 60.0   # seconds between log growth and its signed checkpoint
# witnesses = 2                  # peers asked to cosign each checkpoint

# [gossip] stays last: tools append its keys to this text.
[gossip]
# Membership and state-gossip knobs (see `arcnet.gossip.membership.Config` for units
# and how each scales with the number of peers). The defaults suit 10 to 10,000 peers.
"""
