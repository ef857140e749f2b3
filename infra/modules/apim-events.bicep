metadata description = 'Event Grid system topic on the APIM service and the subscription that delivers gateway-token events to on_gateway_token_event, with retries and identity-based dead-lettering. Deploy after the function code (the function must exist).'

@description('Name of the existing API Management service (this module is deployed into its resource group).')
param apimServiceName string

@description('Name of the Event Grid system topic on the APIM service. An APIM service can have only one system topic: if it has one already, pass its name and useExistingTopic.')
param systemTopicName string

@description('The topic exists already: reference it and add only the subscription. Redeploying it would replace its identity and tags, dropping identities other subscriptions deliver or dead-letter with.')
param useExistingTopic bool = false

@description('Name of the event subscription.')
param subscriptionName string = 'apim-token-rotator'

@description('Region of the APIM service: a system topic lives in its source\'s region. A parameter because `.location` of an existing resource is not known when the deployment starts (Bicep BCP120); main.bicep passes apim-access.bicep\'s apimLocation output.')
@minLength(1)
param location string

@description('Tags applied to the system topic.')
param tags object = {}

@description('Resource id of the Function App that hosts on_gateway_token_event.')
param functionAppId string

@description('Name of the Event Grid-triggered function.')
param functionName string = 'on_gateway_token_event'

@description('Resource id of the user-assigned identity Event Grid writes dead letters as (Storage Blob Data Contributor on the dead-letter container only; not the app identity).')
param deadLetterIdentityId string

@description('Resource id of the storage account that receives dead letters.')
param deadLetterStorageId string

@description('Blob container that receives dead letters.')
param deadLetterContainerName string

@description('Delivery attempts before an event is dead-lettered (Event Grid allows 1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes an event is retried before it is dead-lettered (Event Grid allows 1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

@description('Schema events are delivered in; the app accepts both.')
@allowed([
  'EventGridSchema'
  'CloudEventSchemaV1_0'
])
param eventDeliverySchema string = 'EventGridSchema'

@description('Resource id of the Log Analytics workspace for the topic\'s delivery-failure log; empty for none.')
param logAnalyticsId string = ''

resource apim 'Microsoft.ApiManagement/service@2023-05-01-preview' existing = {
  name: apimServiceName
}

resource newTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = if (!useExistingTopic) {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${deadLetterIdentityId}': {}
    }
  }
  properties: {
    source: apim.id
    topicType: 'Microsoft.ApiManagement.Service'
  }
}

// The topic the subscription is added to, created above or already there. Read only when it already existed (its
// identities, below); the created one is waited for through dependsOn.
resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

// Event Grid can dead-letter as a user-assigned identity only if the topic has it: an existing topic must already list
// it, and this deployment does not change the topic. fail() (Bicep SystemNamespaceType.cs, ARM's template function)
// stops the deployment with the fix before the subscription is PUT.
// (ARM compares object keys case-insensitively in contains(); if() evaluates only the branch it takes.)
var deadLetterIdentityOnTopic = useExistingTopic ? contains(systemTopic.?identity.?userAssignedIdentities ?? {}, deadLetterIdentityId) : true
var deadLetterIdentity = deadLetterIdentityOnTopic ? deadLetterIdentityId : fail('The existing Event Grid system topic ${systemTopicName} does not have the dead-letter identity ${deadLetterIdentityId}. Add it to the topic\'s user-assigned identities, keeping the ones it has (portal: the system topic > Identity > User assigned > Add), then provision again.')

resource gatewayTokenEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: eventDeliverySchema
    filter: {
      includedEventTypes: [
        'Microsoft.ApiManagement.GatewayTokenNearExpiry'
        'Microsoft.ApiManagement.GatewayTokenExpired'
      ]
      enableAdvancedFilteringOnArrays: true
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: deadLetterIdentity
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [
    newTopic
  ]
}

// Only on a topic this module created: an existing topic gets nothing but the subscription.
resource deliveryLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!useExistingTopic && !empty(logAnalyticsId)) {
  name: 'delivery-failures-to-log-analytics'
  scope: newTopic
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        category: 'DeliveryFailures'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

@description('Resource id of the system topic (scope of the dead-letter alert).')
output systemTopicId string = systemTopic.id

@description('Name of the event subscription.')
output eventSubscriptionName string = gatewayTokenEvents.name
