"""Resource-type facts the deploy-time checker cannot know, each pinned to where it was checked.

tests/infra/deploytime.py knows Bicep's rules about *when* a value is known. It does not know whether an
API version exists for a type, whether a GUID is the built-in role its comment says, or which names the
OpenTelemetry distro reads. Those come from primary sources, named per table below; a change to any of
them has to be checked again and the table updated, which is the point of pinning them.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.infra.templates import BICEP_FILES, MODULES, REPO, body, parse, rel, source_lines

FUNCTION_APP = MODULES / "function-app.bicep"

# type@apiVersion of every resource (created or existing) in infra/, each checked against the REST spec folder
# of Azure/azure-rest-api-specs that defines it (specification/<rp>/resource-manager/<namespace>/<stable|preview>/
# <version>/...): web/.../2024-04-01/WebApps.json and AppServicePlans.json (sites, config, serverfarms,
# basicPublishingCredentialsPolicies; examples CreateOrUpdateFunctionAppFlexConsumption*.json), eventgrid/.../
# 2022-06-15/EventGrid.json, apimanagement/.../preview/2023-05-01-preview/apimanagement.json, containerservice/
# .../aks/stable/2024-05-01, storage/.../2023-05-01/storage.json + blob.json, keyvault/.../2023-07-01,
# msi/.../2023-01-31/ManagedIdentity.json, operationalinsights/.../2023-09-01/Workspaces.json, resources/.../
# 2024-03-01/resources.json, applicationinsights/.../2020-02-02/components_API.json and 2023-06-01/
# workbooks_API.json, monitor/.../2018-03-01/metricAlert_API.json, 2023-12-01/scheduledQueryRule_API.json,
# preview/2021-05-01-preview/diagnosticsSettings_API.json, authorization/.../2022-04-01/
# authorization-RoleAssignmentsCalls.json and authorization-RoleDefinitionsCalls.json.
VERIFIED_API_VERSIONS = frozenset({
    "Microsoft.Resources/resourceGroups@2024-03-01",
    "Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31",
    "Microsoft.OperationalInsights/workspaces@2023-09-01",
    "Microsoft.Insights/components@2020-02-02",
    "Microsoft.Insights/metricAlerts@2018-03-01",
    "Microsoft.Insights/scheduledQueryRules@2023-12-01",
    "Microsoft.Insights/workbooks@2023-06-01",
    "Microsoft.Insights/diagnosticSettings@2021-05-01-preview",
    "Microsoft.Authorization/roleAssignments@2022-04-01",
    "Microsoft.Authorization/roleDefinitions@2022-04-01",
    "Microsoft.Storage/storageAccounts@2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices@2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01",
    "Microsoft.KeyVault/vaults@2023-07-01",
    "Microsoft.KeyVault/vaults/secrets@2023-07-01",
    "Microsoft.EventGrid/topics@2022-06-15",
    "Microsoft.EventGrid/systemTopics@2022-06-15",
    "Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15",
    "Microsoft.Web/serverfarms@2024-04-01",
    "Microsoft.Web/sites@2024-04-01",
    "Microsoft.Web/sites/config@2024-04-01",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01",
    "Microsoft.ApiManagement/service@2023-05-01-preview",
    "Microsoft.ContainerService/managedClusters@2024-05-01",
})
# Not ARM types at all: `existing` declarations used only to build a scope id, never read (no property of them is
# used, so ARM never GETs them). Azure RBAC for Kubernetes scopes a role to `<cluster id>/namespaces/<ns>`
# (Microsoft's "Use Azure RBAC for Kubernetes authorization"); the ARM resource for managed namespaces is
# `managedClusters/managedNamespaces`, a different thing.
SCOPE_ONLY = frozenset({"Microsoft.ContainerService/managedClusters/namespaces"})


def declarations() -> list[tuple[Path, str, str, str, bool]]:
    return [(p, n, r["type"], r["api_version"], bool(r.get("existing")))
            for p in BICEP_FILES for n, r in parse(p).get("resources", {}).items()]


def test_every_resource_uses_an_api_version_that_was_checked_to_exist() -> None:
    unchecked = [f"{rel(p)}:{n} {t}@{v}" for p, n, t, v, _ in declarations()
                 if t not in SCOPE_ONLY and f"{t}@{v}" not in VERIFIED_API_VERSIONS]
    assert unchecked == [], "check these in azure-rest-api-specs, then add them to VERIFIED_API_VERSIONS"


def test_scope_only_declarations_are_existing_and_never_read() -> None:
    for path, name, rtype, _, existing in declarations():
        if rtype not in SCOPE_ONLY:
            continue
        assert existing, f"{rel(path)}:{name} would create a resource of a type ARM does not have"
        used = re.findall(rf"\b{name}(?:\[[^\]]+\])?\.(\w+)", path.read_text(encoding="utf-8"))
        assert set(used) <= {"id", "name"}, f"{rel(path)}:{name} is read ({used}): ARM would GET a non-type"


def test_the_table_catches_an_unchecked_api_version(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bicep"
    bad.write_text("resource s 'Microsoft.Web/sites@2099-01-01' = {\n  name: 'x'\n  location: 'y'\n}\n",
                   encoding="utf-8")
    tree = parse(bad)
    (r,) = tree["resources"].values()
    assert f"{r['type']}@{r['api_version']}" not in VERIFIED_API_VERSIONS


# Built-in role definition ids, each looked up in Microsoft's "Azure built-in roles" (MicrosoftDocs/azure-docs
# articles/role-based-access-control/built-in-roles.md and built-in-roles/{security,storage,monitor,integration}.md;
# the Key Vault pair also in "Provide access to Key Vault keys, certificates, and secrets with Azure RBAC").
BUILT_IN_ROLES = {
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
}
GUID = re.compile(r"'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'")


def test_every_role_id_in_the_templates_is_a_checked_built_in_role_named_beside_it() -> None:
    """A GUID literal in a template is a built-in role id (custom roles get guid() names). Each must be in the
    table above, and a comment on its line or the three lines above must name that role, so a reader sees what is
    granted without looking the id up."""
    seen: set[str] = set()
    for path in BICEP_FILES:
        lines = source_lines(path)
        for number, line in enumerate(lines):
            for role_id in GUID.findall(line):
                assert role_id in BUILT_IN_ROLES, f"{rel(path)}:{number + 1}: unknown role id {role_id}"
                comments = " ".join(c.partition("//")[2] for c in lines[max(0, number - 3):number + 1]).lower()
                name = BUILT_IN_ROLES[role_id]
                assert name.lower() in comments, f"{rel(path)}:{number + 1}: {role_id} is {name}; say so beside it"

                seen.add(role_id)
    assert seen == set(BUILT_IN_ROLES), f"pinned but unused: {set(BUILT_IN_ROLES) - seen}"


# --- the OpenTelemetry distro's sampler ------------------------------------------------------------------------

SAMPLER = {"OTEL_TRACES_SAMPLER": "microsoft.fixed_percentage", "OTEL_TRACES_SAMPLER_ARG": "1.0"}


def open_telemetry_settings() -> dict[str, str]:
    otel = parse(FUNCTION_APP)["variables"]["openTelemetrySettings"]["value"]
    assert otel["operator"]["operands"]["condition"] == "enableOpenTelemetry"
    assert otel["operator"]["operands"]["false_value"] == {}
    settings: dict[str, str] = otel["operator"]["operands"]["true_value"]
    return settings


def test_traces_are_not_rate_limited_by_the_distro() -> None:
    """azure-monitor-opentelemetry 1.8.11, `_utils/configurations.py` `_default_sampling_ratio`: with no
    OTEL_TRACES_SAMPLER it uses its rate-limited sampler at 5.0 traces per second; with
    `microsoft.fixed_percentage` (constant FIXED_PERCENTAGE_SAMPLER in `_constants.py`) it samples the ratio in
    OTEL_TRACES_SAMPLER_ARG, 0..1. Only under OpenTelemetry: the classic path has its own sampling."""
    settings = open_telemetry_settings()
    assert {k: settings.get(k) for k in SAMPLER} == SAMPLER
    assert 0.0 <= float(SAMPLER["OTEL_TRACES_SAMPLER_ARG"]) <= 1.0


def installed_distro_constants() -> Path | None:
    for venv in (REPO / ".venv",):
        found = sorted(venv.glob("lib/python3*/site-packages/azure/monitor/opentelemetry/_constants.py"))
        if found:
            return found[0]
    return None


def test_sampler_names_are_the_ones_the_installed_distro_reads() -> None:
    """Cross-check against the distro the app really installs (requirements.txt, in .venv): the sampler value is
    its FIXED_PERCENTAGE_SAMPLER and the setting names are OpenTelemetry's, which its configuration reads."""
    constants = installed_distro_constants()
    if constants is None:
        return  # no app venv beside this checkout (`make venv`); the pinned names above still hold
    source = constants.read_text(encoding="utf-8")
    assert re.search(r'^FIXED_PERCENTAGE_SAMPLER = "microsoft\.fixed_percentage"$', source, re.M)
    configurations = (constants.parent / "_utils" / "configurations.py").read_text(encoding="utf-8")
    assert "OTEL_TRACES_SAMPLER_ARG" in configurations and "OTEL_TRACES_SAMPLER," in configurations
    assert "default_value_for_rate_limited_sampler = 5.0" in configurations


