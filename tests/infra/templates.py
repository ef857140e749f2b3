"""Loading and walking the Bicep templates for the infra checks (no Bicep compiler: pycep's parse tree).

pycep wraps a resource or module body in a condition or a loop; `body()` unwraps those so tests can read
`properties`, `params` and `scope` the same way whichever form a declaration takes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MODULES = INFRA / "modules"
MAIN = INFRA / "main.bicep"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# The app settings Bicep sets: README's configuration table (the contract) without the two it leaves to the
# app's defaults (tests/infra/test_resources.py::test_the_pinned_settings_are_the_readmes_table holds them equal).
APP_SETTINGS = (
    "ROTATION_REGISTRY",
    "KEY_VAULT_URL",
    "ARM_ENDPOINT",
    "TOKEN_LIFETIME_DAYS",
    "RENEW_BEFORE_DAYS",
    "ROTATION_DEADLINE_SECONDS",
    "SWEEP_SCHEDULE",
    "OUTCOME_TOPIC_ENDPOINT",
    "AZURE_CLIENT_ID",
    "DEADLETTER_BLOB_URL",
    "LEASE_CONTAINER_URL",
    "CONFIG_KEY_VAULT_URL",
    "AZURE_CLOUD",
)
# ARM_ENDPOINT is an emulator-only override (a sovereign cloud is chosen with AZURE_CLOUD): set only when the
# armEndpoint parameter is given. Every other setting is always set.
CONDITIONAL_SETTINGS = ("ARM_ENDPOINT",)

# The fields of the rotation.* records (README "Monitoring in the Portal") plus the sweep's expiry record: the
# only fields the alerts and the workbook may read.
LOG_FIELDS = frozenset({
    "event", "gatewayId", "service", "gateway", "rotated", "expiresAt", "keyType", "fingerprint", "reason",
    "durationMs", "outcome", "cluster", "namespace", "secret", "error", "hoursLeft",
})


def pycep() -> Any:
    return pytest.importorskip("pycep", reason="infra checks run in .venv-infra (scripts/infra-check.sh)")


@functools.cache
def parse(path: Path) -> dict[str, Any]:
    tree: dict[str, Any] = pycep().BicepParser().parse(file_path=path)
    return tree


def rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if REPO in path.parents else str(path)


def body(decl: dict[str, Any]) -> dict[str, Any]:
    """The object a resource or module declares, through any `if (...)` or `[for ...]` wrapper."""
    config: dict[str, Any] = decl["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def condition(decl: dict[str, Any]) -> Any:
    return decl["config"].get("condition") if "config" in decl["config"] else None


def resources_of_type(tree: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in tree.get("resources", {}).items() if r["type"].lower() == rtype.lower()}


def all_resources(rtype: str) -> list[tuple[Path, str, dict[str, Any]]]:
    return [(p, n, r) for p in BICEP_FILES for n, r in resources_of_type(parse(p), rtype).items()]


def one_resource(path: Path, rtype: str) -> dict[str, Any]:
    found = resources_of_type(parse(path), rtype)
    assert len(found) == 1, f"{rel(path)}: expected one {rtype}, found {sorted(found)}"
    return next(iter(found.values()))


def module_path(caller: Path, decl: dict[str, Any]) -> Path:
    return (caller.parent / str(decl["detail"]["path"])).resolve()


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair anywhere in a parse tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def text(node: Any) -> str:
    return json.dumps(node, default=str)


def decorator(decl: dict[str, Any], kind: str) -> Any:
    for dec in decl.get("decorators", []):
        if dec["type"] == kind:
            return dec.get("argument", True)
    return None


def string_values(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in string_values(v)]
    if isinstance(node, list):
        return [s for v in node for s in string_values(v)]
    return []


def source_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()

