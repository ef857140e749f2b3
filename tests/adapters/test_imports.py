"""Importing the adapters must not import an Azure SDK: an import error would hide every function."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import rotation.adapters.arm, rotation.adapters.keyvault, rotation.adapters.credential
print(json.dumps(sorted(m for m in sys.modules if m == "azure" or m.startswith("azure."))))
"""


def test_importing_the_adapters_imports_no_sdk() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                            check=True, timeout=60)

    loaded = json.loads(result.stdout)
    assert [m for m in loaded if m.startswith(("azure.identity", "azure.mgmt", "azure.keyvault"))] == []
    assert loaded == []  # not even azure.core
