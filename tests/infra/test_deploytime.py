"""The deploy-time-constant checker (tests/infra/deploytime.py) catches what `bicep build` would reject.

Rule texts: Azure/bicep src/Bicep.Core/Diagnostics/DiagnosticBuilder.cs (BCP120, BCP177, BCP178, BCP182) and the
visitors in src/Bicep.Core/TypeSystem/DeployTimeConstant*.cs; name limits: Bicep LanguageConstants.cs (deployment
names, 64 characters of [-\\w._()]) and Microsoft's resource-name-rules page. Each failing case below is one that the
compiler or ARM rejects; each passing case is one they accept (so the checker does not cry wolf).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.infra.templates import INFRA, MODULES, pycep

pycep()  # the checker runs in .venv-infra, like the rest of tests/infra
deploytime = pytest.importorskip("tests.infra.deploytime")
pytest.importorskip("tree_sitter_bicep")

FIXTURES = Path(__file__).parent / "fixtures"
BASELINES = sorted((FIXTURES / "bicep-baselines").glob("*.diagnostics.bicep"))
DTC_RULES = ("BCP120", "BCP177", "BCP178", "BCP182")


def violations_of(source: str, tmp_path: Path, name: str = "t.bicep") -> list[str]:
    path = tmp_path / name
    path.write_text(source, encoding="utf-8")
    return [f"{v.rule}:{v.line}: {v.message}" for v in deploytime.Template(path).deploy_time_violations()]


def project_violations(files: dict[str, str], tmp_path: Path) -> list[str]:
    for name, source in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source, encoding="utf-8")
    return [f"{v.rule}: {v.message}" for v in deploytime.Project.load(tmp_path).violations()]


# ------------------------------------------------------------------------------------------------------------
# The gate: every template in infra/ passes.
# ------------------------------------------------------------------------------------------------------------

def test_infra_passes_every_deploy_time_rule() -> None:
    problems = [str(v) for v in deploytime.Project.load(INFRA).violations()]
    assert problems == []


# ------------------------------------------------------------------------------------------------------------
# Conformance with the Bicep compiler's own baselines.
# ------------------------------------------------------------------------------------------------------------

def _baseline(path: Path) -> tuple[str, dict[int, set[str]]]:
    """Source and expected deploy-time errors (line -> rules) of a Bicep `main.diagnostics.bicep` baseline."""
    source: list[str] = []
    expected: dict[int, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("//@["):
            match = re.search(r"\[(BCP\d+) \(Error\)\]", line)
            if match and match.group(1) in DTC_RULES:
                expected.setdefault(len(source), set()).add(match.group(1))
        else:
            source.append(line)
    return "\n".join(source) + "\n", expected


@pytest.mark.parametrize("baseline", BASELINES, ids=[p.name.split(".")[0] for p in BASELINES])
def test_same_errors_on_the_same_lines_as_the_bicep_compiler(baseline: Path, tmp_path: Path) -> None:
    """Azure/bicep src/Bicep.Core.Samples/Files/baselines (see fixtures/bicep-baselines/README.md): the compiler's
    recorded diagnostics are the oracle, rule and line, including zero errors for ValidDeployTimeUsages."""
    source, expected = _baseline(baseline)
    path = tmp_path / "main.bicep"
    path.write_text(source, encoding="utf-8")
    got: dict[int, set[str]] = {}
    for violation in deploytime.Template(path).deploy_time_violations():
        got.setdefault(violation.line, set()).add(violation.rule)
    assert got == expected
    if "Valid" not in baseline.name[:5]:
        assert expected, "an Invalid baseline with no deploy-time errors would test nothing"


def test_the_corpus_covers_every_rule() -> None:
    rules = {rule for path in BASELINES for rules in _baseline(path)[1].values() for rule in rules}
    assert {"BCP120", "BCP178", "BCP182"} <= rules  # BCP177 has no baseline in Bicep's samples; cases below


# ------------------------------------------------------------------------------------------------------------
# Two defects the templates once had (BCP120, BCP178), as they were, and put back into the fixed templates.
# ------------------------------------------------------------------------------------------------------------

def test_fixture_app_settings_loop_over_runtime_values_is_bcp178() -> None:
    found = deploytime.Template(FIXTURES / "bcp178-app-settings-loop.bicep").deploy_time_violations()
    assert {(v.rule, v.line) for v in found} == {("BCP178", 120)}
    messages = " ".join(v.message for v in found)
    assert "applicationInsights.properties" in messages and "storage.properties" in messages
    assert "appSettings ->" in messages  # followed through the variable, as Bicep's dependency chain


def test_fixture_location_of_an_existing_resource_is_bcp120() -> None:
    found = deploytime.Template(FIXTURES / "bcp120-existing-location.bicep").deploy_time_violations()
    assert [(v.rule, v.line) for v in found] == [("BCP120", 58)]
    assert '"location" property' in found[0].message and "apim.location" in found[0].message


def test_putting_the_bcp120_line_back_fails(tmp_path: Path) -> None:
    shutil.copytree(INFRA, tmp_path / "infra")
    events = tmp_path / "infra" / "modules" / "apim-events.bicep"
    source = events.read_text(encoding="utf-8")
    assert "  location: location\n" in source
    events.write_text(source.replace("  location: location\n", "  location: apim.location\n", 1), encoding="utf-8")
    found = deploytime.Project.load(tmp_path / "infra").violations()
    # (the `location` parameter it no longer uses is reported too: no-unused-params)
    assert sorted((v.rule, v.path.name) for v in found) == [
        ("BCP120", "apim-events.bicep"), ("no-unused-params", "apim-events.bicep")]


def test_putting_the_bcp178_loop_back_fails(tmp_path: Path) -> None:
    shutil.copytree(INFRA, tmp_path / "infra")
    app = tmp_path / "infra" / "modules" / "function-app.bicep"
    source = app.read_text(encoding="utf-8")
    loop = ("\nvar appSettingsList = [for setting in items(union(baseAppSettings, extraAppSettings)): {\n"
            "  name: setting.key\n  value: setting.value\n}]\n")
    anchor = "resource plan "
    app.write_text(source.replace(anchor, loop + anchor, 1), encoding="utf-8")
    found = [v for v in deploytime.Project.load(tmp_path / "infra").violations() if v.rule in DTC_RULES]
    assert {v.rule for v in found} == {"BCP178"}
    assert all(v.path.name == "function-app.bicep" for v in found)


def test_putting_the_long_deployment_name_back_fails(tmp_path: Path) -> None:
    shutil.copytree(INFRA, tmp_path / "infra")
    main = tmp_path / "infra" / "main.bicep"
    source = main.read_text(encoding="utf-8")
    fixed = "  name: '${take('aks-access-${cluster.name}', 50)}-${uniqueString(cluster.resourceGroup, cluster.name, resourceToken)}'\n"
    assert fixed in source
    main.write_text(source.replace(fixed, "  name: 'aks-access-${cluster.name}-${resourceToken}'\n"), encoding="utf-8")
    found = deploytime.Project.load(tmp_path / "infra").violations()
    assert [(v.rule, v.path.name) for v in found] == [("ARM-NAME-LENGTH", "main.bicep")]
    assert "module aksAccess" in found[0].message and "unbounded" in found[0].message


# ------------------------------------------------------------------------------------------------------------
# More cases of each rule.
# ------------------------------------------------------------------------------------------------------------

HEADER = """
param prefix string
resource st 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: prefix
}
module mod 'm.bicep' = {
  name: 'mod'
}
"""


def test_condition_on_a_module_output_is_bcp177(tmp_path: Path) -> None:
    found = violations_of(HEADER + """