def test_telemetry_authentication_string_is_the_form_the_exporter_parses() -> None:
    """Application Insights has local auth disabled, and the worker calls configure_azure_monitor() with only the
    connection string (azure_functions_runtime/otel.py `initialize_azure_monitor`), so Entra ID auth comes from
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING alone. azure-monitor-opentelemetry-exporter
    (export/_base.py `_get_authentication_credential`) splits it on ';' and '=', lower-cases the keys and builds
    ManagedIdentityCredential(client_id=...) only when authorization == "AAD": a typo there silently sends
    unauthenticated telemetry, which the component rejects."""
    source = FUNCTION_APP.read_text(encoding="utf-8")
    match = re.search(r"APPLICATIONINSIGHTS_AUTHENTICATION_STRING: '([^']*)'", source)
    assert match, "APPLICATIONINSIGHTS_AUTHENTICATION_STRING is not set"
    pairs = dict(kv.split("=") for kv in match.group(1).split(";"))
    assert {k.lower(): v for k, v in pairs.items()} == {"clientid": "${identityClientId}", "authorization": "AAD"}
    constants = installed_distro_constants()
    if constants is None:
        return
    # azure-monitor-opentelemetry-exporter installs into the same azure/monitor/opentelemetry package directory
    exporter = (constants.parent / "exporter" / "export" / "_base.py").read_text(encoding="utf-8")
    assert 'auth_string_d["authorization"] == "AAD"' in exporter
    assert 'ManagedIdentityCredential(client_id=auth_string_d["clientid"])' in exporter


