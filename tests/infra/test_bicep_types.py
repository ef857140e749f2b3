"""The type rules of tests/infra/bicep_types.py reject what `bicep build` rejects and pass what it accepts.

Sources, per rule (transcribed in bicep_types.py's docstring): Azure/bicep src/Bicep.Core/Syntax/
ParameterDeclarationSyntax.cs (@allowed makes a literal union), TypeSystem/TypeValidator.cs (only a loose string, a
parameter without @allowed, is assignable to a literal), Semantics/Namespaces/AzNamespaceType.cs (`environment().name`
is `string`), TypeSystem/TypeAssignmentVisitor.cs (interpolations, BCP318 and IsResourceInfoProperty); the same
report as Azure/bicep#10098. Name patterns: Azure/bicep-types-az generated types (microsoft.keyvault 2023-07-01,
microsoft.storage 2023-05-01, microsoft.resources 2024-03-01) and Bicep LanguageConstants.cs for module names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.infra.templates import INFRA, pycep

pycep()  # runs in .venv-infra, like the rest of tests/infra
pytest.importorskip("tree_sitter_bicep")
deploytime = pytest.importorskip("tests.infra.deploytime")
bicep_types = pytest.importorskip("tests.infra.bicep_types")

CALLEE = """
@allowed([
  'AzureCloud'
  'AzureUSGovernment'
])
param cloud string = 'AzureCloud'
output c string = cloud
"""


def type_violations(files: dict[str, str], tmp_path: Path) -> list[str]:
    for name, source in files.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    project = deploytime.Project.load(tmp_path)
    return [f"{v.rule}:{v.line}" for v in bicep_types.violations(project.templates)]


def caller(value: str, prelude: str = "") -> str:
    return f"""{prelude}
