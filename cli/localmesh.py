"""A mesh of real ``arcnet-peer`` processes on loopback, for the demo and the tests.

Each peer gets its own data directory, key and config (port 0: the OS picks
the ports; the peer reports them in ``run/peer.json``). The first peer of
each region is a bootstrap peer for everyone else. Processes are started in
their own process group and always reaped: :meth:`LocalMesh.close` (also on
Ctrl-C, via the context manager) stops them with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from arcnet.mesh.config import default_config_text
from arcnet.mesh.identity import Identity

__all__ = ["LOCAL_GOSSIP", "LocalMesh", "LocalPeer"]

# Gossip knobs for a handful of peers on one machine: converge in about a second,
# detect a crash in a few seconds, elect leaders after 2 s of stability. The
# defaults are tuned for WAN latencies and 10-10,000 sites.
LOCAL_GOSSIP = {
    "membership_probe_interval_s": 0.3,
    "membership_probe_timeout_s": 0.25,
    "membership_indirect_timeout_s": 0.3,
    "membership_gossip_interval_s": 0.1,
    "membership_suspicion_mult": 1.5,
    "membership_suspicion_max_mult": 3.0,
    "leader_stable_s": 2.0,
    "leader_interval_s": 0.5,
}


@dataclass
class LocalPeer:
    name: str
    data_dir: Path
    region: str
    peer_id: str
    proc: subprocess.Popen | None = None
    addrs: list[str] = field(default_factory=list)
    metrics: str = ""
    log_path: Path | None = None

    @property
    def addr(self) -> str:
        return self.addrs[0] if self.addrs else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalMesh:
    """``with LocalMesh(root, [("west", 37.77, -122.42), ...]) as mesh: mesh.start_all()``."""

    def __init__(self, root: str | os.PathLike[str], sites: list[tuple[str, float, float]], *,
                 gossip: dict | None = None, env: dict[str, str] | None = None, log_level: str = "info"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.peers: list[LocalPeer] = []
        self.env = dict(os.environ, **(env or {}))
        self.log_level = log_level
        self.gossip = gossip or {}
        for i, (region, lat, lon) in enumerate(sites):
            name = f"peer{i + 1}"
            dd = self.root / name
            dd.mkdir(parents=True, exist_ok=True)
            ident = Identity.load_or_create(dd / "peer.key")
            self.peers.append(LocalPeer(name, dd, region, ident.peer_id))
            self._sites = sites

    def _write_config(self, p: LocalPeer, lat: float, lon: float, bootstrap: list[str]) -> None:
        text = default_config_text(listen="/ip4/127.0.0.1/tcp/0", bootstrap=bootstrap, region=p.region,
                                   latitude=lat, longitude=lon, metrics_listen="127.0.0.1:0")
        for k, v in self.gossip.items():
            text += f"{k} = {json.dumps(v)}\n"
        (p.data_dir / "config.toml").write_text(text)

    def start(self, i: int, *, wait: bool = True, timeout_s: float = 30.0) -> LocalPeer:
        p = self.peers[i]
        region, lat, lon = self._sites[i]
        boot = [q.addr for q in self.peers if q is not p and q.addr and q.running][:3]
        if p.addrs and not boot:  # restart of the only peer: keep no bootstrap
            boot = []
        self._write_config(p, lat, lon, boot)
        run_file = p.data_dir / "run" / "peer.json"
        try:
            run_file.unlink()
        except FileNotFoundError:
            pass
        p.log_path = p.data_dir / "peer.log"
        logf = open(p.log_path, "ab")
        p.proc = subprocess.Popen(
            [sys.executable, "-m", "arcnet.cli.peer", "--config", str(p.data_dir / "config.toml"),
             "--log-level", self.log_level],
            stdout=logf, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        logf.close()
        if wait:
            self.wait_ready(i, timeout_s)
        return p

    def wait_ready(self, i: int, timeout_s: float = 30.0) -> LocalPeer:
        p = self.peers[i]
        run_file = p.data_dir / "run" / "peer.json"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if p.proc is not None and p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}; log: {self.tail(i)}")
            try:
                info = json.loads(run_file.read_text())
                p.addrs, p.metrics = info["addrs"], info.get("metrics", "")
                return p
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        raise TimeoutError(f"{p.name} did not start within {timeout_s} s; log: {self.tail(i)}")

    def start_all(self, timeout_s: float = 60.0) -> None:
        self.start(0, timeout_s=timeout_s)
        for i in range(1, len(self.peers)):
            self.start(i, wait=False)
        for i in range(1, len(self.peers)):
            self.wait_ready(i, timeout_s)

    def kill(self, i: int) -> None:
        """SIGKILL: the peer gets no chance to clean up (a crash)."""
        p = self.peers[i]
        if p.running:
            os.killpg(p.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
            p.proc.wait()  # type: ignore[union-attr]

    def stop(self, i: int, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if it would not stop. Returns the exit status."""
        p = self.peers[i]
        if p.proc is None:
            return None
        if p.proc.poll() is None:
            try:
                os.killpg(p.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(p.proc.pid, signal.SIGKILL)
                p.proc.wait()
        return p.proc.returncode

    def close(self) -> None:
        for i in range(len(self.peers)):
            try:
                self.stop(i, timeout_s=5.0)
            except Exception:  # reap everything we can, whatever happened to one
                pass

    def tail(self, i: int, lines: int = 20) -> str:
        p = self.peers[i]
        try:
            return "\n".join(p.log_path.read_text(errors="replace").splitlines()[-lines:])  # type: ignore[union-attr]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "LocalMesh":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
