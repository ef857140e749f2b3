"""azd wiring: azure.yaml, main.parameters.json and the hooks agree with main.bicep."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.infra.templates import INFRA, MAIN, REPO, parse

AZURE_YAML = REPO / "azure.yaml"


def test_parameters_file_supplies_every_required_parameter() -> None:
    declared = parse(MAIN)["parameters"]
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    unknown = sorted(set(supplied) - set(declared))
    required = sorted(n for n, p in declared.items() if p.get("default") is None and n not in supplied)
    assert unknown == []
    assert required == []
    assert supplied["deployEventSubscription"]["value"] == "${DEPLOY_EVENT_SUBSCRIPTION=false}"


def test_parameters_file_holds_no_secret_literal() -> None:
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    for name, entry in supplied.items():
        value = str(entry.get("value", ""))
        assert value.startswith("${") and value.endswith("}"), f"{name}: literal value {value!r}; use an azd env var"
        assert "reference" not in entry or name == "rotationRegistryJson"


def test_azure_yaml_deploys_the_function_app_service() -> None:
    source = AZURE_YAML.read_text(encoding="utf-8")
    assert re.search(r"^services:\n  api:\n    project: \.\n    language: python\n    host: function$", source, re.M)
    assert re.search(r"^infra:\n  provider: bicep\n  path: infra\n  module: main$", source, re.M)
    # azd finds the app by this tag; the name must match the service key.
    assert "azdServiceName: 'api'" in MAIN.read_text(encoding="utf-8")


def test_hooks_exist_and_turn_the_event_subscription_on_after_deploy() -> None:
    source = AZURE_YAML.read_text(encoding="utf-8")
    for hook in re.findall(r"run: (infra/hooks/\S+)", source):
        assert (REPO / hook).is_file(), hook
    post = (INFRA / "hooks" / "postdeploy.sh").read_text(encoding="utf-8")
    assert "azd env set DEPLOY_EVENT_SUBSCRIPTION true" in post
    assert "azd provision" in post
    assert "postdeploy:" in source
    outputs = parse(MAIN)["outputs"]
    assert "EVENT_SUBSCRIPTION_DEPLOYED" in outputs
    assert "EVENT_SUBSCRIPTION_DEPLOYED" in post


def test_outputs_give_what_the_docs_and_hooks_use() -> None:
    outputs = parse(MAIN)["outputs"]
    for name in ("AZURE_FUNCTION_APP_NAME", "AZURE_KEY_VAULT_NAME", "ROTATOR_IDENTITY_PRINCIPAL_ID", "DEADLETTER_BLOB_URL"):
        assert name in outputs


def test_azure_yaml_requires_an_azd_whose_down_spares_the_apim_group() -> None:
    """azure-dev CHANGELOG: 1.22.4 (#6356) changed how `azd down` finds a deployment's resource groups and 1.24.1
    (#7698) fixed subscription-scope deployments treating pre-existing groups as deployment-owned (cli/azd/pkg/
    azapi/standard_deployments.go, createdResourceGroupsFromDeployment). With an older azd, `azd down` here would
    delete the APIM and AKS resource groups. The schema's requiredVersions.azd makes older versions refuse."""
    source = AZURE_YAML.read_text(encoding="utf-8")
    match = re.search(r'^requiredVersions:\n  azd: ">= (\d+)\.(\d+)\.(\d+)"$', source, re.M)
    assert match, "azure.yaml needs requiredVersions.azd"
    assert tuple(int(x) for x in match.groups()) >= (1, 24, 1)
    doc = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "Azure Developer CLI ≥ 1.24.1" in doc
    assert "≥ 1.10" not in doc


def test_no_json_travels_through_azd_parameter_substitution() -> None:
    """azd substitutes ${VAR} as raw text (azure-dev bicep_provider.go evalParamEnvSubst): JSON with quotes breaks
    main.parameters.json, and before 1.23.4 (#6694) an array parameter given "[]" arrived as a string."""
    declared = parse(MAIN)["parameters"]
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    for name, entry in supplied.items():
        kind = declared[name]["type"]
        assert kind in ("string", "int", "bool"), f"{name} is a {kind} parameter fed by azd substitution"
        assert "JSON" not in str(entry["value"]), name
    pre = (INFRA / "hooks" / "preprovision.sh").read_text(encoding="utf-8")
    assert "ROTATION_REGISTRY_JSON AKS_CLUSTERS_JSON" in pre and "no longer read" in pre
    doc = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "azd env set ROTATION_REGISTRY_JSON" not in doc and "azd env set AKS_CLUSTERS_JSON" not in doc
    assert "infra/registry.json" in doc and "infra/aks-clusters.json" in doc


def test_deploy_doc_walks_through_the_first_azd_up_and_tear_down() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    walk = doc[doc.index("## The first `azd up` on an empty subscription"):doc.index("## Deploy with plain az")]
    for needle in ("requiredVersions", "`preprovision` hook", "First provision", "Deploy", "`postdeploy` hook",
                   "second provision", "RoleDefinitionDoesNotExist", "minutes", "What can fail"):
        assert needle in walk, needle
    # Every nested deployment the walk-through names exists in main.bicep (or is built from a name there).
    main = MAIN.read_text(encoding="utf-8")
    named = re.findall(r"\(`([a-z][a-z-]+)`[;)]", walk)
    named += [n for pair in re.findall(r"\(`([a-z][a-z-]+)`,\s+`([a-z][a-z-]+)`", walk) for n in pair]
    assert {"identity", "deadletter-identity", "keyvault", "keyvault-config", "function-app", "alerts"} <= set(named)
    for name in named:
        assert f"name: '{name}'" in main or f"name: '{name}-" in main, name
    for hook in ("infra/hooks/preprovision.sh", "infra/hooks/postdeploy.sh"):
        assert hook in walk and (REPO / hook).is_file()
    down = doc[doc.index("## Tearing down"):doc.index("## Checks")]
    for needle in ("rg-<environment>", "APIM", "purge", "custom role definitions", "system topic"):
        assert needle in down, needle


def test_deploy_doc_covers_both_paths_and_the_order() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    for needle in (
        "azd up",
        "az deployment sub create",
        "deployEventSubscription=true",
        "infra/k8s/role.yaml",
        "az keyvault secret set",
        "/namespaces/",
        "Microsoft.ApiManagement/service/gateways/generateToken/action",
    ):
        assert needle in doc, needle
    outputs = parse(MAIN)["outputs"]
    for name in re.findall(r"\bout ([A-Z][A-Z0-9_]+)", doc):
        assert name in outputs, f"docs/deploy.md reads output {name}, which main.bicep does not have"
    for name in re.findall(r"get-value ([A-Z][A-Z0-9_]+)", doc):
        assert name in outputs, name


def _run_preprovision(tmp_path: Path, env: dict[str, str]) -> tuple[int, str, list[str]]:
    """Run the POSIX preprovision hook with a recording stand-in for `azd` first on PATH (the hook's only
    side effect is `azd env set`), stdin not a terminal (as in CI)."""
    log = tmp_path / "azd-calls"
    fake = tmp_path / "bin" / "azd"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n', encoding="utf-8")
    fake.chmod(0o755)
    run_env = {"PATH": f"{fake.parent}:{os.environ['PATH']}", **env}
    result = subprocess.run(["sh", str(INFRA / "hooks" / "preprovision.sh")], env=run_env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=30, check=False)
    calls = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return result.returncode, result.stderr, calls


def test_preprovision_without_a_terminal_names_the_missing_value_and_writes_nothing(tmp_path: Path) -> None:
    code, stderr, calls = _run_preprovision(tmp_path, {"APIM_RESOURCE_GROUP": "rg-apim"})
    assert code == 1
    assert "APIM_SERVICE_NAME is not set; run: azd env set APIM_SERVICE_NAME <value>" in stderr
    assert calls == []


def test_preprovision_warns_about_json_in_the_environment(tmp_path: Path) -> None:
    code, stderr, calls = _run_preprovision(tmp_path, {
        "APIM_SERVICE_NAME": "contoso-apim", "APIM_RESOURCE_GROUP": "rg-apim",
        "ROTATION_REGISTRY_JSON": '{"clusters": []}', "AKS_CLUSTERS_JSON": "[]",
    })
    assert code == 0
    assert "ROTATION_REGISTRY_JSON is no longer read" in stderr and "AKS_CLUSTERS_JSON is no longer read" in stderr
    assert '{"clusters"' not in stderr  # the value itself is not echoed
    assert calls == ["env set DEPLOY_EVENT_SUBSCRIPTION false"]


def test_funcignore_keeps_azds_virtualenv_out_of_the_package() -> None:
    """azd builds a Python service in a virtual environment named `<service dir>_env` inside the project
    (Azure/azure-dev cli/azd/pkg/tools/python/helpers.go VenvNameForDir, used by framework_service_python.go); the
    Functions packager ships whatever .funcignore does not exclude, so that venv would be zipped into the package."""
    lines = (REPO / ".funcignore").read_text(encoding="utf-8").splitlines()
    assert "*_env/" in lines
    assert ".venv*" in lines


FLEX_REGIONS = [  # Azure-Samples/functions-quickstart-python-http-azd infra/main.bicep (7ed4638, 2025-11-24)
    "australiaeast", "australiasoutheast", "brazilsouth", "canadacentral", "centralindia", "centralus", "eastasia",
    "eastus", "eastus2", "eastus2euap", "francecentral", "germanywestcentral", "italynorth", "japaneast",
    "koreacentral", "northcentralus", "northeurope", "norwayeast", "southafricanorth", "southcentralus",
    "southeastasia", "southindia", "spaincentral", "swedencentral", "uaenorth", "uksouth", "ukwest",
    "westcentralus", "westeurope", "westus", "westus2", "westus3",
]


def test_location_is_limited_to_flex_consumption_regions() -> None:
    """A region without Flex Consumption fails late, at the plan. Microsoft's Flex quickstart template restricts
    `location` with @allowed; azd then offers only those regions when it asks (type: location)."""
    from tests.infra.templates import decorator

    location = parse(MAIN)["parameters"]["location"]
    assert decorator(location, "allowed") == FLEX_REGIONS


def test_powershell_hooks_guard_a_missing_console_and_check_every_exit_code() -> None:
    """The .ps1 hooks mirror the shell ones: no prompt without a console (azd in CI), and a failed `azd`/`az`
    call stops the hook (PowerShell's $ErrorActionPreference does not cover native commands; $LASTEXITCODE does)."""
    hooks = INFRA / "hooks"
    pre = (hooks / "preprovision.ps1").read_text(encoding="utf-8")
    assert "[Console]::IsInputRedirected" in pre and "is not set; run: azd env set" in pre
    for path in sorted(hooks.glob("*.ps1")):
        source = path.read_text(encoding="utf-8")
        native = len(re.findall(r"^\s*(?:\$\w+ = )?(?:azd|az) ", source, re.M))
        checks = source.count("$LASTEXITCODE")
        assert native and checks >= native, f"{path.name}: {native} native calls, {checks} exit-code checks"
    for name in ("preprovision", "postprovision", "postdeploy"):
        assert (hooks / f"{name}.sh").is_file() and (hooks / f"{name}.ps1").is_file()
        # no PowerShell here to parse them: at least every bracket closes (strings and comments aside)
        code = re.sub(r"'[^']*'|\"(?:`.|[^\"`])*\"|#.*", "", (hooks / f"{name}.ps1").read_text(encoding="utf-8"))
        for left, right in ("()", "{}", "[]"):
            assert code.count(left) == code.count(right), f"{name}.ps1: unbalanced {left}{right}"


def test_deploy_doc_says_what_azd_really_does_and_names_only_what_exists() -> None:
    """azd deploys a Flex app by POSTing the zip to the scm `/api/publish?RemoteBuild=true` with an ARM token
    (Azure/azure-dev cli/azd/pkg/azsdk/funcapp_host_client.go, Publish), not by writing the deployment container;
    it substitutes its own AZURE_PRINCIPAL_ID / AZURE_PRINCIPAL_TYPE (bicep_provider.go, evalParamEnvSubst); and it
    reaches only the parameters main.parameters.json maps."""
    doc = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "/api/publish?RemoteBuild=true" in doc and "funcapp_host_client.go" in doc
    assert "uploads the package to the deployment container with" not in doc
    assert "azd substitutes its own value for\n`${AZURE_PRINCIPAL_TYPE}`" in doc
    assert "(`ServicePrincipal` when a pipeline deploys)" not in doc
    declared = parse(MAIN)["parameters"]
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    unreachable = doc[doc.index("Not reachable through azd:"):]
    unreachable = unreachable[:unreachable.index("\n\n")]
    for name in ("keyVaultName", "configKeyVaultName", "resourceGroupName"):
        assert name in declared and name not in supplied and f"`{name}`" in unreachable, name
    assert "extraAppSettings" not in declared and "not of `main.bicep`" in doc
    # every environment value the doc tells azd to set is one main.parameters.json reads (or azd's own)
    azd_own = {"AZURE_LOCATION", "AZURE_ENV_NAME", "AZURE_SUBSCRIPTION_ID", "DEPLOY_EVENT_SUBSCRIPTION"}
    mapped = {m for entry in supplied.values() for m in re.findall(r"\$\{(\w+)", str(entry["value"]))}
    for name in re.findall(r"azd env set ([A-Z][A-Z0-9_]+)", doc):
        assert name in mapped | azd_own or name.endswith("_JSON"), name
    # no design-document sections, no files that are not in the checkout
    assert "DESIGN" not in doc and "§" not in doc
    for path in re.findall(r"`((?:infra|tests|scripts|docs|reference|rotation)/[\w./-]+\.\w+)`", doc):
        assert (REPO / path).exists(), path
