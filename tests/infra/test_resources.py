"""The deployed shape: least-privilege roles, Event Grid wiring, app settings, Key Vault and storage posture."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.templates import (
    APP_SETTINGS,
    CONDITIONAL_SETTINGS,
    MAIN,
    MODULES,
    all_resources,
    body,
    condition,
    decorator,
    one_resource,
    parse,
    text,
    walk,
)

GATEWAY_ACTIONS = [
    "Microsoft.ApiManagement/service/gateways/read",
    "Microsoft.ApiManagement/service/gateways/generateToken/action",
    "Microsoft.ApiManagement/service/gateways/regenerateKey/action",
]
GATEWAY_TOKEN_EVENTS = [
    "Microsoft.ApiManagement.GatewayTokenNearExpiry",
    "Microsoft.ApiManagement.GatewayTokenExpired",
]
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"


def main_modules() -> dict[str, Any]:
    modules: dict[str, Any] = parse(MAIN)["modules"]
    return modules


def module_named(path_suffix: str) -> tuple[str, dict[str, Any]]:
    found = [(n, m) for n, m in main_modules().items() if m["detail"]["path"].endswith(path_suffix)]
    assert len(found) == 1, f"main.bicep should call {path_suffix} once, found {[n for n, _ in found]}"
    return found[0]


# ------------------------------------------------------------------------------------------------------------
# APIM: a custom role with exactly three actions, assigned on the existing service only.
# ------------------------------------------------------------------------------------------------------------

def test_apim_role_has_exactly_the_three_gateway_actions() -> None:
    role = body(one_resource(MODULES / "apim-role-definition.bicep", "Microsoft.Authorization/roleDefinitions"))
    permissions = role["properties"]["permissions"]
    assert len(permissions) == 1
    assert sorted(permissions[0]["actions"]) == sorted(GATEWAY_ACTIONS)
    assert len(permissions[0]["actions"]) == 3
    for other in ("notActions", "dataActions", "notDataActions"):
        assert permissions[0].get(other, []) == []
    assert role["properties"]["type"] == "CustomRole"
    assert role["properties"]["assignableScopes"] == ["assignableScope"]


def test_no_other_role_grants_apim_actions() -> None:
    for path, name, res in all_resources("Microsoft.Authorization/roleDefinitions"):
        if path.name == "apim-role-definition.bicep":
            continue
        assert "Microsoft.ApiManagement" not in text(body(res)), f"{path.name}:{name}"


def test_apim_role_is_assignable_only_in_the_apim_resource_group() -> None:
    _, role_module = module_named("apim-role-definition.bicep")
    scope = body(role_module)["params"]["assignableScope"]
    assert scope == "/subscriptions/${apimSubscription}/resourceGroups/${apimResourceGroupName}"


def test_apim_role_is_assigned_on_the_existing_apim_service_only() -> None:
    path = MODULES / "apim-access.bicep"
    apim = one_resource(path, "Microsoft.ApiManagement/service")
    assert apim["existing"] is True
    assignments = list(parse(path)["resources"].values())
    assignments = [a for a in assignments if a["type"] == "Microsoft.Authorization/roleAssignments"]
    assert len(assignments) == 1
    assignment = body(assignments[0])
    apim_symbol = next(n for n, r in parse(path)["resources"].items() if r is apim)
    assert assignment["scope"] == apim_symbol
    assert assignment["properties"]["roleDefinitionId"] == "roleDefinitionId"
    assert assignment["properties"]["principalType"] == "ServicePrincipal"
    # ... and that module is deployed into the APIM service's resource group (another one than the app's).
    _, access = module_named("apim-access.bicep")
    scope = text(body(access)["scope"])
    assert "resource_group" in scope and "apimResourceGroupName" in scope
    assert "roleDefinitionId" in text(body(access)["params"]["roleDefinitionId"])


def test_nothing_gets_a_broad_built_in_role() -> None:
    broad = {
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
        "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",  # User Access Administrator
        "312a565d-c81f-4fd8-895a-4e21e48d571c",  # API Management Service Contributor
        "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",  # Azure Kubernetes Service RBAC Cluster Admin
        "3498e952-d568-435e-9b2c-8d77e338d7f7",  # Azure Kubernetes Service RBAC Admin
        "a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb",  # Azure Kubernetes Service RBAC Writer (Secrets of the whole namespace and more)
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",  # Key Vault Administrator
    }
    for path in [*sorted(MODULES.glob("*.bicep")), MAIN]:
        source = path.read_text(encoding="utf-8")
        for role_id in broad:
            assert role_id not in source, f"{path.name} assigns broad role {role_id}"


# ------------------------------------------------------------------------------------------------------------
# Event Grid: system topic on APIM -> on_gateway_token_event, two types, retries, dead letters by identity.
# ------------------------------------------------------------------------------------------------------------

EVENTS = MODULES / "apim-events.bicep"


def event_subscription() -> dict[str, Any]:
    return body(one_resource(EVENTS, "Microsoft.EventGrid/systemTopics/eventSubscriptions"))


def test_system_topic_is_on_the_apim_service() -> None:
    topic = body(one_resource(EVENTS, "Microsoft.EventGrid/systemTopics"))
    assert topic["properties"]["topicType"] == "Microsoft.ApiManagement.Service"
    assert "apim" in text(topic["properties"]["source"])
    assert one_resource(EVENTS, "Microsoft.ApiManagement/service")["existing"] is True
    assert topic["identity"]["type"] == "UserAssigned"
    # BCP120: the topic's location is a parameter, fed from apim-access.bicep's output, never `apim.location`.
    assert topic["location"] == "location"
    _, events = module_named("apim-events.bicep")
    location = text(body(events)["params"]["location"])
    assert "apimAccess" in location and "apimLocation" in location and "outputs" in location


def test_event_filter_has_exactly_the_two_gateway_token_types() -> None:
    """The exact type strings of Microsoft's "Azure API Management as an Event Grid source" (both preview) and of
    the SDKs' SystemEventNames (azure-sdk-for-python azure-eventgrid `ApiManagementGatewayTokenNearExpiryEventName`,
    `ApiManagementGatewayTokenExpiredEventName`): a misspelt type filters every event out, silently."""
    types = event_subscription()["properties"]["filter"]["includedEventTypes"]
    assert sorted(types) == sorted(GATEWAY_TOKEN_EVENTS)
    assert len(types) == 2


def test_events_go_to_the_event_grid_function() -> None:
    destination = event_subscription()["properties"]["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"] == "${functionAppId}/functions/${functionName}"
    assert parse(EVENTS)["parameters"]["functionName"]["default"] == "on_gateway_token_event"
    _, events = module_named("apim-events.bicep")
    assert body(events)["params"]["functionName"] == "on_gateway_token_event"


def test_retry_policy_is_present_and_within_event_grid_limits() -> None:
    retry = event_subscription()["properties"]["retryPolicy"]
    params = parse(EVENTS)["parameters"]
    assert retry == {"maxDeliveryAttempts": "maxDeliveryAttempts", "eventTimeToLiveInMinutes": "eventTimeToLiveInMinutes"}
    assert params["maxDeliveryAttempts"]["default"] == 30
    assert params["eventTimeToLiveInMinutes"]["default"] == 1440
    assert decorator(params["maxDeliveryAttempts"], "max_value") == 30
    assert decorator(params["eventTimeToLiveInMinutes"], "max_value") == 1440
    main_params = parse(MAIN)["parameters"]
    assert main_params["maxDeliveryAttempts"]["default"] == 30
    assert main_params["eventTimeToLiveInMinutes"]["default"] == 1440


def test_dead_letters_go_to_blob_storage_with_their_own_identity() -> None:
    """Microsoft.EventGrid 2022-06-15 (azure-rest-api-specs eventgrid/.../2022-06-15/EventGrid.json):
    DeadLetterWithResourceIdentity = {identity: EventSubscriptionIdentity {type, userAssignedIdentity},
    deadLetterDestination: StorageBlobDeadLetterDestination {resourceId, blobContainerName}}; the user-assigned
    identity must also be attached to the (system) topic, or Event Grid cannot act as it."""
    dead_letter = event_subscription()["properties"]["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "UserAssigned", "userAssignedIdentity": "deadLetterIdentityId"}
    destination = dead_letter["deadLetterDestination"]
    assert destination["endpointType"] == "StorageBlob"
    assert destination["properties"]["blobContainerName"] == "deadLetterContainerName"
    assert "deadLetterDestination" not in event_subscription()["properties"], "no key-based dead-letter destination"
    topic = body(one_resource(EVENTS, "Microsoft.EventGrid/systemTopics"))
    assert topic["identity"]["userAssignedIdentities"] == {"'${deadLetterIdentityId}'": {}}
    # main.bicep: a second identity, not the app's, is the writer.
    _, events = module_named("apim-events.bicep")
    assert "deadLetterIdentity" in text(body(events)["params"]["deadLetterIdentityId"])
    assert "identity.outputs" not in text(body(events)["params"]["deadLetterIdentityId"])
    # The container exists and only that identity gets Contributor on it (container scope).
    storage = parse(MODULES / "storage.bicep")
    assert storage["parameters"]["deadLetterContainerName"]["default"] == "deadletter"
    writer = body(storage["resources"]["deadLetterWriter"])
    assert writer["scope"] == "deadLetterContainer"
    assert writer["properties"]["principalId"] == "deadLetterWriterPrincipalId"
    assert "storageBlobDataContributorRoleId" in text(writer["properties"]["roleDefinitionId"])
    assert storage["variables"]["storageBlobDataContributorRoleId"]["value"] == STORAGE_BLOB_DATA_CONTRIBUTOR
    _, storage_module = module_named("storage.bicep")
    assert "deadLetterIdentity" in text(body(storage_module)["params"]["deadLetterWriterPrincipalId"])


def test_lease_container_with_contributor_on_it_for_the_app() -> None:
    storage = parse(MODULES / "storage.bicep")
    assert storage["parameters"]["leaseContainerName"]["default"] == "gateway-leases"
    lease = body(storage["resources"]["leaseContainer"])
    assert lease["parent"] == "blobService" and lease["properties"]["publicAccess"] == "None"
    grant = body(storage["resources"]["appLeaseContributor"])
    assert grant["scope"] == "leaseContainer"
    assert grant["properties"]["principalId"] == "appPrincipalId"
    assert "storageBlobDataContributorRoleId" in text(grant["properties"]["roleDefinitionId"])
    assert 'leaseContainerName = \'gateway-leases\'' in MAIN.read_text(encoding="utf-8")
    assert app_settings()["LEASE_CONTAINER_URL"] == "${blobEndpoint}${leaseContainerName}"


def test_event_subscription_waits_for_the_code_deployment() -> None:
    _, events = module_named("apim-events.bicep")
    assert condition(events) == "deployEventSubscription"
    assert parse(MAIN)["parameters"]["deployEventSubscription"]["default"] is False
    _, alert = module_named("deadletter-alert.bicep")
    assert condition(alert) == "deployEventSubscription"


# ------------------------------------------------------------------------------------------------------------
# Function App: Flex Consumption, Python 3.11, identity-based storage and telemetry, every app setting.
# ------------------------------------------------------------------------------------------------------------

FUNCTION_APP = MODULES / "function-app.bicep"


def app_settings() -> dict[str, Any]:
    settings: dict[str, Any] = parse(FUNCTION_APP)["variables"]["baseAppSettings"]["value"]
    return settings


def test_every_design_setting_is_an_app_setting() -> None:
    settings = app_settings()
    always = [n for n in APP_SETTINGS if n not in CONDITIONAL_SETTINGS]
    missing = [name for name in always if name not in settings]
    assert missing == []
    # ARM_ENDPOINT only as the emulator override.
    assert "ARM_ENDPOINT" not in settings
    arm = parse(FUNCTION_APP)["variables"]["armEndpointSettings"]["value"]
    assert "ARM_ENDPOINT" in text(arm) and "armEndpoint" in text(arm)
    assert parse(MAIN)["parameters"]["armEndpoint"]["default"] == ""


def test_cloud_and_vault_urls_come_from_environment() -> None:
    source = MAIN.read_text(encoding="utf-8")
    assert "azureCloud: environment().name" in source
    assert "var tokenVaultUri = 'https://${tokenVaultName}${environment().suffixes.keyvaultDns}/'" in source
    assert "var configVaultUri = 'https://${configVaultName}${environment().suffixes.keyvaultDns}/'" in source
    assert app_settings()["AZURE_CLOUD"] == "azureCloud"
    assert app_settings()["CONFIG_KEY_VAULT_URL"] == "configKeyVaultUri"
    assert decorator(parse(FUNCTION_APP)["parameters"]["azureCloud"], "allowed") == [
        "AzureCloud", "AzureUSGovernment", "AzureChinaCloud"
    ]


def test_open_telemetry_settings_follow_the_parameter() -> None:
    otel = parse(FUNCTION_APP)["variables"]["openTelemetrySettings"]["value"]
    assert otel["operator"]["operands"]["condition"] == "enableOpenTelemetry"
    assert otel["operator"]["operands"]["true_value"] == {
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
        "AzureFunctionsJobHost__telemetryMode": "OpenTelemetry",
        # the distro's sampler: tests/infra/test_platform.py::test_traces_are_not_rate_limited_by_the_distro
        "OTEL_TRACES_SAMPLER": "microsoft.fixed_percentage",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
    }
    assert otel["operator"]["operands"]["false_value"] == {}
    assert parse(MAIN)["parameters"]["enableOpenTelemetry"]["default"] is True
    _, app = module_named("function-app.bicep")
    assert body(app)["params"]["enableOpenTelemetry"] == "enableOpenTelemetry"


def test_sweep_schedule_is_always_set() -> None:
    assert app_settings()["SWEEP_SCHEDULE"] == "sweepSchedule"
    for path in (MAIN, FUNCTION_APP):
        param = parse(path)["parameters"]["sweepSchedule"]
        assert param["default"] == "0 0 * * * *"
        assert decorator(param, "min_length") == 1


def test_the_pinned_settings_are_the_readmes_table() -> None:
    """The pinned list is README's configuration table (the contract, kept in the repository) less the settings
    Bicep leaves to the app's defaults."""
    from tests.infra.test_settings_contract import NOT_SET_BY_BICEP, readme_settings

    assert sorted(APP_SETTINGS) == sorted(set(readme_settings()) - set(NOT_SET_BY_BICEP))


