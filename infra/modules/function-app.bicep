metadata description = 'Flex Consumption plan and the Python Function App, identity-based storage and telemetry, with every app setting the app reads (README Configuration).'

@description('Name of the Function App.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region of the plan and the app.')
param location string

@description('Tags applied to the plan and the app (the app also gets azd-service-name).')
param tags object = {}

@description('Service name in azure.yaml, tagged on the app so azd deploy finds it.')
param azdServiceName string = 'api'

@description('Python version of the worker; must match the version the project is tested on.')
@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Memory of one instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of instances per per-function scale group. Microsoft\'s Flex Consumption docs have given 40 as the lowest accepted maximum (event-driven-scaling.md, "Limit scale-out"; newer revisions say 1): 40 is accepted under both.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of the user-assigned identity (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId).')
param identityClientId string

@description('Name of the storage account used for AzureWebJobsStorage, the deployment package, dead letters and leases.')
param storageAccountName string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Blob container of dead-lettered events (DEADLETTER_BLOB_URL).')
param deadLetterContainerName string

@description('Blob container of the per-gateway leases (LEASE_CONTAINER_URL).')
param leaseContainerName string

@description('Name of the Application Insights component (same resource group).')
param applicationInsightsName string

@description('Vault URI of the token vault (KEY_VAULT_URL), ending in a slash.')
param keyVaultUri string

@description('Vault URI of the configuration vault holding the registry and kubeconfigs (CONFIG_KEY_VAULT_URL), ending in a slash.')
param configKeyVaultUri string

@description('Name of the secret in the configuration vault that holds the registry JSON; ROTATION_REGISTRY becomes a Key Vault reference to it.')
param registrySecretName string

@description('Name of the Azure cloud (AZURE_CLOUD): environment().name of the deployment.')
@allowed([
  'AzureCloud'
  'AzureUSGovernment'
  'AzureChinaCloud'
])
param azureCloud string = 'AzureCloud'

@description('Resource Manager endpoint override (ARM_ENDPOINT) for emulators only; empty leaves the setting out and the app uses its cloud\'s endpoint.')
param armEndpoint string = ''

@description('Lifetime of generated tokens in days (TOKEN_LIFETIME_DAYS), 1-30.')
@minValue(1)
@maxValue(30)
param tokenLifetimeDays int = 29

@description('Renew when the stored token expires within this many days (RENEW_BEFORE_DAYS).')
@minValue(1)
@maxValue(29)
param renewBeforeDays int = 7

@description('Budget in seconds of one event-driven reconcile (ROTATION_DEADLINE_SECONDS); below Event Grid\'s 30 s delivery timeout.')
@minValue(5)
@maxValue(25)
param rotationDeadlineSeconds int = 20

@description('NCRONTAB schedule of the safety sweep (SWEEP_SCHEDULE); always set, since %SWEEP_SCHEDULE% without a value puts the timer function in error.')
@minLength(1)
param sweepSchedule string = '0 0 * * * *'

@description('Endpoint of the Event Grid topic for outcome events (OUTCOME_TOPIC_ENDPOINT); empty disables outcome events.')
param outcomeTopicEndpoint string = ''

@description('Send telemetry through OpenTelemetry (the Azure Monitor distro configured by the Python worker, host telemetryMode OpenTelemetry); false keeps the classic Application Insights path.')
param enableOpenTelemetry bool = true

@description('Extra app settings merged over the generated ones.')
param extraAppSettings object = {}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Runtime values (the component's connection string, the account's endpoints) are fine here: this object only
// becomes the `properties` of the appsettings config resource below. It must never feed a for-expression, a
// condition, a name or a location (Bicep BCP178/BCP177/BCP120: those need values known when the deployment starts).
var blobEndpoint = storage.properties.primaryEndpoints.blob
var baseAppSettings = {
  // Host storage through the identity; no connection string, no account key. The service URI (not the account
  // name) keeps sovereign clouds right, as the Flex quickstarts do.
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // Telemetry with Entra ID auth (local auth is disabled on the component).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The app's own settings (README Configuration).
  ROTATION_REGISTRY: '@Microsoft.KeyVault(SecretUri=${configKeyVaultUri}secrets/${registrySecretName})'
  KEY_VAULT_URL: keyVaultUri
  CONFIG_KEY_VAULT_URL: configKeyVaultUri
  AZURE_CLOUD: azureCloud
  TOKEN_LIFETIME_DAYS: string(tokenLifetimeDays)
  RENEW_BEFORE_DAYS: string(renewBeforeDays)
  ROTATION_DEADLINE_SECONDS: string(rotationDeadlineSeconds)
  SWEEP_SCHEDULE: sweepSchedule
  OUTCOME_TOPIC_ENDPOINT: outcomeTopicEndpoint
  AZURE_CLIENT_ID: identityClientId
  DEADLETTER_BLOB_URL: '${blobEndpoint}${deadLetterContainerName}'
  LEASE_CONTAINER_URL: '${blobEndpoint}${leaseContainerName}'
}

