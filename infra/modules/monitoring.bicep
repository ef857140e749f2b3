metadata description = 'Log Analytics workspace and workspace-based Application Insights with local (instrumentation key) auth disabled; the app identity may publish telemetry.'

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Azure region of the monitoring resources.')
param location string

@description('Tags applied to the monitoring resources.')
param tags object = {}

@description('Days the workspace keeps logs.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Principal id of the app identity, granted Monitoring Metrics Publisher so it can send telemetry with Entra ID auth.')
param publisherPrincipalId string

// Monitoring Metrics Publisher: the only role Entra-authenticated telemetry ingestion needs.
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb' // built-in role Monitoring Metrics Publisher (Azure built-in roles)

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

// CustomMetricsOptedInType WithDimensions is "Enable alerting on custom metric dimensions" (Portal: Usage and
// estimated costs > Custom metrics > With dimensions). Without it only a dimensionless pre-aggregate of each custom
// metric reaches the metrics store (Microsoft docs, "Metrics in Application Insights"), so the token-expiry metric
// alert cannot split by gatewayId. ARM accepts the property but it is missing from the REST spec and the Bicep
// types (Azure/bicep#6595, where the Application Insights team lists its values WithDimensions, NoDimensions,
// NoMeasurements, Off; bicep-types-az#2048), hence the BCP037 suppression; the AI-Gateway samples of Microsoft set
// it the same way. (Kept out of the object body: checkov's Bicep parser, pycep 0.5.1, rejects some comments there.)
resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
    #disable-next-line BCP037 // reason: undocumented but ARM-accepted property, see the comment above the resource.
    CustomMetricsOptedInType: 'WithDimensions'
  }
}

resource publisherRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, publisherPrincipalId, monitoringMetricsPublisherRoleId)
  scope: applicationInsights
  properties: {
    principalId: publisherPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
  }
}

@description('Resource id of the Log Analytics workspace.')
output logAnalyticsId string = logAnalytics.id

@description('Resource id of the Application Insights component (scope of the alert rules and the workbook).')
output applicationInsightsId string = applicationInsights.id

@description('Name of the Application Insights component.')
output applicationInsightsName string = applicationInsights.name
