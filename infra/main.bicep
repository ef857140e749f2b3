metadata description = 'apim-token-rotator: Function App (Flex Consumption, Python) that rotates APIM self-hosted gateway tokens into Kubernetes Secrets, with Key Vault, least-privilege roles, Event Grid wiring and Portal monitoring.'

targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------------------------
// Environment (azd conventions: AZURE_ENV_NAME, AZURE_LOCATION, AZURE_PRINCIPAL_ID)
// ---------------------------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the environment; seeds the unique suffix of every resource name and the resource group name.')
param environmentName string

@minLength(1)
@description('Region of the new resources; must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Name of the resource group to create; empty for rg-<environmentName>.')
@maxLength(90)
param resourceGroupName string = ''

@description('Object id of the deploying user: granted Key Vault Secrets Officer (to upload the registry and kubeconfigs) and Storage Blob Data Contributor (to read dead letters). Empty for none.')
param principalId string = ''

@description('Kind of principal principalId is: User for a person, ServicePrincipal when a pipeline deploys.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Name of the token Key Vault (KEY_VAULT_URL); empty for a generated one. Set it when a soft-deleted vault of the generated name blocks a redeploy.')
@maxLength(24)
param keyVaultName string = ''

@description('Name of the configuration Key Vault holding the registry and kubeconfigs (CONFIG_KEY_VAULT_URL); empty for a generated one.')
@maxLength(24)
param configKeyVaultName string = ''

// ---------------------------------------------------------------------------------------------------------------
// The existing API Management service
// ---------------------------------------------------------------------------------------------------------------

@description('Name of the existing API Management service whose self-hosted gateways are rotated (APIM allows 1-50 characters).')
@minLength(1)
@maxLength(50)
param apimServiceName string

@description('Resource group of the existing API Management service (ARM allows 1-90 characters).')
@minLength(1)
@maxLength(90)
param apimResourceGroupName string

@description('Subscription of the existing API Management service; empty for the deployment subscription.')
@maxLength(36)
param apimSubscriptionId string = ''

// ---------------------------------------------------------------------------------------------------------------
// App settings (README Configuration)
// ---------------------------------------------------------------------------------------------------------------

@description('Name of the secret in the configuration vault that holds the registry JSON (infra/registry.json when that file is not empty).')
@minLength(1)
@maxLength(127)
param registrySecretName string = 'rotation-registry'

@description('Resource Manager endpoint override (ARM_ENDPOINT) for emulators only; empty (the default) leaves it unset and the app uses the endpoint of AZURE_CLOUD.')
param armEndpoint string = ''

@description('Lifetime of generated tokens in days (TOKEN_LIFETIME_DAYS), 1-30.')
@minValue(1)
@maxValue(30)
param tokenLifetimeDays int = 29

@description('Renew when the stored token expires within this many days (RENEW_BEFORE_DAYS).')
@minValue(1)
@maxValue(29)
param renewBeforeDays int = 7

@description('Budget in seconds of one event-driven reconcile (ROTATION_DEADLINE_SECONDS).')
@minValue(5)
@maxValue(25)
param rotationDeadlineSeconds int = 20

@description('NCRONTAB schedule of the safety sweep (SWEEP_SCHEDULE); always set on the app.')
@minLength(1)
param sweepSchedule string = '0 0 * * * *'

@description('Telemetry through OpenTelemetry (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY, host telemetryMode OpenTelemetry: preview, Flex Consumption only); false keeps the classic Application Insights path.')
param enableOpenTelemetry bool = true

@description('Deploy a custom Event Grid topic for outcome events and let the app identity send to it.')
param deployOutcomeTopic bool = false

@description('Endpoint of an existing Event Grid topic for outcome events (used when deployOutcomeTopic is false; grant the app identity EventGrid Data Sender on it yourself). Empty for no outcome events.')
param outcomeTopicEndpoint string = ''