# Properties the REST specs mark "required" (same spec files as VERIFIED_API_VERSIONS): ARM refuses a PUT without
# them, and Bicep's type check is only a warning for some (a missing required property is BCP035).
REQUIRED = {
    # storage.json StorageAccountCreateParameters: required [sku, kind, location]
    "Microsoft.Storage/storageAccounts": ("sku.name", "kind", "location"),
    # keyvault.json VaultCreateOrUpdateParameters [location, properties]; VaultProperties [tenantId, sku]; Sku [family, name]
    "Microsoft.KeyVault/vaults": ("location", "properties.tenantId", "properties.sku.family", "properties.sku.name"),
    # components_API.json ApplicationInsightsComponent [kind]; ApplicationInsightsComponentProperties [Application_Type]
    "Microsoft.Insights/components": ("kind", "location", "properties.Application_Type"),
    # workbooks_API.json WorkbookProperties [displayName, category, serializedData]
    "Microsoft.Insights/workbooks": ("location", "properties.displayName", "properties.category",
                                     "properties.serializedData"),
    # authorization-RoleAssignmentsCalls.json RoleAssignmentProperties [roleDefinitionId, principalId]
    "Microsoft.Authorization/roleAssignments": ("properties.roleDefinitionId", "properties.principalId"),
    # metricAlert_API.json MetricAlertResource [location, properties]; MetricAlertProperties [severity, enabled,
    # scopes, evaluationFrequency, windowSize, criteria]
    "Microsoft.Insights/metricAlerts": ("location", "properties.severity", "properties.enabled", "properties.scopes",
                                        "properties.evaluationFrequency", "properties.windowSize",
                                        "properties.criteria"),
    # scheduledQueryRule_API.json ScheduledQueryRuleResource [location, properties]; criteria allOf[].query
    "Microsoft.Insights/scheduledQueryRules": ("location", "properties.criteria", "properties.scopes"),
    # WebApps.json / AppServicePlans.json: Resource [location]; Flex Consumption needs functionAppConfig
    # (CreateOrUpdateFunctionAppFlexConsumption.json)
    "Microsoft.Web/serverfarms": ("location", "sku.name", "sku.tier"),
    "Microsoft.Web/sites": ("location", "properties.serverFarmId", "properties.functionAppConfig.deployment.storage",
                            "properties.functionAppConfig.runtime", "properties.functionAppConfig.scaleAndConcurrency"),
    # EventGrid.json: TrackedResource [location]; system topic source and topicType fix what it listens to
    "Microsoft.EventGrid/systemTopics": ("location", "properties.source", "properties.topicType"),
    "Microsoft.EventGrid/topics": ("location",),
    "Microsoft.OperationalInsights/workspaces": ("location",),
    "Microsoft.ManagedIdentity/userAssignedIdentities": ("location",),
}


def lookup(node: object, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def test_required_properties_are_present() -> None:
    checked = 0
    for path in BICEP_FILES:
        for name, decl in parse(path).get("resources", {}).items():
            paths = REQUIRED.get(decl["type"])
            if paths is None or decl.get("existing"):
                continue
            missing = [p for p in paths if lookup(body(decl), p) in (None, "")]
            assert missing == [], f"{rel(path)}:{name} lacks {missing}"
            checked += 1
    assert checked >= 15, checked


def test_the_required_check_sees_a_missing_property(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bicep"
    bad.write_text("resource v 'Microsoft.KeyVault/vaults@2023-07-01' = {\n  name: 'x'\n  location: 'y'\n"
                   "  properties: {\n    sku: {\n      family: 'A'\n      name: 'standard'\n    }\n  }\n}\n",
                   encoding="utf-8")
    (decl,) = parse(bad)["resources"].values()
    assert [p for p in REQUIRED["Microsoft.KeyVault/vaults"] if lookup(body(decl), p) is None] == [
        "properties.tenantId"]
