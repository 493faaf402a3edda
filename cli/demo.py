"""``make demo``: the whole loop on a local mesh of real peer processes, narrated.

Six ``arcnet-peer`` processes in three regions on loopback; every step is a
real ``arcnet`` command, printed before it runs:

1. the peers find each other (gossip) and elect a leader per region;
2. a small real ONNX model is published to the mesh;
3. an online inference job and a batch job are submitted to different peers;
   each placement is shown with its reasons (cost, energy, cache, bids);
4. the peer running the batch job is killed with SIGKILL mid-run, and the
   job finishes elsewhere;
5. an artifact moves to a peer that lacks it, with a progress bar;
6. an audit bundle of the batch job is exported and verified offline;
7. everything stops cleanly. Ctrl-C at any point stops every peer started.

``python -m arcnet.cli.demo [--dir DIR] [--keep]``.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.panel import Panel

from .client import CliError
from .localmesh import LOCAL_GOSSIP, LocalMesh

SITES = [
    ("west", 37.77, -122.42),  # San Francisco
    ("west", 47.61, -122.33),  # Seattle
    ("central", 41.88, -87.63),  # Chicago
    ("central", 32.78, -96.80),  # Dallas
    ("east", 40.71, -74.01),  # New York
    ("east", 33.75, -84.39),  # Atlanta
]

console = Console(highlight=False)


class Demo:
    def __init__(self, root: Path):
        self.root = root
        self.env = dict(os.environ, ARCNET_CLIENT_KEY=str(root / "client.key"))
        self.mesh = LocalMesh(root / "peers", SITES, gossip=LOCAL_GOSSIP)
        self.t0 = time.monotonic()

    def step(self, n: int, title: str, text: str = "") -> None:
        console.print()
        body = f"[bold]{title}[/bold]" + (f"\n{' '.join(text.split())}" if text else "")
        console.print(Panel(body, title=f"step {n}  ({time.monotonic() - self.t0:.0f} s)", expand=False, width=100))

    def arcnet(self, *args: str, check: bool = True, show: bool = True, capture: bool = False) -> str:
        cmd = ["arcnet", *args]
        shown = " ".join(shlex.quote(a) if not a.startswith("/ip4/") else a[:24] + "…" for a in cmd)
        if show:
            console.print(f"[cyan]$ {shown}[/cyan]")
        r = subprocess.run([sys.executable, "-m", "arcnet.cli.main", *args], env=self.env, text=True,
                           stdout=subprocess.PIPE if capture else None, stderr=None)
        if check and r.returncode != 0:
            raise click.ClickException(f"`{shown}` failed with exit status {r.returncode}")
        return r.stdout or ""

    def call(self, i: int, method: str, args: dict | None = None) -> dict:
        """A control call from this process (no CLI start-up cost): for polling."""
        from .client import call

        return call(self.addr(i), method, args)

    def addr(self, i: int) -> str:
        return self.mesh.peers[i].addr

    def name(self, peer_id: str) -> str:
        for p in self.mesh.peers:
            if p.peer_id == peer_id:
                return f"{p.name} ({p.region})"
        return peer_id[-8:]

    def wait(self, what: str, fn, timeout_s: float = 60.0, interval_s: float = 0.3):
        deadline = time.monotonic() + timeout_s
        with console.status(what):
            while time.monotonic() < deadline:
                try:
                    out = fn()
                except (click.ClickException, json.JSONDecodeError, KeyError, CliError):
                    out = None
                if out:
                    return out
                time.sleep(interval_s)
        raise click.ClickException(f"timed out: {what}")

    def job_state(self, peer: int, job: str) -> dict:
        return self.call(peer, "job.show", {"job_id": job})

    def run(self) -> None:
        m = self.mesh
        self.step(1, "Start six peers in three regions",
                  "Each is a separate `arcnet-peer` process: libp2p over TCP with Noise, its own key,\n"
                  "data directory, chunk store and audit log. They join through the first peer.")
        m.start_all()
        for p in m.peers:
            console.print(f"  {p.name}  {p.region:<8} {p.peer_id}  pid {p.proc.pid}")

        def converged():
            for i in range(len(m.peers)):
                res = self.call(i, "peers")
                alive = [x for x in res["members"] if x["state"] == "alive"]
                if len(alive) != len(m.peers) or not all(res["leaders"].get(r) for r in ("west", "central", "east")):
                    return None
            return res

        res = self.wait("gossip converging and regions electing leaders", converged, 60)
        console.print("Every peer sees all six alive; what peer1 sees:")
        self.arcnet("peers", "--peer", self.addr(0))
        console.print("Regional leaders (the same on every peer, computed from converged state, no votes): "
                      + ", ".join(f"{r}: {self.name(l)}" for r, l in sorted(res["leaders"].items())))

        self.step(2, "Publish a small real ONNX model to the mesh",
                  "An MLP classifier built with the ONNX helper API. It becomes a content-addressed\n"
                  "artifact on peer3 and a signed entry in the catalog, held by 3 peers chosen by hashing.")
        from arcnet.runtime import models

        model_path = self.root / "mlp.onnx"
        model_path.write_bytes(models.mlp_classifier())
        self.arcnet("model", "publish", str(model_path), "--name", "mlp", "--version", "1", "--task", "classify",
                    "--peer", self.addr(2))
        self.arcnet("model", "ls", "--peer", self.addr(5))

        self.step(3, "Submit an online inference job to peer1 and a batch job to peer5",
                  "Any peer takes a submission. It picks candidates by rendezvous hashing, they bid from\n"
                  "fresh local facts (queue, missing bytes, energy now, health), the best bid wins,\n"
                  "and 3 custodians hold the job record so it survives crashes.")
        x = np.random.default_rng(7).standard_normal((4, 16)).astype(np.float32)
        xin = self.root / "x.npy"
        np.save(xin, x, allow_pickle=False)
        out = self.arcnet("submit", "--model", "mlp@1", "--input", f"x={xin}", "--region", "west",
                          "--peer", self.addr(0), "--json", capture=True)
        online = json.loads(out)["job_id"]
        console.print(f"  online job {online}")
        records = np.random.default_rng(8).standard_normal((60000, 16)).astype(np.float32)
        rin = self.root / "records.npy"
        np.save(rin, records, allow_pickle=False)
        jobfile = self.root / "batch.toml"
        jobfile.write_text('kind = "batch"\nmodel = "mlp@1"\nregions = ["central", "east"]\nrun_s = 8.0\n'
                           '[params]\nbatch_size = 1\n[inputs]\nrecords = "records.npy"\n')
        from rich.markup import escape

        console.print(f"[dim]{jobfile.name}:\n{escape(jobfile.read_text())}[/dim]")
        out = self.arcnet("submit", str(jobfile), "--peer", self.addr(4), "--json", capture=True)
        batch = json.loads(out)["job_id"]
        console.print(f"  batch job {batch} (60,000 records, one at a time: a few seconds of work)")

        self.step(4, "Kill the peer running the batch job, mid-run",
                  "SIGKILL: no goodbye. Membership detects it, a custodian re-places the job with a new\n"
                  "attempt epoch, and another peer fetches the inputs and model and runs it again.")
        first = self.wait("the batch job starting", lambda: (s := self.job_state(4, batch)).get("state") == "running" and s,
                          60, 0.1)
        victim = next(i for i, p in enumerate(m.peers) if p.peer_id == first["executor"])
        console.print(f"  the batch job runs on {self.name(first['executor'])}; killing it now")
        m.kill(victim)
        t_kill = time.monotonic()
        done = self.wait("the batch job finishing elsewhere", lambda: (s := self.job_state(4, batch)).get("state")
                         in ("done", "failed") and s, 120, 0.3)
        console.print(f"  finished on {self.name(done['executor'])} after {done['attempts']} attempts, "
                      f"{time.monotonic() - t_kill:.1f} s after the kill")
        self.arcnet("job", "show", batch, "--peer", self.addr(4))
        self.arcnet("result", batch, "--peer", self.addr(4), "-o", str(self.root / "batch-result"))

        console.print("Meanwhile the online job finished long ago:")
        self.wait("the online job finishing", lambda: self.job_state(0, online).get("state") == "done", 60, 0.2)
        self.arcnet("job", "show", online, "--peer", self.addr(0))
        self.arcnet("result", online, "--peer", self.addr(0))

        self.step(5, "Move an artifact to a peer that lacks it",
                  "peer2 fetches the batch job's input from the peers that hold it, several at once,\n"
                  "each chunk verified by its BLAKE3 hash before it is stored.")
        blobs = self.call(4, "blob.ls")
        items = blobs.get("artifacts", []) if isinstance(blobs, dict) else blobs
        rec = next((b for b in items if b.get("name", "").startswith("input:records")), None)
        if rec is not None:
            self.arcnet("blob", "get", rec["id"], "--peer", self.addr(1), "-o", str(self.root / "records-copy.npy"))
            same = (self.root / "records-copy.npy").read_bytes() == rin.read_bytes()
            console.print(f"  copy identical to the original: {same}")

        self.step(6, "Export the batch job's audit bundle and verify it offline",
                  "Every peer keeps a signed Merkle log; checkpoints are cosigned by other peers.\n"
                  "The bundle stitches the entries of the job's submitter, custodians and executors.")
        bundle = self.root / f"{batch}.bundle"
        self.arcnet("audit", "export", "--job", batch, "-o", str(bundle), "--peer", self.addr(4))
        trust = self.root / "trust.keys"  # the auditor's trusted keys: here, the six peer ids
        trust.write_text("".join(p.peer_id + "\n" for p in m.peers))
        self.arcnet("audit", "verify", str(bundle), "--trust", str(trust))

        self.step(7, "Stop every peer cleanly", "SIGTERM: each peer announces it leaves, flushes its logs, exits 0.")
        codes = [m.stop(i) for i in range(len(m.peers))]
        for p, c in zip(m.peers, codes):
            console.print(f"  {p.name}: " + ("killed in step 4" if c == -9 else f"exit status {c}"))
        console.print(f"\n[bold green]demo finished in {time.monotonic() - self.t0:.0f} s[/bold green]; "
                      f"data directories and logs are under {self.root}")


@click.command()
@click.option("--dir", "root", default="demo-run", show_default=True, type=click.Path(file_okay=False))
def main(root: str) -> None:
    """Run the narrated demo on a local mesh of real peers."""
    from arcnet.mesh.logs import setup_logging

    setup_logging("critical")  # the demo narrates; library chatter stays in the peers' logs
    path = Path(root).resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    demo = Demo(path)
    try:
        demo.run()
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted: stopping every peer[/yellow]")
        sys.exit(130)
    finally:
        demo.mesh.close()


if __name__ == "__main__":
    main()
