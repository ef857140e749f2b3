"""The product package does not import the development stack.

`devstack/` ships with the source checkout, not with the Function App (it is kept out of the deployed
package), so any `import devstack` from `rotation` would fail in Azure. `python -m rotation demo` and
`devstack up|down` stay (DESIGN §6) by looking `devstack.cli` up at run time only.
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
parser().parse_args(["demo"]); parser().parse_args(["devstack", "up"])
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


def test_the_cli_aliases_say_clearly_when_the_devstack_is_absent(tmp_path: Path) -> None:
    """A deployed package has rotation/ but no devstack/: the alias fails with a one-line error (exit 2)."""
    import shutil

    shutil.copytree(ROOT / "rotation", tmp_path / "rotation")
    result = subprocess.run([sys.executable, "-m", "rotation", "devstack", "down", "--dir", str(tmp_path / "d")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert "the local stack (devstack/) is not installed here" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_cli_aliases_delegate_to_the_devstack_in_a_checkout(tmp_path: Path) -> None:
    """`python -m rotation devstack down` (DESIGN §6) still works from the repository: it runs devstack.cli."""
    result = subprocess.run([sys.executable, "-m", "rotation", "devstack", "down", "--dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"devstack down in {tmp_path}: stopped nothing"
