"""Fuzz every decoder: each target in its own process, N inputs each; a table of inputs, crashes, hangs.

    python fuzz/run.py --inputs 1000000            # all targets, one after another
    python fuzz/run.py --inputs 100000 --only wire,framing --jobs 2
    python fuzz/run.py --inputs 1000000 --json     # one JSON object of figures

Each target runs as ``fuzz/harness.py TARGET -runs=N ...`` in a subprocess,
so a crash (an exception outside the decoder's documented error type, or a
broken round-trip), an out-of-memory or a hang (one input over
``--timeout-s``) is caught, counted and saved under ``--artifacts``
(``<target>-crash-<sha1>``), and the next target still runs. After a crash
the target is restarted for the inputs it has left (``--restarts`` times),
so one bug does not hide the rest of the run. A target that runs past
``--target-timeout-s`` in all is stopped and counted as a hang.

Seeds: each target starts from valid encodings (``targets.py``) in a
corpus folder under ``--workdir`` that persists between runs, so later runs
start where earlier ones got to. Reproduce a saved input with
``python fuzz/harness.py --reproduce TARGET FILE``.

Exit status: 0 if every target finished its inputs with no crash and no hang.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "harness.py"

_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.M)
_STATUS = re.compile(r"^#(\d+)\s", re.M)
_ARTIFACT = re.compile(r"(?:Test unit written to|artifact_prefix='[^']*'; Test unit written to) (\S+)")


def list_targets(python: str) -> list[tuple[str, str]]:
    out = subprocess.run([python, str(HARNESS), "--list"], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        sys.exit(f"cannot list targets:\n{out.stderr}")
    rows = []
    for line in out.stdout.splitlines():
        if line.strip():
            name, _, doc = line.partition(" ")
            rows.append((name, doc.strip()))
    return rows


def driver_name(python: str) -> str:
    ok = subprocess.run([python, "-c", "import atheris"], capture_output=True).returncode == 0
    return "atheris (libFuzzer)" if ok else "fallback mutation driver (atheris not installed)"


def run_target(name: str, args: argparse.Namespace, seed: int) -> dict:
    work = Path(args.workdir)
    corpus = work / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    done = crashes = hangs = 0
    saved: list[str] = []
    start = time.monotonic()
    deadline = start + args.target_timeout_s
    attempt = 0
    while done < args.inputs and attempt <= args.restarts:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            hangs += 1
            saved.append("(target timeout: stopped before its inputs were done)")
            break
        cmd = [args.python, str(HARNESS), name, f"-runs={args.inputs - done}", f"-timeout={args.timeout_s}",
               f"-seed={seed + attempt}", f"-max_len={args.max_len}", f"-rss_limit_mb={args.rss_limit_mb}",
               f"-artifact_prefix={artifacts}/{name}-", "-print_final_stats=1", str(corpus)]
        log_path = logs / f"{name}.{attempt}.log"
        with open(log_path, "w") as log:
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=left_s).returncode
            except subprocess.TimeoutExpired:
                rc = None
        text = log_path.read_text(errors="replace")
        m = _DONE.findall(text)
        if m:
            ran = int(m[-1][0])
        else:
            status = _STATUS.findall(text)
            ran = int(status[-1]) if status else 0
        done += ran
        attempt += 1
        if rc is None:
            hangs += 1
            saved.append(f"(stopped after {args.target_timeout_s:g} s; log {log_path})")
            break
        if rc == 0 and m:
            break
        paths = _ARTIFACT.findall(text)
        is_hang = "libFuzzer: timeout" in text
        if is_hang:
            hangs += 1
        else:
            crashes += 1
        saved.extend(paths or [f"(exit {rc}; log {log_path})"])
        done += 1  # the input that crashed
    elapsed = time.monotonic() - start
    return {"target": name, "inputs": done, "crashes": crashes, "hangs": hangs, "seconds": round(elapsed, 1),
            "exec_per_s": round(done / elapsed) if elapsed > 0 else 0, "artifacts": saved, "restarts": attempt - 1}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target (default 1,000,000)")
    p.add_argument("--only", default="", help="comma-separated target names or prefixes (default: all)")
    p.add_argument("--jobs", type=int, default=1, help="targets run at once (default 1)")
    p.add_argument("--timeout-s", type=int, default=10, help="one input longer than this is a hang (default 10)")
    p.add_argument("--target-timeout-s", type=float, default=4 * 3600, help="wall-clock bound per target (default 4 h)")
    p.add_argument("--max-len", type=int, default=4096, help="largest input in bytes (default 4096)")
    p.add_argument("--rss-limit-mb", type=int, default=2048)
    p.add_argument("--restarts", type=int, default=3, help="restarts after a crash, per target (default 3)")
    p.add_argument("--seed", type=int, default=1, help="base seed; target i uses seed + 1000 * i (default 1)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "arcnet-fuzz"), help="corpora and logs")
    p.add_argument("--artifacts", default=str(HERE / "artifacts"), help="where crashing inputs are saved")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args()

    all_targets = list_targets(args.python)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    names = [n for n, _ in all_targets if not wanted or any(n == w or n.startswith(w + ".") for w in wanted)]
    if not names:
        sys.exit(f"no target matches --only {args.only!r}; targets: {', '.join(n for n, _ in all_targets)}")
    driver = driver_name(args.python)
    if not args.json:
        print(f"fuzzing {len(names)} targets x {args.inputs:,} inputs with {driver}; seed {args.seed}; "
              f"reproduce: python fuzz/run.py --inputs {args.inputs} --seed {args.seed}"
              + (f" --only {','.join(wanted)}" if wanted else ""), flush=True)
    started = time.monotonic()
    results: dict[str, dict] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_target, n, args, args.seed + 1000 * i): n for i, n in enumerate(names)}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            results[r["target"]] = r
            if not args.json:
                flag = "" if not (r["crashes"] or r["hangs"]) else "  <-- " + "; ".join(r["artifacts"][:2])
                print(f"  done {r['target']:24s} {r['inputs']:>12,} inputs {r['crashes']:>3} crashes "
                      f"{r['hangs']:>3} hangs {r['seconds']:>8.1f} s{flag}", flush=True)
    rows = [results[n] for n in names]
    total = {"inputs": sum(r["inputs"] for r in rows), "crashes": sum(r["crashes"] for r in rows),
             "hangs": sum(r["hangs"] for r in rows), "seconds": round(time.monotonic() - started, 1)}
    short = [r["target"] for r in rows if r["inputs"] < args.inputs]
    if args.json:
        print(json.dumps({"driver": driver, "inputs_per_target": args.inputs, "seed": args.seed, "targets": rows,
                          "total": total, "short_of_inputs": short}, indent=2))
    else:
        print()
        print(f"{'decoder':24s} {'inputs':>12s} {'crashes':>8s} {'hangs':>6s} {'exec/s':>8s} {'seconds':>9s}")
        for r in rows:
            print(f"{r['target']:24s} {r['inputs']:>12,} {r['crashes']:>8} {r['hangs']:>6} {r['exec_per_s']:>8,} "
                  f"{r['seconds']:>9.1f}")
        print(f"{'total':24s} {total['inputs']:>12,} {total['crashes']:>8} {total['hangs']:>6} {'':>8} "
              f"{total['seconds']:>9.1f}")
        for r in rows:
            for a in r["artifacts"]:
                print(f"  {r['target']}: {a}")
    return 0 if not (total["crashes"] or total["hangs"] or short) else 1


if __name__ == "__main__":
    sys.exit(main())
