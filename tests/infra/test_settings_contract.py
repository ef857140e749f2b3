"""The settings contract, three ways: what the app reads (README "Configuration"), what Bicep sets
(function-app.bicep), and what the deployment guide says (docs/deploy.md) must agree.

The README's configuration table is the reference for the app's own settings (rotation/settings.py reads
them). Bicep must set every one of them that a deployment needs, and every app setting Bicep sets must be
explained in docs/deploy.md, platform settings (host storage, telemetry) included, so an operator reading
the Portal's Environment variables blade can find each one.
"""

from __future__ import annotations

import re
from typing import Any

from tests.infra.templates import MODULES, REPO, parse

FUNCTION_APP = MODULES / "function-app.bicep"
README = REPO / "README.md"
DEPLOY_MD = REPO / "docs" / "deploy.md"

# README settings Bicep deliberately does not set, and why (each must still be explained in docs/deploy.md).
NOT_SET_BY_BICEP = {
    "SWEEP_CONCURRENCY": "the app's default (8) fits; add it through extraAppSettings to change it",
    "ROTATION_LOCAL_EMULATORS": "devstack only; the app refuses it on any Azure host",
}
# Set only when a parameter asks for it.
CONDITIONAL = {"ARM_ENDPOINT": "armEndpointSettings"}


def readme_settings() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Configuration\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no '## Configuration' section"
    names = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", section.group(1), re.M)
    assert names, "README's configuration table is empty or changed shape"
    return names


def object_keys(name: str) -> set[str]:
    value: Any = parse(FUNCTION_APP)["variables"][name]["value"]
    if isinstance(value, dict) and "operator" in value:  # cond ? {..} : {}
        operands = value["operator"]["operands"]
        value = {**operands["true_value"], **operands["false_value"]}
    assert isinstance(value, dict), name
    return set(value)


def bicep_settings() -> dict[str, str]:
    """Setting name -> the variable that sets it, for every object merged into the appsettings resource."""
    merged = re.search(r"properties: union\(([^)]*)\)", FUNCTION_APP.read_text(encoding="utf-8"))
    assert merged, "the appsettings resource no longer takes union(...) of the setting objects"
    parts = [p.strip() for p in merged.group(1).split(",")]
    assert parts[-1] == "extraAppSettings"
    return {key: var for var in parts[:-1] for key in object_keys(var)}


def test_bicep_sets_every_setting_the_app_reads() -> None:
    settings = bicep_settings()
    for name in readme_settings():
        if name in NOT_SET_BY_BICEP:
            assert name not in settings, f"{name}: {NOT_SET_BY_BICEP[name]}"
        elif name in CONDITIONAL:
            assert settings.get(name) == CONDITIONAL[name], f"{name} should come only from {CONDITIONAL[name]}"
        else:
            assert settings.get(name) == "baseAppSettings", f"function-app.bicep does not always set {name}"


def test_every_setting_bicep_sets_is_explained_in_the_deployment_guide() -> None:
    doc = DEPLOY_MD.read_text(encoding="utf-8")
    missing = sorted(name for name in bicep_settings() if f"`{name}" not in doc)
    assert missing == [], f"docs/deploy.md does not mention {missing}"


def test_the_deployment_guide_covers_every_readme_setting() -> None:
    doc = DEPLOY_MD.read_text(encoding="utf-8")
    missing = sorted(name for name in readme_settings() if f"`{name}`" not in doc)
    assert missing == [], f"docs/deploy.md does not say how these are set: {missing}"


def test_the_emulator_switch_can_never_come_from_bicep() -> None:
    """ROTATION_LOCAL_EMULATORS relaxes Key Vault's challenge check and allows loopback endpoints; it must not be
    settable through the template's own objects (extraAppSettings is the operator's explicit choice, and the app
    refuses the switch on an Azure host anyway: README "Configuration")."""
    source = FUNCTION_APP.read_text(encoding="utf-8")
    assert "ROTATION_LOCAL_EMULATORS" not in source
    assert "ROTATION_LOCAL_EMULATORS" not in bicep_settings()


def test_the_contract_check_sees_a_missing_setting() -> None:
    """The check above is not vacuous: the README names settings Bicep sets, and dropping one is noticed."""
    settings = bicep_settings()
    required = [n for n in readme_settings() if n not in NOT_SET_BY_BICEP and n not in CONDITIONAL]
    assert {"CONFIG_KEY_VAULT_URL", "AZURE_CLOUD", "LEASE_CONTAINER_URL", "SWEEP_SCHEDULE"} <= set(required)
    settings.pop("LEASE_CONTAINER_URL")
    assert [n for n in required if settings.get(n) != "baseAppSettings"] == ["LEASE_CONTAINER_URL"]