def test_app_settings_reach_the_site_as_one_object_without_a_loop() -> None:
    """The AVM shape (Azure/bicep-registry-modules avm/res/web/site/config/main.bicep): a Microsoft.Web/sites/config
    'appsettings' child whose properties are the settings object. A for-loop over the settings would need them at the
    start of the deployment (BCP178), which the connection string and endpoints are not."""
    config = body(one_resource(FUNCTION_APP, "Microsoft.Web/sites/config"))
    assert config["name"] == "appsettings" and config["parent"] == "functionApp"
    assert config["properties"] == {"function": {"type": "union", "parameters": {
        "arg_1": "baseAppSettings", "arg_2": "openTelemetrySettings", "arg_3": "armEndpointSettings",
        "arg_4": "extraAppSettings"}}}
    site = body(one_resource(FUNCTION_APP, "Microsoft.Web/sites"))
    assert "appSettings" not in site["properties"]["siteConfig"]
    assert "[for" not in FUNCTION_APP.read_text(encoding="utf-8")


def test_registry_is_a_key_vault_reference_resolved_with_the_identity() -> None:
    settings = app_settings()
    assert settings["ROTATION_REGISTRY"] == (
        "@Microsoft.KeyVault(SecretUri=${configKeyVaultUri}secrets/${registrySecretName})"
    )
    site = body(one_resource(FUNCTION_APP, "Microsoft.Web/sites"))
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"


