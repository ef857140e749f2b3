metadata description = 'Optional custom Event Grid topic (CloudEvents 1.0, Entra-only) for ApimTokenRotator.TokenRotated / ApimTokenRotator.RotationFailed outcome events; the app identity may send to it.'

@description('Name of the custom topic.')
param name string

@description('Azure region of the topic.')
param location string

@description('Tags applied to the topic.')
param tags object = {}

@description('Principal id of the app identity, granted EventGrid Data Sender on this topic only.')
param senderPrincipalId string

// EventGrid Data Sender: publish events, nothing else.
var eventGridDataSenderRoleId = 'd5a91429-5739-47e2-a06b-3470a27159e7' // built-in role EventGrid Data Sender (Azure built-in roles)

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  // checkov:skip=CKV_AZURE_193: Subscribers (webhooks, Logic Apps, other functions) reach the topic over its public endpoint; publishing needs Entra ID (local auth is off).
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, senderPrincipalId, eventGridDataSenderRoleId)
  scope: topic
  properties: {
    principalId: senderPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSenderRoleId)
  }
}

@description('Endpoint of the topic (OUTCOME_TOPIC_ENDPOINT).')
output endpoint string = topic.properties.endpoint

@description('Resource id of the topic.')
output resourceId string = topic.id