resource r 'Microsoft.Insights/components@2020-02-02' = if (mod.outputs.enabled) {
  name: 'x'
  location: 'westeurope'
}
""", tmp_path)
    assert len(found) == 1 and found[0].startswith("BCP177:")
    assert "mod.outputs" in found[0] and "only name" in found[0]


def test_name_from_reference_is_bcp120(tmp_path: Path) -> None:
    found = violations_of("""
param id string
resource r 'Microsoft.Insights/components@2020-02-02' = {
  name: reference(id, '2020-02-02').name
  location: 'westeurope'
}
""", tmp_path)
    assert len(found) == 1 and found[0].startswith("BCP120:") and "reference()" in found[0]


def test_variable_for_body_with_runtime_values_is_bcp182(tmp_path: Path) -> None:
    found = violations_of(HEADER + """
var endpoints = [for i in range(0, 2): '${st.properties.primaryEndpoints.blob}${i}']
""", tmp_path)
    assert len(found) == 1 and found[0].startswith("BCP182:") and "variable endpoints" in found[0]


def test_for_expression_over_a_module_output_is_bcp178(tmp_path: Path) -> None:
    found = violations_of(HEADER + """
resource c 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for n in mod.outputs.names: {
  name: 'default/${n}'
}]
""", tmp_path)
    assert len(found) == 1 and found[0].startswith("BCP178:")


def test_tags_and_sku_from_runtime_values_are_bcp120(tmp_path: Path) -> None:
    found = violations_of(HEADER + """