def test_settings_defaults_match_design() -> None:
    params = parse(MAIN)["parameters"]
    assert params["tokenLifetimeDays"]["default"] == 29
    assert decorator(params["tokenLifetimeDays"], "max_value") == 30
    assert params["renewBeforeDays"]["default"] == 7
    assert params["rotationDeadlineSeconds"]["default"] == 20
    assert params["sweepSchedule"]["default"] == "0 0 * * * *"
    assert app_settings()["AZURE_CLIENT_ID"] == "identityClientId"


def test_host_storage_is_identity_based() -> None:
    settings = app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["AzureWebJobsStorage__blobServiceUri"] == "blobEndpoint"
    assert "AzureWebJobsStorage" not in settings, "no connection string"
    for key in settings:
        assert "CONNECTIONSTRING" not in key.upper().replace("_", "") or key == "APPLICATIONINSIGHTS_CONNECTION_STRING"
    storage = body(one_resource(MODULES / "storage.bicep", "Microsoft.Storage/storageAccounts"))["properties"]
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"


def test_telemetry_uses_entra_id() -> None:
    settings = app_settings()
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    component = body(one_resource(MODULES / "monitoring.bicep", "Microsoft.Insights/components"))
    assert component["properties"]["DisableLocalAuth"] is True
    assert MONITORING_METRICS_PUBLISHER in text(parse(MODULES / "monitoring.bicep"))


