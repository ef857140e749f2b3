"""The app indexes the way the host expects, and importing it reads no setting and loads no SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.functions.conftest import indexed

ROOT = Path(__file__).resolve().parents[2]


def test_functions_bindings_and_routes() -> None:
    found = {}
    for fn in indexed().values():
        raw = json.loads(fn.get_function_json())
        found[fn.get_function_name()] = [
            (b["type"], b.get("route"), tuple(b.get("methods") or ()), b.get("authLevel"), b.get("schedule"))
            for b in raw["bindings"] if b["direction"] == "IN"
        ]
    assert found == {
        "on_gateway_token_event": [("eventGridTrigger", None, (), None, None)],
        "rotate": [("httpTrigger", "gateways/{service}/{gateway}/rotate", ("POST",), "FUNCTION", None)],
        "list_gateways": [("httpTrigger", "gateways", ("GET",), "FUNCTION", None)],
        "get_gateway": [("httpTrigger", "gateways/{service}/{gateway}", ("GET",), "FUNCTION", None)],
        "roll_keys": [("httpTrigger", "gateways/{service}/{gateway}/roll-keys", ("POST",), "ADMIN", None)],
        "health": [("httpTrigger", "health", ("GET",), "FUNCTION", None)],
        "sweep": [("timerTrigger", None, (), None, "%SWEEP_SCHEDULE%")],
    }


def test_import_with_an_empty_environment_loads_no_sdk() -> None:
    probe = (
        "import sys, function_app\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] == 'kubernetes' or m.startswith(("
        "'azure.identity', 'azure.keyvault', 'azure.mgmt', 'azure.eventgrid', 'azure.core', 'msal', 'yaml'))]\n"
        "print(','.join(sorted(heavy)))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == ""
    assert out.stderr == ""
