"""Placement cores are sans-IO: no module under placement/ may import I/O, clocks or tasks."""

from __future__ import annotations

import ast
import pathlib

FORBIDDEN = {"trio", "libp2p", "socket", "asyncio", "os", "time", "threading", "subprocess", "selectors"}
ROOT = pathlib.Path(__file__).resolve().parent.parent / "placement"


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_placement_imports_no_io_clock_or_tasks():
    files = sorted(ROOT.glob("*.py"))
    assert len(files) >= 8
    for f in files:
        bad = _imports(f) & FORBIDDEN
        assert not bad, f"{f.name} imports {sorted(bad)}: placement cores must stay sans-IO"


def test_placement_does_not_depend_on_the_simulator_or_the_daemon():
    for f in sorted(ROOT.glob("*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("arcnet.sims", "arcnet.mesh.peer", "arcnet.mesh.transport")), f.name