// The Python worker configures azure-monitor-opentelemetry itself when PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY
// is true; AzureFunctionsJobHost__telemetryMode overrides host.json (OpenTelemetry mode: Flex Consumption, preview).
// Sampling: without OTEL_TRACES_SAMPLER the distro (1.8.x, _utils/configurations.py `_default_sampling_ratio`)
// falls back to its rate-limited sampler at 5 traces per second, which drops dependency spans of a busy sweep and
// the records tied to them. microsoft.fixed_percentage with 1.0 keeps every trace; the volume is small (one
// reconcile per gateway per event or sweep).
var openTelemetrySettings = enableOpenTelemetry ? {
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  AzureFunctionsJobHost__telemetryMode: 'OpenTelemetry'
  OTEL_TRACES_SAMPLER: 'microsoft.fixed_percentage'
  OTEL_TRACES_SAMPLER_ARG: '1.0'
} : {}

var armEndpointSettings = empty(armEndpoint) ? {} : { ARM_ENDPOINT: armEndpoint }

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  // checkov:skip=CKV_AZURE_225: Zone redundancy for Flex Consumption is region-dependent; the app is stateless and Event Grid retries deliveries for 24 h, so a zone outage delays rotation, it does not lose it.
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': azdServiceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  // checkov:skip=CKV_AZURE_17: Callers are Event Grid (AzureFunction endpoint, system key) and operators with function keys; client certificates would break Event Grid delivery.
  // checkov:skip=CKV_AZURE_222: Event Grid delivers over the public endpoint (no VNet integration here); every route needs a function key.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales per instance (maximumInstanceCount); the App Service minimum-instance setting does not apply.
  // checkov:skip=CKV_AZURE_213: GET /api/health needs a function key (auth level FUNCTION), so a platform health probe would mark every instance unhealthy; Flex Consumption replaces instances itself.
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// App settings as one object on the appsettings config resource, the way Azure Verified Modules do it
// (avm/res/web/site/config: Microsoft.Web/sites/config 'appsettings' with `properties: <object>`): no for-loop,
// so runtime values are allowed. A for-loop over `items(...)` of these settings is Bicep error BCP178.
// checkov reads every Microsoft.Web/sites/config as the web config and applies site checks; appsettings holds
// only key-value pairs, none of those properties exists on it. Each skip below names what it checks and where it
// is decided instead. (Spread over the body: checkov's Bicep parser, pycep 0.5.1, rejected them as one block here.)
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_66: Failed request tracing is a web config property, not an app setting; this resource is the appsettings config.
  // checkov:skip=CKV_AZURE_63: HTTP logging is a web config property, not an app setting; this resource is the appsettings config.
  parent: functionApp
  // checkov:skip=CKV_AZURE_65: Detailed error messages are a web config property, not an app setting; this resource is the appsettings config.
  // checkov:skip=CKV_AZURE_80: .NET Framework version does not apply: a Python app on Flex Consumption, and this is the appsettings config.
  name: 'appsettings'
  // checkov:skip=CKV_AZURE_88: Azure Files content share does not apply to Flex Consumption (deployment package in a blob container).
  // checkov:skip=CKV_AZURE_222: Public network access is a site property, justified on the site resource above (Event Grid delivers over it).
  properties: union(baseAppSettings, openTelemetrySettings, armEndpointSettings, extraAppSettings)
  // checkov:skip=CKV_AZURE_13: App Service Authentication is an authsettingsV2 config, not an app setting; every route needs a function key (roll-keys an admin key).
}

// Deployments go through Entra ID (azd / az functionapp deployment with the deployer's identity), never basic auth.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

@description('Name of the Function App.')
output name string = functionApp.name

@description('Resource id of the Function App.')
output resourceId string = functionApp.id

@description('Default host name of the Function App.')
output defaultHostName string = functionApp.properties.defaultHostName
