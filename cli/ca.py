"""``arcnet ca``: the operator's certificate authority for a mesh.

An operator root key signs everything a mesh trusts: peers' membership
certificates, revocation lists, clients' project grants and project
policies (see :mod:`arcnet.mesh.admission` and :mod:`arcnet.mesh.authz`).
Keep the root key offline; what it signs are small files the operator
copies where they are needed:

=============================  ==============================================
``ca init``                    root key (0600) and ``root.pub``; copy the
                               ``.pub`` into every peer's ``DATA/trust/``
``ca issue PEER -o peer.cert`` a peer's certificate: ``DATA/peer.cert``
``ca revoke PEER``             adds to ``revocations.bin``: copy it to any
                               peer's ``DATA/revocations.bin`` (it spreads)
``ca grant CLIENT -o F``       a client's grant for one project
``ca policy PROJECT -o F``     a project's policy: ``DATA/projects/``
``ca show FILE``               what any of these files says
=============================  ==============================================

The root key is found at ``--key``, else ``$ARCNET_CA_KEY``, else
``$XDG_CONFIG_HOME/arcnet/ca/root.key`` (``~/.config/...``).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import click

from .client import CliError

__all__ = ["COMMANDS", "ca", "parse_duration"]

EXIT_USAGE = 2

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str) -> int:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w``, ``1y`` or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdwy]?)\s*", text or "")
    if not m or int(m.group(1)) <= 0:
        raise CliError(f"not a duration: {text!r} (expected e.g. 90d, 12h, 30m)", EXIT_USAGE)
    return int(m.group(1)) * _UNITS_S[m.group(2) or "s"]


def _default_key_path() -> Path:
    env = os.environ.get("ARCNET_CA_KEY")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "arcnet" / "ca" / "root.key"


def _root(key_path: str | None):
    from arcnet.mesh.identity import Identity, IdentityError

    path = Path(key_path) if key_path else _default_key_path()
    try:
        return Identity.load(path)
    except IdentityError as exc:
        raise CliError(f"operator key: {exc} (create one with `arcnet ca init`)", EXIT_USAGE) from None


def _peer_id_of(text: str) -> str:
    """A peer id from a peer id, a 64-hex public key, or a file holding either."""
    from arcnet.mesh.admission import load_public_key
    from arcnet.mesh.identity import peer_id_from_public_key

    source = text
    p = Path(text)
    if len(text) < 4096 and p.is_file():
        # A key file holds a secret seed in the same 64-hex form as a public key: refuse
        # anything that looks like one, or the seed would end up inside a certificate.
        if p.suffix == ".key" or not p.stat().st_mode & 0o044:
            raise CliError(f"{p} looks like a private key file; pass the peer id, the public key, or its .pub file",
                           EXIT_USAGE)
        source = p.read_text()
    try:
        return peer_id_from_public_key(load_public_key(source, text))
    except ValueError as exc:
        raise CliError(f"{exc}", EXIT_USAGE) from None


def _csv(text: str) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def _write(path: str, data: bytes) -> None:
    from arcnet.mesh.admission import _atomic_write

    _atomic_write(Path(path), data)


def _when(t_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_s))


def _emit(obj: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, sort_keys=True))
    else:
        click.echo("\n".join(lines))


key_option = click.option("--key", "key_path", metavar="FILE", help="Operator root key (default: $ARCNET_CA_KEY or ~/.config/arcnet/ca/root.key).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
expires_option = click.option("--expires", default="90d", show_default=True, help="Validity from now: 90d, 12h, 2w, 1y...")


@click.group()
def ca() -> None:
    """Operator certificate authority: root keys, peer certificates, revocations, client grants."""


@ca.command()
@key_option
@click.option("--force", is_flag=True, help="Replace an existing root key (everything it signed stops being trusted).")
@json_option
def init(key_path, force, as_json) -> None:
    """Create an operator root key (mode 0600) and its public half (.pub)."""
    from arcnet.mesh.admission import key_id
    from arcnet.mesh.identity import Identity

    path = Path(key_path) if key_path else _default_key_path()
    if path.exists() and not force:
        raise CliError(f"{path} exists; pass --force to replace it (certificates it signed would no longer verify)", EXIT_USAGE)
    root = Identity.generate()
    root.save(path)
    kid = key_id(root.public_key).hex()
    pub = path.with_suffix(".pub")
    pub.write_text(f"# arcnet operator root key {kid}, created {_when(int(time.time()))}\n{root.public_key.hex()}\n")
    _emit(
        {"key": str(path), "public_key": root.public_key.hex(), "public_key_file": str(pub), "key_id": kid},
        as_json,
        [root.public_key.hex(),
         f"key id       {kid}",
         f"private key  {path} (keep it offline)",
         f"public key   {pub}: copy it into every peer's DATA_DIR/trust/"],
    )


@ca.command()
@click.argument("peer")
@click.option("--region", required=True, help="The peer's region.")
@click.option("--roles", default="site", show_default=True, help="Comma-separated: site,hpc,edge.")
@expires_option
@click.option("-o", "--output", required=True, metavar="FILE", help="Certificate file (the peer's DATA_DIR/peer.cert).")
@key_option
@json_option
def issue(peer, region, roles, expires, output, key_path, as_json) -> None:
    """Issue a membership certificate for PEER (peer id, 64-hex public key, or a file with one)."""
    from arcnet.mesh.admission import ROLES, issue_certificate
    from arcnet.mesh.wire import WireError, encode

    role_list = _csv(roles)
    bad = [r for r in role_list if r not in ROLES]
    if bad or not role_list:
        raise CliError(f"--roles: expected any of {', '.join(ROLES)}, got {roles!r}", EXIT_USAGE)
    peer_id = _peer_id_of(peer)
    root = _root(key_path)
    now = int(time.time())
    try:
        cert = issue_certificate(root, peer_id, region=region, roles=role_list, not_before_s=now,
                                 expires_s=now + parse_duration(expires))
    except (WireError, ValueError) as exc:
        raise CliError(f"cannot issue: {exc}", EXIT_USAGE) from None
    _write(output, encode(cert))
    b = cert.body
    _emit(
        {"peer_id": b.peer_id, "region": b.region, "roles": b.roles, "serial": b.serial,
         "not_before_s": b.not_before_s, "expires_s": b.expires_s, "issuer": b.issuer.hex(), "file": output},
        as_json,
        [f"certificate for {b.peer_id}", f"region {b.region}, roles {','.join(b.roles)}, serial {b.serial}",
         f"valid until {_when(b.expires_s)}", f"written to {output}: copy it to the peer's DATA_DIR/peer.cert"],
    )


@ca.command()
@click.argument("peer_ids", nargs=-1)
@click.option("--serial", "serials", multiple=True, type=int, help="Also revoke this certificate or grant serial (repeatable).")
@click.option("--list", "list_path", default="revocations.bin", show_default=True, metavar="FILE",
              help="Revocation file to update (created if missing).")
@key_option
@json_option
def revoke(peer_ids, serials, list_path, key_path, as_json) -> None:
    """Revoke PEER_IDS (peers or clients) and --serial numbers: a new, signed version of the list."""
    from arcnet.mesh.admission import AdmissionError, RevocationBundle, decode_revocations, key_id, sign_revocations
    from arcnet.mesh.wire import WireError, encode

    if not peer_ids and not serials:
        raise CliError("nothing to revoke: give peer ids and/or --serial", EXIT_USAGE)
    ids = [_peer_id_of(p) for p in peer_ids]
    root = _root(key_path)
    mine = key_id(root.public_key)
    others, version, peers, old_serials = [], 0, set(), set()
    path = Path(list_path)
    if path.exists():
        try:
            lists = decode_revocations(path.read_bytes())
        except AdmissionError as exc:
            raise CliError(f"{path}: {exc}", EXIT_USAGE) from None
        for rl in lists:
            if rl.body.issuer == mine:
                version, peers, old_serials = rl.body.version, set(rl.body.peers), set(rl.body.serials)
            else:
                others.append(rl)
    try:
        rl = sign_revocations(root, version=version + 1, peers=peers | set(ids), serials=old_serials | set(serials),
                              issued_s=int(time.time()))
    except WireError as exc:
        raise CliError(f"cannot sign the list: {exc}", EXIT_USAGE) from None
    lists = sorted(others + [rl], key=lambda x: x.body.issuer)
    _write(str(path), encode(RevocationBundle(lists)))
    _emit(
        {"file": str(path), "issuer": mine.hex(), "version": rl.body.version, "peers": rl.body.peers,
         "serials": rl.body.serials},
        as_json,
        [f"revocation list version {rl.body.version}: {len(rl.body.peers)} peers, {len(rl.body.serials)} serials",
         f"written to {path}: copy it to any peer's DATA_DIR/revocations.bin (restart it) or push it with the "
         f"admission.revocations control method; admitted peers pass it on"],
    )


@ca.command()
@click.argument("client")
@click.option("--project", required=True, help="Project name, or '*' for every project (operators).")
@click.option("--caps", default="submit,read", show_default=True, help="Comma-separated: submit,read,publish,admin.")
@click.option("--expires", default="30d", show_default=True, help="Validity from now: 30d, 12h, 2w...")
@click.option("-o", "--output", required=True, metavar="FILE", help="Grant file for the client.")
@key_option
@json_option
def grant(client, project, caps, expires, output, key_path, as_json) -> None:
    """Grant CLIENT (its client key's peer id) capabilities in a project."""
    from arcnet.mesh.authz import CAPABILITIES, issue_grant
    from arcnet.mesh.wire import WireError, encode

    cap_list = _csv(caps)
    bad = [c for c in cap_list if c not in CAPABILITIES]
    if bad or not cap_list:
        raise CliError(f"--caps: expected any of {', '.join(CAPABILITIES)}, got {caps!r}", EXIT_USAGE)
    client_id = _peer_id_of(client)
    root = _root(key_path)
    now = int(time.time())
    try:
        g = issue_grant(root, client_id, project=project, caps=cap_list, not_before_s=now,
                        expires_s=now + parse_duration(expires))
    except (WireError, ValueError) as exc:
        raise CliError(f"cannot grant: {exc}", EXIT_USAGE) from None
    _write(output, encode(g))
    b = g.body
    _emit(
        {"client": b.client, "project": b.project, "caps": b.caps, "serial": b.serial, "expires_s": b.expires_s,
         "issuer": b.issuer.hex(), "file": output},
        as_json,
        [f"grant for client {b.client}", f"project {b.project}: {','.join(b.caps)}, serial {b.serial}",
         f"valid until {_when(b.expires_s)}", f"written to {output}"],
    )


@ca.command()
@click.argument("project")
@click.option("--models", default="", help="Allowed model ids, comma-separated (empty: any).")
@click.option("--datasets", default="", help="Allowed dataset ids, comma-separated (empty: any).")
@click.option("--regions", default="", help="Allowed regions, comma-separated (empty: any).")
@click.option("--private", is_flag=True, help="Encrypt the project's artifacts at rest.")
@click.option("--version", "version", type=int, default=None, help="Policy version (default: the time, so newer wins).")
@click.option("-o", "--output", required=True, metavar="FILE", help="Policy file (peers read DATA_DIR/projects/*.policy).")
@key_option
@json_option
def policy(project, models, datasets, regions, private, version, output, key_path, as_json) -> None:
    """Sign a project's policy: allowed models, datasets and regions (data residency)."""
    from arcnet.mesh.authz import sign_policy
    from arcnet.mesh.wire import WireError, encode

    root = _root(key_path)
    try:
        pp = sign_policy(root, project, version=version if version is not None else int(time.time()),
                         models=_csv(models), datasets=_csv(datasets), regions=_csv(regions), private=private)
    except (WireError, ValueError) as exc:
        raise CliError(f"cannot sign the policy: {exc}", EXIT_USAGE) from None
    _write(output, encode(pp))
    b = pp.body
    _emit(
        {"project": b.project, "version": b.version, "models": b.models, "datasets": b.datasets,
         "regions": b.regions, "private": b.private, "file": output},
        as_json,
        [f"policy of project {b.project}, version {b.version}",
         f"models {','.join(b.models) or 'any'}; datasets {','.join(b.datasets) or 'any'}; "
         f"regions {','.join(b.regions) or 'any'}; {'private' if b.private else 'not encrypted'}",
         f"written to {output}"],
    )


@ca.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def show(file) -> None:
    """Print what a certificate, grant, revocation file or policy says (JSON)."""
    import arcnet.mesh.authz  # noqa: F401 - registers the grant and policy messages
    from arcnet.mesh.wire import WireError, decode

    try:
        msg = decode(Path(file).read_bytes())
    except WireError as exc:
        raise CliError(f"{file}: not a file of `arcnet ca`: {exc}", EXIT_USAGE) from None

    def plain(v: Any) -> Any:
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if hasattr(v, "FIELDS"):
            return {n: plain(getattr(v, n)) for n, _ in v.FIELDS}
        return v

    click.echo(json.dumps({"type": type(msg).__name__, **plain(msg)}, indent=2, sort_keys=True))


COMMANDS = [ca]