resource r 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan'
  location: 'westeurope'
  tags: {
    key: st.listKeys().keys[0].value
  }
  sku: {
    name: st.sku.name
  }
}
""", tmp_path)
    assert sorted(f.split(":")[0] for f in found) == ["BCP120", "BCP120"]
    assert any('"tags" property' in f and "listKeys()" in f for f in found)
    assert any('"sku" property' in f and "st.sku" in f for f in found)


def test_whole_module_or_existing_resource_with_runtime_name_is_bcp120(tmp_path: Path) -> None:
    found = violations_of(HEADER + """
resource late 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: mod.outputs.vaultName
}
resource s1 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: late
  name: 'a'
}
resource s2 'Microsoft.Insights/components@2020-02-02' = {
  name: late.name
  location: string(mod)
}
""", tmp_path)
    rules = sorted(f.split(":")[0] for f in found)
    assert rules == ["BCP120", "BCP120", "BCP120"]
    assert any('"parent"' in f for f in found)
    assert any('"name"' in f and "late.name" in f and "runtime value" in f for f in found)
    assert any('"location"' in f and "whole module mod" in f for f in found)


def test_what_bicep_accepts_passes(tmp_path: Path) -> None:
    (tmp_path / "abbr.json").write_text('{"st": "st"}', encoding="utf-8")
    found = violations_of(HEADER + """
param location string
param names array
var abbrs = loadJsonContent('abbr.json')
var token = toLower(uniqueString(subscription().id, prefix))
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: '${prefix}-kv'
}
resource a 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: '${abbrs.st}${token}'
  location: location
  tags: {
    vault: vault.id
    deployment: mod.name
    cloud: environment().name
  }
  properties: {
    anything: mod.outputs.x
  }
}
resource b 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for (n, i) in names: if (!empty(n)) {
  parent: vault
  name: '${n}-${i}-${st.name}'
}]
resource ra 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, a.id, 'x')
  scope: vault
  properties: {
    principalId: mod.outputs.principalId
  }
}
var settings = [for n in names: {
  name: n
}]
output endpoints array = [for n in names: st.properties.primaryEndpoints.blob]
""", tmp_path)
    assert found == []


# ------------------------------------------------------------------------------------------------------------
# ARM name limits, worst case.
# ------------------------------------------------------------------------------------------------------------

def test_unbounded_or_too_long_names_fail_and_bounded_ones_pass(tmp_path: Path) -> None:
    found = project_violations({
        "main.bicep": """
@maxLength(64)
param env string
param free string
var token = toLower(uniqueString(env))
module a 'm.bicep' = {
  name: 'a-deployment-name-that-is-fine-${token}'
  params: {
    accountName: 'st${token}'
  }
}
module b 'm.bicep' = {
  name: 'deploy-${env}'
  params: {
    accountName: take('st${free}', 24)
  }
}
module c 'm.bicep' = {
  name: 'with space'
  params: {
    accountName: 'storage${env}'
  }
}
""",
        "m.bicep": """
param accountName string
resource s 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: accountName
  location: 'westeurope'
}
""",
    }, tmp_path)
    assert sorted(found) == sorted([
        "ARM-NAME-LENGTH: module b: the deployment name `'deploy-${env}'` is up to 71 characters; ARM allows 64",
        "ARM-DEPLOYMENT-NAME-CHARS: module c: deployment names allow only [-\\w._()], not 'with space'",
        "ARM-NAME-LENGTH: resource s: the Microsoft.Storage/storageAccounts name `accountName` is up to 71 characters; ARM allows 24",
    ])


def test_unused_parameters_and_variables_fail(tmp_path: Path) -> None:
    """infra/bicepconfig.json sets no-unused-params and no-unused-vars to error: `bicep build` fails on them."""
    path = tmp_path / "t.bicep"
    path.write_text("""
param used string
param name string
var spare = 'x'
var alsoUsed = '${used}-1'
resource r 'Microsoft.Insights/components@2020-02-02' = {
  name: alsoUsed
  location: 'westeurope'
}
""", encoding="utf-8")
    found = [(v.rule, v.message) for v in deploytime.Template(path).unused_violations()]
    assert sorted(found) == [("no-unused-params", "parameter name is declared but never used"),
                             ("no-unused-vars", "variable spare is declared but never used")]


def test_rules_listed_are_the_ones_checked() -> None:
    assert set(deploytime.RULES) == {"BCP120", "BCP177", "BCP178", "BCP182", "ARM-NAME-LENGTH",
                                     "ARM-DEPLOYMENT-NAME-CHARS", "no-unused-params", "no-unused-vars"}
    assert {"name", "location", "scope", "parent", "tags", "sku", "identity"} <= deploytime.RESOURCE_DTC_PROPERTIES
    assert deploytime.NAME_LIMITS["microsoft.resources/deployments"] == 64
    assert (MODULES / "function-app.bicep").is_file()