module m 'callee.bicep' = {{
  name: 'm'
  params: {{
    cloud: {value}
  }}
}}
"""


@pytest.mark.parametrize("value", [
    "environment().name",  # main.bicep's own line, as it was
    "'${environment().name}'",
    "toUpper(free)",
    "'Azure${free}'",
    "other.outputs.c",
])
def test_a_function_result_interpolation_or_output_into_allowed_is_bcp036(value: str, tmp_path: Path) -> None:
    prelude = "param free string\nmodule other 'callee.bicep' = {\n  name: 'o'\n}\n"
    found = type_violations({"callee.bicep": CALLEE, "main.bicep": caller(value, prelude)}, tmp_path)
    assert found == ["BCP036:9"]


@pytest.mark.parametrize(("value", "prelude"), [
    ("'AzureCloud'", ""),
    ("free", "param free string"),  # a parameter without @allowed is a loose string (TypeValidator)
    ("narrow", "@allowed([\n  'AzureCloud'\n])\nparam narrow string"),
    ("gov ? 'AzureUSGovernment' : 'AzureCloud'", "param gov bool"),
    ("'Azure${suffix}'", "var suffix = 'Cloud'"),  # folds to a literal (VisitStringSyntax)
    ("any(environment().name)", ""),
])
def test_literals_loose_parameters_and_any_pass(value: str, prelude: str, tmp_path: Path) -> None:
    assert type_violations({"callee.bicep": CALLEE, "main.bicep": caller(value, prelude)}, tmp_path) == []


def test_a_literal_outside_allowed_and_a_wider_allowed_union_are_bcp036(tmp_path: Path) -> None:
    wide = "@allowed([\n  'AzureCloud'\n  'AzureChinaCloud'\n])\nparam wide string"
    assert type_violations({"callee.bicep": CALLEE, "main.bicep": caller("'AzureChinaCloud'")}, tmp_path) \
        == ["BCP036:5"]
    assert type_violations({"callee.bicep": CALLEE, "main.bicep": caller("wide", wide)}, tmp_path) == ["BCP036:9"]


def test_a_function_result_as_an_allowed_default_is_bcp033(tmp_path: Path) -> None:
    source = "@allowed([\n  'AzureCloud'\n])\nparam cloud string = environment().name\noutput c string = cloud\n"
    assert type_violations({"main.bicep": source}, tmp_path) == ["BCP033:4"]


def test_putting_the_environment_name_back_into_the_module_param_fails(tmp_path: Path) -> None:
    """The defect as it was: main.bicep passed `azureCloud: environment().name` to function-app.bicep, whose
    azureCloud parameter had @allowed (BCP036, an error in a module body)."""
    shutil.copytree(INFRA, tmp_path / "infra")
    app = tmp_path / "infra" / "modules" / "function-app.bicep"
    main = tmp_path / "infra" / "main.bicep"
    app.write_text(app.read_text(encoding="utf-8").replace(
        "@description('Extra app settings",
        "@allowed([\n  'AzureCloud'\n  'AzureUSGovernment'\n  'AzureChinaCloud'\n])\n"
        "param azureCloud string = 'AzureCloud'\n\n@description('Extra app settings", 1), encoding="utf-8")
    source = main.read_text(encoding="utf-8")
    main.write_text(source.replace("    armEndpoint: armEndpoint\n",
                                   "    azureCloud: environment().name\n    armEndpoint: armEndpoint\n", 1),
                    encoding="utf-8")
    found = [v for v in deploytime.Project.load(tmp_path / "infra").violations() if v.rule == "BCP036"]
    assert len(found) == 1 and "environment().name" in found[0].message


CONDITIONAL = """
param on bool
module c 'callee.bicep' = if (on) {
  name: 'c'
}
resource r 'Microsoft.Insights/components@2020-02-02' = if (on) {
  name: 'r'
  location: 'westeurope'
  kind: 'web'
}
module always 'callee.bicep' = if (true) {
  name: 'a'
}
"""


@pytest.mark.parametrize(("expr", "expected"), [
    ("c.outputs.c", ["BCP318:14"]),
    ("on ? c.outputs.c : ''", ["BCP318:14"]),  # no flow typing: the guard does not help (issue in Bicep's own docs)
    ("r.properties.ConnectionString", ["BCP318:14"]),
    ("c.?outputs.c ?? ''", []),
    ("c!.outputs.c", []),
    ("on ? c!.outputs.c : ''", []),
    ("c.name", []),  # IsResourceInfoProperty: a module's name is known
    ("r.id", []),
    ("always.outputs.c", []),  # condition literally true: not potentially disabled
])
def test_conditional_outputs_need_safe_access_or_assertion(expr: str, expected: list[str], tmp_path: Path) -> None:
    main = CONDITIONAL + f"output o string = {expr}\n"
    assert type_violations({"callee.bicep": CALLEE, "main.bicep": main}, tmp_path) == expected


@pytest.mark.parametrize(("rtype", "name", "bad"), [
    ("Microsoft.KeyVault/vaults@2023-07-01", "'kv_${uniqueString(resourceGroup().id)}'", True),
    ("Microsoft.KeyVault/vaults@2023-07-01", "'kv-${uniqueString(resourceGroup().id)}'", False),
    ("Microsoft.Storage/storageAccounts@2023-05-01", "'st-${uniqueString(resourceGroup().id)}'", True),
    ("Microsoft.Storage/storageAccounts@2023-05-01", "'ST${uniqueString(resourceGroup().id)}'", True),
    ("Microsoft.Storage/storageAccounts@2023-05-01", "toLower('ST${uniqueString(resourceGroup().id)}')", False),
    ("Microsoft.Resources/resourceGroups@2024-03-01", "'rg ${free}'", True),
    ("Microsoft.Resources/resourceGroups@2024-03-01", "'rg-(${free}).x_y'", False),
])
def test_name_characters_follow_the_type_pattern(rtype: str, name: str, bad: bool, tmp_path: Path) -> None:
    scope = "targetScope = 'subscription'\n" if "resourceGroups" in rtype else ""
    source = f"{scope}param free string\nresource x '{rtype}' = {{\n  name: {name}\n  location: 'westeurope'\n}}\n"
    found = type_violations({"main.bicep": source}, tmp_path)
    assert found == (["NAME-CHARS:4" if scope else "NAME-CHARS:3"] if bad else [])


def test_a_module_name_with_a_space_fails_once(tmp_path: Path) -> None:
    """Deployment names: LanguageConstants.cs CreateModuleType ^[-\\w._()]+$, checked by ARM-DEPLOYMENT-NAME-CHARS."""
    (tmp_path / "callee.bicep").write_text(CALLEE, encoding="utf-8")
    (tmp_path / "main.bicep").write_text("param n string\nmodule m 'callee.bicep' = {\n  name: 'deploy ${take(n, 10)}'\n}\n",
                                         encoding="utf-8")
    rules = [v.rule for v in deploytime.Project.load(tmp_path).violations()]
    assert rules == ["ARM-DEPLOYMENT-NAME-CHARS"]


def test_a_registry_over_bicep_load_limit_is_bcp184(tmp_path: Path) -> None:
    """infra/registry.json is read by loadTextContent (the secret's value) and loadJsonContent (is it empty?):
    LanguageConstants.MaxLiteralCharacterLimit = 131,072 characters for the first."""
    shutil.copytree(INFRA, tmp_path / "infra")
    registry = tmp_path / "infra" / "registry.json"
    registry.write_text('{"gateways": [], "pad": "' + "x" * 131072 + '"}', encoding="utf-8")
    found = [v for v in deploytime.Project.load(tmp_path / "infra").violations() if v.rule == "BCP184"]
    assert [v.path.name for v in found] == ["main.bicep"]
    assert "loadTextContent('registry.json')" in found[0].message and "131072" in found[0].message
    registry.write_text('{"gateways": [], "pad": "' + "x" * 131000 + '"}', encoding="utf-8")
    assert [v for v in deploytime.Project.load(tmp_path / "infra").violations() if v.rule == "BCP184"] == []


def test_the_rules_are_listed_with_their_sources() -> None:
    assert set(bicep_types.RULES) == {"BCP036", "BCP033", "BCP318", "BCP184", "NAME-CHARS"}
    assert bicep_types.NAME_CHARS["microsoft.keyvault/vaults"][0] == "^[a-zA-Z0-9-]{3,24}$"
    assert bicep_types.NAME_CHARS["microsoft.storage/storageaccounts"][0] == "^[a-z0-9]+$"
    doc = bicep_types.__doc__ or ""
    for source in ("ParameterDeclarationSyntax.cs", "TypeValidator.cs", "AzNamespaceType.cs",
                   "TypeAssignmentVisitor.cs", "EmitConstants.cs", "bicep-types-az", "LanguageConstants.cs",
                   "AuxiliaryFile.cs"):
        assert source in doc, source


def test_infra_passes_the_type_rules() -> None:
    project = deploytime.Project.load(INFRA)
    assert [str(v) for v in bicep_types.violations(project.templates)] == []
