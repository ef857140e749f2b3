metadata description = 'A user-assigned managed identity: deployed once for the Function App (every data-plane call it makes) and once for Event Grid dead-letter delivery.'

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region of the identity.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity.')
output resourceId string = identity.id

@description('Client (application) id of the identity; the app reads it as AZURE_CLIENT_ID.')
output clientId string = identity.properties.clientId

@description('Object (principal) id of the identity, used in role assignments.')
output principalId string = identity.properties.principalId

@description('Name of the identity.')
output name string = identity.name
