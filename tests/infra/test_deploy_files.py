"""azd wiring: azure.yaml, main.parameters.json and the hooks agree with main.bicep."""

from __future__ import annotations

import json
import re

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
    for name in re.findall(r"out ([A-Z][A-Z0-9_]+)", doc):
        assert name in outputs, f"docs/deploy.md reads output {name}, which main.bicep does not have"
    for name in re.findall(r"get-value ([A-Z][A-Z0-9_]+)", doc):
        assert name in outputs, name