@description('Upper bound of Function App instances per scale group; 40 is the lowest value Microsoft\'s Flex Consumption docs have required (see function-app.bicep).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

// ---------------------------------------------------------------------------------------------------------------
// Event Grid
// ---------------------------------------------------------------------------------------------------------------

@description('Create the Event Grid system topic subscription to on_gateway_token_event. Leave false on the first deployment: the function must exist (code deployed) before Event Grid can validate the endpoint; the azd postdeploy hook turns it on.')
param deployEventSubscription bool = false

@description('Name of the Event Grid system topic on the APIM service; empty for a generated one. An APIM service has at most one system topic: pass the existing one\'s name if there is one.')
@maxLength(128)
param systemTopicName string = ''

@description('Assign the custom APIM and AKS roles. By default in the same pass as the Event Grid subscription (the second provision, after the code deploy), so the role definitions created by the first pass have had minutes to replicate before anything is assigned to them.')
param assignCustomRoles bool = deployEventSubscription

@description('Delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes an event is retried before it is dead-lettered.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

// ---------------------------------------------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------------------------------------------

@description('AKS clusters with Azure RBAC for Kubernetes authorization, as [{ name, resourceGroup, namespaces: [..] }] in the deployment subscription; empty (the default) takes infra/aks-clusters.json, compiled in and never passed through azd\'s parameter substitution. The app identity gets the rotator role at each namespace scope. Clusters with Kubernetes RBAC or kubeconfig auth are not listed here: apply infra/k8s instead.')
param aksClusters array = []

// ---------------------------------------------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------------------------------------------

@description('Resource id of the action group the alert rules notify; empty creates them without notifications.')
param actionGroupId string = ''

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

// ---------------------------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'apim-token-rotator'
}
var functionAppName = '${abbrs.webSitesFunctions}rotator-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
var apimSubscription = empty(apimSubscriptionId) ? subscription().subscriptionId : apimSubscriptionId
var tokenVaultName = !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVaultVaults}${resourceToken}'
var configVaultName = !empty(configKeyVaultName) ? configKeyVaultName : '${abbrs.keyVaultVaults}cfg-${resourceToken}'
// Vault URIs from the cloud's DNS suffix (environment()), known when the deployment starts: right in every cloud.
var tokenVaultUri = 'https://${tokenVaultName}${environment().suffixes.keyvaultDns}/'
var configVaultUri = 'https://${configVaultName}${environment().suffixes.keyvaultDns}/'
var leaseContainerName = 'gateway-leases'
var deadLetterContainerName = 'deadletter'

// The registry reaches Key Vault from infra/registry.json, compiled into the template. It never passes through
// main.parameters.json: azd substitutes ${VAR} there as raw text, without JSON escaping, so a registry (full of
// double quotes) would break the file. `{}` (the file as shipped) leaves the secret alone.
var registryText = loadTextContent('registry.json')
var manageRegistry = !empty(loadJsonContent('registry.json'))
// Same for the AKS clusters (a variable, not the parameter's default: the file functions belong in variables).
var clusters = !empty(aksClusters) ? aksClusters : loadJsonContent('aks-clusters.json')
// `<cluster id>/namespaces/<ns>` for every listed namespace, the scopes aks-access.bicep assigns the AKS role at, as
// one space-separated string (no resource group, cluster or namespace name can hold a space): the postdeploy hook
// fails if the app identity holds that role at any other scope (an assignment that landed wider, see aks-access.bicep).
// Built from the configuration, not from aks-access's outputs, so it is known on every pass (assignCustomRoles or not).
var aksClusterIds = [for c in clusters: '${subscription().id}/resourceGroups/${c.resourceGroup}/providers/Microsoft.ContainerService/managedClusters/${c.name}']
var aksNamespaceScopes = [for (c, i) in clusters: empty(c.namespaces) ? '' : '${aksClusterIds[i]}/namespaces/${join(c.namespaces, ' ${aksClusterIds[i]}/namespaces/')}']

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}rotator-${resourceToken}'
    location: location
    tags: tags
  }
}

