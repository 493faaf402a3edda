"""The fuzz targets themselves, briefly: every decoder survives its seeds and a few mutations.

The real campaign is ``make fuzz`` (``fuzz/run.py``, atheris, 10^6 inputs per
decoder); this keeps the targets honest in the normal suite: each one runs,
its seeds decode, only documented errors come out, and every registered wire
message type is covered by a structure-aware target. Deterministic (fixed
seed), a second or two.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import harness  # noqa: E402
import targets  # noqa: E402

from arcnet.mesh import wire  # noqa: E402

INPUTS_PER_TARGET = 300
SEED = 20240601


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_target_survives_seeds_and_mutations(name):
    t = targets.TARGETS[name]
    rng = random.Random(f"{SEED}:{name}")
    pool = t.seeds() or [b""]
    inputs = list(pool) + [harness._mutate(rng, rng.choice(pool), pool, 4096) for _ in range(INPUTS_PER_TARGET)]
    inputs += [bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(50)]
    for data in inputs:
        try:
            t.fn(data)
        except t.expected:
            pass
        # anything else fails the test with the input's traceback; reproduce with
        # python fuzz/harness.py --reproduce NAME FILE after writing `data` to FILE


def test_every_registered_message_type_has_a_structured_target():
    covered = {c for t in targets.TARGETS.values() for c in getattr(t.fn, "classes", ())}
    types = {c for c in wire.message_types().values()
             if c.__module__.startswith("arcnet.") and not c.__module__.startswith("arcnet.sims")}
    missing = sorted(c.__name__ for c in types - covered)
    assert not missing, f"no fuzz target for {missing}"


def test_seeds_reach_past_the_parser():
    # a decoder's valid seed must decode: otherwise the fuzzer only ever sees the front door
    for name in ("admission.certificate", "authz.grant", "authz.control", "authz.policy", "crypt.decrypt", "wire"):
        t = targets.TARGETS[name]
        ok = 0
        for data in t.seeds():
            try:
                t.fn(data)
                ok += 1
            except t.expected:
                pass
        assert ok >= 1, f"{name}: no seed gets through"
