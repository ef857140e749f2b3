"""The product package does not import the development stack.

`devstack/` ships with the source checkout, not with the Function App (it is kept out of the deployed
package), so any `import devstack` from `rotation` would fail in Azure. It has its own entry point,
`python -m devstack up|down|demo`; `python -m rotation demo` and `devstack up|down` only point there.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys
import rotation
names = [m.name for m in pkgutil.walk_packages(rotation.__path__, "rotation.") if m.name != "rotation.__main__"]
for name in names:
    importlib.import_module(name)
import function_app
from rotation.cli import main, parser
parser().parse_args(["demo"]); parser().parse_args(["devstack", "up", "--dir", "d"])
print(json.dumps({"modules": names, "devstack": sorted(m for m in sys.modules if m.split(".")[0] == "devstack")}))
"""


def test_importing_every_rotation_module_imports_no_devstack() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                            check=True, timeout=120)
    found = json.loads(result.stdout)
    assert "rotation.cli" in found["modules"] and "rotation.discover" in found["modules"]
    assert found["devstack"] == []


def test_no_rotation_module_names_devstack_in_an_import_statement() -> None:
    """Also the lazy, in-function imports (the run-time lookup goes through importlib by name)."""
    offenders = []
    for path in sorted((ROOT / "rotation").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "devstack"]
    assert offenders == []


def test_no_rotation_module_names_devstack_at_all() -> None:
    """Not even as a string handed to importlib: the product looks nothing of the local stack up."""
    offenders = []
    for path in sorted((ROOT / "rotation").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    node.value.split(".")[0] == "devstack" and "." in node.value:
                offenders.append(f"{path.relative_to(ROOT)}: {node.value!r}")
    assert offenders == []


def test_the_local_stack_commands_point_to_its_own_entry_point(tmp_path: Path) -> None:
    """In a checkout and in a deployed package alike (rotation/ without devstack/): one line on stderr naming the
    `python -m devstack` command to run, exit 2 (a usage error), nothing started or stopped."""
    import shutil

    shutil.copytree(ROOT / "rotation", tmp_path / "rotation")
    for cwd in (ROOT, tmp_path):
        for argv, expected in ((["devstack", "down", "--dir", "d"], "python -m devstack down --dir d"),
                               (["demo", "--keep"], "python -m devstack demo --keep")):
            result = subprocess.run([sys.executable, "-m", "rotation", *argv], cwd=cwd, capture_output=True,
                                    text=True, timeout=120)
            assert result.returncode == 2 and result.stdout == ""
            assert f"run `{expected}` from the source checkout" in result.stderr
            assert "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