def test_flex_consumption_python_runtime() -> None:
    plan = body(one_resource(FUNCTION_APP, "Microsoft.Web/serverfarms"))
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = body(one_resource(FUNCTION_APP, "Microsoft.Web/sites"))
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert decorator(parse(FUNCTION_APP)["parameters"]["pythonVersion"], "allowed") == ["3.11"]
    _, app = module_named("function-app.bicep")
    assert body(app)["params"]["pythonVersion"] == "3.11"
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    # Flex Consumption rejects the classic runtime settings; they live in functionAppConfig.
    assert "FUNCTIONS_WORKER_RUNTIME" not in app_settings()
    assert "FUNCTIONS_EXTENSION_VERSION" not in app_settings()
    # Microsoft's Flex Consumption docs have given 40 as the lowest maximum instance count
    # (azure-docs articles/azure-functions/event-driven-scaling.md, "Limit scale-out"; later revisions: 1).
    for path in (MAIN, FUNCTION_APP):
        param = parse(path)["parameters"]["maximumInstanceCount"]
        assert decorator(param, "min_value") == 40 and param["default"] >= 40
    assert site["properties"]["httpsOnly"] is True
    assert site["identity"]["type"] == "UserAssigned"
    tags = text(site["tags"])
    assert "azd-service-name" in tags


