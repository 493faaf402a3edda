"""The sans-IO rule, enforced: protocol cores never import I/O, clocks or libp2p.

Direct imports are checked by an AST scan of every file in the core
packages; transitive imports by importing the cores in a fresh interpreter
and looking at ``sys.modules``.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"trio", "libp2p", "socket", "asyncio", "os", "time", "threading", "subprocess", "sqlite3", "selectors"}
# packages whose every module is a protocol core, and single core modules elsewhere
CORE_DIRS = ["gossip", "placement"]
CORE_FILES = ["mesh/core.py", "mesh/node.py", "mesh/wire.py", "blobstore/swarm.py", "blobstore/replication.py", "audit/witness.py", "runtime/batching.py"]


def _core_files():
    files = []
    for d in CORE_DIRS:
        files.extend(sorted((ROOT / d).rglob("*.py")))
    for f in CORE_FILES:
        if (ROOT / f).exists():
            files.append(ROOT / f)
    return files


def _imports(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def test_cores_import_no_io_directly():
    bad = []
    files = _core_files()
    assert any(f.name == "core.py" for f in files)
    for f in files:
        for line, mod in _imports(f):
            if mod in FORBIDDEN:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "sans-IO rule broken:\n" + "\n".join(bad)


def test_cores_and_simulator_do_not_pull_in_libp2p_or_trio():
    mods = ["arcnet.mesh.core", "arcnet.mesh.node", "arcnet.mesh.wire", "arcnet.sims.engine"]
    for d in CORE_DIRS:
        for f in sorted((ROOT / d).glob("*.py")):
            if f.name != "__init__.py":
                mods.append(f"arcnet.{d}.{f.stem}")
    code = (
        "import importlib, json, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in ('libp2p', 'trio'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