// Event Grid writes dead letters as its own identity: the app identity never holds the writer role.
module deadLetterIdentity 'modules/identity.bicep' = {
  name: 'deadletter-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}deadletter-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
    publisherPrincipalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    leaseContainerName: leaseContainerName
    appPrincipalId: identity.outputs.principalId
    deadLetterWriterPrincipalId: deadLetterIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

// Tokens: the app writes a new version per rotation (Key Vault Secrets Officer, this vault only).
module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: tokenVaultName
    location: location
    tags: tags
    purpose: 'tokens'
    appPrincipalId: identity.outputs.principalId
    appAccess: 'write'
    userPrincipalId: principalId
    userPrincipalType: principalType
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

// Registry and kubeconfigs: the app only reads them (Key Vault Secrets User), so a compromised app cannot
// rewrite where tokens go or which kubeconfig it trusts.
module configVault 'modules/keyvault.bicep' = {
  name: 'keyvault-config'
  scope: rg
  params: {
    name: configVaultName
    location: location
    tags: tags
    purpose: 'configuration'
    appPrincipalId: identity.outputs.principalId
    appAccess: 'read'
    userPrincipalId: principalId
    userPrincipalType: principalType
    registrySecretName: registrySecretName
    registryJson: manageRegistry ? registryText : ''
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module outcomeTopic 'modules/outcome-topic.bicep' = if (deployOutcomeTopic) {
  name: 'outcome-topic'
  scope: rg
  params: {
    name: '${abbrs.eventGridDomainsTopics}rotator-${resourceToken}'
    location: location
    tags: tags
    senderPrincipalId: identity.outputs.principalId
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    azdServiceName: 'api'
    pythonVersion: '3.11'
    maximumInstanceCount: maximumInstanceCount
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    leaseContainerName: storage.outputs.leaseContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultUri: tokenVaultUri
    configKeyVaultUri: configVaultUri
    registrySecretName: registrySecretName
    azureCloud: environment().name
    armEndpoint: armEndpoint
    tokenLifetimeDays: tokenLifetimeDays
    renewBeforeDays: renewBeforeDays
    rotationDeadlineSeconds: rotationDeadlineSeconds
    sweepSchedule: sweepSchedule
    outcomeTopicEndpoint: deployOutcomeTopic ? outcomeTopic.outputs.endpoint : outcomeTopicEndpoint
    enableOpenTelemetry: enableOpenTelemetry
  }
  // The vault URIs are computed, not module outputs: wait for the vaults and the app's roles on them, so the
  // registry's Key Vault reference resolves on the first start.
  dependsOn: [
    keyVault
    configVault
  ]
}

// Least privilege on APIM: a custom role with exactly the three gateway actions, assignable only in the APIM
// resource group and assigned only on the APIM service.
// A custom role definition takes time to replicate; assigning it in the deployment that creates it can fail with
// RoleDefinitionDoesNotExist. So the definition is its own module, created on every pass, and the assignment
// depends on its output and, by default, happens only in the second pass (assignCustomRoles).
module apimRole 'modules/apim-role-definition.bicep' = {
  name: 'apim-gateway-token-role-${resourceToken}'
  scope: subscription(apimSubscription)
  params: {
    roleName: 'APIM gateway token rotator (${environmentName}-${resourceToken})'
    assignableScope: '/subscriptions/${apimSubscription}/resourceGroups/${apimResourceGroupName}'
  }
}

module apimAccess 'modules/apim-access.bicep' = {
  name: 'apim-access-${resourceToken}'
  scope: resourceGroup(apimSubscription, apimResourceGroupName)
  params: {
    apimServiceName: apimServiceName
    roleDefinitionId: apimRole.outputs.roleDefinitionId
    principalId: identity.outputs.principalId
    assignRole: assignCustomRoles
  }
}

// Created only once the code is deployed: Event Grid validates the AzureFunction endpoint on creation.
module apimEvents 'modules/apim-events.bicep' = if (deployEventSubscription) {
  name: 'apim-events-${resourceToken}'
  scope: resourceGroup(apimSubscription, apimResourceGroupName)
  params: {
    apimServiceName: apimServiceName
    systemTopicName: !empty(systemTopicName) ? systemTopicName : '${abbrs.eventGridSystemTopics}${apimServiceName}'
    subscriptionName: 'apim-token-rotator-${resourceToken}'
    // A module output is fine as a module parameter (the module is its own deployment); inside the module the
    // topic's location is a parameter. Reading `.location` of the existing APIM resource there is Bicep BCP120.
    location: apimAccess.outputs.apimLocation
    tags: tags
    functionAppId: functionApp.outputs.resourceId
    functionName: 'on_gateway_token_event'
    deadLetterIdentityId: deadLetterIdentity.outputs.resourceId
    deadLetterStorageId: storage.outputs.resourceId
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    maxDeliveryAttempts: maxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module aksRole 'modules/aks-role-definition.bicep' = if (!empty(clusters)) {
  name: 'aks-rotator-role-${resourceToken}'
  params: {
    roleName: 'AKS gateway token rotator (${environmentName}-${resourceToken})'
  }
}

// A deployment name is at most 64 characters ([-\w._()]); an AKS name can have 63, so take() a prefix and add a
// hash of the full identity of the cluster to keep names unique.
module aksAccess 'modules/aks-access.bicep' = [for cluster in (assignCustomRoles ? clusters : []): {
  name: '${take('aks-access-${cluster.name}', 50)}-${uniqueString(cluster.resourceGroup, cluster.name, resourceToken)}'
  scope: resourceGroup(cluster.resourceGroup)
  params: {
    clusterName: cluster.name
    namespaces: cluster.namespaces
    roleDefinitionId: aksRole.outputs.roleDefinitionId
    principalId: identity.outputs.principalId
  }
}]

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: '${abbrs.insightsScheduledQueryRules}rotator-${resourceToken}'
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    actionGroupId: actionGroupId
    openTelemetry: enableOpenTelemetry
    expiryThresholdHours: 48
  }
}

module deadLetterAlert 'modules/deadletter-alert.bicep' = if (deployEventSubscription) {
  name: 'deadletter-alert'
  scope: rg
  params: {
    name: '${abbrs.insightsMetricAlerts}rotator-deadletter-${resourceToken}'
    tags: tags
    systemTopicId: apimEvents.outputs.systemTopicId
    actionGroupId: actionGroupId
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    displayName: 'APIM gateway token rotation (${environmentName})'
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
  }
}

// Outputs become azd environment values. Names, ids and endpoints only: nothing here is a credential.
@description('Region of the deployment.')
output AZURE_LOCATION string = location

@description('Tenant of the deployment.')
output AZURE_TENANT_ID string = tenant().tenantId

@description('Resource group of the app.')
output AZURE_RESOURCE_GROUP string = rg.name

@description('Name of the Function App (azd deploy target).')
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name

@description('Resource id of the Function App.')
output AZURE_FUNCTION_APP_ID string = functionApp.outputs.resourceId

@description('Base URL of the HTTP API.')
output ROTATOR_API_URL string = 'https://${functionApp.outputs.defaultHostName}/api'

@description('Client id of the app identity (AZURE_CLIENT_ID of the app).')
output ROTATOR_IDENTITY_CLIENT_ID string = identity.outputs.clientId

@description('Object id of the app identity: the subject of the Kubernetes RoleBinding on AKS clusters that use Kubernetes RBAC (infra/k8s).')
output ROTATOR_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId

@description('Name of the token Key Vault.')
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name

@description('Vault URI of the token vault (KEY_VAULT_URL).')
output AZURE_KEY_VAULT_ENDPOINT string = tokenVaultUri

@description('Name of the configuration Key Vault (registry and kubeconfigs).')
output AZURE_CONFIG_KEY_VAULT_NAME string = configVault.outputs.name

@description('Vault URI of the configuration vault (CONFIG_KEY_VAULT_URL).')
output CONFIG_KEY_VAULT_URL string = configVaultUri

@description('Name of the secret in the configuration vault that holds the registry.')
output ROTATION_REGISTRY_SECRET_NAME string = registrySecretName

@description('Azure cloud of the deployment (AZURE_CLOUD).')
output AZURE_CLOUD string = environment().name

@description('Container that receives dead-lettered events (DEADLETTER_BLOB_URL).')
output DEADLETTER_BLOB_URL string = '${storage.outputs.blobEndpoint}${storage.outputs.deadLetterContainerName}'

@description('Container of the per-gateway leases (LEASE_CONTAINER_URL).')
output LEASE_CONTAINER_URL string = '${storage.outputs.blobEndpoint}${storage.outputs.leaseContainerName}'

@description('Resource id of the custom AKS rotator role definition; empty when infra/aks-clusters.json lists no cluster (the postdeploy hook reads it).')
output AKS_ROTATOR_ROLE_ID string = !empty(clusters) ? aksRole.outputs.roleDefinitionId : ''

@description('The namespace scopes (<cluster id>/namespaces/<ns>) the AKS rotator role is assigned at, space-separated; empty with no AKS cluster. The postdeploy hook fails if the app identity holds that role anywhere else.')
output AKS_NAMESPACE_SCOPES string = join(aksNamespaceScopes, ' ')

@description('Whether this deployment created the Event Grid subscription (the postdeploy hook reads it).')
output EVENT_SUBSCRIPTION_DEPLOYED bool = deployEventSubscription