def test_basic_publishing_credentials_are_off() -> None:
    policies = all_resources("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted(body(r)["name"] for _, _, r in policies) == ["ftp", "scm"]
    assert all(body(r)["properties"]["allow"] is False for _, _, r in policies)


# ------------------------------------------------------------------------------------------------------------
# Key Vault: RBAC only.
# ------------------------------------------------------------------------------------------------------------

def test_key_vault_uses_rbac_with_purge_protection() -> None:
    vault = body(one_resource(MODULES / "keyvault.bicep", "Microsoft.KeyVault/vaults"))["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enablePurgeProtection"] is True
    assert vault["enableSoftDelete"] is True
    assert "accessPolicies" not in vault
    assert vault["enabledForTemplateDeployment"] is False


def test_no_access_policies_anywhere() -> None:
    from tests.infra.templates import BICEP_FILES

    for path in BICEP_FILES:
        keys = {k for k, _ in walk(parse(path))}
        assert "accessPolicies" not in keys, path.name
        assert "Microsoft.KeyVault/vaults/accessPolicies" not in text(parse(path)), path.name


def test_app_writes_the_token_vault_and_only_reads_the_config_vault() -> None:
    tree = parse(MODULES / "keyvault.bicep")
    assignments = [body(r) for r in tree["resources"].values() if r["type"] == "Microsoft.Authorization/roleAssignments"]
    app = [a for a in assignments if a["properties"]["principalId"] == "appPrincipalId"]
    assert len(app) == 1
    assert app[0]["scope"] == "vault"
    assert app[0]["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"] == "appRoleId"
    assert tree["variables"]["keyVaultSecretsOfficerRoleId"]["value"] == KEY_VAULT_SECRETS_OFFICER
    assert tree["variables"]["keyVaultSecretsUserRoleId"]["value"] == KEY_VAULT_SECRETS_USER
    source = (MODULES / "keyvault.bicep").read_text(encoding="utf-8")
    assert "var appRoleId = (appAccess == 'write') ? keyVaultSecretsOfficerRoleId : keyVaultSecretsUserRoleId" in source
    vaults = {n: body(m)["params"] for n, m in main_modules().items() if m["detail"]["path"] == "modules/keyvault.bicep"}
    assert {n: p["appAccess"] for n, p in vaults.items()} == {"keyVault": "write", "configVault": "read"}
    # Only the config vault receives the registry.
    assert "registryJson" not in vaults["keyVault"]
    assert "registryText" in text(vaults["configVault"]["registryJson"])


# ------------------------------------------------------------------------------------------------------------
# AKS: Azure RBAC at namespace scope; outcome topic sender role on the topic only.
# ------------------------------------------------------------------------------------------------------------

def test_aks_role_is_scoped_to_namespaces() -> None:
    path = MODULES / "aks-access.bicep"
    tree = parse(path)
    namespaces = tree["resources"]["namespaceScopes"]
    assert namespaces["type"] == "Microsoft.ContainerService/managedClusters/namespaces"
    assert namespaces["existing"] is True
    assert body(namespaces)["parent"] == "cluster"
    assignment = body(tree["resources"]["rotatorRole"])
    assert text(assignment["scope"]) == text({"operator": {"type": "index_accessor", "operands": {"operand_1": "namespaceScopes", "operand_2": "i"}}})


def test_aks_role_only_touches_secrets_and_workloads() -> None:
    role = body(one_resource(MODULES / "aks-role-definition.bicep", "Microsoft.Authorization/roleDefinitions"))
    permissions = role["properties"]["permissions"][0]
    assert permissions["actions"] == []
    data_actions = permissions["dataActions"]
    prefix = "Microsoft.ContainerService/managedClusters/"
    allowed = {"secrets", "apps/deployments", "apps/statefulsets", "apps/daemonsets"}
    for action in data_actions:
        assert action.startswith(prefix), action
        resource, _, verb = action[len(prefix):].rpartition("/")
        assert resource in allowed and verb in {"read", "write"}, action
    assert f"{prefix}secrets/write" in data_actions
    assert not any(a.endswith("/delete") or "*" in a for a in data_actions)


def test_aks_access_is_per_cluster_and_optional() -> None:
    _, access = module_named("aks-access.bicep")
    array = access["config"]["loop_type"]["detail"]["array_name"]["operator"]["operands"]
    assert array == {"condition": "assignCustomRoles", "true_value": "clusters", "false_value": []}
    _, role = module_named("aks-role-definition.bicep")
    assert "clusters" in text(condition(role))
    # A real array: the parameter (plain az) or a file compiled into the template, never an azd-substituted string.
    assert parse(MAIN)["parameters"]["aksClusters"]["default"] == []
    assert "var clusters = !empty(aksClusters) ? aksClusters : loadJsonContent('aks-clusters.json')" in MAIN.read_text(
        encoding="utf-8")
    assert json.loads((MAIN.parent / "aks-clusters.json").read_text(encoding="utf-8")) == []


def test_custom_roles_are_assigned_after_their_definitions_had_time_to_replicate() -> None:
    params = parse(MAIN)["parameters"]
    assert params["assignCustomRoles"]["default"] == "deployEventSubscription"
    _, access = module_named("apim-access.bicep")
    assert body(access)["params"]["assignRole"] == "assignCustomRoles"
    assert "apimRole.outputs.roleDefinitionId" in text(body(access)["params"]["roleDefinitionId"]) or (
        "apimRole" in text(body(access)["params"]["roleDefinitionId"])
    )
    assignment = next(r for r in parse(MODULES / "apim-access.bicep")["resources"].values()
                      if r["type"] == "Microsoft.Authorization/roleAssignments")
    assert condition(assignment) == "assignRole"


def test_outcome_topic_is_optional_and_entra_only() -> None:
    _, topic_module = module_named("outcome-topic.bicep")
    assert condition(topic_module) == "deployOutcomeTopic"
    topic = body(one_resource(MODULES / "outcome-topic.bicep", "Microsoft.EventGrid/topics"))
    assert topic["properties"]["disableLocalAuth"] is True
    assert topic["properties"]["inputSchema"] == "CloudEventSchemaV1_0"
    source = text(parse(MODULES / "outcome-topic.bicep"))
    assert EVENTGRID_DATA_SENDER in source
    _, app = module_named("function-app.bicep")
    assert "outcomeTopic" in text(body(app)["params"]["outcomeTopicEndpoint"])


def test_all_role_assignments_name_their_principal_type() -> None:
    for path, name, res in all_resources("Microsoft.Authorization/roleAssignments"):
        props = body(res)["properties"]
        assert props.get("principalType") in {"ServicePrincipal", "userPrincipalType"}, f"{path.name}:{name}"


def test_main_is_subscription_scoped_and_creates_the_resource_group() -> None:
    tree = parse(MAIN)
    assert tree["globals"]["scope"]["value"] == "subscription"
    groups = [r for r in tree["resources"].values() if r["type"] == "Microsoft.Resources/resourceGroups"]
    assert len(groups) == 1
    assert decorator(tree["parameters"]["location"], "metadata") == {"azd": {"type": "location"}}


def test_json_dump_of_trees_is_stable() -> None:
    # A guard for the helpers above: pycep trees are plain JSON data.
    assert json.loads(text(parse(MAIN)))["globals"]["scope"]["value"] == "subscription"
