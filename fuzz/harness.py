"""Run one fuzz target: ``python fuzz/harness.py TARGET [libFuzzer flags] [CORPUS_DIR...]``.

With atheris installed this is a libFuzzer harness (coverage-guided, the
project's modules instrumented): every libFuzzer flag works (``-runs=N``,
``-timeout=S``, ``-seed=N``, ``-artifact_prefix=DIR/``, ``-max_len=N``).
An exception other than the target's documented error type is a crash:
libFuzzer writes the input to ``<artifact_prefix>crash-<sha1>`` and stops.

Without atheris, a small mutation driver stands in (random bytes, bit and
byte flips, insertions, deletions, splices of corpus inputs), honouring
``-runs``, ``-seed``, ``-timeout``, ``-max_len`` and ``-artifact_prefix``
and printing the same ``Done N runs in S second(s)`` line, so ``fuzz/run.py``
reads both the same way. It is much weaker than coverage guidance: say so
when quoting its figures.

``python fuzz/harness.py --list`` prints the targets; ``--reproduce FILE``
runs a target once on a saved input and shows the traceback.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

try:
    import atheris  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None


def _load_targets():
    if atheris is not None:
        with atheris.instrument_imports(include=["arcnet", "targets"]):
            import targets
    else:
        import targets
    return targets


def _flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    flags, rest = {}, []
    for a in argv:
        if a.startswith("-") and "=" in a:
            k, v = a[1:].split("=", 1)
            flags[k] = v
        else:
            rest.append(a)
    return flags, rest


def _write_seeds(t, corpus_dirs: list[str]) -> None:
    """Put the target's valid seed inputs into the first corpus folder (if empty)."""
    if not corpus_dirs:
        return
    d = Path(corpus_dirs[0])
    d.mkdir(parents=True, exist_ok=True)
    if any(d.iterdir()):
        return
    for data in t.seeds():
        (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


class _Hang(BaseException):
    pass


def _mutate(rng: random.Random, data: bytes, pool: list[bytes], max_len: int) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(7)
        if op == 0 or not b:
            b[rng.randrange(len(b) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 1:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 2:
            b[rng.randrange(len(b))] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0x90, 0xC0, 0xDC, 0xDD, 0xCF, 0xD3])
        elif op == 3:
            i = rng.randrange(len(b))
            del b[i : i + rng.randrange(1, 9)]
        elif op == 4 and pool:
            other = rng.choice(pool)
            i, j = rng.randrange(len(b) + 1), rng.randrange(len(other) + 1)
            b = b[:i] + other[j:]
        elif op == 5:
            i = rng.randrange(len(b))
            b[i:i] = b[i : i + rng.randrange(1, 17)]
        else:
            i = rng.randrange(len(b))
            b[i : i + 4] = rng.randrange(1 << 32).to_bytes(4, "big")
    return bytes(b[:max_len])


def _fallback(t, flags: dict[str, str], corpus_dirs: list[str]) -> int:
    """A mutation driver for when atheris is not installed; same flags, same summary line."""
    runs = int(flags.get("runs", "-1"))
    seed = int(flags.get("seed", "0")) or int.from_bytes(os.urandom(4), "big")
    timeout_s = int(flags.get("timeout", "10"))
    max_len = int(flags.get("max_len", "4096"))
    prefix = flags.get("artifact_prefix", "./")
    rng = random.Random(seed)
    pool = list(t.seeds())
    for d in corpus_dirs:
        if Path(d).is_dir():
            pool.extend(p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file())
    pool = pool[:10_000] or [b""]
    print(f"INFO: fallback driver (atheris not installed): seed {seed}, {len(pool)} corpus inputs", file=sys.stderr)

    def alarm(signum, frame):
        raise _Hang()

    signal.signal(signal.SIGALRM, alarm)
    start = time.monotonic()
    n = 0
    while runs < 0 or n < runs:
        r = rng.random()
        if r < 0.05:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        elif r < 0.15 or n < len(pool):
            data = pool[n % len(pool)] if n < len(pool) else rng.choice(pool)
        else:
            data = _mutate(rng, rng.choice(pool), pool, max_len)
        n += 1
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            t.fn(data)
        except t.expected:
            pass
        except _Hang:
            path = f"{prefix}timeout-{hashlib.sha1(data).hexdigest()}"
            Path(path).write_bytes(data)
            print(f"==ERROR: libFuzzer: timeout after {timeout_s} seconds\nTest unit written to {path}", file=sys.stderr)
            return 70
        except BaseException:
            signal.setitimer(signal.ITIMER_REAL, 0)
            path = f"{prefix}crash-{hashlib.sha1(data).hexdigest()}"
            Path(path).write_bytes(data)
            traceback.print_exc()
            print(f"==ERROR: uncaught exception\nTest unit written to {path}", file=sys.stderr)
            return 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if len(data) > 64 and rng.random() < 0.001 and len(pool) < 10_000:
            pool.append(data)
    print(f"Done {n} runs in {int(time.monotonic() - start)} second(s)", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    targets = _load_targets()
    # Refusals are the point here: keep the decoders' warning lines off the fuzzer's output.
    logging.getLogger("arcnet").setLevel(logging.CRITICAL)
    if argv[1] == "--list":
        for name, t in targets.TARGETS.items():
            print(f"{name:24s} {t.doc}")
        return 0
    if argv[1] == "--reproduce":
        name, path = argv[2], argv[3]
        t = targets.TARGETS[name]
        try:
            t.fn(Path(path).read_bytes())
        except t.expected as exc:
            print(f"expected error: {type(exc).__name__}: {exc}")
        return 0
    name = argv[1]
    if name not in targets.TARGETS:
        print(f"unknown target {name!r}; `python fuzz/harness.py --list` lists them", file=sys.stderr)
        return 2
    t = targets.TARGETS[name]
    flags, corpus = _flags(argv[2:])
    _write_seeds(t, corpus)
    if atheris is None:
        return _fallback(t, flags, corpus)

    expected = t.expected
    fn = t.fn

    def one_input(data: bytes) -> None:
        try:
            fn(data)
        except expected:
            pass

    atheris.Setup([argv[0], *argv[2:]], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
