"""Every template parses, is documented, keeps secrets out of outputs, and wires its modules consistently.

Stand-in for `bicep build` (no compiler offline): pycep-parser for structure, tree-sitter-bicep for syntax,
and cross-file checks of module parameters and outputs.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.templates import (
    BICEP_FILES,
    INFRA,
    MAIN,
    REPO,
    body,
    decorator,
    module_path,
    parse,
    rel,
    source_lines,
    string_values,
)

IDS = [rel(p) for p in BICEP_FILES]


def test_there_are_templates() -> None:
    assert MAIN in BICEP_FILES
    assert len(BICEP_FILES) >= 10


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_parses_with_pycep(path: Path) -> None:
    tree = parse(path)
    assert tree.get("resources") or tree.get("modules"), f"{rel(path)} declares nothing"


def _syntax_errors(path: Path) -> list[str]:
    ts = pytest.importorskip("tree_sitter", reason="infra checks run in .venv-infra")
    grammar = importlib.import_module("tree_sitter_bicep")
    parser = ts.Parser(ts.Language(grammar.language()))
    root = parser.parse(path.read_bytes()).root_node
    errors: list[str] = []
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            kind = "missing " + node.type if node.is_missing else "syntax error"
            errors.append(f"{rel(path)}:{node.start_point.row + 1}:{node.start_point.column + 1}: {kind}")
        stack.extend(node.children)
    return errors


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_tree_sitter_finds_no_error_or_missing_node(path: Path) -> None:
    assert _syntax_errors(path) == []


def test_tree_sitter_check_catches_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "broken.bicep"
    broken.write_text("param name string\nresource r 'Microsoft.Web/sites@2024-04-01' = {\n  name: \n", encoding="utf-8")
    assert _syntax_errors(broken)


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_every_parameter_has_a_description(path: Path) -> None:
    missing = [name for name, p in parse(path).get("parameters", {}).items() if not decorator(p, "description")]
    assert missing == [], f"{rel(path)}: parameters without @description: {missing}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_every_output_has_a_description(path: Path) -> None:
    missing = [name for name, o in parse(path).get("outputs", {}).items() if not decorator(o, "description")]
    assert missing == [], f"{rel(path)}: outputs without @description: {missing}"


SECRET_NAME = re.compile(
    r"passw|secret|connection_?string|sas_?token|(?<![a-z])token|credential|(?<!vault)key(?!_?vault)",
    re.IGNORECASE,
)
SECRET_VALUE = re.compile(
    r"listKeys|listSecrets|listCredentials|listConnectionStrings|connectionString|primaryKey|secondaryKey"
    r"|instrumentationKey|accountKey|SharedAccessSignature|registryJson",
    re.IGNORECASE,
)


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_no_output_looks_like_a_secret(path: Path) -> None:
    for name, out in parse(path).get("outputs", {}).items():
        assert not SECRET_NAME.search(name.replace("SECRET_NAME", "")), f"{rel(path)}: output {name} looks secret"
        value = json.dumps(out.get("value"), default=str)
        assert not SECRET_VALUE.search(value), f"{rel(path)}: output {name} exposes {value}"
        assert decorator(out, "secure") is None, f"{rel(path)}: output {name} is @secure (a secret in outputs)"


def test_the_secret_patterns_flag_what_they_should() -> None:
    for name in ("storageConnectionString", "primaryKey", "ADMIN_PASSWORD", "sasToken", "apiKey"):
        assert SECRET_NAME.search(name), name
    for name in ("AZURE_KEY_VAULT_NAME", "AZURE_KEY_VAULT_ENDPOINT", "resourceId", "ROTATOR_API_URL"):
        assert not SECRET_NAME.search(name), name
    assert SECRET_VALUE.search("{'function': 'listKeys'}")


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_secret_parameters_are_secure_and_have_no_default(path: Path) -> None:
    for name, p in parse(path).get("parameters", {}).items():
        looks_secret = re.search(r"passw|secret(?!Name)|json$|kubeconfig|key$", name, re.IGNORECASE)
        if looks_secret:
            assert decorator(p, "secure"), f"{rel(path)}: parameter {name} should be @secure()"
        if decorator(p, "secure"):
            assert p.get("default") in (None, ""), f"{rel(path)}: @secure parameter {name} has a default"


def test_registry_comes_from_a_file_not_from_azd_parameter_substitution() -> None:
    """azd substitutes ${VAR} in main.parameters.json as raw text (azure-dev cli/azd/pkg/infra/provisioning/bicep/
    bicep_provider.go, evalParamEnvSubst -> envsubst.Eval: no JSON escaping), so a registry full of double quotes
    breaks the file. The registry is compiled in from infra/registry.json instead."""
    params = parse(MAIN)["parameters"]
    assert "rotationRegistryJson" not in params
    source = MAIN.read_text(encoding="utf-8")
    assert "var registryText = loadTextContent('registry.json')" in source
    assert "var manageRegistry = !empty(loadJsonContent('registry.json'))" in source
    assert json.loads((INFRA / "registry.json").read_text(encoding="utf-8")) == {}
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert "rotationRegistryJson" not in supplied and "aksClusters" not in supplied


# ------------------------------------------------------------------------------------------------------------
# Module wiring: what `bicep build` would reject.
# ------------------------------------------------------------------------------------------------------------

def _module_calls() -> list[tuple[Path, str, Path, dict[str, Any]]]:
    calls = []
    for caller in BICEP_FILES:
        for name, decl in parse(caller).get("modules", {}).items():
            calls.append((caller, name, module_path(caller, decl), decl))
    return calls


MODULE_CALLS = _module_calls()


def test_every_module_is_used() -> None:
    used = {target for _, _, target, _ in MODULE_CALLS}
    unused = [rel(p) for p in BICEP_FILES if p != MAIN and p.resolve() not in used]
    assert unused == []


@pytest.mark.parametrize(
    ("caller", "name", "target", "decl"), MODULE_CALLS, ids=[f"{rel(c)}:{n}" for c, n, _, _ in MODULE_CALLS]
)
def test_module_parameters_match(caller: Path, name: str, target: Path, decl: dict[str, Any]) -> None:
    assert target.is_file(), f"{rel(caller)}: module {name} points at missing {target}"
    declared = parse(target).get("parameters", {})
    passed = body(decl).get("params", {}) or {}
    unknown = sorted(set(passed) - set(declared))
    required = sorted(n for n, p in declared.items() if p.get("default") is None and n not in passed)
    assert unknown == [], f"{rel(caller)}: module {name} passes undeclared params {unknown}"
    assert required == [], f"{rel(caller)}: module {name} omits required params {required}"


@pytest.mark.parametrize("caller", BICEP_FILES, ids=IDS)
def test_module_outputs_referenced_exist(caller: Path) -> None:
    tree = parse(caller)
    modules = tree.get("modules", {})
    refs = set(re.findall(r"\b(\w+)!?\.outputs\.(\w+)", caller.read_text(encoding="utf-8")))
    refs |= {
        (m, o)
        for s in string_values(tree)
        for m, o in re.findall(r"\b(\w+)\.outputs\.(\w+)", s)
    }
    for module, output in sorted(refs):
        assert module in modules, f"{rel(caller)}: {module}.outputs.{output} names no module"
        outputs = parse(module_path(caller, modules[module])).get("outputs", {})
        assert output in outputs, f"{rel(caller)}: module {module} has no output {output}"


def test_modules_target_the_scope_they_declare() -> None:
    for caller, name, target, decl in MODULE_CALLS:
        scope = parse(target).get("globals", {}).get("scope", {}).get("value", "resourceGroup")
        given = json.dumps(body(decl).get("scope"), default=str)
        if scope == "subscription":
            assert "resource_group" not in given and given != '"rg"', f"{rel(caller)}: {name} is subscription-scoped"
        elif caller == MAIN:
            assert body(decl).get("scope"), f"main.bicep: module {name} needs a resource group scope"


# ------------------------------------------------------------------------------------------------------------
# Suppressions carry reasons.
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_every_disabled_linter_rule_has_a_reason(path: Path) -> None:
    for number, line in enumerate(source_lines(path), 1):
        if "#disable-next-line" in line or "#disable-diagnostics" in line:
            assert re.search(r"//\s*\S.{9,}", line), f"{rel(path)}:{number}: suppression without a reason"


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_every_checkov_skip_has_a_reason(path: Path) -> None:
    for number, line in enumerate(source_lines(path), 1):
        if "checkov:skip" in line:
            assert re.search(r"//\s*checkov:skip=CKV2?_[A-Z]+_\d+: \S.{19,}", line), (
                f"{rel(path)}:{number}: checkov skip needs the form '// checkov:skip=CKV_...: reason'"
            )


def test_bicepconfig_turns_no_rule_off_without_a_reason() -> None:
    config = json.loads((INFRA / "bicepconfig.json").read_text(encoding="utf-8"))
    rules = config["analyzers"]["core"]["rules"]
    off = [name for name, rule in rules.items() if rule.get("level") == "off" and not rule.get("reason")]
    assert off == []
    for rule in ("outputs-should-not-contain-secrets", "secure-parameter-default", "secure-secrets-in-params"):
        assert rules[rule]["level"] == "error"


def test_no_file_outside_infra_is_scanned_by_accident() -> None:
    assert all(INFRA in p.parents for p in BICEP_FILES)
    assert REPO in INFRA.parents
